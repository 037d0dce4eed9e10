"""The charts and plain manifests on the real kube-apiserver test bed, and the Helm hook's path.

- The operator chart's rendered objects and the plain install are accepted by the API server.
- `helm install` of the operator chart runs the operator under the chart's own RBAC.
- The hook chart: `helm install`/`helm upgrade` block on a SchemaMigration the operator drives
  to Succeeded, and fail when it fails.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.operator_fixtures import RBAC_DIR, Migrations
from tests.e2e.rights import SELF_REVIEWS, granted, rights
from tests.e2e.testbed.controlplane import ControlPlane, free_port
from tests.e2e.testbed.kubelet import ProcessKubelet

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "schemashift"
HOOK = ROOT / "charts" / "schemashift-hook"
MANIFESTS = ROOT / "manifests"
HMS_MIGRATIONS = ROOT / "examples" / "hms" / "migrations"
# docs/install.md's plain install, in this order (the Namespace comes with manifests/operator/).
PLAIN_INSTALL = [
    "manifests/crd/",
    "manifests/operator/",
    "manifests/rbac/operator.yaml",
    "manifests/rbac/migration-job.yaml",
]



def run_helm(
    plane: ControlPlane, helm: str, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, *args], env=plane.env(), capture_output=True, text=True, timeout=timeout
    )


def run_hook_chart(
    plane: ControlPlane, helm: str, command: str, release: str, ns: str, **values: str
) -> subprocess.CompletedProcess[str]:
    """`helm install|upgrade` of the hook chart, waiting for its hooks like a deploy does."""
    return run_helm(plane, helm, command, release, str(HOOK), "-n", ns, *hook_values(**values),
                    "--wait", "--timeout", "5m")


def template(helm: str, chart: Path, release: str, namespace: str, *args: str) -> str:
    result = subprocess.run(
        [helm, "template", release, str(chart), "-n", namespace, *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_rendered_operator_chart_is_accepted_by_the_api_server(
    control_plane: ControlPlane, helm: str, namespace: str
) -> None:
    rendered = template(
        helm,
        CHART,
        "accept",
        namespace,
        "--set",
        "metrics.serviceMonitor.enabled=false",
        "--set",
        f"rbac.migrationJobNamespaces={{{namespace}}}",
    )
    kinds = {doc["kind"] for doc in yaml.safe_load_all(rendered) if doc}
    assert {
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "ServiceAccount",
        "RoleBinding",
        "Deployment",
        "Service",
    } <= kinds
    result = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert result.stdout.count("(server dry run)") == rendered.count("\nkind: ")


def test_plain_install_and_examples_are_accepted_by_the_api_server(
    control_plane: ControlPlane, smig_crd: Path, namespace: str
) -> None:
    with contextlib.suppress(ApiException):  # the operator fixture may have made it already
        control_plane.create_namespace("schemashift-system")
    args = [a for path in PLAIN_INSTALL for a in ("-f", str(ROOT / path))]
    result = control_plane.kubectl("apply", "--dry-run=server", *args)
    for expected in (
        "customresourcedefinition.apiextensions.k8s.io/schemamigrations",
        "deployment.apps/schemashift ",
        "service/schemashift-metrics",
        "clusterrole.rbac.authorization.k8s.io/schemashift-operator",
        "clusterrolebinding.rbac.authorization.k8s.io/schemashift-operator",
        "serviceaccount/schemashift-operator",
        "namespace/schemashift-system",
    ):
        assert expected in result.stdout, result.stdout
    examples = control_plane.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", str(MANIFESTS / "examples")
    )
    for name in ("hms-minimal", "hms-release-42", "hms-dry-run"):
        assert f"schemamigration.schemashift.io/{name} created (server dry run)" in (
            examples.stdout
        ), examples.stdout


@pytest.fixture
def operator_release(
    control_plane: ControlPlane,
    kubelet: ProcessKubelet,
    helm: str,
    namespace: str,
    smig_crd: Path,
) -> Iterator[dict[str, Any]]:
    """`helm install` of the operator chart watching only its own (empty) namespace, on free
    ports, under the chart's RBAC; uninstalled afterwards."""
    release = f"op-{namespace[-6:]}"
    ports = {"health": free_port(), "metrics": free_port()}
    result = run_helm(
        control_plane,
        helm,
        "install",
        release,
        str(CHART),
        "-n",
        namespace,
        "--set",
        "crds.create=false",  # the session's CRD is not Helm's to own
        "--set",
        f"operator.watchNamespaces={{{namespace}}}",
        "--set",
        f"operator.healthPort={ports['health']}",
        "--set",
        f"metrics.port={ports['metrics']}",
        "--wait",
        "--timeout",
        "120s",
    )
    assert result.returncode == 0, result.stderr
    try:
        yield {"name": release, **ports}
    finally:
        run_helm(control_plane, helm, "uninstall", release, "-n", namespace, "--wait")


