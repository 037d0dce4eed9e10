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

from schemashift import durations, environments, errors, release_phases

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
class JobSeconds(Count):
    """Seconds the Job has: the CRD and the Job default to `job_default`; a local run has no
    such limit unless given (None)."""

    default: int | None = None  # type: ignore[assignment]
    job_default: int

    def check(self, value: Any) -> int | None:  # type: ignore[override]
        return None if value is None else super().check(value)

    def from_spec(self, spec: Mapping[str, Any]) -> Any:
        value = super().from_spec(spec)
        return self.job_default if value is None else value

    def crd_default(self) -> int:
        return self.job_default

    def crd_schema(self) -> dict[str, Any]:
        return {**super().crd_schema(), "default": self.job_default}


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
# Each lock attempt stalls the app's queries on the table for up to the lock timeout (they queue
# behind it), so the default stays below an app's own statement_timeout (commonly 1-3s), or
# those queries fail; 500ms is also what pgroll uses. The retries make up for the short
# attempts: with their pauses (runner/stages.py retry_wait) they outlast a conflicting
# transaction for about as long as the former 5s x 10 retries did, ~2 minutes, while the table
# is stalled 8s of that time instead of 55s. tests/unit/test_runner_options.py recomputes it.
_LOCK_TIMEOUT_DEFAULT = "500ms"
LOCK_TIMEOUT = Duration(
    name="lock_timeout", flag="--lock-timeout", env="SCHEMASHIFT_LOCK_TIMEOUT",
    cr="safety.lockTimeout", default=_LOCK_TIMEOUT_DEFAULT, maximum=600.0,
    zero_refused="0 means wait forever, and a migration queued behind a long transaction "
                 f"would then block all traffic on the table; use e.g. {_LOCK_TIMEOUT_DEFAULT}",
    help="Per-attempt lock_timeout: app queries on the table queue behind an attempt at most "
         "this long, so keep it below the app's statement_timeout.",
    description="Per-attempt lock_timeout (e.g. 500ms, 2s): app queries on the table queue "
                "behind an attempt at most this long. Keep it below the app's own "
                "statement_timeout, or every attempt that meets a long transaction makes the "
                "queued app queries fail; the default is short for that reason and lockRetries "
                "makes up for it.")
STATEMENT_TIMEOUT = Duration(
    name="statement_timeout", flag="--statement-timeout", env="SCHEMASHIFT_STATEMENT_TIMEOUT",
    cr="safety.statementTimeout", default="0s", maximum=24 * _HOUR, zero="none",
    help="statement_timeout per stage statement; 0s means none.")
LOCK_RETRIES = Count(
    name="lock_retries", flag="--lock-retries", env="SCHEMASHIFT_LOCK_RETRIES",
    cr="safety.lockRetries", default=15, minimum=0, maximum=100,
    help="Retries after a lock timeout, with growing pauses between the attempts.",
    description="Retries after a lock timeout, pausing 0.25s, then twice as long each time up "
                "to 10s. With the defaults a stage gives up after about 2 minutes of a "
                "conflicting transaction; app queries are stalled only during the attempts.")
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

# Expand/contract (issue 13): which part of the pending history a run applies.
PHASE = Choice(
    name="phase", flag="--phase", env="SCHEMASHIFT_PHASE", cr="phase",
    default=release_phases.ALL, choices=release_phases.CHOICES,
    help="expand applies the pending backward-compatible revisions and stops before the first "
         "contract revision; contract applies the pending contract revisions; all applies both.",
    description="Which part of the pending history to apply: expand (additive, safe while the "
                "old release still runs), contract (drops and other changes the old release "
                "cannot survive; run after the rollout), or all.")
# Backups (issue 14): how the pre-migration safety net is taken.
BACKUP_METHOD = Choice(
    name="backup_method", flag="--backup-method", env="SCHEMASHIFT_BACKUP_METHOD",
    cr="backup.method", default="pgDump", choices=("pgDump", "restorePoint"),
    help="pgDump streams a verified pg_dump to object storage; restorePoint records a named "
         "restore point in the archived WAL (needs WAL archiving).",
    description="pgDump streams a verified pg_dump to object storage (small databases); "
                "restorePoint creates a named restore point and waits until its WAL segment "
                "is archived (needs archive_mode and a healthy archiver), so its cost does not "
                "grow with the database.")

