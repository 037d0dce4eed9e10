"""What is wrong with a database URL, told without showing any part of it.

The value may be a password with unencoded characters, or a Secret that holds something else
entirely (an API key): every message here is fixed text, never a fragment of the input.
"""

from __future__ import annotations

import difflib
from functools import cache

from psycopg import pq
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

SCHEMES = ("postgresql", "postgres")
EXAMPLE = "postgresql://user:password@host:5432/dbname"
ENCODE_HINT = (
    "URL-encode special characters in the password (and user name): @ → %40, : → %3A, "
    "/ → %2F, ? → %3F, # → %23, % → %25, space → %20 — e.g. python3 -c 'import sys, "
    "urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=\"\"))' 'PASSWORD'"
)
# Other services' schemes, named back to the user: a scheme outside this list is not echoed.
OTHER_SCHEMES = frozenset({
    "mysql", "mariadb", "sqlite", "mssql", "oracle", "cockroachdb", "redshift", "http",
    "https", "redis", "rediss", "mongodb", "mongodb+srv", "amqp", "amqps", "s3", "jdbc",
    "file", "ftp", "sftp", "ssh", "ldap", "kafka", "nats", "mqtt",
})
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
INTEGER_PARAMS = frozenset({
    "connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
    "keepalives_count", "tcp_user_timeout",
})
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_,:%")


class Problem:
    """What is wrong (`what`, completing "the database URL …") and what to do (`hint`)."""

    def __init__(self, what: str, hint: str):
        self.what = what
        self.hint = hint


def check(url: str) -> URL | Problem:
    """The parsed URL, or the first problem found (fixed text only)."""
    problem = _check_text(url)
    if problem is not None:
        return problem
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return _diagnose(url)
    return _check_parts(url, parsed) or parsed


def _check_text(url: str) -> Problem | None:
    if not url.strip():
        return Problem("is empty", f"give a URL of the form {EXAMPLE}")
    # Inner spaces stay: SQLAlchemy renders a password's space unencoded and reads it back.
    if url != url.strip() or any(ord(c) < 32 or ord(c) == 127 for c in url):
        return Problem(
            "contains leading or trailing whitespace or control characters (often a newline "
            "at the end of a Secret's value)",
            "remove them (create the Secret with printf '%s', not echo)")
    scheme, sep, _ = url.partition("://")
    if not sep:
        return Problem(
            "is not a postgresql:// URL (is the variable, or the Secret and key it comes from, "
            "the right one?)", f"give a URL of the form {EXAMPLE}")
    base = scheme.lower().split("+", 1)[0]
    if base not in SCHEMES:
        named = f"is a {scheme.lower()}:// URL" if scheme.lower() in OTHER_SCHEMES else \
            "does not start with postgresql://"
        return Problem(f"{named}: not PostgreSQL",
                       f"schemashift manages PostgreSQL databases only: {EXAMPLE}")
    return None


def _unencoded(url: str) -> bool:
    """More than one @ after the scheme: only an unencoded @ in the user info does that."""
    return url.partition("://")[2].count("@") > 1


def _diagnose(url: str) -> Problem:
    if _unencoded(url):
        return _encoding_problem()
    rest = url.partition("://")[2]
    authority = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    port = authority.rpartition("]")[2].partition(":")[2]
    if port and not port.isdigit():
        return Problem("has a port that is not a number",
                       "write the port as digits after the host (host:5432), one host only; "
                       f"{ENCODE_HINT}")
    return Problem("does not parse", f"use {EXAMPLE}; {ENCODE_HINT}")


def _encoding_problem() -> Problem:
    return Problem("does not parse: its password or user name has characters that must be "
                   "URL-encoded", ENCODE_HINT)


def _check_parts(url: str, parsed: URL) -> Problem | None:
    host = parsed.host or ""
    if _unencoded(url) or "@" in host or "@" in (parsed.database or ""):
        return _encoding_problem()
    if not set(host) <= _HOST_CHARS:
        return Problem("has a host name that is not valid", f"use {EXAMPLE}; {ENCODE_HINT}")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        return Problem("has a port out of range",
                       "use a port from 1 to 65535 (PostgreSQL's default is 5432)")
    # No database name is libpq's default (the user's name), not an error.
    return _check_query(parsed)


@cache
def libpq_keywords() -> frozenset[str]:
    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())


def _check_query(parsed: URL) -> Problem | None:
    for key, value in parsed.query.items():
        values = (value,) if isinstance(value, str) else tuple(value)
        if key not in libpq_keywords():
            close = difflib.get_close_matches(key, sorted(libpq_keywords()), n=1)
            guess = f"did you mean {close[0]}? " if close else ""
            return Problem("has an unknown connection parameter in its query string",
                           f"{guess}see libpq's connection parameters (e.g. ?sslmode=require)")
        if key == "sslmode" and any(v not in SSLMODES for v in values):
            return Problem("has an sslmode that is not valid",
                           f"use one of {', '.join(SSLMODES)}")
        if key in INTEGER_PARAMS and not all(v.isdigit() for v in values):
            return Problem(f"has a {key} that is not a whole number",
                           f"write it in digits, e.g. ?{key}=10")
    return None
