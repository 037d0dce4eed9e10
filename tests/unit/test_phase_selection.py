"""Which pending revisions a phase applies, and when it is refused (plan/phases.select)."""

from __future__ import annotations

import pytest

from schemashift import reasons
from schemashift.plan.phases import PhasePlan, RevisionPhase, select


def pending(phases: str) -> list[RevisionPhase]:
    """'eec' -> e1 (expand), e2 (expand), c3 (contract)."""
    return [RevisionPhase(f"{p}{i}", {"e": "expand", "c": "contract"}[p], True, "marked")
            for i, p in enumerate(phases, start=1)]


@pytest.mark.parametrize(("phases", "requested", "count"), [
    ("eec", "expand", 2), ("eec", "all", 3), ("e", "expand", 1), ("c", "expand", 0),
    ("", "expand", 0), ("cce", "contract", 2), ("c", "contract", 1), ("e", "contract", 0),
    ("ccc", "contract", 3), ("ecec", "all", 4), ("", "contract", 0),
])
def test_a_phase_applies_a_prefix(phases: str, requested: str, count: int) -> None:
    assert select(requested, pending(phases)) == (count, None)


@pytest.mark.parametrize(("phases", "requested", "reason", "names"), [
    ("ece", "expand", reasons.EXPAND_SKIPS_CONTRACT, ("c2", "e3")),
    ("ce", "expand", reasons.EXPAND_SKIPS_CONTRACT, ("c1", "e2")),
    ("ec", "contract", reasons.CONTRACT_BEFORE_EXPAND, ("e1", "c2")),
    ("eecc", "contract", reasons.CONTRACT_BEFORE_EXPAND, ("e1, e2", "c3")),
])
def test_refusals_name_the_revisions(phases: str, requested: str, reason: str,
                                     names: tuple[str, str]) -> None:
    count, refusal = select(requested, pending(phases))
    assert count == 0 and refusal is not None and refusal.reason == reason
    assert all(name in refusal.args[0] for name in names), refusal.args[0]


def test_pending_contract_is_what_follows_the_database_revision() -> None:
    plan = PhasePlan("expand", pending("ecec"), 1, from_revision="r0")
    assert plan.pending_contract("r0") == ["c2", "c4"]
    assert plan.pending_contract("e1") == ["c2", "c4"]
    assert plan.pending_contract("e3") == ["c4"]
    assert plan.pending_contract("c4") == []
    assert plan.to_dict()["pendingContract"] == ["c2", "c4"]
