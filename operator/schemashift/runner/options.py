"""What a run was asked to do (the `apply` options, or the SchemaMigration spec), validated.

The options themselves (defaults, bounds, flags, env vars, CR fields) are declared in
runner/options_table.py; this is the validated value the pipeline reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

from schemashift import durations, errors
from schemashift.runner import options_table as table

RollbackPolicy = Literal["downgrade", "restore", "none"]
LintMode = Literal["block", "warn", "off"]


def parse_duration(value: str | float | int, *, name: str) -> float:
    """'5s', '500ms', '1h30m', '1.5s', '0' (Go's grammar) or a number of seconds → seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise errors.UsageError(f"{name} must not be negative, got {value!r}")
        return float(value)
    return durations.seconds(str(value), name=name)


def postgres_ms(seconds: float) -> str:
    """A duration as PostgreSQL's GUCs take it; at least 1ms unless it is zero (= none)."""
    if seconds <= 0:
        return "0"
    return f"{max(1, round(seconds * 1000))}ms"


@dataclass(frozen=True)
class RunOptions:
    target: str = cast(str, table.TARGET.default)
    backup_url: str | None = table.BACKUP_URL.default
    rollback_policy: str = table.ROLLBACK_POLICY.default
    dry_run: bool = table.DRY_RUN.default
    lock_timeout: str = table.LOCK_TIMEOUT.default
    statement_timeout: str = table.STATEMENT_TIMEOUT.default
    lock_retries: int = table.LOCK_RETRIES.default
    lint_mode: str = table.LINT_MODE.default
    allow: tuple[str, ...] = table.ALLOW.default
    lock_wait: str = table.LOCK_WAIT.default
    verify_models: bool = table.VERIFY_MODELS.default
    expect_plan_hash: str | None = table.EXPECT_PLAN_HASH.default
    phase: str = table.PHASE.default
    backup_method: str = table.BACKUP_METHOD.default
    backup_keep: int = table.BACKUP_KEEP.default
    backup_max_age: str = table.BACKUP_MAX_AGE.default
    archive_wait: str = table.ARCHIVE_WAIT.default
    deadline_seconds: int | None = table.DEADLINE_SECONDS.default

    def __post_init__(self) -> None:
        # Every bad option is refused here, before anything connects.
        for option in table.RUN_OPTIONS:
            object.__setattr__(self, option.name, option.check(getattr(self, option.name)))
        if self.backup_url is not None and not self.backup_url.strip():
            object.__setattr__(self, "backup_url", None)

    def policy(self) -> RollbackPolicy:
        return cast(RollbackPolicy, table.ROLLBACK_POLICY.check(self.rollback_policy))

    def lint(self) -> LintMode:
        return cast(LintMode, table.LINT_MODE.check(self.lint_mode))

    @property
    def lock_timeout_s(self) -> float:
        return table.LOCK_TIMEOUT.seconds(self.lock_timeout)

    @property
    def statement_timeout_s(self) -> float:
        return table.STATEMENT_TIMEOUT.seconds(self.statement_timeout)

    @property
    def lock_wait_s(self) -> float:
        return table.LOCK_WAIT.seconds(self.lock_wait)

    @property
    def archive_wait_s(self) -> float:
        return table.ARCHIVE_WAIT.seconds(self.archive_wait)
