"""The run options of `apply` / `run-job` and of the SchemaMigration spec, each declared once.

A row holds an option's name (the RunOptions field and the MigrationSpec attribute), type,
default, bounds, environment variable, CLI flag, CR field and help. Derived from it: the CLI
options (cli.py), the spec's defaults (kube/resource.py), the Job's environment
(kube/jobspec.py), the validation (runner/options.py) and the CRD's schema of these fields
(tools/gen_crd.py writes them into manifests/crd). Imported by the CLI at start-up, so it
imports nothing heavy: the lint rule names are read on use.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from schemashift import durations, environments, errors

_SPLIT = re.compile(r"[,\s]+")
_HOUR = 3600.0


def closest(value: str, known: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(value, list(known), n=1, cutoff=0.6)
    return found[0] if found else None


@dataclass(frozen=True, kw_only=True)
class Option:
    name: str  # RunOptions field; MigrationSpec attribute when `cr` is set
    flag: str
    env: str
    help: str
    cr: str | None = None  # field under `spec`, dotted: "safety.lockTimeout"
    default: Any = None
    description: str = ""  # the CRD's, when it says more than the CLI's help

    @property
    def title(self) -> str:
        """How messages name it: 'lock timeout'."""
        return self.name.replace("_", " ")

    @property
    def crd_description(self) -> str:
        return self.description or self.help

    @property
    def cr_name(self) -> str:
        return f"spec.{self.cr}" if self.cr else self.flag

    def check(self, value: Any) -> Any:
        """The value, validated and normalised; a UsageError saying what to write instead."""
        return value

    def from_spec(self, spec: Mapping[str, Any]) -> Any:
        """The CR field's value, or the default when it is unset (objects stored before the
        CRD had the default)."""
        node: Any = spec
        for key in (self.cr or "").split("."):
            node = node.get(key) if isinstance(node, Mapping) else None
        return self.default if node is None or node == "" else node

    def env_text(self, value: Any) -> str | None:
        """The value as the Job's environment carries it (None: leave the variable unset)."""
        return None if value is None or value == "" else str(value)

    def crd_default(self) -> Any:
        """The CRD field's default (None: the field has none)."""
        return self.default

    def crd_schema(self) -> dict[str, Any] | None:
        """This field's schema in the CRD, or None where the CRD's own text is the source
        (tools/gen_crd.py then writes only `crd_default` into it)."""
        return None


@dataclass(frozen=True, kw_only=True)
class Text(Option):
    default: str | None = None


@dataclass(frozen=True, kw_only=True)
class Flag(Option):
    default: bool = False

    def env_text(self, value: Any) -> str | None:
        return "true" if value else "false"


@dataclass(frozen=True, kw_only=True)
class Choice(Option):
    default: str
    choices: tuple[str, ...]

    def check(self, value: Any) -> str:
        if value not in self.choices:
            near = closest(str(value), self.choices)
            raise errors.UsageError(
                f"unknown {self.title} {durations.shown(value)}"
                + (f" (did you mean {near!r}?)" if near else ""),
                hint=f"use {', '.join(self.choices[:-1])} or {self.choices[-1]}")
        return str(value)

    def crd_schema(self) -> dict[str, Any]:
        return {"type": "string", "description": self.crd_description,
                "default": self.default, "enum": list(self.choices)}


@dataclass(frozen=True, kw_only=True)
class Count(Option):
    default: int
    minimum: int
    maximum: int

    def check(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) \
                or not self.minimum <= value <= self.maximum:
            raise errors.UsageError(
                f"{self.title} must be a whole number from {self.minimum} to {self.maximum}, "
                f"got {durations.shown(value)}",
                hint=f"set {self.flag} ({self.cr_name}) to e.g. {self.default}")
        return value

    def from_spec(self, spec: Mapping[str, Any]) -> Any:
        value = super().from_spec(spec)
        return int(value) if isinstance(value, str) and value.isdigit() else value

    def crd_schema(self) -> dict[str, Any]:
        return {"type": "integer", "description": self.crd_description, "default": self.default,
                "minimum": self.minimum, "maximum": self.maximum}


