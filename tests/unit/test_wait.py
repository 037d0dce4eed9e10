"""`schemashift wait`: the pure decisions, and the exits that need no API server at all."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemashift import durations
from schemashift.kube import wait
from schemashift.runner import options_table as table


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("1h30m", 5400), ("500ms", 0.5), ("1.5s", 1.5), ("1.5h", 5400)],
)
def test_timeout_is_a_go_duration(text: str, seconds: float) -> None:
    assert table.WAIT_TIMEOUT.seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10x", "m", "5m extra", "-5s", "5 m", "1h-5m", "45",
                                  "0s", "31d", "800h"])
def test_bad_timeouts_are_refused(text: str) -> None:
    with pytest.raises(wait.errors.UsageError, match="timeout"):
        table.WAIT_TIMEOUT.seconds(text)


def test_format_duration() -> None:
    assert [wait.format_duration(s) for s in (0, 42, 185, 3723)] == [
        "0s",
        "42s",
        "3m05s",
        "1h02m03s",
    ]


def _obj(status: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    meta = {"name": "app-r3", "namespace": "shop", "generation": generation}
    return {"metadata": meta, "status": status}


def test_progress_line_names_phase_stage_revisions_and_backup() -> None:
    status = {
        "phase": "Migrating",
        "fromRevision": "1a2b",
        "targetRevision": "9f8e",
        "currentRevision": "5c6d",
        "stages": [
            {"name": "add_email", "state": "Succeeded"},
            {"name": "backfill_email", "state": "Running"},
            {"name": "email_not_null", "state": "Pending"},
        ],
        "backup": {"sizeBytes": 3 * 1024 * 1024, "verified": True},
        "message": "applying backfill_email",
    }
    assert wait.progress_line(status) == (
        "Migrating; stage 2/3 backfill_email (Running); revision 1a2b -> 5c6d (target 9f8e); "
        "backup 3.0 MiB, verified: applying backfill_email"
    )


def test_progress_line_of_an_empty_status_says_pending() -> None:
    assert wait.progress_line({}) == "Pending"


def test_progress_line_with_unverified_backup_in_progress() -> None:
    assert wait.progress_line({"phase": "BackingUp", "backup": {"url": "s3://b/p/"}}) == (
        "BackingUp; backup in progress"
    )


def test_verdict_succeeded() -> None:
    result = wait.verdict(_obj({"phase": "Succeeded", "message": "at 9f8e"}))
    assert result == wait.Verdict(0, "SchemaMigration shop/app-r3 Succeeded: at 9f8e")


def test_verdict_of_an_expand_names_the_contract_left() -> None:
    pending = {"type": "ContractPending", "status": "True", "reason": "ContractPending",
               "message": "contract revisions not applied yet: c3drop"}
    result = wait.verdict(_obj({"phase": "Succeeded", "message": "at b2",
                                "conditions": [pending]}))
    assert result == wait.Verdict(0, "SchemaMigration shop/app-r3 Succeeded: at b2\n"
                                     "  contract pending: contract revisions not applied yet: "
                                     "c3drop")
    done = wait.verdict(_obj({"phase": "Succeeded", "message": "at b2",
                              "conditions": [{**pending, "status": "False"}]}))
    assert done is not None and "contract" not in done.message


@pytest.mark.parametrize("phase", ["Failed", "RolledBack"])
def test_verdict_failed_names_message_and_reason(phase: str) -> None:
    status = {
        "phase": phase,
        "observedGeneration": 1,
        "message": "stage 2 failed: column email contains nulls",
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "MigrationFailed"},
            {"type": "Failed", "status": "True", "reason": "IntegrityCheckFailed"},
        ],
    }
    result = wait.verdict(_obj(status))
    assert result is not None and result.code == 1
    assert "column email contains nulls" in result.message
    assert "reason IntegrityCheckFailed" in result.message
    assert f"shop/app-r3 {phase}" in result.message


def test_verdict_falls_back_to_ready_false() -> None:
    status = {
        "phase": "Failed",
        "conditions": [{"type": "Ready", "status": "False", "reason": "SecretNotFound"}],
    }
    result = wait.verdict(_obj(status))
    assert result is not None and "condition Ready, reason SecretNotFound" in result.message


@pytest.mark.parametrize(
    "phase",
    [
        None,
        "Pending",
        "Planning",
        "AwaitingApproval",
        "BackingUp",
        "Migrating",
        "Verifying",
        "RollingBack",
    ],
)
def test_verdict_none_while_in_progress(phase: str | None) -> None:
    assert wait.verdict(_obj({"phase": phase} if phase else {})) is None


def test_failure_of_an_older_generation_is_not_final() -> None:
    stale = {"phase": "Failed", "observedGeneration": 1}
    assert wait.verdict(_obj(stale, generation=2)) is None
    assert wait.verdict(_obj(stale, generation=1)) is not None


def test_in_cluster_namespace_file(tmp_path: Path) -> None:
    path = tmp_path / "namespace"
    assert wait.in_cluster_namespace(path) is None
    path.write_text("shop\n")
    assert wait.in_cluster_namespace(path) == "shop"


@pytest.fixture
def no_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _kubeconfig(path: Path, server: str, namespace: str | None = None) -> Path:
    context: dict[str, Any] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": context}],
            }
        )
    )
    return path


def test_unreachable_api_server_exits_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_cluster: None
) -> None:
    server = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kc", server, "shop")))
    lines: list[str] = []
    code = wait.wait_for("app", timeout="1m", echo=lines.append, unreachable_grace=0.5)
    assert code == 3
    assert lines[0] == "waiting for SchemaMigration shop/app (timeout 1m00s)"
    assert lines[-1].startswith("error: Kubernetes API server unreachable")


def test_missing_kubeconfig_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_cluster: None
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    lines: list[str] = []
    assert wait.wait_for("app", echo=lines.append) == 2
    assert "no Kubernetes configuration found" in lines[-1]


def test_bad_timeout_exits_2_before_contacting_anything() -> None:
    lines: list[str] = []
    assert wait.wait_for("app", timeout="soon", echo=lines.append) == 2
    assert lines == [f"error: timeout 'soon' is not a duration\n  hint: {durations.HINT}"]


def test_in_a_pod_without_a_token_the_in_cluster_reason_is_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if (wait.IN_CLUSTER_NAMESPACE_FILE.parent / "token").exists():
        pytest.skip("this machine has an in-cluster ServiceAccount token")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    lines: list[str] = []
    assert wait.wait_for("app", echo=lines.append) == 2
    assert "token" in lines[-1].lower()
    assert "automountServiceAccountToken" in lines[-1]
