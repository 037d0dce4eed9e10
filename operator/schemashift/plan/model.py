"""The plan: what will run, in which stages, what lint and the live data say about it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from schemashift import errors
    from schemashift.plan.phases import PhasePlan

from schemashift.plan.rules import EXPAND_CONTRACT

LINT_MODES = ("block", "warn", "off")
# A finding kept for the record that never blocks (see lint: unrenderable on a fresh database).
NOTICE = "notice"


@dataclass
class RevisionInfo:
    revision: str
    down_revision: str | None
    message: str
    path: str


@dataclass
class Stage:
    name: str
    revisions: list[str]
    target: str
    sql: str
    autocommit: bool  # uses autocommit_block(): parts run outside a transaction
    # Each step and the lock it takes (see `locks`): shown by `plan`, not part of status/hash.
    steps: list[str] = field(default_factory=list)

    @property
    def sql_sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass
class LintFinding:
    rule: str
    severity: str  # "error" | "warning" | NOTICE
    revision: str
    message: str  # says what is risky and the safe alternative


@dataclass
class IntegrityFinding:
    check: str  # "not-null" | "unique" | "foreign-key"
    revision: str
    table: str
    columns: list[str]
    count: int  # rows that would make the change fail
    message: str


@dataclass(frozen=True)
class Destroyed:
    """Data a step of the plan drops or rewrites, as lint found it (plan/destroys.py)."""

    revision: str
    rule: str  # drop-column | drop-table | change-column-type
    schema: str | None
    table: str
    column: str | None  # None: the whole table

    @property
    def where(self) -> str:
        table = f"{self.schema}.{self.table}" if self.schema else self.table
        return f"{table}.{self.column}" if self.column else table


@dataclass
class Plan:
    from_revision: str | None
    target_revision: str | None
    revisions: list[RevisionInfo]
    stages: list[Stage]
    lint: list[LintFinding]
    integrity: list[IntegrityFinding]
    hash: str
    # Expand/contract (plan/phases.py): the pending revisions by phase; None when not planned.
    phases: PhasePlan | None = None
    # Issue 14: what the runner copies before the change (not part of the hash: derived).
    destroys: list[Destroyed] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.revisions

    def refusal(self) -> errors.PolicyRefused | None:
        """Why the requested phase cannot run (nothing may change), if it cannot."""
        return self.phases.refusal if self.phases is not None else None

    def pending_contract(self, current: str | None) -> list[str]:
        """The contract revisions (up to the requested target) still pending at `current`."""
        return self.phases.pending_contract(current) if self.phases is not None else []

    def blocking(self, lint_mode: str, allow: Iterable[str]) -> list[LintFinding]:
        """Findings that stop a run: in `block` mode every finding (error or warning, not a
        notice) whose rule is not allowed; `warn` and `off` never block (integrity findings are
        not lint: they always stop a run, see `integrity`)."""
        if lint_mode not in LINT_MODES:
            raise ValueError(f"lint mode {lint_mode!r} is not one of {', '.join(LINT_MODES)}")
        if lint_mode != "block":
            return []
        allowed = set(allow)
        return [finding for finding in self.lint
                if finding.rule not in allowed and finding.severity != NOTICE]

    @property
    def needs_expand_contract(self) -> list[LintFinding]:
        """Findings no lock-safe form fixes in one step (an allowed one included: allowing
        it does not make it safe for the running release)."""
        return [finding for finding in self.lint if finding.rule in EXPAND_CONTRACT]

    def to_dict(self) -> dict[str, Any]:
        """The shape the operator stores in `status.plan` (camelCase, no SQL text)."""
        return {
            "fromRevision": self.from_revision,
            "targetRevision": self.target_revision,
            "revisions": [
                {"revision": r.revision, "downRevision": r.down_revision, "message": r.message}
                for r in self.revisions
            ],
            "stages": [
                {
                    "name": s.name,
                    "revisions": list(s.revisions),
                    "target": s.target,
                    "autocommit": s.autocommit,
                    "sqlSha256": s.sql_sha256,
                }
                for s in self.stages
            ],
            "lint": [
                {"rule": f.rule, "severity": f.severity, "revision": f.revision,
                 "message": f.message}
                for f in self.lint
            ],
            "integrity": [
                {"check": f.check, "revision": f.revision, "table": f.table,
                 "columns": list(f.columns), "count": f.count, "message": f.message}
                for f in self.integrity
            ],
            "hash": self.hash,
            **({"phase": self.phases.to_dict()} if self.phases is not None else {}),
        }

    def to_text(self) -> str:
        return "\n".join(_text_lines(self)) + "\n"


def plan_hash(from_revision: str | None, target_revision: str | None, stages: list[Stage]) -> str:
    """Changes whenever the database's revision, the target or any stage's SQL changes."""
    payload = json.dumps(
        {
            "from": from_revision,
            "target": target_revision,
            "stages": [{"revisions": s.revisions, "sql": s.sql} for s in stages],
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _expand_contract_lines(plan: Plan) -> list[str]:
    found = plan.needs_expand_contract
    if not found:
        return []
    return [f"Needs expand/contract ({len(found)}): no lock-safe form makes these in one step "
            "while the running release uses the table; ship the additive part and code that "
            "no longer needs the old shape first, and this in a later release",
            *(f"  {f.rule} [{f.revision}]: {f.message.split('; safe alternative', 1)[0]}"
              for f in found)]


def _text_lines(plan: Plan) -> list[str]:
    start = plan.from_revision or "base (empty history)"
    lines = [f"Database at: {start}", f"Target:      {plan.target_revision or 'base'}"]
    if plan.phases is not None and plan.phases.shown:
        lines += plan.phases.text_lines()
    if plan.is_empty and plan.from_revision != plan.target_revision:
        lines.append(f"Nothing to apply: the database is at {start}, past the target "
                     f"{plan.target_revision or 'base'}; plan and apply only upgrade (to go "
                     "back, restore a backup or run `alembic downgrade` deliberately).")
        lines.append(f"Plan hash: {plan.hash}")
        return lines
    if plan.is_empty:
        lines.append("Nothing to apply: the database is already at the target revision.")
        lines.append(f"Plan hash: {plan.hash}")
        return lines
    lines.append(f"Revisions to apply ({len(plan.revisions)}):")
    lines += [f"  {r.revision}  {r.message}" for r in plan.revisions]
    lines.append(f"Stages ({len(plan.stages)}):")
    for stage in plan.stages:
        note = "  [autocommit block: not one transaction]" if stage.autocommit else ""
        lines.append(f"  {stage.name}: {', '.join(stage.revisions)}{note}")
        lines += [f"    {step}" for step in stage.steps]
    lines.append(f"Lint findings ({len(plan.lint)}):" if plan.lint else "Lint findings: none")
    lines += [
        f"  {f.severity.upper():7} {f.rule} [{f.revision}]: {f.message}" for f in plan.lint
    ]
    lines += _expand_contract_lines(plan)
    if plan.integrity:
        lines.append(f"Integrity findings ({len(plan.integrity)}):")
        lines += [
            f"  {f.check} {f.table}({', '.join(f.columns)}) [{f.revision}]: {f.message}"
            for f in plan.integrity
        ]
    else:
        lines.append("Integrity findings: none")
    if plan.destroys:
        lines.append("Copied before the change (with a backup URL): " + ", ".join(
            f"{d.where} [{d.revision}: {d.rule}]" for d in plan.destroys))
    lines.append(f"Plan hash: {plan.hash}")
    for stage in plan.stages:
        lines += ["", f"-- Stage {stage.name} ({', '.join(stage.revisions)})", stage.sql.rstrip()]
    return lines
