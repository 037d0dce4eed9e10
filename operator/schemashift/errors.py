"""Every failure a user can see, each mapped to the contract's exit code.

Exit codes: 0 ok, 1 check failed / migration failed (rolled back), 2 usage or refused by policy,
3 infrastructure unreachable (database, object storage, API server), 70 internal error (a bug).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INFRA = 3
# An unexpected exception (a bug): sysexits' EX_SOFTWARE, never 1 so CI can tell it from drift.
EXIT_INTERNAL = 70


class SchemashiftError(Exception):
    """Base: `str(err)` is the message shown to the user (already scrubbed of secrets)."""

    exit_code = EXIT_FAILED
    reason = "Failed"

    def __init__(self, message: str, *, hint: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.hint = hint
        if reason is not None:
            self.reason = reason

    def __str__(self) -> str:
        message = super().__str__()
        return f"{message}\n  hint: {self.hint}" if self.hint else message


class UsageError(SchemashiftError):
    """Bad input: wrong option, unknown module, broken script directory, unknown revision."""

    exit_code = EXIT_USAGE
    reason = "InvalidInput"


class PolicyRefused(SchemashiftError):
    """The request is valid but refused by a safety policy (environment, lint, approval)."""

    exit_code = EXIT_USAGE
    reason = "RefusedByPolicy"


class CheckFailed(SchemashiftError):
    """A gate found a problem (drift in `check`, integrity pre-check)."""

    exit_code = EXIT_FAILED
    reason = "CheckFailed"


class MigrationFailed(SchemashiftError):
    """A migration stage failed; the message states where the database was left."""

    exit_code = EXIT_FAILED
    reason = "MigrationFailed"


class InfrastructureError(SchemashiftError):
    """A server we depend on is unreachable or refused us (database, object storage, API)."""

    exit_code = EXIT_INFRA
    reason = "InfrastructureUnavailable"
