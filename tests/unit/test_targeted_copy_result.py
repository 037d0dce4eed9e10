"""The targeted copies in the run's result: typed, round-tripped through the termination message
(within the kubelet's limit), and in the SchemaMigration's status."""

from __future__ import annotations

import json

from schemashift.kube import status
from schemashift.progress import TERMINATION_MESSAGE_LIMIT, RunResult, TargetedCopy


def copy(number: int) -> TargetedCopy:
    return TargetedCopy(
        url=f"s3://backups/app/db/copies/20261201T120000.000Z-rev{number}-public.t{number}.copy",
        revision=f"rev{number}", rule="drop-column", table=f"public.t{number}",
        columns=["a", "b"], keyColumns=["id"], rows=10, sizeBytes=100, sha256="f" * 64,
        verified=True)


def result(copies: int) -> RunResult:
    return RunResult(outcome="RolledBack", reason="RolledBackByDowngrade", message="m" * 300,
                     exitCode=1, targetedCopies=[copy(n) for n in range(copies)])


def test_the_copies_survive_the_termination_message() -> None:
    sent = result(3)
    assert RunResult.from_dict(json.loads(sent.termination_message())) == sent


def test_many_copies_are_trimmed_to_the_kubelet_limit_keeping_the_first() -> None:
    message = result(40).termination_message()
    assert len(message.encode()) <= TERMINATION_MESSAGE_LIMIT
    back = RunResult.from_dict(json.loads(message))
    assert back.targetedCopies and back.targetedCopies == result(40).targetedCopies[
        :len(back.targetedCopies)]


def test_the_status_lists_the_copies() -> None:
    fields = status.result_fields(result(1))
    assert fields["targetedCopies"] == [copy(0).__dict__]
    assert "targetedCopies" not in status.result_fields(result(0))
