"""The runner's typed events: their JSON lines, parsed back, and folded into status."""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from typing import Any, get_args

import pytest

from schemashift import events, progress
from schemashift.kube import reporter
from schemashift.progress import BackupStatus, RunResult, StageStatus, TargetedCopy

STAGE = StageStatus(name="1-b2", revision="b2", state="Succeeded", startedAt="t0",
                    finishedAt="t1", attempts=2, message=None)
RESULT = RunResult(
    outcome="RolledBack", reason="RolledBackByDowngrade", message="undone", exitCode=1,
    fromRevision="a0", targetRevision="b2", currentRevision="a0", planHash="h",
    stages=[StageStatus(name="1-b2", revision="b2", state="RolledBack")],
    backup=BackupStatus(url="s3://b/p/x.dump", sizeBytes=9, sha256="abc", verified=True),
    undone=["b2"], targetedCopies=[TargetedCopy(
        url="s3://b/c", revision="b2", rule="drop-column", table="public.t", columns=["c"],
        keyColumns=["id"], rows=3)])
POINT: dict[str, Any] = {"method": "restorePoint", "restorePoint": "p1", "lsn": "0/1",
                         "segment": "000000010000000000000001"}

ONE_OF_EACH: list[events.Event] = [
    events.PhaseEntered(phase="BackingUp", message="backing up"),
    events.PlanMade(plan={"hash": "h", "revisions": [{"revision": "b2"}], "stages": []}),
    events.StageChanged(stage=STAGE),
    events.LockRetried(stage=None, attempt=1, wait_seconds=2.5, retries=3, message="lock"),
    events.Transfer(kind="backup", state="Verified", url="s3://b/x", bytes=9, mbps=0.5,
                    detail={"sha256": "abc", "entries": 12, "parts": 2}),
    events.Transfer(kind="restore", state="Restored", url="s3://b/x", bytes=9, mbps=1.0),
    events.Transfer(kind="targeted_copy", state="InProgress", url="s3://b/c", bytes=0,
                    mbps=0.0, detail={"table": "public.t", "columns": ["c"], "matchedBy": "pk",
                                      "waitingSeconds": 4, "message": "stalled"}),
    events.RestorePointProgress(state="InProgress", waitingSeconds=2, lastArchivedWal="0000",
                                message="waiting", **POINT),
    events.RestorePointProgress(state="Verified", message="archived", **POINT),
    events.CopySkipped(revision="b2", table="public.t", message="not copied: no key"),
    events.BackupCleanup(prefix="s3://b/p/", removed=["x"], kept=["y"], message="removed 1"),
    events.BackupRetention(limits="keep 2", deleted=["d"], kept=["k"], problems=["p"],
                           message="retention"),
    events.BackupRetention(limits="keep 2", deleted=[], kept=[], message="not applied"),
    events.BackupEstimate(copiedBytes=10, tableBytes=100, databaseBytes=200, mbps=1.5,
                          projectedSeconds=30, remainingSeconds=20, fits=True),
    events.EstimateUnavailable(message="no estimate of the dump's duration: OSError"),
    events.Finished(result=RESULT),
]


def printed(*sent: events.Event) -> list[str]:
    out = io.StringIO()
    for event in sent:
        progress.JsonLinesReporter(stream=out).emit(event)
    return out.getvalue().splitlines()


def test_one_of_each_covers_every_event_class() -> None:
    assert {type(e) for e in ONE_OF_EACH} == set(get_args(events.Event))


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=lambda e: type(e).__name__)
def test_every_event_reads_back_from_its_json_line(event: events.Event) -> None:
    [line] = printed(event)
    record = json.loads(line)
    assert record["event"] == event.event_name() and isinstance(record["time"], str)
    assert events.parse(record) == event
    assert events.parse_line(line) == event


def test_wire_names_and_fields_are_those_scripts_and_tests_read() -> None:
    assert [e.event_name() for e in ONE_OF_EACH] == [
        "phase", "plan", "stage", "lock_retry", "backup", "restore", "targeted_copy", "backup",
        "backup", "targeted_copy", "backup_cleanup", "backup_retention", "backup_retention",
        "backup_estimate", "backup_estimate", "result"]
    transfer = json.loads(printed(ONE_OF_EACH[4])[0])
    assert list(transfer) == ["event", "time", "state", "url", "bytes", "mbps", "sha256",
                              "entries", "parts"]
    assert "problems" not in ONE_OF_EACH[12].to_wire()  # optional fields left out, not null
    assert ONE_OF_EACH[3].to_wire()["stage"] is None  # a declared value, even when None
    assert events.Finished(result=RESULT).to_wire() == RESULT.to_dict()
    assert events.StageChanged(stage=STAGE).to_wire() == asdict(STAGE)


