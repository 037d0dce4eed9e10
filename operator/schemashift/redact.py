"""Scrub connection strings and passwords from text before it reaches logs, status or events."""

from __future__ import annotations

import re

# Up to the last @ of the word: a password with an unencoded @ is masked whole, not in part.
_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>\S*)@"
)
_KEYWORD_PASSWORD = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|aws_secret_access_key)\s*[=:]\s*"
    r"('[^']*'|\"[^\"]*\"|\S+)"
)
_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:password|sslpassword)=)[^&\s]+")

MASK = "***"


def redact(text: str, *secrets: str | None) -> str:
    """Return `text` with URL passwords, `password=…` pairs and any given literal secrets masked."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _KEYWORD_PASSWORD.sub(lambda m: f"{m.group(1)}={MASK}", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}", text)