def test_helm_install_runs_the_operator_under_the_charts_rbac(
    control_plane: ControlPlane, operator_release: dict[str, Any], namespace: str
) -> None:
    rollout = control_plane.kubectl(
        "-n",
        namespace,
        "rollout",
        "status",
        f"deployment/{operator_release['name']}-schemashift",
        "--timeout=60s",
    )
    assert "successfully rolled out" in rollout.stdout
    core = client.CoreV1Api(control_plane.admin_api())
    pods = core.list_namespaced_pod(
        namespace, label_selector=(f"app.kubernetes.io/instance={operator_release['name']}")
    ).items
    assert len(pods) == 1
    assert pods[0].spec.service_account_name == f"{operator_release['name']}-schemashift-operator"
    # watchNamespaces is set: the operator's rights hold in that namespace only.
    account = f"system:serviceaccount:{namespace}:{pods[0].spec.service_account_name}"

    def can(verb: str, what: str, where: str) -> bool:
        done = control_plane.kubectl("auth", "can-i", verb, what, "-n", where, "--as", account,
                                     check=False)
        return done.stdout.strip() == "yes"

    assert can("create", "jobs.batch", namespace) and can("list", "pods", namespace)
    # Exactly the rules of manifests/rbac/operator.yaml (the chart's are generated from them):
    # all of them in the watched namespace (also its home: the Lease); elsewhere only the one
    # cluster-wide right, reading CRDs. No Secret read at all unless a namespace grants it
    # (rbac.migrationJobNamespaces).
    source = RBAC_DIR / "operator.yaml"
    watched = rights(control_plane, namespace, account)
    assert watched == granted(source, ("ClusterRole", "Role")) | SELF_REVIEWS, watched
    cluster_wide = granted(source, ("ClusterRole",), ("schemashift-operator-crds",))
    for elsewhere in ("kube-system", "default"):
        assert rights(control_plane, elsewhere, account) == cluster_wide | SELF_REVIEWS
    deadline = time.monotonic() + 60
    last: Exception | None = None
    while time.monotonic() < deadline:  # the kubelet runs the pod's command as a local process
        try:
            url = f"http://127.0.0.1:{operator_release['health']}/healthz"
            with urllib.request.urlopen(url, timeout=2) as response:
                assert response.status == 200
                break
        except OSError as exc:
            last = exc
            time.sleep(0.5)
    else:
        raise AssertionError(f"the chart's operator never served its liveness endpoint: {last}")
    # It leads under the chart's RBAC: its Lease, named after the release, holds its pod's name.
    leases = client.CoordinationV1Api(control_plane.admin_api())
    lease_name = f"{operator_release['name']}-schemashift"
    holder = None
    while time.monotonic() < deadline + 60:
        with contextlib.suppress(ApiException):
            spec = leases.read_namespaced_lease(lease_name, namespace).spec
            holder = spec.holder_identity if spec else None
            if holder and holder.startswith(f"{pods[0].metadata.name}_"):
                return
        time.sleep(0.5)
    raise AssertionError(f"Lease {namespace}/{lease_name} held by {holder!r}, not the pod")


# --- the hook -----------------------------------------------------------------------------------


