"""A revision's own lint override: a module-level `schemashift` dict in the revision file.

    schemashift = {"allow": ["drop-column"]}
    schemashift = {"phase": "contract"}      # expand/contract (plan/phases.py)

Alembic ignores module attributes it does not know, so the file stays a plain revision. The
findings of an allowed rule in that revision are kept in the plan, as notices that never block
(`--allow` / `spec.safety.allow` accept a rule for a whole run instead). The dict is validated
when the plan is built: an unknown key, an unknown rule name or a value of the wrong shape stops
planning with what is wrong and what is accepted, rather than being ignored.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

from schemashift import errors, reasons, release_phases
from schemashift.plan.model import NOTICE, LintFinding
from schemashift.plan.rules import RULES

ATTRIBUTE = "schemashift"
EXAMPLE = f'{ATTRIBUTE} = {{"allow": ["drop-column"]}}'
# Keys someone may reasonably expect, and where that setting lives instead.
_ELSEWHERE = {
    "lock_timeout": "the lock timeout is set per run (--lock-timeout, spec.safety.lockTimeout)",
    "statement_timeout": "the statement timeout is set per run (--statement-timeout, "
                         "spec.safety.statementTimeout)",
}


@dataclass(frozen=True)
class Override:
    allow: frozenset[str] = frozenset()
    phase: str | None = None  # release_phases.MARKS; None: classified from what it does


NO_OVERRIDE = Override()


def read_override(module: ModuleType, path: str) -> Override:
    """The revision module's `schemashift` dict, validated (UsageError when it is wrong)."""
    value = getattr(module, ATTRIBUTE, None)
    if value is None:
        return NO_OVERRIDE
    if not isinstance(value, dict):
        _refuse(path, f"`{ATTRIBUTE}` must be a dict, not {type(value).__name__}")
    unknown = sorted(str(key) for key in value if key not in _KEYS)
    if unknown:
        why = "; ".join(_ELSEWHERE[key] for key in unknown if key in _ELSEWHERE)
        _refuse(path, f"`{ATTRIBUTE}` has the unknown key(s) {', '.join(map(repr, unknown))}"
                f" (the keys are {', '.join(map(repr, _KEYS))}){'; ' + why if why else ''}")
    return Override(allow=_rule_names(value.get("allow", []), path),
                    phase=_phase(value.get(release_phases.KEY), path))


_KEYS = ("allow", release_phases.KEY)


def _phase(value: object, path: str) -> str | None:
    if value is None:
        return None
    problem = release_phases.marker_problem(value)
    if problem is not None:
        raise errors.UsageError(
            f"revision file {path}: `{ATTRIBUTE}[\"{release_phases.KEY}\"]` {problem}",
            hint=f"write {ATTRIBUTE} = {{\"{release_phases.KEY}\": \"{release_phases.EXPAND}\"}} "
                 f"or {{\"{release_phases.KEY}\": \"{release_phases.CONTRACT}\"}}",
            reason=reasons.INVALID_INPUT)
    assert isinstance(value, str)
    return value


def _rule_names(allow: object, path: str) -> frozenset[str]:
    if not isinstance(allow, (list, tuple)) or not all(isinstance(n, str) for n in allow):
        _refuse(path, f"`{ATTRIBUTE}[\"allow\"]` must be a list of lint rule names, not "
                f"{allow!r}")
    assert isinstance(allow, (list, tuple))
    for name in allow:
        if name not in RULES:
            near = difflib.get_close_matches(name, RULES, n=1)
            _refuse(path, f"`{ATTRIBUTE}[\"allow\"]` names {name!r}, which is not a lint rule"
                    + (f" (did you mean {near[0]!r}?)" if near else ""))
    return frozenset(allow)


def _refuse(path: str, what: str) -> None:
    raise errors.UsageError(
        f"revision file {path}: {what}",
        hint=f"write it as {EXAMPLE}; the rules are: {', '.join(sorted(RULES))}",
        reason=reasons.INVALID_INPUT)


def apply_overrides(findings: Sequence[LintFinding],
                    overrides: dict[str, Override]) -> list[LintFinding]:
    """Findings of a rule the revision allows become notices saying so; the rest stay."""
    return [_allowed(f) if f.rule in overrides.get(f.revision, NO_OVERRIDE).allow else f
            for f in findings]


def _allowed(finding: LintFinding) -> LintFinding:
    return LintFinding(finding.rule, NOTICE, finding.revision,
                       f"allowed by the revision's `{ATTRIBUTE}` override: {finding.message}")


__all__ = ["ATTRIBUTE", "NO_OVERRIDE", "Override", "apply_overrides", "read_override"]