@pytest.mark.parametrize("record", [
    {}, {"event": 5}, {"event": "nonsense", "message": "m"}, {"event": "phase"},
    {"event": "phase", "phase": "Sleeping", "message": "m"},
    {"event": "phase", "phase": "Planning", "message": 3},
    {"event": "stage", "revision": "b2"}, {"event": "stage", "name": "s", "revision": 2},
    {"event": "lock_retry", "stage": "s", "attempt": True, "wait_seconds": 1, "retries": 3,
     "message": "m"},
    {"event": "backup", "state": "Verified", "url": "s3://b/x", "bytes": "9", "mbps": 1.0},
    {"event": "backup", "state": "Lost", "url": "s3://b/x", "bytes": 9, "mbps": 1.0},
    {"event": "backup", "state": "Verified", "url": "s3://b/x", "bytes": 9, "mbps": 1.0,
     "entries": "many"},
    {"event": "backup_cleanup", "prefix": "p", "removed": [1], "kept": [], "message": "m"},
    {"event": "plan", "plan": ["not", "a", "mapping"]},
    {"event": "result", "outcome": "Succeeded"},
    {"event": "result", **{**RESULT.to_dict(), "stages": "garbled"}},
    {"event": "result", **{**RESULT.to_dict(), "exitCode": "1"}},
    {"event": "result", **{**RESULT.to_dict(), "stages": [{"name": "s", "revision": None}]}},
])
def test_records_that_are_no_runner_event_parse_to_none(record: dict[str, Any]) -> None:
    assert events.parse(record) is None


@pytest.mark.parametrize("line", [
    "", "Traceback (most recent call last):", "{not json", '["a list"]', "{}", '{"event": null}',
    '{"event": "result", "outcome": {"nested": [1, 2]}}', "{" * 5000, '{"event": "phase"}',
    '{"event": "phase", "phase": ' + "[" * 100_000 + "]" * 100_000 + "}",
])
def test_lines_that_are_no_runner_event_parse_to_none(line: str) -> None:
    assert events.parse_line(line) is None


def test_unknown_fields_of_a_known_event_are_ignored() -> None:
    line = '{"event": "phase", "time": "t", "phase": "Migrating", "message": "m", "new": 1}'
    assert events.parse_line(line) == events.PhaseEntered(phase="Migrating", message="m")


def test_a_run_folds_into_the_status_updates_it_always_made() -> None:
    """The updates the operator wrote when it read the same lines as plain dicts."""
    fold = reporter.ProgressFold()
    sent = [
        events.PlanMade(plan={"hash": "h", "fromRevision": "a0", "targetRevision": "b2",
                              "revisions": [{"revision": "b2", "message": "m", "sql": "DROP"}],
                              "lint": [{"rule": "r", "severity": "error", "revision": "b2",
                                        "message": "password=abc"}]}),
        events.Transfer(kind="backup", state="Verified", url="s3://b/x", bytes=3 * 1024 * 1024,
                        mbps=2.0, detail={"sha256": "abc", "entries": 12}),
        events.LockRetried(stage="1-b2", attempt=1, wait_seconds=2.5, retries=3, message="lock"),
        events.StageChanged(stage=StageStatus(name="1-b2", revision="b2", state="Succeeded",
                                              attempts=2)),
        events.PhaseEntered(phase="Succeeded", message="done"),
        events.Finished(result=RunResult(
            outcome="Succeeded", reason="Applied", message="done", exitCode=0,
            fromRevision="a0", targetRevision="b2", currentRevision="b2",
            stages=[StageStatus(name="1-b2", revision="b2", state="Succeeded")])),
    ]
    stage = asdict(StageStatus(name="1-b2", revision="b2", state="Succeeded"))
    updates = [fold.status_update(events.parse_line(line) or pytest.fail(line))
               for line in printed(*sent)]
    assert updates == [
        {"plan": {"hash": "h", "revisions": [{"revision": "b2", "message": "m"}],
                  "lint": [{"rule": "r", "severity": "error", "revision": "b2",
                            "message": "password=***"}]},
         "fromRevision": "a0", "currentRevision": "a0", "targetRevision": "b2"},
        {"backup": {"url": "s3://b/x", "sha256": "abc", "sizeBytes": 3145728, "verified": True,
                    "state": "Verified", "mbps": 2.0, "summary": "3.0MiB verified"}},
        {"message": "lock"},
        {"currentRevision": "b2", "stages": [{**stage, "attempts": 2}]},
        {"message": "done"},
        {"fromRevision": "a0", "targetRevision": "b2", "currentRevision": "b2",
         "stages": [stage]},
    ]


def test_skipped_copies_and_housekeeping_only_say_their_message() -> None:
    fold = reporter.ProgressFold()
    assert fold.status_update(ONE_OF_EACH[9]) == {"message": "not copied: no key"}
    assert fold.status_update(ONE_OF_EACH[10]) == {"message": "removed 1"}
    assert fold.status_update(ONE_OF_EACH[13]) == {}
    assert fold.status_update(ONE_OF_EACH[5]) == {}  # a restore's bytes are not the backup's


def test_a_restore_point_still_waiting_says_no_segment_is_archived_yet() -> None:
    waiting = events.RestorePointProgress(state="InProgress", waitingSeconds=2,
                                          lastArchivedWal=None, message="waiting", **POINT)
    [line] = printed(waiting)
    assert list(json.loads(line))[2:5] == ["state", "waitingSeconds", "lastArchivedWal"]
    assert json.loads(line)["lastArchivedWal"] is None
    assert events.parse_line(line) == waiting