def hook_values(**overrides: Any) -> list[str]:
    values = {
        "migration.spec.database.urlSecretRef.name": "app-db",
        "migration.spec.migrations.image": "ghcr.io/schemashift/hms-migrations:0.1.0",
        "migration.spec.migrations.scriptLocation": str(HMS_MIGRATIONS),
        "migration.spec.environment": "development",
        "migration.spec.backup.enabled": "false",
        "migration.spec.deadlineSeconds": "300",
        "waiter.timeout": "4m",
        **overrides,
    }
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


def table_names(database_url: str) -> set[str]:
    import sqlalchemy

    from schemashift import db

    engine = db.make_engine(database_url)
    try:
        return set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def release_migrations(migrations: Migrations, release: str) -> dict[str, dict[str, Any]]:
    """The hook's SchemaMigrations of a release, by name."""
    found = migrations.custom.list_namespaced_custom_object(
        "schemashift.io", "v1alpha1", migrations.namespace, "schemamigrations",
        label_selector=f"app.kubernetes.io/instance={release}")["items"]
    return {o["metadata"]["name"]: o for o in found}


def test_hook_blocks_install_and_upgrade_until_the_migration_succeeded(
    control_plane: ControlPlane, helm: str, migrations: Migrations, database_url: str
) -> None:
    ns = migrations.namespace
    installed = run_hook_chart(control_plane, helm, "install", "hms", ns)
    assert installed.returncode == 0, installed.stderr + "\n" + str(migrations.jobs())
    first = release_migrations(migrations, "hms")
    assert sorted(o["spec"]["phase"] for o in first.values()) == ["contract", "expand"]
    assert all(o["status"]["phase"] == "Succeeded" for o in first.values()), first
    assert {"patients", "hospital_settings"} <= table_names(database_url)
    # hook-succeeded removed the waiter Jobs and the hook RBAC; the SchemaMigrations stay.
    assert not [j for j in migrations.jobs() if j["name"].endswith("-wait")]

    upgraded = run_hook_chart(control_plane, helm, "upgrade", "hms", ns)
    assert upgraded.returncode == 0, upgraded.stderr
    again = release_migrations(migrations, "hms")
    assert set(again) == set(first), "the same release content keeps its names"
    assert all(o["status"]["phase"] == "Succeeded" for o in again.values())
    assert {o["metadata"]["uid"] for o in again.values()}.isdisjoint(
        o["metadata"]["uid"] for o in first.values()), "replaced, so they ran again"


def test_hook_fails_the_release_when_the_migration_fails(
    control_plane: ControlPlane, helm: str, migrations: Migrations
) -> None:
    ns = migrations.namespace
    result = run_hook_chart(
        control_plane, helm, "install", "broken", ns,
        **{"migration.spec.database.urlSecretRef.name": "no-such-db",
           "secrets.checkExisting": "false"},
    )
    assert result.returncode != 0
    found = release_migrations(migrations, "broken")
    assert [o["spec"]["phase"] for o in found.values()] == ["expand"], "no contract after it"
    (name, expand), = found.items()
    assert f"{name}-wait" in result.stderr, result.stderr
    assert expand["status"]["phase"] == "Failed"
    waiter = [j for j in migrations.jobs() if j["name"] == f"{name}-wait"]
    assert waiter and ("Failed", "BackoffLimitExceeded") in waiter[0]["conditions"]
    log = migrations.pod_log(f"{name}-wait")
    assert "error: SchemaMigration" in log and "Failed" in log, log
    assert "error: SchemaMigration" in result.stderr, "helm prints the waiter's log"


def test_hook_refuses_a_missing_secret_before_creating_anything(
    control_plane: ControlPlane, helm: str, migrations: Migrations
) -> None:
    ns = migrations.namespace
    result = run_helm(
        control_plane,
        helm,
        "install",
        "nosecret",
        str(HOOK),
        "-n",
        ns,
        *hook_values(**{"migration.spec.database.urlSecretRef.name": "absent"}),
    )
    assert result.returncode != 0
    assert f"Secret {ns}/absent (migration.spec.database.urlSecretRef) does not exist" in (
        result.stderr
    )
    assert release_migrations(migrations, "nosecret") == {}


