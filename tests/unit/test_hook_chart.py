"""charts/schemashift-hook rendered by the real helm (`helm template`, as Argo CD renders it):
expand before the release's resources, contract after them, a waiter per phase, names from the
release content, and how Argo CD reads the same output (gitops-engine's rules, restated in
`argo_view`). Installs on the real API server: tests/e2e/test_chart_install.py and
tests/e2e/test_hook_expand_contract.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemashift import durations
from tests.fixtures import argocd_health
from tests.unit.test_chart import (
    HOOK,
    HOOK_CI_VALUES,
    MANIFESTS,
    RESTRICTED_CONTAINER,
    Render,
    by_kind,
    load_dir,
    run_helm,
)


@pytest.fixture(scope="module")
def render(helm: str) -> Render:
    def _render(chart: Path, *args: str, release: str, namespace: str) -> list[dict[str, Any]]:
        result = run_helm(helm, "template", release, str(chart), "--namespace", namespace, *args)
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    return _render


HOOK_EVENTS = {"expand": {"pre-install", "pre-upgrade"},
               "contract": {"post-install", "post-upgrade"}}


def render_hook(render: Render, *args: str, release: str = "hms") -> list[dict[str, Any]]:
    return render(HOOK, "-f", str(HOOK_CI_VALUES), *args, release=release, namespace="shop")


def hook_of(obj: dict[str, Any]) -> tuple[set[str], int, set[str]]:
    annotations = obj["metadata"]["annotations"]
    return (set(annotations["helm.sh/hook"].split(",")),
            int(annotations["helm.sh/hook-weight"]),
            set(annotations["helm.sh/hook-delete-policy"].split(",")))


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, [(o["kind"], o["metadata"]["name"]) for o in objects])
    return found[0]


def migrations_by_phase(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["spec"]["phase"]: o for o in by_kind(objects, "SchemaMigration")}


# gitops-engine (pkg/sync/hook, pkg/sync/syncwaves): an argocd.argoproj.io/hook annotation wins,
# else helm.sh/hook maps pre-install/pre-upgrade to PreSync and post-install/post-upgrade to
# PostSync; the wave is argocd.argoproj.io/sync-wave, else helm.sh/hook-weight; delete policies
# of both annotations add up, none at all meaning BeforeHookCreation.
_ARGO_TYPES = {"pre-install": "PreSync", "pre-upgrade": "PreSync",
               "post-install": "PostSync", "post-upgrade": "PostSync"}
_ARGO_POLICIES = {"before-hook-creation": "BeforeHookCreation",
                  "hook-succeeded": "HookSucceeded", "hook-failed": "HookFailed"}


def argo_view(obj: dict[str, Any]) -> tuple[set[str], int, set[str]]:
    annotations = obj["metadata"].get("annotations") or {}
    native = annotations.get("argocd.argoproj.io/hook")
    types = set(native.split(",")) if native else {
        _ARGO_TYPES[t] for t in annotations.get("helm.sh/hook", "").split(",") if t in _ARGO_TYPES}
    wave = int(annotations.get("argocd.argoproj.io/sync-wave")
               or annotations.get("helm.sh/hook-weight") or 0)
    policies = {p for p in annotations.get("argocd.argoproj.io/hook-delete-policy", "").split(",")
                if p} | {_ARGO_POLICIES[p] for p in
                         annotations.get("helm.sh/hook-delete-policy", "").split(",") if p}
    return types, wave, policies or {"BeforeHookCreation"}


def test_expand_runs_before_the_release_and_contract_after_it(render: Render) -> None:
    objects = render_hook(render, "--set", "secrets.database.create=true",
                          "--set", "secrets.database.url=postgresql://u:p@db/app")
    phases = migrations_by_phase(objects)
    assert set(phases) == {"expand", "contract"}
    for phase, smig in phases.items():
        events, weight, policy = hook_of(smig)
        assert events == HOOK_EVENTS[phase] and weight == -10
        assert policy == {"before-hook-creation"}, "kept after success: the record of the run"
        assert smig["metadata"]["labels"]["schemashift.io/phase"] == phase
        waiter = named(objects, "Job", f"{smig['metadata']['name']}-wait")
        assert hook_of(waiter)[0] == events and hook_of(waiter)[1] == 0
        assert "hook-succeeded" in hook_of(waiter)[2]
        assert waiter["metadata"]["annotations"]["helm.sh/hook-output-log-policy"] == (
            "hook-failed")  # helm prints the waiter's last words: where the database is
        for kind in ("ServiceAccount", "Role", "RoleBinding"):
            rbac = named(objects, kind, f"{smig['metadata']['name']}-wait")
            assert hook_of(rbac)[:2] == (events, -20)
    expand, contract = phases["expand"]["spec"], phases["contract"]["spec"]
    assert {k: v for k, v in expand.items() if k != "phase"} == {
        k: v for k, v in contract.items() if k != "phase"}
    assert expand["database"]["urlSecretRef"] == {"name": "hms-schemashift-db", "key": "url"}
    assert expand["job"]["serviceAccountName"] == "hms-schemashift-runner"
    # The Secret and the runner's ServiceAccount come first and stay for the contract phase.
    for kind, name, weight in (("Secret", "hms-schemashift-db", -30),
                               ("ServiceAccount", "hms-schemashift-runner", -20)):
        assert hook_of(named(objects, kind, name)) == (HOOK_EVENTS["expand"], weight,
                                                       {"before-hook-creation"})


def test_without_contract_only_the_expand_runs_and_nothing_is_kept(render: Render) -> None:
    objects = render_hook(render, "--set", "contract.enabled=false",
                          "--set", "secrets.database.create=true",
                          "--set", "secrets.database.url=postgresql://u:p@db/app")
    assert set(migrations_by_phase(objects)) == {"expand"}
    assert all(hook_of(o)[0] == HOOK_EVENTS["expand"] for o in objects)
    for kind, name in (("Secret", "hms-schemashift-db"),
                       ("ServiceAccount", "hms-schemashift-runner")):
        assert "hook-succeeded" in hook_of(named(objects, kind, name))[2]


def test_each_waiter_waits_for_its_phase_with_read_rights_on_it_only(render: Render) -> None:
    objects = render_hook(render)
    for smig in migrations_by_phase(objects).values():
        name = smig["metadata"]["name"]
        job = named(objects, "Job", f"{name}-wait")
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["command"] + container["args"] == [
            "schemashift", "wait", name, "--namespace", "shop", "--timeout", "2100s"]
        assert job["spec"]["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"
        assert job["spec"]["activeDeadlineSeconds"] > 2100
        assert container["securityContext"] == RESTRICTED_CONTAINER
        assert pod["serviceAccountName"] == f"{name}-wait"
        binding = named(objects, "RoleBinding", f"{name}-wait")
        assert binding["subjects"][0]["name"] == pod["serviceAccountName"]
        role = named(objects, "Role", binding["roleRef"]["name"])
        assert role["rules"] == [{"apiGroups": ["schemashift.io"],
                                  "resources": ["schemamigrations"],
                                  "resourceNames": [name], "verbs": ["get", "list", "watch"]}]


def names_of(objects: list[dict[str, Any]]) -> set[str]:
    return {o["metadata"]["name"] for o in objects}


def test_names_follow_the_release_content_never_the_revision(render: Render) -> None:
    """Argo CD renders with `helm template`: .Release.Revision is always 1 there. Two releases
    with different images get different names; the same content gets the same names."""
    image = "--set-string", "migration.spec.migrations.image=registry.example/hms:{}"
    first = render_hook(render, image[0], image[1].format("1.42.0"))
    again = render_hook(render, image[0], image[1].format("1.42.0"),
                        "--set", "waiter.timeout=2h", "--set", "global.unrelated=x")
    second = render_hook(render, image[0], image[1].format("1.43.0"))
    target = render_hook(render, image[0], image[1].format("1.42.0"),
                         "--set", "migration.spec.target=ae1027a6acf")
    smigs = [{o["metadata"]["name"] for o in by_kind(r, "SchemaMigration")}
             for r in (first, again, second, target)]
    assert smigs[0] == smigs[1]
    assert smigs[0].isdisjoint(smigs[2]) and smigs[0].isdisjoint(smigs[3])
    assert names_of(first) - {"hms-schemashift-runner"} != names_of(second) - {
        "hms-schemashift-runner"}
    for name in smigs[0]:
        assert name.startswith("hms-") and name.rsplit("-", 1)[1] in ("expand", "contract")
        assert "-r1" not in name
    hashes = {o["metadata"]["labels"]["schemashift.io/content"]
              for o in by_kind(first, "SchemaMigration")}
    assert len(hashes) == 1 and all(h in n for h in hashes for n in smigs[0])


def test_long_release_names_stay_within_kubernetes_limits(render: Render) -> None:
    objects = render_hook(render, release="a" * 53)
    assert max(len(n) for n in names_of(objects)) <= 63


def test_a_fixed_base_name_is_rendered_with_tpl(render: Render) -> None:
    image = "registry.example/hms:{{ .Values.global.tag }}"
    objects = render_hook(render, "--set", "global.tag=1.42.0",
                          "--set-string", f"migration.spec.migrations.image={image}",
                          "--set", "migration.name=hms-{{ .Values.global.tag }}")
    phases = migrations_by_phase(objects)
    assert phases["expand"]["metadata"]["name"] == "hms-1.42.0-expand"
    assert phases["contract"]["metadata"]["name"] == "hms-1.42.0-contract"
    assert phases["expand"]["spec"]["migrations"]["image"] == "registry.example/hms:1.42.0"


def test_argo_cd_runs_the_default_rendering_as_presync_then_postsync(render: Render) -> None:
    """Every object is a hook for Argo CD (none is applied with the application), and within
    each phase the waves order RBAC, then the SchemaMigration, then its waiter."""
    objects = render_hook(render, "--set", "secrets.database.create=true",
                          "--set", "secrets.database.url=postgresql://u:p@db/app")
    plan: dict[str, list[tuple[int, str, str]]] = {}
    for obj in objects:
        types, wave, policies = argo_view(obj)
        assert len(types) == 1, obj["metadata"]["name"]
        plan.setdefault(types.pop(), []).append((wave, obj["kind"], obj["metadata"]["name"]))
        if obj["kind"] == "SchemaMigration":
            assert policies == {"BeforeHookCreation"}
    assert set(plan) == {"PreSync", "PostSync"}
    for phase, sync in (("expand", "PreSync"), ("contract", "PostSync")):
        waves = {kind: wave for wave, kind, name in plan[sync] if phase in name}
        assert waves["ServiceAccount"] < waves["SchemaMigration"] < waves["Job"]
    pre = {name: wave for wave, _, name in plan["PreSync"]}
    assert pre["hms-schemashift-db"] < pre["hms-schemashift-runner"] < min(
        w for n, w in pre.items() if n.endswith("-expand"))


def test_argo_cd_mode_lets_the_health_check_gate_the_hooks(render: Render) -> None:
    objects = render_hook(render, "--set", "argocd.enabled=true")
    assert by_kind(objects, "Job") == [] and by_kind(objects, "Role") == []
    assert sorted(o["kind"] for o in objects) == [
        "SchemaMigration", "SchemaMigration", "ServiceAccount"]
    phases = migrations_by_phase(objects)
    assert argo_view(phases["expand"])[0] == {"PreSync"}
    assert argo_view(phases["contract"])[0] == {"PostSync"}
    # As created, before the operator wrote anything: never Healthy (argo-cd#16357).
    verdicts = argocd_health.check(phases.values())
    assert [v["status"] for v in verdicts] == ["Progressing", "Progressing"], verdicts


def test_migration_jobs_have_no_api_rights(render: Render) -> None:
    """The runner's ServiceAccount is bound to nothing that grants a verb, in the plain manifests
    and in the hook chart (which creates only the ServiceAccount)."""
    source = next(
        o for o in load_dir(MANIFESTS / "rbac")
        if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "schemashift-migration")
    assert source["rules"] == []
    objects = render_hook(render)
    bound = {b["subjects"][0]["name"] for b in by_kind(objects, "RoleBinding")}
    assert "hms-schemashift-runner" not in bound
    assert [o["metadata"]["name"] for o in by_kind(objects, "ServiceAccount")
            if "runner" in o["metadata"]["name"]] == ["hms-schemashift-runner"]


@pytest.mark.parametrize(("timeout", "seconds"), [
    ("1h30m", "5400s"), ("1.5s", "2s"), ("250ms", "1s"), ("2m30s", "150s"), ("45m", "2700s")])
def test_the_waiters_read_the_one_duration_grammar(render: Render, timeout: str,
                                                  seconds: str) -> None:
    objects = render_hook(render, "--set", f"waiter.timeout={timeout}")
    exact = durations.seconds(timeout, name="waiter.timeout")
    assert exact <= int(seconds[:-1]) < exact + 1  # rounded up to whole seconds
    jobs = by_kind(objects, "Job")
    assert len(jobs) == 2
    assert {j["spec"]["template"]["spec"]["containers"][0]["args"][-1] for j in jobs} == {seconds}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "migration.spec.migrations.image is required"),
        (["--set", "migration.spec.migrations.image=registry.example/hms:1"],
         "migration.spec.backup.url is required when migration.spec.backup.enabled is true"),
        (["--set", "migration.spec.migrations.image=registry.example/hms:1",
          "--set", "migration.spec.backup.url=s3://hms-backups/hms/"],
         "migration.spec.database.urlSecretRef.name is required"),
        (["-f", str(HOOK_CI_VALUES), "--set", "secrets.database.create=true"],
         "secrets.database.url is required"),
        (["-f", str(HOOK_CI_VALUES), "--set", "waiter.timeout=soon"], "/waiter/timeout"),
        (["-f", str(HOOK_CI_VALUES), "--set-string", "waiter.timeout=5",
          "--skip-schema-validation"],
         'waiter.timeout "5" is not a duration: write a number and a unit'),
        (["-f", str(HOOK_CI_VALUES), "--set", "migration.spec.environment=prod"],
         "/migration/spec/environment"),
        (["-f", str(HOOK_CI_VALUES), "--set", "waiter.tmeout=1h"], "tmeout"),
        (["-f", str(HOOK_CI_VALUES), "--set", "migration.spec.phase=contract"],
         "migration.spec.phase is set by this chart"),
        (["-f", str(HOOK_CI_VALUES), "--set", "contract.enabled=maybe"], "/contract/enabled"),
        (["-f", str(HOOK_CI_VALUES), "--set", "migration.name=" + "n" * 50],
         "/migration/name"),
    ],
)
def test_hook_chart_wrong_values_fail_readably(helm: str, args: list[str], message: str) -> None:
    result = run_helm(helm, "template", "hms", str(HOOK), *args)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_the_helm_docs_example_values_render(render: Render) -> None:
    """docs/helm-hook.md's values block, under `migrate:` of an application chart."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "helm-hook.md").read_text()
    block = text.split("`values.yaml` of your application", 1)[1].split("```yaml\n", 1)[1]
    values = yaml.safe_load(block.split("```", 1)[0])
    migrate = values["migrate"]
    objects = render(HOOK, "--set-json", f"migration={json.dumps(migrate['migration'])}",
                     "--set-json", f"global={json.dumps(values['global'])}",
                     release="hms", namespace="shop")
    assert {o["spec"]["migrations"]["image"] for o in by_kind(objects, "SchemaMigration")} == {
        "ghcr.io/schemashift/hms-migrations:1.42.0"}
