"""The Helm charts: lint, render, schema, generated copies, and the plain manifests' sync.

Needs the `helm` binary the test-bed build produces (tools/build_testbed.py); without it the
helm-based tests skip with that instruction, and the schema/sync checks that need no helm run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "schemashift"
HOOK = ROOT / "charts" / "schemashift-hook"
HOOK_CI_VALUES = HOOK / "ci" / "example-values.yaml"
MANIFESTS = ROOT / "manifests"
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}

Render = Callable[..., list[dict[str, Any]]]



def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True)


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    def _render(
        chart: Path, *args: str, release: str = "schemashift", namespace: str = "schemashift-system"
    ) -> list[dict[str, Any]]:
        result = run_helm(helm, "template", release, str(chart), "--namespace", namespace, *args)
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    return _render


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def load_dir(directory: Path) -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(directory.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def without_helm_labels(obj: dict[str, Any]) -> dict[str, Any]:
    obj = json.loads(json.dumps(obj))
    for meta in (obj["metadata"], obj.get("spec", {}).get("template", {}).get("metadata", {})):
        for key in HELM_ONLY_LABELS:
            (meta.get("labels") or {}).pop(key, None)
    return obj


# --- values.schema.json (no helm needed) -------------------------------------------------------


@pytest.mark.parametrize(
    ("chart", "extra"),
    [(CHART, None), (HOOK, HOOK_CI_VALUES)],
    ids=["schemashift", "schemashift-hook"],
)
def test_default_values_satisfy_the_schema(chart: Path, extra: Path | None) -> None:
    schema = json.loads((chart / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    values = yaml.safe_load((chart / "values.yaml").read_text())
    jsonschema.validate(values, schema)
    if extra:
        jsonschema.validate(yaml.safe_load(extra.read_text()), schema)


def undocumented_values(text: str) -> list[str]:
    """Leaf keys with no `# -- ` comment (helm-docs) above them or above an enclosing key."""
    lines = text.splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    missing = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        indent = len(line) - len(stripped)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key, _, value = stripped.partition(":")
        documented = lines[index - 1].strip().startswith("# --") or any(d for _, d in stack)
        following = next((n for n in lines[index + 1 :] if n.strip()), "")
        is_section = not value.strip() and len(following) - len(following.lstrip()) > indent
        if not is_section and not documented:
            missing.append(key)
        stack.append((indent, documented))
    return missing


@pytest.mark.parametrize("chart", [CHART, HOOK], ids=["schemashift", "schemashift-hook"])
def test_every_value_is_documented_for_helm_docs(chart: Path) -> None:
    assert undocumented_values((chart / "values.yaml").read_text()) == []


def test_undocumented_value_is_found() -> None:
    text = "a:\n  # -- doc\n  b: 1\n  c: 2\n# -- block\nd:\n  e: 1\n"
    assert undocumented_values(text) == ["c"]


# --- generated copies ----------------------------------------------------------------------------


def test_generated_chart_files_and_plain_manifests_are_current(helm: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "sync_chart.py"), "--check"],
        capture_output=True,
        text=True,
        env={**os.environ, "SCHEMASHIFT_HELM": helm},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_crd_equals_the_one_source(render: Render) -> None:
    rendered = one(render(CHART), "CustomResourceDefinition")
    source = one(load_dir(MANIFESTS / "crd"), "CustomResourceDefinition")
    assert rendered["spec"] == source["spec"]
    assert rendered["metadata"]["name"] == source["metadata"]["name"]
    assert rendered["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_crd_switches(render: Render) -> None:
    assert not by_kind(render(CHART, "--set", "crds.create=false"), "CustomResourceDefinition")
    crd = one(render(CHART, "--set", "crds.keep=false"), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})


def test_chart_rbac_rules_equal_manifests_rbac(render: Render) -> None:
    source = load_dir(MANIFESTS / "rbac")
    rendered = render(CHART, "--set", "rbac.migrationJobNamespaces={shop}")
    for kind in ("ClusterRole", "Role"):
        expected = {o["metadata"]["name"]: o["rules"] for o in by_kind(source, kind)}
        got = {o["metadata"]["name"]: o["rules"] for o in by_kind(rendered, kind)}
        assert got == expected
    assert not by_kind(render(CHART, "--set", "rbac.create=false"), "ClusterRole")


def test_plain_manifests_install_what_the_chart_installs(render: Render) -> None:
    """manifests/{crd,rbac,operator} equal the chart's default rendering object by object."""
    plain = [
        o
        for d in ("crd", "rbac", "operator")
        for o in load_dir(MANIFESTS / d)
        if o["kind"] != "Namespace"
        and (o["kind"] not in ("ServiceAccount", "Role", "RoleBinding")
             or "namespace" in o["metadata"])
    ]
    sa = next(o["metadata"] for o in plain if o["kind"] == "ServiceAccount")
    chart = render(CHART, namespace=sa["namespace"])

    def key(o: dict[str, Any]) -> tuple[str, str, str]:
        return (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])

    assert sorted(map(key, plain)) == sorted(map(key, chart))
    rendered = {key(o): without_helm_labels(o) for o in chart}
    for obj in plain:
        ours = without_helm_labels(obj)
        theirs = rendered[key(obj)]
        for field in ("spec", "rules", "roleRef", "subjects"):
            assert ours.get(field) == theirs.get(field), f"{key(obj)}: {field} differs"
    namespace = one(load_dir(MANIFESTS / "operator"), "Namespace")
    assert namespace["metadata"]["name"] == sa["namespace"]
    for obj in plain:
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "schemashift"
        assert "helm.sh/chart" not in obj["metadata"]["labels"]