@dataclass(frozen=True, kw_only=True)
class Duration(Option):
    """A Go/Kubernetes duration string; `zero` says what 0 means, or None when 0 is refused."""

    default: str
    maximum: float  # seconds
    zero: str | None = None
    zero_refused: str = ""  # why 0 is refused (with zero None)

    def seconds(self, value: Any) -> float:
        return durations.bounded(
            str(value), name=self.title, maximum=self.maximum, zero_allowed=self.zero is not None,
            zero_hint=self.zero_refused)

    def check(self, value: Any) -> str:
        self.seconds(value)
        return str(value).strip()

    def crd_schema(self) -> dict[str, Any]:
        pattern, field = durations.PATTERN, self.cr_name.removeprefix("spec.")
        limit = durations.text(self.maximum)
        rules = [
            {"rule": f"self.matches('{pattern}')",
             "message": f"{field} must be a duration such as {durations.EXAMPLES} "
                        "(units: ns, us, ms, s, m, h)"},
            {"rule": f"!self.matches('{pattern}') || duration(self) <= duration('{limit}')",
             "message": f"{field} must be at most {limit}"},
        ]
        if self.zero is None:
            rules.append({
                "rule": f"!self.matches('{pattern}') || duration(self) > duration('0s')",
                "message": f"{field} must be greater than zero: {self.zero_refused}"})
        return {"type": "string", "description": self.crd_description,
                "default": self.default, "maxLength": 32, "x-kubernetes-validations": rules}


