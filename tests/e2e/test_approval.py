"""Separation of duties (issue 10): with the chart's approval admission policy, only a reviewer
granted `approve` may approve a plan, only under their own name, and the operator records who."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from schemashift import reasons
from schemashift.kube import resource
from tests.e2e.operator_fixtures import RBAC_DIR, Migrations
from tests.e2e.test_chart_install import CHART, template
from tests.e2e.test_operator import ADD, CREATE, at_a1, spec
from tests.e2e.test_policy import AUTHOR, author  # noqa: F401 (fixture)
from tests.e2e.testbed.controlplane import ControlPlane
from tests.fixtures import runner_cli

pytestmark = pytest.mark.e2e

REVIEWER = "bob"  # may approve (ClusterRole schemashift-approver bound in the namespace)
APPROVER_ROLE = "schemashift-approver"


@pytest.fixture
def reviewer(control_plane: ControlPlane, migrations: Migrations) -> Path:
    control_plane.kubectl("apply", "-f", str(RBAC_DIR / "approver.yaml"))
    rbac = client.RbacAuthorizationV1Api(control_plane.admin_api())
    rbac.create_namespaced_role_binding(migrations.namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="reviewers"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole",
                                  name=APPROVER_ROLE),
        subjects=[client.RbacV1Subject(kind="User", name=REVIEWER,
                                       api_group="rbac.authorization.k8s.io")]))
    return control_plane.kubeconfig_for_user(REVIEWER)


@pytest.fixture
def approval_policy(control_plane: ControlPlane, helm: str, migrations: Migrations,
                    author: Path) -> Iterator[None]:  # noqa: F811
    """The chart's approval policy bound to the test namespace, loaded by the API server."""
    ns = migrations.namespace
    rendered = template(helm, CHART, "vap", ns, "--show-only", "templates/approval-policy.yaml",
                        "--set", f"operator.watchNamespaces={{{ns}}}")
    control_plane.kubectl("apply", "-f", "-", input=rendered)
    probe = migrations.manifest("approval-probe", {"database": {"urlSecretRef": {
        "name": "app-db", "key": "url"}}, "migrations": {"scriptLocation": "/nowhere"}},
        annotations={resource.APPROVED_ANNOTATION: "0" * 64})
    for _ in range(100):  # the API server loads a new policy asynchronously
        tried = _as(control_plane, author, "apply", "-f", "-", manifest=probe)
        if tried.returncode != 0:
            assert "may not approve" in tried.stderr, tried.stderr
            break
        control_plane.kubectl("delete", "-n", ns, "smig", "approval-probe", "--wait=false",
                              "--ignore-not-found")
        time.sleep(0.2)
    else:
        raise AssertionError("the approval policy was not in force after 20 s")
    try:
        yield
    finally:
        control_plane.kubectl("delete", "-f", "-", input=rendered, check=False)


def _as(plane: ControlPlane, kubeconfig: Path, *args: str,
        manifest: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    return plane.kubectl(*args, kubeconfig=kubeconfig, check=False,
                         input=yaml.safe_dump(manifest) if manifest else None)


def _approve_cli(plane: ControlPlane, kubeconfig: Path, ns: str, name: str,
                 *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["schemashift", "approve", name, "-n", ns, *more],
                          env=plane.env(kubeconfig), capture_output=True, text=True, timeout=60)


def test_only_a_reviewer_approves_under_their_own_name_and_the_operator_records_it(
    control_plane: ControlPlane, migrations: Migrations, author: Path,  # noqa: F811
    reviewer: Path, approval_policy: None, database_url: str, tmp_path: Path,
) -> None:
    ns = migrations.namespace
    history = at_a1(database_url, tmp_path, [CREATE, ADD])
    manifest = migrations.manifest("app", spec(history, approval={"required": True}))
    assert _as(control_plane, author, "apply", "-f", "-", manifest=manifest).returncode == 0
    plan_hash = migrations.wait_phase("app", "AwaitingApproval")["plan"]["hash"]

    own = _as(control_plane, author, "annotate", "-n", ns, "smig", "app",
              f"{resource.APPROVED_ANNOTATION}={plan_hash}",
              f"{resource.APPROVED_BY_ANNOTATION}={AUTHOR}")
    assert own.returncode != 0
    assert f"{AUTHOR} may not approve SchemaMigrations in namespace {ns}" in own.stderr
    assert APPROVER_ROLE in own.stderr  # who can change that
    refused = _approve_cli(control_plane, author, ns, "app")
    assert refused.returncode == 2, refused
    assert "may not approve" in refused.stderr

    posing = _as(control_plane, reviewer, "annotate", "-n", ns, "smig", "app",
                 f"{resource.APPROVED_ANNOTATION}={plan_hash}",
                 f"{resource.APPROVED_BY_ANNOTATION}={AUTHOR}")  # a reviewer naming another
    assert posing.returncode != 0
    assert f"set {resource.APPROVED_BY_ANNOTATION}={REVIEWER}" in posing.stderr
    stale = _approve_cli(control_plane, reviewer, ns, "app", "--plan-hash", "0" * 64)
    assert stale.returncode == 2 and f"waits with plan {plan_hash}" in stale.stderr, stale
    assert migrations.status("app")["phase"] == "AwaitingApproval"
    assert runner_cli.revision(database_url) == "a1"

    approved = _approve_cli(control_plane, reviewer, ns, "app", "--plan-hash", plan_hash)
    assert approved.returncode == 0, approved
    assert f"approved by {REVIEWER}" in approved.stdout
    status = migrations.wait_phase("app", "Succeeded", "Failed", "RolledBack")
    assert status["phase"] == "Succeeded", status
    assert status["approvedBy"] == REVIEWER
    assert (reasons.APPROVED, f"plan {plan_hash} approved by {REVIEWER}") in [
        e[1:] for e in migrations.events("app")]
    assert runner_cli.revision(database_url) == "b2"


def test_an_approval_cannot_be_created_with_the_resource(
    control_plane: ControlPlane, migrations: Migrations, author: Path,  # noqa: F811
    approval_policy: None, tmp_path: Path, database_url: str,
) -> None:
    history = at_a1(database_url, tmp_path, [CREATE, ADD])
    manifest = migrations.manifest("app", spec(history, approval={"required": True}),
                                   annotations={resource.APPROVED_ANNOTATION: "0" * 64,
                                                resource.APPROVED_BY_ANNOTATION: AUTHOR})
    refused = _as(control_plane, author, "apply", "-f", "-", manifest=manifest)
    assert refused.returncode != 0
    assert "may not approve" in refused.stderr
    assert runner_cli.revision(database_url) == "a1"
