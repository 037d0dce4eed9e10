"""Expand/contract: which pending revisions a run of a given phase applies.

A revision is `expand` or `contract` by its own marker (`schemashift = {"phase": ...}`, written
by create-model-migration) or, without one, by what it does: `contract` when one of its
operations breaks the code of the release that ran before the plan (plan/compat.py: a drop, a
rename, a narrowing, a new NOT NULL without a default, on what the database held), `expand`
otherwise. That keeps a plain Alembic history (all unmarked) working: its additive revisions go
out before the rollout, the destructive ones after it. A revision whose upgrade() cannot be
previewed offline counts as `expand` — the runner's catalog check after an expand catches what it
did (runner/compat_gate.py).

The history stays one linear chain (plain `alembic upgrade head` still works), so a phase is a
prefix of the pending revisions:
- `expand` applies the pending revisions up to the first contract revision. When an expand
  revision comes after a pending contract revision, the expand would have to jump over that
  contract (an earlier release's, or one out of order): refused, nothing changed.
- `contract` applies the leading contract revisions; refused when expand revisions come first
  ("contract refused before its expand").
- `all` applies everything to the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from schemashift import errors, reasons
from schemashift.plan import compat
from schemashift.plan.live import NO_FACTS, LiveFacts
from schemashift.plan.model import NOTICE, LintFinding
from schemashift.plan.render import RenderedRevision
from schemashift.plan.rules import READER_RULES
from schemashift.release_phases import ALL, CONTRACT, EXPAND


@dataclass
class RevisionPhase:
    revision: str
    phase: str  # EXPAND | CONTRACT
    marked: bool  # by the revision's own `schemashift` dict
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"revision": self.revision, "phase": self.phase, "marked": self.marked,
                "why": self.why}


@dataclass
class PhasePlan:
    """The pending revisions (up to the requested target) by phase, and what a run applies."""

    requested: str  # release_phases.CHOICES
    revisions: list[RevisionPhase]
    selected: int  # how many of `revisions`, from the first, the run applies
    from_revision: str | None = None
    refusal: errors.PolicyRefused | None = None
    # The selected revisions' operations that break the previous release (expand only).
    breaking: list[compat.Break] = field(default_factory=list)

    @property
    def contract(self) -> list[str]:
        return [r.revision for r in self.revisions if r.phase == CONTRACT]

    def pending_contract(self, current: str | None) -> list[str]:
        """The contract revisions still to apply once the database is at `current`."""
        names = [r.revision for r in self.revisions]
        start = names.index(current) + 1 if current in names else 0
        return [r.revision for r in self.revisions[start:] if r.phase == CONTRACT]

    @property
    def shown(self) -> bool:
        """Worth a section in `plan`: a phase was asked for, or contract work is pending."""
        return self.requested != ALL or bool(self.contract)

    def to_dict(self) -> dict[str, Any]:
        applied = self.revisions[self.selected - 1].revision if self.selected else \
            self.from_revision
        return {
            "requested": self.requested,
            "revisions": [r.to_dict() for r in self.revisions],
            "pendingContract": self.pending_contract(applied),
            "breaking": [{"revision": b.revision, "what": b.what, "why": b.why}
                         for b in self.breaking],
        }

    def text_lines(self) -> list[str]:
        lines = [f"Phase:       {self.requested} ({self._summary()})"]
        lines += [f"  {r.revision}  {r.phase:8}  {'marked' if r.marked else r.why}"
                  + ("" if index < self.selected else "  [not in this run]")
                  for index, r in enumerate(self.revisions)]
        if self.refusal is not None:
            lines.append(f"Refused ({self.refusal.reason}): {self.refusal.args[0]}")
        return lines

    def _summary(self) -> str:
        pending = len(self.revisions)
        return f"applies {self.selected} of {pending} pending revision(s)"


def plan_phases(requested: str, rendered: Sequence[RenderedRevision], from_revision: str | None,
                facts: LiveFacts = NO_FACTS) -> PhasePlan:
    classified = classify(rendered, facts)
    selected, refusal = select(requested, classified)
    breaking = []
    if requested == EXPAND and refusal is None:
        breaking = compat.breaking_changes(rendered[:selected], facts)
        refusal = incompatible(breaking) if breaking else None
    return PhasePlan(requested, classified, selected, from_revision, refusal, breaking)


def classify(rendered: Sequence[RenderedRevision],
             facts: LiveFacts = NO_FACTS) -> list[RevisionPhase]:
    breaks: dict[str, list[compat.Break]] = {}
    for found in compat.breaking_changes(rendered, facts):
        breaks.setdefault(found.revision, []).append(found)
    result = []
    for revision in rendered:
        marked = revision.override.phase
        if marked is not None:
            why = "marked in the revision"
            result.append(RevisionPhase(revision.revision, marked, True, why))
        elif revision.revision in breaks:
            why = "; ".join(b.what for b in breaks[revision.revision])
            result.append(RevisionPhase(revision.revision, CONTRACT, False, why))
        elif revision.error is not None:
            result.append(RevisionPhase(revision.revision, EXPAND, False, (
                "could not be previewed offline: counted as expand (the catalog is checked "
                "after an expand)")))
        else:
            result.append(RevisionPhase(revision.revision, EXPAND, False,
                                        "breaks nothing the previous release uses"))
    return result


def select(requested: str,
           classified: Sequence[RevisionPhase]) -> tuple[int, errors.PolicyRefused | None]:
    phases = [r.phase for r in classified]
    if requested == ALL:
        return len(classified), None
    if requested == EXPAND:
        first = phases.index(CONTRACT) if CONTRACT in phases else len(phases)
        later = [r.revision for r in classified[first:] if r.phase == EXPAND]
        if later:
            return 0, _skip_over_contract(classified[first].revision, later,
                                          classified[:first])
        return first, None
    leading = phases.index(EXPAND) if EXPAND in phases else len(phases)
    contract = [r.revision for r in classified[leading:] if r.phase == CONTRACT]
    if leading == 0 and contract:
        first = phases.index(CONTRACT)
        return 0, _contract_before_expand(contract[0], [r.revision for r in classified[:first]])
    return leading, None


def lint_for_phase(findings: Sequence[LintFinding], by_phase: PhasePlan) -> list[LintFinding]:
    """A contract run is the safe alternative the reader rules ask for (drop or rename once no
    running code uses the object): their findings become notices saying so."""
    if by_phase.requested != CONTRACT:
        return list(findings)
    return [LintFinding(f.rule, NOTICE, f.revision,
                        "in a contract run, after the rollout (what it drops is gone: keep a "
                        f"backup): {f.message}")
            if f.rule in READER_RULES and f.severity != NOTICE else f for f in findings]


def _skip_over_contract(contract: str, later: list[str],
                        before: Sequence[RevisionPhase]) -> errors.PolicyRefused:
    ready = (f"; the expand revision(s) before it ({', '.join(r.revision for r in before)}) "
             "were not applied either") if before else ""
    return errors.PolicyRefused(
        f"expand would jump over the unapplied contract revision {contract}: the expand "
        f"revision(s) {', '.join(later)} come after it in the history, and the database "
        f"cannot reach them without applying {contract}, which the running release may not "
        f"survive{ready}",
        hint=f"finish the earlier release first: once no code that needs what {contract} "
             "removes is running, apply its contract (schemashift apply --phase contract), or "
             f"step through the releases with --target ({contract} is the next stop); if both "
             "belong to this release, regenerate so its expand revisions come first, or apply "
             "--phase all in a maintenance window",
        reason=reasons.EXPAND_SKIPS_CONTRACT)


def _contract_before_expand(contract: str, expand: list[str]) -> errors.PolicyRefused:
    return errors.PolicyRefused(
        f"contract refused before its expand: the expand revision(s) {', '.join(expand)} "
        f"come before the contract revision {contract} and are not applied",
        hint="apply the expand phase first (schemashift apply --phase expand), roll out the "
             "release that needs it, then apply --phase contract",
        reason=reasons.CONTRACT_BEFORE_EXPAND)


def incompatible(breaking: Sequence[compat.Break]) -> errors.PolicyRefused:
    lines = "; ".join(f"[{b.revision}] {b.text}" for b in breaking)
    return errors.PolicyRefused(
        f"the expand phase would break the running release, {len(breaking)} change(s): "
        f"{lines}",
        hint="move these changes to a contract revision (schemashift = {\"phase\": "
             "\"contract\"} in the revision file, or regenerate with create-model-migration, "
             "which splits them), or apply with --phase all once the old release is gone",
        reason=reasons.INCOMPATIBLE_EXPAND)


__all__ = ["PhasePlan", "RevisionPhase", "classify", "incompatible", "lint_for_phase",
           "plan_phases", "select"]
