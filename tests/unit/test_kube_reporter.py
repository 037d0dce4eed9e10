"""Live progress from the Job: status patches from runner events; never fails the run."""

from __future__ import annotations

from typing import Any

import pytest

from schemashift import progress
from schemashift.kube import reporter


class Recorder:
    def __init__(self, fail: int = 0):
        self.patches: list[dict[str, Any]] = []
        self.fail = fail

    def __call__(self, update: dict[str, Any]) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("api down: postgresql://u:hunter22@db/x")
        self.patches.append(dict(update))


def test_runner_events_become_status() -> None:
    sink = Recorder()
    live = reporter.StatusReporter(sink)
    live.emit("phase", phase="BackingUp", message="backing up to s3://b/p/")
    live.emit("backup", state="InProgress", url="s3://b/p/x.dump", bytes=3 * 1024 * 1024, mbps=9.5)
    live.emit("stage", name="a1", revision="a1", state="Running")
    live.emit("stage", name="a1", revision="a1", state="Succeeded")
    live.emit("plan", plan={"hash": "h", "revisions": [{"revision": "a1", "message": "m"}],
                            "lint": [{"rule": "r", "severity": "error", "revision": "a1",
                                      "message": "password=abc"}], "stages": []})
    assert sink.patches[0] == {"phase": "BackingUp", "message": "backing up to s3://b/p/"}
    assert sink.patches[1]["backup"]["summary"] == "3.0MiB unverified"
    assert sink.patches[3]["stages"] == [{"name": "a1", "revision": "a1", "state": "Succeeded"}]
    assert sink.patches[4]["plan"]["hash"] == "h"
    assert "abc" not in str(sink.patches[4])


def test_final_phases_are_left_to_the_operator() -> None:
    sink = Recorder()
    reporter.StatusReporter(sink).emit("phase", phase="Succeeded", message="dry run: a1→b2")
    assert sink.patches == [{"message": "dry run: a1→b2"}]


def test_api_failure_never_fails_the_run(capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reporter, "_BACKOFF_S", 0.0)
    sink = Recorder(fail=1)
    live = reporter.StatusReporter(sink)
    live.emit("phase", phase="Migrating", message="m1")
    err = capsys.readouterr().err
    assert "live status update failed" in err and "hunter22" not in err
    live.emit("stage", name="a1", revision="a1", state="Running")
    assert sink.patches == [{"phase": "Migrating", "message": "m1",
                             "stages": [{"name": "a1", "revision": "a1", "state": "Running"}]}]


def test_without_a_resource_only_json_lines(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert isinstance(reporter.job_reporter(None), progress.JsonLinesReporter)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    found = reporter.job_reporter("shop/app")  # no in-cluster config here
    assert isinstance(found, progress.JsonLinesReporter)
    assert "reporting to stdout only" in capsys.readouterr().err
    found.emit("phase", phase="Planning")
    assert '"phase": "Planning"' in capsys.readouterr().out
