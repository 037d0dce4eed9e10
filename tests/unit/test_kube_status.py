"""Reading a Job's outcome and writing conditions: the termination message is the authority."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from schemashift import progress, reasons
from schemashift.kube import conditions
from schemashift.kube import status as kstatus

RESULT = progress.RunResult(
    outcome="RolledBack", reason=reasons.ROLLED_BACK_DOWNGRADE, message="stage b2 failed; undone",
    exitCode=1, fromRevision="a1", targetRevision="b2", currentRevision="a1", planHash="h1",
    stages=[progress.StageStatus("b2", "b2", "RolledBack")],
    backup=progress.BackupStatus("s3://b/k.dump", 2048, "ff", True, "2026-01-01T00:00:00Z"),
    undone=["b2"])


def job(*conds: tuple[str, str], deadline: int = 60) -> dict[str, Any]:
    return {"spec": {"activeDeadlineSeconds": deadline},
            "status": {"conditions": [{"type": t, "status": "True", "reason": r}
                                      for t, r in conds]}}


def pod(terminated: dict[str, Any] | None = None, waiting: dict[str, Any] | None = None,
        **status: Any) -> dict[str, Any]:
    state = {"terminated": terminated} if terminated else {"waiting": waiting} if waiting else {}
    return {"status": {**status, "containerStatuses": [{"name": "migrate", "state": state}]}}


def test_termination_message_is_the_result() -> None:
    message = RESULT.termination_message()
    outcome = kstatus.job_outcome(job(("Failed", "BackoffLimitExceeded")),
                                  [pod({"exitCode": 1, "message": message})])
    assert outcome.finished and outcome.result == RESULT
    assert outcome.reason == reasons.ROLLED_BACK_DOWNGRADE


def test_running_job_is_not_finished() -> None:
    assert not kstatus.job_outcome(job(), [pod(waiting={"reason": "ContainerCreating"})]).finished
    assert not kstatus.job_outcome(job(), []).finished


def test_deadline_exceeded_is_named() -> None:
    outcome = kstatus.job_outcome(job(("Failed", "DeadlineExceeded"), deadline=45), [])
    assert (outcome.finished, outcome.reason) == (True, reasons.DEADLINE_EXCEEDED)
    assert "45" in outcome.message and outcome.result is None


def test_evicted_pod_is_named() -> None:
    outcome = kstatus.job_outcome(job(), [pod(reason="Evicted", message="node low on memory")])
    assert (outcome.finished, outcome.reason) == (True, reasons.POD_EVICTED)
    assert "low on memory" in outcome.message


def test_image_pull_failure_stops_the_job() -> None:
    outcome = kstatus.job_outcome(job(), [pod(waiting={"reason": "ImagePullBackOff",
                                                       "message": "no such image x:1"})])
    assert (outcome.finished, outcome.reason, outcome.stop_job) == (
        True, reasons.IMAGE_PULL_FAILED, True)


def test_a_crash_without_result_is_scrubbed() -> None:
    logs = "Traceback...\npsycopg.OperationalError: postgresql://app:s3cr3t@db:5432/app refused"
    outcome = kstatus.job_outcome(job(("Failed", "BackoffLimitExceeded")),
                                  [pod({"exitCode": 1, "message": logs})])
    assert outcome.reason == reasons.JOB_FAILED_WITHOUT_RESULT
    assert "s3cr3t" not in outcome.message and "exit code 1" in outcome.message


def test_result_fields_and_conditions() -> None:
    fields = kstatus.result_fields(RESULT)
    assert fields["currentRevision"] == "a1" and fields["undone"] == ["b2"]
    assert fields["backup"]["summary"] == "2.0KiB verified"
    assert fields["plan"] == {"hash": "h1"}
    found = {c.type: c for c in conditions.from_result(RESULT, backup_enabled=True)}
    assert found["RolledBack"].status == "True"
    assert found["Migrated"].status == "False"
    assert found["BackupCompleted"].reason == reasons.BACKUP_VERIFIED


def test_a_restore_point_result_sets_method_name_and_lsn_in_status() -> None:
    point = progress.BackupStatus(url="", verified=True, completedAt="t", method="restorePoint",
                                  restorePoint="hms-a1-20261125T175045.646Z", lsn="0/3000090")
    fields = kstatus.result_fields(dataclasses.replace(RESULT, backup=point))
    assert fields["backup"]["method"] == "restorePoint"
    assert (fields["backup"]["restorePoint"], fields["backup"]["lsn"]) == (
        "hms-a1-20261125T175045.646Z", "0/3000090")
    assert fields["backup"]["summary"] == (
        "restorePoint hms-a1-20261125T175045.646Z @ 0/3000090 archived")


def test_transition_time_moves_only_when_status_flips() -> None:
    first = conditions.merge([], [conditions.Condition("Ready", "False", "A", "a")], 1, "t1")
    same = conditions.merge(first, [conditions.Condition("Ready", "False", "B", "b")], 2, "t2")
    flipped = conditions.merge(same, [conditions.Condition("Ready", "True", "C", "c")], 2, "t3")
    assert same[0]["lastTransitionTime"] == "t1" and same[0]["reason"] == "B"
    assert flipped[0]["lastTransitionTime"] == "t3" and flipped[0]["observedGeneration"] == 2


def test_kstatus_summary() -> None:
    def by_type(phase: str) -> dict[str, str]:
        return {c.type: c.status for c in conditions.summary(phase, "R", "m")}

    assert by_type("Succeeded") == {"Ready": "True", "Reconciling": "False", "Stalled": "False",
                                    "Failed": "False"}
    assert by_type("RolledBack")["Stalled"] == "True"
    assert by_type("Migrating")["Reconciling"] == "True"
    json.dumps(conditions.merge([], conditions.summary("Failed", "R", "m"), 1))


def test_a_finished_job_waits_for_its_stopping_pod() -> None:
    now = progress.now()
    finished = {"status": {"conditions": [{"type": "Failed", "status": "True",
                                           "reason": "DeadlineExceeded",
                                           "lastTransitionTime": now}]}}
    assert kstatus.pods_stopping(finished, [{"status": {"phase": "Running"}}])
    assert not kstatus.pods_stopping(finished, [{"status": {"phase": "Failed"}}])
    assert not kstatus.pods_stopping(finished, [{"status": {"phase": "Running"}}], grace_s=-1)