@dataclass(frozen=True, kw_only=True)
class RuleNames(Option):
    """Lint rule names: repeated flags, a CR list, or one env var 'a,b' / 'a b'."""

    default: tuple[str, ...] = ()
    max_items: int = 50

    def check(self, value: Any) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else list(value or ())
        names = [part for item in items for part in _SPLIT.split(str(item)) if part]
        known = lint_rule_names()
        for name in names:
            if name not in known:
                near = closest(name, known)
                raise errors.UsageError(
                    f"{self.flag} {durations.shown(name)} is not a lint rule"
                    + (f": did you mean {near!r}?" if near else ""),
                    hint=f"the rules are: {', '.join(sorted(known))} ({self.cr_name})")
        if len(names) > self.max_items:
            raise errors.UsageError(f"{self.flag} names {len(names)} rules, at most "
                                    f"{self.max_items} are accepted")
        return tuple(dict.fromkeys(names))

    def from_spec(self, spec: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(super().from_spec(spec) or ())

    def env_text(self, value: Any) -> str | None:
        return " ".join(value) or None  # click splits a multiple option's env var on spaces

    def crd_default(self) -> list[str]:
        return list(self.default)

    def crd_schema(self) -> dict[str, Any]:
        names = sorted(lint_rule_names())
        listed = ", ".join(f"'{name}'" for name in names)
        return {
            "type": "array", "description": self.crd_description, "default": self.crd_default(),
            "maxItems": self.max_items,
            "items": {
                "type": "string", "description": "A lint rule name.", "maxLength": 63,
                "x-kubernetes-validations": [{
                    "rule": f"self in [{listed}]",
                    "message": f"safety.allow entries are lint rule names: {', '.join(names)}",
                }],
            },
        }


def lint_rule_names() -> frozenset[str]:
    from schemashift.plan import lint  # 0.6 s of imports: only when a rule name is checked

    return frozenset(lint.RULES)


TARGET = Text(name="target", flag="--target", env="SCHEMASHIFT_TARGET", cr="target",
              default="head", help="Revision id or 'head'.")
BACKUP_URL = Text(
    name="backup_url", flag="--backup-url", env="SCHEMASHIFT_BACKUP_URL", cr="backup.url",
    help="s3://bucket/prefix/ for the verified pg_dump taken before changes.")
ROLLBACK_POLICY = Choice(
    name="rollback_policy", flag="--rollback-policy", env="SCHEMASHIFT_ROLLBACK_POLICY",
    cr="rollback.policy", default="downgrade", choices=("downgrade", "restore", "none"),
    help="What to do when a stage fails.",
    description="downgrade runs the downgrades of the stages already applied; restore "
                "restores the verified backup; none stops and reports where it stands.")
DRY_RUN = Flag(name="dry_run", flag="--dry-run", env="SCHEMASHIFT_DRY_RUN", cr="dryRun",
               help="Plan only: change nothing.")
LOCK_TIMEOUT = Duration(
    name="lock_timeout", flag="--lock-timeout", env="SCHEMASHIFT_LOCK_TIMEOUT",
    cr="safety.lockTimeout", default="5s", maximum=600.0,
    zero_refused="0 means wait forever, and a migration queued behind a long transaction "
                 "would then block all traffic on the table; use e.g. 5s",
    help="Per-attempt lock_timeout.",
    description="Per-attempt lock_timeout (e.g. 500ms, 5s); app queries never wait longer "
                "behind a migration.")
STATEMENT_TIMEOUT = Duration(
    name="statement_timeout", flag="--statement-timeout", env="SCHEMASHIFT_STATEMENT_TIMEOUT",
    cr="safety.statementTimeout", default="0s", maximum=24 * _HOUR, zero="none",
    help="statement_timeout per stage statement; 0s means none.")
LOCK_RETRIES = Count(
    name="lock_retries", flag="--lock-retries", env="SCHEMASHIFT_LOCK_RETRIES",
    cr="safety.lockRetries", default=10, minimum=0, maximum=100,
    help="Attempts with growing waits when a lock is not available.")
LINT_MODE = Choice(
    name="lint_mode", flag="--lint", env="SCHEMASHIFT_LINT", cr="safety.lint",
    default="block", choices=("block", "warn", "off"),
    help="block stops on a lint finding not in allow; warn reports it; off skips lint.")
ALLOW = RuleNames(name="allow", flag="--allow", env="SCHEMASHIFT_ALLOW", cr="safety.allow",
                  help="Lint rule accepted for this run (repeatable).",
                  description="Lint rule names accepted for this run.")
LOCK_WAIT = Duration(
    name="lock_wait", flag="--lock-wait", env="SCHEMASHIFT_LOCK_WAIT", default="60s",
    maximum=24 * _HOUR, zero="fail at once",
    help="How long to wait for another migration's lock on this database.")
VERIFY_MODELS = Flag(
    name="verify_models", flag="--verify-models", env="SCHEMASHIFT_VERIFY_MODELS",
    help="After migrating, fail if the database still differs from the models.")
EXPECT_PLAN_HASH = Text(
    name="expect_plan_hash", flag="--expect-plan-hash", env="SCHEMASHIFT_EXPECT_PLAN_HASH",
    help="Refuse to change anything unless the plan has this hash (approval).")

RUN_OPTIONS: tuple[Option, ...] = (
    TARGET, BACKUP_URL, ROLLBACK_POLICY, DRY_RUN, LOCK_TIMEOUT, STATEMENT_TIMEOUT, LOCK_RETRIES,
    LINT_MODE, ALLOW, LOCK_WAIT, VERIFY_MODELS, EXPECT_PLAN_HASH,
)
SPEC_OPTIONS = tuple(option for option in RUN_OPTIONS if option.cr)
BY_NAME = {option.name: option for option in RUN_OPTIONS}
# `wait --timeout`: the hook's waiter outlives the longest Job (spec.deadlineSeconds ≤ 7 days).
# Common to every command (not a run option), and a spec field like the run options.
ENVIRONMENT = Choice(
    name="environment", flag="--env", env="SCHEMASHIFT_ENV", cr="environment",
    default=environments.DEFAULT, choices=environments.ENVIRONMENTS,
    help="Which safety policy applies.",
    description="Safety policy that applies; production requires a backup.")

WAIT_TIMEOUT = Duration(name="timeout", flag="--timeout", env="", default="30m",
                        maximum=30 * 24 * _HOUR, zero=None,
                        zero_refused="a waiter that gives up at once cannot wait; use e.g. 30m",
                        help="Give up after this long (keep it below helm's --timeout).")