# Backup retention (issue 14): applied after a new backup is verified, and by `backups prune`.
BACKUP_KEEP = Count(
    name="backup_keep", flag="--backup-keep", env="SCHEMASHIFT_BACKUP_KEEP",
    cr="backup.retention.keep", default=0, minimum=0, maximum=100_000,
    help="Keep the newest N verified backups per database and delete older ones once a new "
         "backup is verified (0: no limit).",
    description="Verified backups to keep per database (0: no limit). Older ones are deleted "
                "after a new backup is verified; the newest verified backup and the current "
                "run's are never deleted.")
BACKUP_MAX_AGE = Duration(
    name="backup_max_age", flag="--backup-max-age", env="SCHEMASHIFT_BACKUP_MAX_AGE",
    cr="backup.retention.maxAge", default="0s", maximum=100 * 365 * 24 * _HOUR, zero="none",
    help="Delete verified backups older than this (e.g. 720h) once a new backup is verified "
         "(0s: no limit).",
    description="Verified backups older than this (e.g. 720h for 30 days) are deleted after a "
                "new backup is verified (0s: no limit); the newest verified backup and the "
                "current run's are never deleted.")
# How long a restore point's WAL segment may take to reach the archive (runner/restore_point.py).
ARCHIVE_WAIT = Duration(
    name="archive_wait", flag="--archive-wait", env="SCHEMASHIFT_ARCHIVE_WAIT",
    cr="backup.archiveWait", default="2m", maximum=_HOUR,
    zero_refused="the archiver needs some time to copy the segment; use e.g. 2m",
    help="restorePoint: how long to wait until the restore point's WAL segment is archived.",
    description="restorePoint: how long to wait until the WAL segment holding the restore "
                "point is archived; the run stops before any change when it is not.")
# The Job's deadline (activeDeadlineSeconds), also read by the runner: a pg_dump that would
# overrun it is refused before any change (runner/size_guard.py). A local run has none unless
# given.
DEADLINE_SECONDS = JobSeconds(
    name="deadline_seconds", flag="--deadline-seconds", env="SCHEMASHIFT_DEADLINE_SECONDS",
    cr="deadlineSeconds", job_default=1800, minimum=30, maximum=7 * 24 * int(_HOUR),
    help="The run's deadline in seconds (the Job's activeDeadlineSeconds); a pgDump backup "
         "that would overrun it is refused before any change. Local runs: none unless given.",
    description="Longest the Job may run (activeDeadlineSeconds) before it is stopped and "
                "reported Failed. A pgDump backup that would overrun it is refused before any "
                "change.")

RUN_OPTIONS: tuple[Option, ...] = (
    TARGET, BACKUP_URL, ROLLBACK_POLICY, DRY_RUN, LOCK_TIMEOUT, STATEMENT_TIMEOUT, LOCK_RETRIES,
    LINT_MODE, ALLOW, LOCK_WAIT, VERIFY_MODELS, EXPECT_PLAN_HASH, PHASE, BACKUP_METHOD,
    BACKUP_KEEP, BACKUP_MAX_AGE, ARCHIVE_WAIT, DEADLINE_SECONDS,
)
SPEC_OPTIONS = tuple(option for option in RUN_OPTIONS if option.cr)
BY_NAME = {option.name: option for option in RUN_OPTIONS}
# `backups prune --stale-after`: how old a leftover of an interrupted run must be before prune
# removes it; runner/backup.py's ABANDONED_AFTER (the backup's own clean-up), which a test
# keeps equal.
STALE_AFTER = Duration(
    name="stale_after", flag="--stale-after", env="SCHEMASHIFT_STALE_AFTER", default="6h",
    maximum=30 * 24 * _HOUR, zero=None,
    zero_refused="a backup being written right now would be removed; use e.g. 6h",
    help="Remove .partial objects and incomplete uploads of interrupted runs only when older "
         "than this (a backup still being written is younger).")
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

# `wait-for-schema` (issue 13): an application's initContainer polls its database's revision.
SCHEMA_WAIT_TIMEOUT = Duration(
    name="timeout", flag="--timeout", env="SCHEMASHIFT_SCHEMA_WAIT_TIMEOUT", default="10m",
    maximum=24 * _HOUR, zero=None,
    zero_refused="an initContainer that gives up at once cannot wait; use e.g. 10m",
    help="Give up (exit 1) when the database has not reached the revision after this long.")
SCHEMA_WAIT_INTERVAL = Duration(
    name="interval", flag="--interval", env="SCHEMASHIFT_SCHEMA_WAIT_INTERVAL", default="2s",
    maximum=_HOUR, zero=None, zero_refused="polling without a pause would load the database; "
    "use e.g. 2s", help="How often the database's revision is read.")