def test_per_namespace_migration_rbac_equals_the_source(render: Render) -> None:
    """rbac.migrationJobNamespaces renders manifests/rbac's per-namespace objects there."""
    source = [
        o
        for o in load_dir(MANIFESTS / "rbac")
        if "namespace" not in o["metadata"]
        and o["kind"] in ("ServiceAccount", "RoleBinding", "Role")
    ]
    assert source, "manifests/rbac has no per-application-namespace objects any more?"
    rendered = render(CHART, "--set", "rbac.migrationJobNamespaces={shop}")
    for obj in source:
        match = [
            o
            for o in rendered
            if (o["kind"], o["metadata"]["name"], o["metadata"].get("namespace"))
            == (obj["kind"], obj["metadata"]["name"], "shop")
        ]
        assert len(match) == 1, (obj["kind"], obj["metadata"]["name"])
        if obj["kind"] == "RoleBinding":
            operator_sa = next(o for o in by_kind(rendered, "ServiceAccount")
                               if o["metadata"]["name"].endswith("-operator"))
            subjects = [{**s, "namespace": "shop"} if "namespace" not in s else  # the operator's
                        {**s, "name": operator_sa["metadata"]["name"],
                         "namespace": operator_sa["metadata"]["namespace"]}
                        for s in obj["subjects"]]
            assert match[0]["subjects"] == subjects
            assert match[0]["roleRef"] == obj["roleRef"]


# --- helm lint / template ------------------------------------------------------------------------


def test_helm_lint_operator_chart(helm: str) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr


