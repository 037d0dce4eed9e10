"""`schemashift wait` against the real API server, with the operator driving the resources."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemashift.kube import wait
from tests.e2e.operator_fixtures import Migrations
from tests.e2e.testbed.controlplane import ControlPlane

pytestmark = pytest.mark.e2e

HMS_MIGRATIONS = Path(__file__).resolve().parents[2] / "examples" / "hms" / "migrations"


def spec(secret: str = "app-db") -> dict[str, object]:
    return {
        "database": {"urlSecretRef": {"name": secret}},
        "migrations": {
            "image": "ghcr.io/schemashift/hms-migrations:0.1.0",
            "scriptLocation": str(HMS_MIGRATIONS),
        },
        "environment": "development",
    }


@pytest.fixture
def kubeconfig_env(control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a user at a terminal: no in-cluster variables, the admin kubeconfig."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(control_plane.admin_kubeconfig))


def test_wait_prints_progress_and_exits_0_on_succeeded(
    migrations: Migrations, kubeconfig_env: None
) -> None:
    migrations.apply("w-ok", spec())
    lines: list[str] = []
    code = wait.wait_for("w-ok", namespace=migrations.namespace, timeout="3m", echo=lines.append)
    print("\n".join(lines))  # shown on failure (and with -s): what a Helm hook's log shows
    assert code == 0, "\n".join(lines)
    assert lines[0] == f"waiting for SchemaMigration {migrations.namespace}/w-ok (timeout 3m00s)"
    progress = [line for line in lines[1:-1] if line.startswith("[")]
    assert progress, lines
    assert "Succeeded" in progress[-1]
    assert lines[-1].startswith(f"SchemaMigration {migrations.namespace}/w-ok Succeeded")
    assert len(set(progress)) == len(progress), "a line is printed only when it changes"


def test_wait_exits_1_naming_the_failure(migrations: Migrations, kubeconfig_env: None) -> None:
    migrations.apply("w-bad", spec(secret="no-such-secret"))
    lines: list[str] = []
    code = wait.wait_for("w-bad", namespace=migrations.namespace, timeout="2m", echo=lines.append)
    assert code == 1, "\n".join(lines)
    status = migrations.status("w-bad")
    assert lines[-1].startswith(f"error: SchemaMigration {migrations.namespace}/w-bad Failed: ")
    assert status["message"] in lines[-1]
    assert ", reason " in lines[-1]


def test_wait_for_an_unknown_resource_exits_2(migrations: Migrations, kubeconfig_env: None) -> None:
    lines: list[str] = []
    code = wait.wait_for(
        "never-created",
        namespace=migrations.namespace,
        timeout="1m",
        echo=lines.append,
        not_found_grace=1,
    )
    assert code == 2
    assert lines[-1].startswith(
        f"error: SchemaMigration {migrations.namespace}/never-created not found"
    )


def test_wait_without_rbac_exits_2_with_a_hint(
    control_plane: ControlPlane, migrations: Migrations, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrations.apply("w-rbac", spec())
    kubeconfig = control_plane.kubeconfig_for_service_account(migrations.namespace, "nobody")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    lines: list[str] = []
    code = wait.wait_for("w-rbac", namespace=migrations.namespace, echo=lines.append)
    assert code == 2
    assert "not allowed to read SchemaMigration" in lines[-1]
    assert "grant get/list/watch on schemamigrations.schemashift.io" in lines[-1]


def test_wait_defaults_to_the_kubeconfig_namespace(
    control_plane: ControlPlane,
    migrations: Migrations,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    migrations.apply("w-ns", spec())
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(control_plane.admin_kubeconfig.read_text())
    control_plane.kubectl(
        "config",
        "set-context",
        "--current",
        f"--namespace={migrations.namespace}",
        f"--kubeconfig={kubeconfig}",
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    lines: list[str] = []
    assert wait.wait_for("w-ns", timeout="3m", echo=lines.append) == 0, "\n".join(lines)
    assert lines[0].startswith(f"waiting for SchemaMigration {migrations.namespace}/w-ns")
