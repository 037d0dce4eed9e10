"""The runner's pod log folded into status fields: the operator's only view of live progress."""

from __future__ import annotations

import io
from typing import Any

from schemashift import progress
from schemashift.kube import reporter


def log_of(*events: tuple[str, dict[str, Any]]) -> str:
    """What the runner prints: its JSON lines (the reporter it uses in the Job)."""
    out = io.StringIO()
    lines = progress.JsonLinesReporter(stream=out)
    for event, fields in events:
        lines.emit(event, **fields)
    return out.getvalue()


def test_runner_events_become_status() -> None:
    text = log_of(
        ("phase", {"phase": "BackingUp", "message": "backing up to s3://b/p/"}),
        ("backup", {"state": "InProgress", "url": "s3://b/p/x.dump", "bytes": 3 * 1024 * 1024,
                    "mbps": 9.5}),
        ("stage", {"name": "a1", "revision": "a1", "state": "Running"}),
        ("stage", {"name": "a1", "revision": "a1", "state": "Succeeded"}),
        ("plan", {"plan": {"hash": "h", "revisions": [{"revision": "a1", "message": "m"}],
                           "lint": [{"rule": "r", "severity": "error", "revision": "a1",
                                     "message": "password=abc"}], "stages": []}}))

    found = reporter.progress_from_log(text).fields

    assert found["phase"] == "BackingUp"
    assert found["backup"]["summary"] == "3.0MiB unverified"
    assert found["stages"] == [{"name": "a1", "revision": "a1", "state": "Succeeded"}]
    assert found["currentRevision"] == "a1"
    assert found["plan"]["hash"] == "h"
    assert "abc" not in str(found)


def test_a_restore_point_shows_its_name_and_lsn_while_archiving_and_once_archived() -> None:
    point = {"method": "restorePoint", "restorePoint": "hms-a1-20261125T175045.646Z",
             "lsn": "0/3000090", "segment": "000000010000000000000003"}
    waiting = reporter.progress_from_log(log_of(("backup", {"state": "InProgress", **point})))
    done = reporter.progress_from_log(log_of(("backup", {"state": "InProgress", **point}),
                                             ("backup", {"state": "Verified", **point})))

    assert waiting.fields["backup"]["summary"] == (
        "restorePoint hms-a1-20261125T175045.646Z @ 0/3000090 archiving")
    assert done.fields["backup"]["summary"] == (
        "restorePoint hms-a1-20261125T175045.646Z @ 0/3000090 archived")
    assert {k: done.fields["backup"][k] for k in ("method", "restorePoint", "lsn", "verified")
            } == {"method": "restorePoint", "restorePoint": "hms-a1-20261125T175045.646Z",
                  "lsn": "0/3000090", "verified": True}


def test_final_phases_are_left_to_the_operator() -> None:
    found = reporter.progress_from_log(log_of(
        ("phase", {"phase": "Planning", "message": "p"}),
        ("phase", {"phase": "Migrating", "message": "m"}),
        ("phase", {"phase": "Succeeded", "message": "dry run: a1→b2"})))
    assert found.fields == {"phase": "Migrating", "message": "dry run: a1→b2"}
    assert found.phases == [("Planning", "p"), ("Migrating", "m")]


def test_lines_that_are_not_runner_events_are_ignored() -> None:
    text = ("Traceback (most recent call last):\n{not json\n"
            '{"event": 5}\n["a list"]\n'
            + log_of(("phase", {"phase": "Planning", "message": "p"})))
    assert reporter.progress_from_log(text).fields == {"phase": "Planning", "message": "p"}