def test_helm_lint_hook_chart(helm: str) -> None:
    result = run_helm(helm, "lint", "--strict", str(HOOK), "-f", str(HOOK_CI_VALUES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_operator_deployment(render: Render) -> None:
    objects = render(CHART)
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = one([{"kind": "c", **c} for c in pod["containers"]], "c")
    assert container["command"] + container["args"] == [
        "schemashift",
        "operator",
        "--liveness",
        "http://0.0.0.0:8080/healthz",
        "--metrics-port",
        "9090",
        "--lease-name",
        "schemashift",
    ]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert container["securityContext"] == RESTRICTED_CONTAINER
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate"}  # the new pod stands by
    sa = one(objects, "ServiceAccount")
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    for binding in by_kind(objects, "ClusterRoleBinding"):
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": sa["metadata"]["name"],
                "namespace": "schemashift-system",
            }
        ]
    service = one(objects, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert (
        service["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )


def test_operator_options_render(render: Render) -> None:
    objects = render(
        CHART,
        "--set",
        "operator.watchNamespaces={shop,billing}",
        "--set",
        "operator.jobImage=registry.example/app:1",
        "--set",
        "image.digest=sha256:" + "a" * 64,
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.serviceMonitor.labels.release=prom",
    )
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--job-image") + 1] == "registry.example/app:1"
    assert [args[i + 1] for i, a in enumerate(args) if a == "--namespace"] == ["shop", "billing"]
    assert container["image"] == "ghcr.io/schemashift/schemashift@sha256:" + "a" * 64
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "replicaCount=-1"], "/replicaCount"),
        (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
        (["--set", "metrics.port=70000"], "/metrics/port"),
        (["--set", "metrics.serviceMonitor.interval=often"], "/metrics/serviceMonitor/interval"),
        (["--set", "operator.watchNamespaces[0]=Not_A_Namespace"], "/operator/watchNamespaces/0"),
        (["--set", "crds.create=maybe"], "/crds/create"),
        (["--set", "replicas=1"], "replicas"),  # a misspelt key is not silently ignored
        (["--set", "image.digest=latest"], "/image/digest"),
    ],
)
def test_wrong_values_fail_with_a_readable_error(helm: str, args: list[str], message: str) -> None:
    result = run_helm(helm, "template", "x", str(CHART), *args)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


def test_replicas_elect_a_leader_over_a_lease_named_after_the_release(render: Render) -> None:
    objects = render(CHART, "--set", "replicaCount=2")
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--lease-name") + 1] == deployment["metadata"]["name"]
    assert "--no-leader-elect" not in args
    role = next(o for o in objects if o["kind"] == "Role" and any(
        "leases" in r["resources"] for r in o["rules"]))
    assert role["metadata"]["namespace"] == deployment["metadata"]["namespace"]


def test_without_leader_election_the_operator_is_a_singleton(helm: str, render: Render) -> None:
    single = one(render(CHART, "--set", "operator.leaderElection.enabled=false"), "Deployment")
    assert single["spec"]["strategy"]["type"] == "Recreate"
    assert "--no-leader-elect" in single["spec"]["template"]["spec"]["containers"][0]["args"]
    result = run_helm(helm, "template", "x", str(CHART), "--set", "replicaCount=2",
                      "--set", "operator.leaderElection.enabled=false")
    assert result.returncode != 0
    assert "replicaCount > 1 needs operator.leaderElection.enabled" in result.stderr


def test_service_monitor_without_service_is_refused(helm: str) -> None:
    result = run_helm(
        helm,
        "template",
        "x",
        str(CHART),
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.service.enabled=false",
    )
    assert result.returncode != 0
    assert "metrics.serviceMonitor.enabled needs metrics.service.enabled" in result.stderr


def test_with_watch_namespaces_the_operator_is_granted_only_there(render: Render) -> None:
    objects = render(CHART, "--set", "operator.watchNamespaces={shop,billing}",
                     release="r", namespace="ops")
    roles = {o["metadata"]["name"]: o for o in by_kind(objects, "ClusterRole")}
    cluster_bound = [b["roleRef"]["name"] for b in by_kind(objects, "ClusterRoleBinding")]
    assert cluster_bound == ["r-schemashift-operator-crds"]
    assert roles["r-schemashift-operator-crds"]["rules"] == [
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
         "verbs": ["list", "watch"]}]
    namespaced = sorted((b["metadata"]["namespace"], b["roleRef"]["name"])
                        for b in by_kind(objects, "RoleBinding")
                        if b["roleRef"]["name"] == "r-schemashift-operator")
    assert namespaced == [("billing", "r-schemashift-operator"), ("shop", "r-schemashift-operator")]
