"""The trust boundary, as a namespace user with only SchemaMigration rights (issue 10, items 1, 2
and 4): a spec that would shape the migration pod is refused by the operator (PolicyDenied, no
Job) and, with the chart's ValidatingAdmissionPolicy, already at `kubectl apply`; a Secret that
holds no database URL is never echoed."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from schemashift import reasons
from tests.e2e.operator_fixtures import (
    OPERATOR_NAMESPACE,
    OPERATOR_SA,
    RBAC_DIR,
    Migrations,
    OperatorProcess,
)
from tests.e2e.rights import SELF_REVIEWS, granted, rights
from tests.e2e.test_chart_install import CHART, template
from tests.e2e.test_operator import CREATE, FAILING_C3, spec
from tests.e2e.testbed.controlplane import ControlPlane
from tests.fixtures import runner_cli
from tests.fixtures.histories import write_history

pytestmark = pytest.mark.e2e

AUTHOR = "alice"  # may create and read SchemaMigrations and read events, nothing else
AUTHOR_RULES = [
    {"apiGroups": ["schemashift.io"], "resources": ["schemamigrations"],
     "verbs": ["create", "get", "list", "watch", "update", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
]
# Marked by the admin (operator_fixtures.EXAMPLES_POLICY, and the admission policy below).
ALLOWED_ACCOUNT = "hms-schemashift-runner"
# An API key of another app: a value that must never appear where a namespace reader looks.
API_KEY = "sk_live_9fQ2xT7vLm4Rb8Zp3Kd6Wn1Yc5Hj0Gs"

# case: (spec fragment, what the operator's refusal names, the field admission names)
SHAPING = {
    "service-account": ({"job": {"serviceAccountName": "ci-bot"}}, "ci-bot",
                        "spec.job.serviceAccountName ci-bot"),
    "image": ({"migrations": {"image": "docker.io/attacker/anything:1"}}, "docker.io/attacker",
              "spec.migrations.image docker.io/attacker/anything:1"),
    "tolerate-all": ({"job": {"tolerations": [{"operator": "Exists"}]}}, "toleration",
                     "spec.job.tolerations"),
    "control-plane-node": (
        {"job": {"nodeSelector": {"node-role.kubernetes.io/control-plane": ""}}},
        "node-role.kubernetes.io/control-plane", "spec.job.nodeSelector"),
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    return merged


@pytest.fixture
def author(control_plane: ControlPlane, migrations: Migrations) -> Path:
    """The restricted user's kubeconfig, with a Role and RoleBinding in the test namespace only."""
    ns = migrations.namespace
    rbac = client.RbacAuthorizationV1Api(control_plane.admin_api())
    rbac.create_namespaced_role(ns, client.V1Role(
        metadata=client.V1ObjectMeta(name="smig-author"), rules=AUTHOR_RULES))
    rbac.create_namespaced_role_binding(ns, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="smig-author"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role",
                                  name="smig-author"),
        subjects=[client.RbacV1Subject(kind="User", name=AUTHOR,
                                       api_group="rbac.authorization.k8s.io")]))
    client.CoreV1Api(control_plane.admin_api()).create_namespaced_service_account(
        ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="ci-bot")))
    kubeconfig = control_plane.kubeconfig_for_user(AUTHOR)
    assert _can(control_plane, kubeconfig, ns, "create", "schemamigrations.schemashift.io")
    assert not _can(control_plane, kubeconfig, ns, "create", "jobs.batch")
    assert not _can(control_plane, kubeconfig, ns, "get", "secrets")
    return kubeconfig


def _can(plane: ControlPlane, kubeconfig: Path, ns: str, verb: str, what: str,
         *more: str) -> bool:
    done = plane.kubectl("auth", "can-i", verb, what, "-n", ns, *more, kubeconfig=kubeconfig,
                         check=False)
    return done.stdout.strip() == "yes"


