"""What a run was asked to do (the `apply` options, or the SchemaMigration spec), validated."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast, get_args

from schemashift import errors

RollbackPolicy = Literal["downgrade", "restore", "none"]
LintMode = Literal["block", "warn", "off"]

_DURATION = re.compile(r"^\s*(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | float | int, *, name: str) -> float:
    """'5s', '500ms', '2m', '1h', '0s' (or a bare number of seconds) → seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise errors.UsageError(
                f"{name} {value!r} is not a duration",
                hint="write it as a number with a unit: 500ms, 5s, 2m or 1h (0s means none)",
            )
        seconds = float(match["amount"]) * _UNIT_SECONDS[match["unit"] or "s"]
    if seconds < 0:
        raise errors.UsageError(f"{name} must not be negative, got {value!r}")
    return seconds


def postgres_ms(seconds: float) -> str:
    """A duration as PostgreSQL's GUCs take it; at least 1ms unless it is zero (= none)."""
    if seconds <= 0:
        return "0"
    return f"{max(1, round(seconds * 1000))}ms"


@dataclass(frozen=True)
class RunOptions:
    target: str = "head"
    backup_url: str | None = None
    rollback_policy: str = "downgrade"
    dry_run: bool = False
    lock_timeout: str = "5s"
    statement_timeout: str = "0s"
    lock_retries: int = 10
    lint_mode: str = "block"
    allow: tuple[str, ...] = ()
    lock_wait: str = "60s"
    verify_models: bool = False
    expect_plan_hash: str | None = None

    def __post_init__(self) -> None:
        # Every bad option is refused before anything connects.
        object.__setattr__(self, "allow", tuple(_split_allow(self.allow)))
        self.policy()
        self.lint()
        if self.lock_timeout_s <= 0:
            raise errors.UsageError(
                f"lock timeout {self.lock_timeout!r} must be greater than zero",
                hint="a migration without a lock timeout can queue behind a long transaction "
                "and block all traffic on the table; use e.g. 5s",
            )
        _ = self.statement_timeout_s, self.lock_wait_s
        if isinstance(self.lock_retries, bool) or not isinstance(self.lock_retries, int) \
                or self.lock_retries < 0:
            raise errors.UsageError(
                f"lock retries must be a whole number ≥ 0, got {self.lock_retries!r}"
            )
        if self.backup_url is not None and not self.backup_url.strip():
            object.__setattr__(self, "backup_url", None)

    def policy(self) -> RollbackPolicy:
        if self.rollback_policy not in get_args(RollbackPolicy):
            raise errors.UsageError(
                f"unknown rollback policy {self.rollback_policy!r}",
                hint="use downgrade, restore or none",
            )
        return cast(RollbackPolicy, self.rollback_policy)

    def lint(self) -> LintMode:
        if self.lint_mode not in get_args(LintMode):
            raise errors.UsageError(
                f"unknown lint mode {self.lint_mode!r}", hint="use block, warn or off"
            )
        return cast(LintMode, self.lint_mode)

    @property
    def lock_timeout_s(self) -> float:
        return parse_duration(self.lock_timeout, name="lock timeout")

    @property
    def statement_timeout_s(self) -> float:
        return parse_duration(self.statement_timeout, name="statement timeout")

    @property
    def lock_wait_s(self) -> float:
        return parse_duration(self.lock_wait, name="lock wait")


def _split_allow(allow: object) -> list[str]:
    """`--allow a --allow b`, a spec list, or one env var 'a,b' / 'a b' → rule names."""
    items = [allow] if isinstance(allow, str) else list(allow or ())  # type: ignore[call-overload]
    names: list[str] = []
    for item in items:
        names.extend(part for part in re.split(r"[,\s]+", str(item)) if part)
    return names
