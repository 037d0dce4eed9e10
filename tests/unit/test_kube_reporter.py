"""The runner's pod log folded into status fields: the operator's only view of live progress."""

from __future__ import annotations

import io
from dataclasses import asdict

from schemashift import events, progress
from schemashift.kube import reporter

POINT = {"method": "restorePoint", "restorePoint": "hms-a1-20261125T175045.646Z",
         "lsn": "0/3000090", "segment": "000000010000000000000003"}


def log_of(*printed: events.Event) -> str:
    """What the runner prints: its JSON lines (the reporter it uses in the Job)."""
    out = io.StringIO()
    lines = progress.JsonLinesReporter(stream=out)
    for event in printed:
        lines.emit(event)
    return out.getvalue()


def test_runner_events_become_status() -> None:
    text = log_of(
        events.PhaseEntered(phase="BackingUp", message="backing up to s3://b/p/"),
        events.Transfer(kind="backup", state="InProgress", url="s3://b/p/x.dump",
                        bytes=3 * 1024 * 1024, mbps=9.5),
        events.StageChanged(stage=progress.StageStatus(name="a1", revision="a1",
                                                       state="Running")),
        events.StageChanged(stage=progress.StageStatus(name="a1", revision="a1",
                                                       state="Succeeded")),
        events.PlanMade(plan={"hash": "h", "revisions": [{"revision": "a1", "message": "m"}],
                              "lint": [{"rule": "r", "severity": "error", "revision": "a1",
                                        "message": "password=abc"}], "stages": []}))

    found = reporter.progress_from_log(text).fields

    assert found["phase"] == "BackingUp"
    assert found["backup"]["summary"] == "3.0MiB unverified"
    assert found["stages"] == [asdict(progress.StageStatus(name="a1", revision="a1",
                                                           state="Succeeded"))]
    assert found["currentRevision"] == "a1"
    assert found["plan"]["hash"] == "h"
    assert "abc" not in str(found)


def test_a_restore_point_shows_its_name_and_lsn_while_archiving_and_once_archived() -> None:
    archiving = events.RestorePointProgress(state="InProgress", message="archiving", **POINT)
    archived = events.RestorePointProgress(state="Verified", message="archived", **POINT)
    waiting = reporter.progress_from_log(log_of(archiving))
    done = reporter.progress_from_log(log_of(archiving, archived))

    assert waiting.fields["backup"]["summary"] == (
        "restorePoint hms-a1-20261125T175045.646Z @ 0/3000090 archiving")
    assert done.fields["backup"]["summary"] == (
        "restorePoint hms-a1-20261125T175045.646Z @ 0/3000090 archived")
    assert {k: done.fields["backup"][k] for k in ("method", "restorePoint", "lsn", "verified")
            } == {"method": "restorePoint", "restorePoint": "hms-a1-20261125T175045.646Z",
                  "lsn": "0/3000090", "verified": True}


def test_final_phases_are_left_to_the_operator() -> None:
    found = reporter.progress_from_log(log_of(
        events.PhaseEntered(phase="Planning", message="p"),
        events.PhaseEntered(phase="Migrating", message="m"),
        events.PhaseEntered(phase="Succeeded", message="dry run: a1→b2")))
    assert found.fields == {"phase": "Migrating", "message": "dry run: a1→b2"}
    assert found.phases == [("Planning", "p"), ("Migrating", "m")]


def test_lines_that_are_not_runner_events_are_ignored() -> None:
    text = ("Traceback (most recent call last):\n{not json\n"
            '{"event": 5}\n["a list"]\n'
            + log_of(events.PhaseEntered(phase="Planning", message="p")))
    assert reporter.progress_from_log(text).fields == {"phase": "Planning", "message": "p"}