def _apply_as(plane: ControlPlane, kubeconfig: Path, manifest: dict[str, Any]
              ) -> subprocess.CompletedProcess[str]:
    return plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest),
                         kubeconfig=kubeconfig, check=False)


@pytest.mark.parametrize("case", list(SHAPING), ids=list(SHAPING))
def test_the_operator_refuses_a_spec_that_shapes_the_pod(
    control_plane: ControlPlane, migrations: Migrations, author: Path, database_url: str,
    tmp_path: Path, case: str,
) -> None:
    extra, named, _ = SHAPING[case]
    history = write_history(tmp_path, [CREATE])
    manifest = migrations.manifest("app", _merge(spec(history), extra))

    applied = _apply_as(control_plane, author, manifest)

    assert applied.returncode == 0, applied.stderr  # no admission policy in this test
    status = migrations.wait_phase("app", "Failed")
    assert migrations.condition("app", "Ready")["reason"] == reasons.POLICY_DENIED, status
    assert named in status["message"], status["message"]
    assert "policy." in status["message"], status["message"]  # which rule, who changes it
    assert migrations.jobs() == []
    assert ("Warning", reasons.POLICY_DENIED) in [e[:2] for e in migrations.events("app")]
    assert runner_cli.revision(database_url) is None


@pytest.fixture
def admission_policy(control_plane: ControlPlane, helm: str, migrations: Migrations
                     ) -> Iterator[None]:
    """The chart's ValidatingAdmissionPolicy and binding, bound to the test namespace only."""
    ns = migrations.namespace
    rendered = template(helm, CHART, "vap", ns, "--show-only",
                        "templates/admission-policy.yaml",
                        "--set", f"operator.watchNamespaces={{{ns}}}",
                        "--set", "policy.allowedImages={ghcr.io/schemashift/*}",
                        "--set", f"policy.allowedServiceAccounts={{{ALLOWED_ACCOUNT}}}",
                        "--set", "policy.allowedTolerationKeys={dedicated/*}",
                        "--set", "operator.jobImage=schemashift:e2e")
    control_plane.kubectl("apply", "-f", "-", input=rendered)
    try:
        yield
    finally:
        control_plane.kubectl("delete", "-f", "-", input=rendered, check=False)


def _refused_at_admission(plane: ControlPlane, kubeconfig: Path, manifest: dict[str, Any]
                          ) -> subprocess.CompletedProcess[str]:
    """kubectl apply until the API server has loaded the new policy (its informer syncs the
    policy and binding asynchronously), then the refusal."""
    probe = {**manifest, "metadata": {**manifest["metadata"], "name": "policy-probe"}}
    for _ in range(100):
        done = _apply_as(plane, kubeconfig, probe)
        if done.returncode != 0:
            break
        plane.kubectl("delete", "-f", "-", input=yaml.safe_dump(probe), check=False)
        time.sleep(0.2)
    return _apply_as(plane, kubeconfig, manifest)


@pytest.mark.parametrize("case", list(SHAPING), ids=list(SHAPING))
def test_the_admission_policy_refuses_it_at_kubectl_apply(
    control_plane: ControlPlane, migrations: Migrations, author: Path, admission_policy: None,
    tmp_path: Path, case: str,
) -> None:
    extra, _, field = SHAPING[case]
    history = write_history(tmp_path, [CREATE])
    manifest = migrations.manifest("app", _merge(spec(history), extra))

    refused = _refused_at_admission(control_plane, author, manifest)

    assert refused.returncode != 0
    assert "ValidatingAdmissionPolicy" in refused.stderr, refused.stderr
    assert f"denied request: {field}" in refused.stderr, refused.stderr
    assert "only a user who may create Jobs" in refused.stderr, refused.stderr
    custom = client.CustomObjectsApi(control_plane.admin_api())
    names = [m["metadata"]["name"] for m in custom.list_namespaced_custom_object(
        "schemashift.io", "v1alpha1", migrations.namespace, "schemamigrations")["items"]]
    assert "app" not in names


