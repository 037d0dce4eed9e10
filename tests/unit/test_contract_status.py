"""Condition ContractPending (issue 13): written by the operator alone, from the run's result.

A succeeded expand that leaves contract revisions is still Ready (kstatus): that phase succeeded;
the pending work is said by ContractPending, not by Ready, Reconciling or Stalled.
"""

from __future__ import annotations

import json

import pytest

from schemashift import progress, reasons
from schemashift.kube import conditions
from schemashift.operator import reconcile
from tests.unit.test_operator_reconcile import FakeApi, job_env, result, run


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def ctx(api: FakeApi) -> reconcile.Context:
    return reconcile.Context(api=api, peers=api)


def kstatus_of(api: FakeApi, name: str) -> dict[str, str]:
    return {t: api.condition(name, t)["status"] for t in ("Ready", "Reconciling", "Stalled")}


def test_a_succeeded_expand_with_contract_left_is_ready_and_says_what_waits(
    api: FakeApi, ctx: reconcile.Context
) -> None:
    api.add("expand", phase="expand")
    run(ctx, "expand")
    assert job_env(api, api.status("expand")["jobName"])["SCHEMASHIFT_PHASE"] == "expand"
    api.finish("expand", result(pendingContract=["c3drop", "d4narrow"]))
    run(ctx, "expand")
    assert api.status("expand")["phase"] == "Succeeded"
    assert kstatus_of(api, "expand") == {"Ready": "True", "Reconciling": "False",
                                         "Stalled": "False"}
    pending = api.condition("expand", "ContractPending")
    assert (pending["status"], pending["reason"]) == ("True", reasons.CONTRACT_PENDING)
    assert "c3drop, d4narrow" in pending["message"] and "phase: contract" in pending["message"]


def test_a_succeeded_contract_says_nothing_is_pending(
    api: FakeApi, ctx: reconcile.Context
) -> None:
    api.add("contract", phase="contract")
    run(ctx, "contract")
    api.finish("contract", result())
    run(ctx, "contract")
    pending = api.condition("contract", "ContractPending")
    assert (pending["status"], pending["reason"]) == ("False", reasons.NO_CONTRACT_PENDING)
    assert kstatus_of(api, "contract")["Ready"] == "True"


def test_a_failed_run_that_named_no_revisions_leaves_it_unknown(
    api: FakeApi, ctx: reconcile.Context
) -> None:
    api.add("broken", phase="contract")
    run(ctx, "broken")
    api.finish("broken", result("RolledBack", reasons.ROLLED_BACK_DOWNGRADE, current="a1",
                                message="c3 failed; the database is at revision a1"))
    run(ctx, "broken")
    pending = api.condition("broken", "ContractPending")
    assert (pending["status"], pending["reason"]) == ("Unknown", reasons.ROLLED_BACK_DOWNGRADE)
    assert kstatus_of(api, "broken")["Stalled"] == "True"


def test_a_failed_run_that_named_revisions_keeps_them_visible(
    api: FakeApi, ctx: reconcile.Context
) -> None:
    api.add("broken", phase="contract")
    run(ctx, "broken")
    api.finish("broken", result("RolledBack", reasons.ROLLED_BACK_DOWNGRADE, current="b2",
                                pendingContract=["c3drop"]))
    run(ctx, "broken")
    assert api.condition("broken", "ContractPending")["status"] == "True"
    assert api.condition("broken", "Ready")["status"] == "False"


def test_a_dry_run_names_pending_contract_only_when_the_runner_found_some(
    api: FakeApi, ctx: reconcile.Context
) -> None:
    api.add("quiet", dryRun=True)
    run(ctx, "quiet")
    api.finish("quiet", result("Planned", reasons.PLANNED))
    run(ctx, "quiet")
    assert "ContractPending" not in {c["type"] for c in api.status("quiet")["conditions"]}
    api.add("loud", dryRun=True, phase="expand")
    run(ctx, "loud")
    api.finish("loud", result("Planned", reasons.PLANNED, pendingContract=["c3drop"]))
    run(ctx, "loud")
    assert api.condition("loud", "ContractPending")["status"] == "True"


def test_the_condition_moves_its_transition_time_only_when_it_flips() -> None:
    expand = progress.RunResult("Succeeded", reasons.SUCCEEDED, "ok", 0, pendingContract=["c3"])
    done = progress.RunResult("Succeeded", reasons.SUCCEEDED, "ok", 0)
    first = conditions.merge([], [c for c in [conditions.contract_pending(expand)] if c], 1, "t1")
    again = conditions.merge(first, [c for c in [conditions.contract_pending(expand)] if c], 1,
                             "t2")
    flipped = conditions.merge(again, [c for c in [conditions.contract_pending(done)] if c], 2,
                               "t3")
    assert again[0]["lastTransitionTime"] == "t1"
    assert (flipped[0]["status"], flipped[0]["lastTransitionTime"]) == ("False", "t3")


def test_the_result_carries_pending_contract_through_the_termination_message() -> None:
    sent = progress.RunResult("Succeeded", reasons.SUCCEEDED, "ok", 0, pendingContract=["c3"])
    received = progress.RunResult.from_dict(json.loads(sent.termination_message()))
    assert received.pendingContract == ["c3"]
    found = conditions.contract_pending(received)
    assert found is not None and found.status == "True"