def test_quickstart_commands_of_the_install_guide(
    control_plane: ControlPlane, migrations: Migrations, database_url: str
) -> None:
    """docs/install.md steps 3-4 on the minimal example (its image path made local: the
    process kubelet runs commands from this checkout)."""
    ns = migrations.namespace
    control_plane.kubectl(
        "-n", ns, "create", "secret", "generic", "hms-db", f"--from-literal=url={database_url}"
    )
    example = yaml.safe_load((MANIFESTS / "examples" / "minimal.yaml").read_text())
    example["spec"]["migrations"]["scriptLocation"] = str(HMS_MIGRATIONS)
    control_plane.kubectl("-n", ns, "apply", "-f", "-", input=yaml.safe_dump(example))
    waited = control_plane.kubectl(
        "-n",
        ns,
        "wait",
        "--for=condition=Ready",
        "smig/hms-minimal",
        "--timeout=120s",
        check=False,
        timeout=150,
    )
    assert waited.returncode == 0, waited.stderr + str(migrations.status("hms-minimal"))
    assert "schemamigration.schemashift.io/hms-minimal condition met" in waited.stdout
    listed = control_plane.kubectl("-n", ns, "get", "smig").stdout
    print(listed)  # shown with -s: the output docs/install.md quotes
    header, row = listed.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "FROM", "TARGET", "CURRENT", "CONTRACTPENDING",
                              "BACKUP", "AGE"]
    assert row.split()[:2] == ["hms-minimal", "Succeeded"]
    assert "False" in row.split(), listed  # ContractPending: phase all leaves nothing to contract
    assert {"patients", "hospital_settings"} <= table_names(database_url)


BROKEN_REVISION = '''"""Breaks on purpose: creates a table, then divides by zero."""

import sqlalchemy as sa
from alembic import op

revision = "b0rken000001"
down_revision = DOWN_REVISION
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("visits_tmp", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("SELECT 1/0")


def downgrade() -> None:
    op.drop_table("visits_tmp")
'''


def database_revision(database_url: str) -> str:
    import sqlalchemy

    from schemashift import db

    engine = db.make_engine(database_url)
    try:
        with engine.connect() as conn:
            return str(
                conn.execute(
                    sqlalchemy.text("SELECT version_num FROM alembic_version")
                ).scalar_one()
            )
    finally:
        engine.dispose()


def test_upgrade_fails_and_app_is_not_rolled_out_when_the_migration_rolls_back(
    control_plane: ControlPlane,
    helm: str,
    migrations: Migrations,
    database_url: str,
    tmp_path: Path,
) -> None:
    ns = migrations.namespace
    installed = run_hook_chart(control_plane, helm, "install", "hms", ns)
    assert installed.returncode == 0, installed.stderr
    good = database_revision(database_url)

    app = tmp_path / "hms"
    shutil.copytree(HMS_MIGRATIONS.parent, app, ignore=shutil.ignore_patterns("__pycache__"))
    (app / "migrations" / "versions" / "b0rken000001_breaks.py").write_text(
        BROKEN_REVISION.replace("DOWN_REVISION", repr(good))
    )
    upgraded = run_hook_chart(
        control_plane, helm, "upgrade", "hms", ns,
        **{"migration.spec.migrations.scriptLocation": str(app / "migrations"),
           "migration.spec.safety.lint": "warn"},
    )
    assert upgraded.returncode != 0
    assert "pre-upgrade hooks failed" in upgraded.stderr, upgraded.stderr
    failed = [o for o in release_migrations(migrations, "hms").values()
              if o["status"]["phase"] != "Succeeded"]
    assert [o["spec"]["phase"] for o in failed] == ["expand"], failed
    status = failed[0]["status"]
    assert status["phase"] == "RolledBack", status
    assert f"{failed[0]['metadata']['name']}-wait" in upgraded.stderr, upgraded.stderr
    assert database_revision(database_url) == good
    assert "visits_tmp" not in table_names(database_url)
    history = run_helm(control_plane, helm, "history", "hms", "-n", ns, "-o", "json")
    assert [r["status"] for r in json.loads(history.stdout)] == ["deployed", "failed"]