def test_the_admission_policy_lets_a_plain_spec_and_a_job_creator_through(
    control_plane: ControlPlane, migrations: Migrations, author: Path, admission_policy: None,
    tmp_path: Path,
) -> None:
    history = write_history(tmp_path, [CREATE])
    shaping = migrations.manifest("shaped", _merge(spec(history), SHAPING["image"][0]))
    assert _refused_at_admission(control_plane, author, shaping).returncode != 0

    plain = _apply_as(control_plane, author, migrations.manifest("plain", spec(history)))
    by_admin = control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(shaping),
                                     check=False)

    assert plain.returncode == 0, plain.stderr
    # The admin may create Jobs, so admission lets it through; the operator's policy still
    # refuses the image.
    assert by_admin.returncode == 0, by_admin.stderr
    migrations.wait_phase("shaped", "Failed")
    assert migrations.condition("shaped", "Ready")["reason"] == reasons.POLICY_DENIED
    assert migrations.wait_phase("plain", "Succeeded")["phase"] == "Succeeded"


def test_the_admission_policy_admits_what_the_admin_allowed(
    control_plane: ControlPlane, migrations: Migrations, author: Path, admission_policy: None,
    tmp_path: Path,
) -> None:
    history = write_history(tmp_path, [CREATE])
    probe = migrations.manifest("shaped", _merge(spec(history), SHAPING["image"][0]))
    assert _refused_at_admission(control_plane, author, probe).returncode != 0
    allowed = _merge(spec(history), {"job": {
        "serviceAccountName": ALLOWED_ACCOUNT,
        "tolerations": [{"key": "dedicated/migrations", "operator": "Exists"}]}})
    control_plane_taint = _merge(spec(history), {"job": {"tolerations": [
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}})

    admitted = _apply_as(control_plane, author, migrations.manifest("allowed", allowed))
    refused = _apply_as(control_plane, author,
                        migrations.manifest("cp", control_plane_taint))

    assert admitted.returncode == 0, admitted.stderr
    assert refused.returncode != 0 and "spec.job.tolerations" in refused.stderr, refused.stderr


def test_a_secret_that_holds_no_database_url_is_never_echoed(
    control_plane: ControlPlane, migrations: Migrations, author: Path, tmp_path: Path,
    operator_process: OperatorProcess,
) -> None:
    migrations.secret("payments-api", {"url": API_KEY})
    history = write_history(tmp_path, [CREATE])
    manifest = migrations.manifest("app", {
        **spec(history), "database": {"urlSecretRef": {"name": "payments-api", "key": "url"}}})

    assert _apply_as(control_plane, author, manifest).returncode == 0

    status = migrations.wait_phase("app", "Failed")
    seen_by_a_reader = "\n".join([
        yaml.safe_dump(migrations.get("app")),
        "\n".join(" ".join(e) for e in migrations.events("app")),
        *(migrations.pod_log(j["name"]) for j in migrations.jobs()),
        control_plane.kubectl("get", "jobs", "-n", migrations.namespace, "-o", "yaml").stdout,
        operator_process.log_file.read_text(errors="replace"),  # not a reader's, still clean
    ])
    fragments = {API_KEY[i:i + 6] for i in range(len(API_KEY) - 5)}
    assert not [f for f in fragments if f in seen_by_a_reader], status["message"]
    assert "not a postgresql:// URL" in status["message"], status
    assert "Secret" in status["message"], status


FORGED = {"status": {"phase": "Succeeded", "step": "done", "conditions": [
    {"type": "Ready", "status": "True", "reason": "Succeeded", "message": "forged",
     "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}


def _forge(plane: ControlPlane, kubeconfig: Path | None, ns: str, name: str
           ) -> subprocess.CompletedProcess[str]:
    return plane.kubectl("patch", "smig", name, "-n", ns, "--subresource=status",
                         "--type=merge", "-p", json.dumps(FORGED), kubeconfig=kubeconfig,
                         check=False)


def test_no_one_but_the_operator_decides_a_result(
    control_plane: ControlPlane, migrations: Migrations, author: Path, database_url: str,
    tmp_path: Path,
) -> None:
    """Item 3: a migration pod has no token, and its ServiceAccount's token (as the restricted
    user's) can patch no status, of its own or another SchemaMigration; a status forged by
    someone who can is put back by the operator, so neither `kubectl wait` nor `schemashift
    wait` accepts a migration that never ran."""
    ns = migrations.namespace
    failing = write_history(tmp_path, [CREATE, FAILING_C3], name="failing")
    assert _apply_as(control_plane, author, migrations.manifest("app", spec(failing))
                     ).returncode == 0
    pending = write_history(tmp_path, [CREATE], name="pending")
    assert _apply_as(control_plane, author, migrations.manifest(
        "other", spec(pending, approval={"required": True}))).returncode == 0
    status = migrations.wait_phase("app", "RolledBack", "Failed")
    [job] = migrations.batch.list_namespaced_job(
        ns, label_selector="schemashift.io/purpose=apply").items
    assert job.spec.template.spec.automount_service_account_token is False
    assert status["stages"], status  # the live progress the operator read from the pod log
    other = migrations.wait_phase("other", "AwaitingApproval")

    runner = control_plane.kubeconfig_for_service_account(ns, job.spec.template.spec
                                                          .service_account_name, create=False)
    for who in (runner, author):
        for name in ("app", "other"):
            refused = _forge(control_plane, who, ns, name)
            assert refused.returncode != 0 and "forbidden" in refused.stderr, refused
        assert not _can(control_plane, who, ns, "get", "secrets")
        assert not _can(control_plane, who, ns, "create", "pods")
    assert migrations.status("other")["phase"] == "AwaitingApproval"

    assert _forge(control_plane, None, ns, "other").returncode == 0  # an admin may

    restored = migrations.wait("other", lambda s: s.get("phase") == "AwaitingApproval", 30,
                               "the forged phase put back")
    assert restored["step"] == other["step"] == "awaiting-approval"
    ready = next(c for c in restored["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False", restored
    waited = control_plane.kubectl("wait", "--for=condition=Ready", "--timeout=3s",
                                   "smig/other", "-n", ns, kubeconfig=author, check=False)
    assert waited.returncode != 0
    helm_hook = subprocess.run(["schemashift", "wait", "other", "-n", ns, "--timeout", "3s"],
                               env=control_plane.env(author), capture_output=True, text=True,
                               timeout=60)
    assert helm_hook.returncode != 0, helm_hook
    assert "Succeeded" not in helm_hook.stdout + helm_hook.stderr, helm_hook
    assert runner_cli.revision(database_url) is None


def test_each_identity_has_exactly_the_rights_of_the_manifests(
    control_plane: ControlPlane, migrations: Migrations,
) -> None:
    ns = migrations.namespace
    runner = rights(control_plane, ns, f"system:serviceaccount:{ns}:schemashift-migration")
    operator = rights(control_plane, ns,
                       f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SA}")

    assert runner == SELF_REVIEWS
    expected = (granted(RBAC_DIR / "operator.yaml", ("ClusterRole",))
                | granted(RBAC_DIR / "migration-job-namespace.yaml", ("Role",)) | SELF_REVIEWS)
    assert operator == expected, (sorted(operator - expected), sorted(expected - operator))
    assert not {pair for pair in operator if pair[0] == "secrets" and pair[1] in ("list", "watch")}
    # In its own namespace the operator also keeps its leader election Lease (a Role there).
    home = rights(control_plane, OPERATOR_NAMESPACE,
                   f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SA}")
    expected_home = granted(RBAC_DIR / "operator.yaml", ("ClusterRole", "Role")) | SELF_REVIEWS
    assert home == expected_home, (sorted(home - expected_home), sorted(expected_home - home))
    assert ("leases.coordination.k8s.io", "update") in home
