"""The migration Job: deterministic, locked down, secrets by reference only, options by env."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemashift import cli
from schemashift.kube import jobspec, resource
from schemashift.runner import options_table as table
from schemashift.runner.options import RunOptions

SPEC: dict[str, Any] = {
    "database": {"urlSecretRef": {"name": "app-db", "key": "url"}},
    "migrations": {"image": "registry.example/app:1.42.0", "scriptLocation": "/app/migrations"},
    "target": "9f8e7d6c",
    "environment": "production",
    "phase": "expand",
    "backup": {"enabled": True, "method": "restorePoint", "archiveWait": "5m",
               "url": "s3://backups/app/", "endpoint": "http://seaweedfs:8333",
               "credentialsSecretRef": {"name": "backup-s3"},
               "retention": {"keep": 5, "maxAge": "720h"}},
    "rollback": {"policy": "restore"},
    "safety": {"lockTimeout": "1.5s", "statementTimeout": "1h30m", "lockRetries": 7, "lint": "warn",
               "allow": ["add-column-volatile-default", "drop-column"]},
    "deadlineSeconds": 600,
    "job": {"serviceAccountName": "migrator", "nodeSelector": {"pool": "batch"},
            "tolerations": [{"key": "batch", "operator": "Exists"}],
            "imagePullSecrets": [{"name": "regcred"}], "ttlSecondsAfterFinished": 120},
}


def body(spec: dict[str, Any] | None = None, generation: int = 3) -> dict[str, Any]:
    return {"metadata": {"name": "app", "namespace": "shop", "uid": "u-1",
                         "generation": generation},
            "spec": spec if spec is not None else SPEC}


def pod(job: dict[str, Any]) -> dict[str, Any]:
    return dict(job["spec"]["template"]["spec"])


def env(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod(job)["containers"][0]["env"]}


def test_job_name_is_deterministic_and_short() -> None:
    first = jobspec.build_job(body(), "img", "apply")["metadata"]["name"]
    assert first == jobspec.build_job(body(), "img", "apply")["metadata"]["name"]
    others = {jobspec.build_job(body(generation=4), "img", "apply")["metadata"]["name"],
              jobspec.build_job(body(), "img", "plan")["metadata"]["name"],
              jobspec.build_job(body(), "img", "apply", seq=1)["metadata"]["name"]}
    assert first not in others and len(others) == 3
    long = jobspec.job_name("x" * 250, "uid", 12345, "replan", 99)
    assert len(long) <= 63 and long.endswith(long.split("-", 1)[1][-5:])


def test_job_is_owned_labelled_and_runs_once() -> None:
    job = jobspec.build_job(body(), "img", "apply")
    assert job["metadata"]["ownerReferences"] == [{
        "apiVersion": "schemashift.io/v1alpha1", "kind": "SchemaMigration", "name": "app",
        "uid": "u-1", "controller": True, "blockOwnerDeletion": True}]
    assert job["metadata"]["labels"][resource.MIGRATION_LABEL] == "app"
    assert job["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "schemashift"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 600
    assert job["spec"]["ttlSecondsAfterFinished"] == 120
    assert pod(job)["restartPolicy"] == "Never"


def test_pod_is_restricted_with_a_writable_tmp() -> None:
    spec = pod(jobspec.build_job(body(), "img", "apply"))
    container = spec["containers"][0]
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in spec["volumes"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["terminationMessagePath"] == "/dev/termination-log"


def test_pod_settings_come_from_spec_job() -> None:
    spec = pod(jobspec.build_job(body(), "registry.example/app:1.42.0", "apply"))
    assert spec["serviceAccountName"] == "migrator"
    assert spec["nodeSelector"] == {"pool": "batch"}
    assert spec["tolerations"] == [{"key": "batch", "operator": "Exists"}]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["containers"][0]["image"] == "registry.example/app:1.42.0"
    assert spec["containers"][0]["resources"] == jobspec.DEFAULT_RESOURCES
    minimal = pod(jobspec.build_job(body({"database": SPEC["database"],
                                          "migrations": SPEC["migrations"]}), "img", "apply"))
    assert minimal["serviceAccountName"] == resource.DEFAULT_JOB_SERVICE_ACCOUNT
    assert "envFrom" not in minimal["containers"][0] and "nodeSelector" not in minimal


def test_secrets_only_by_reference() -> None:
    job = jobspec.build_job(body(), "img", "apply")
    container = pod(job)["containers"][0]
    assert env(job)["SCHEMASHIFT_DATABASE_URL"] == {
        "secretKeyRef": {"name": "app-db", "key": "url"}}
    assert container["envFrom"] == [{"secretRef": {"name": "backup-s3"}}]
    assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(job)


def run_job_params(job: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The Job's env, parsed by the real `schemashift run-job` option definitions."""
    for option in table.RUN_OPTIONS:
        monkeypatch.delenv(option.env, raising=False)
    for name, value in env(job).items():
        if name.startswith("SCHEMASHIFT_") and isinstance(value, str):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("SCHEMASHIFT_DATABASE_URL", "postgresql+psycopg://u:p@h/db")
    # Under `schemashift`: a context of its own would rename click's help option for later uses.
    parent = cli.cli.make_context("schemashift", ["run-job"])
    return dict(cli.run_job.make_context("run-job", [], parent=parent).params)


@pytest.mark.parametrize("purpose,dry_run", [("apply", False), ("plan", True), ("replan", True)])
def test_every_spec_option_reaches_run_job_through_the_env(
    monkeypatch: pytest.MonkeyPatch, purpose: jobspec.Purpose, dry_run: bool
) -> None:
    """Each row of SPEC_OPTIONS, set in SPEC to a value other than its default, arrives in the
    runner's RunOptions as the spec has it (the dry run: as the Job's purpose says)."""
    job = jobspec.build_job(body(), "img", purpose)
    own = {k for k in env(job) if k.startswith("SCHEMASHIFT_")}
    known = {p.envvar for p in cli.run_job.params if getattr(p, "envvar", None)}
    assert own - {"SCHEMASHIFT_DATABASE_URL"} <= known
    params = run_job_params(job, monkeypatch)
    received = RunOptions(**{name: params[name] for name in table.BY_NAME})
    for option in table.SPEC_OPTIONS:
        expected = dry_run if option is table.DRY_RUN else option.check(option.from_spec(SPEC))
        assert getattr(received, option.name) == expected, option.name
        if option is not table.DRY_RUN:
            assert expected != option.default, f"SPEC leaves {option.cr} at its default"
    assert params["resource"] == "shop/app"
    assert params["migrations"].as_posix() == "/app/migrations"
    assert params["environment"] == "production"
    assert str(params["termination_log"]) == "/dev/termination-log"
    assert env(job)["AWS_ENDPOINT_URL"] == "http://seaweedfs:8333"


def test_a_spec_at_its_defaults_runs_with_the_runners_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    minimal = {"database": SPEC["database"], "migrations": SPEC["migrations"]}
    params = run_job_params(jobspec.build_job(body(minimal), "img", "apply"), monkeypatch)
    # The one difference: a Job has a deadline (the CRD's default), a local run has none.
    assert RunOptions(**{name: params[name] for name in table.BY_NAME}) == RunOptions(
        deadline_seconds=table.DEADLINE_SECONDS.job_default)


def test_a_disabled_backup_takes_no_restore_point_either(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = {**SPEC, "backup": {**SPEC["backup"], "enabled": False}}
    params = run_job_params(jobspec.build_job(body(spec), "img", "apply"), monkeypatch)
    assert (params["backup_method"], params["backup_url"]) == ("pgDump", None)


@pytest.mark.parametrize("purpose,expected", [("apply", "abc123"), ("plan", None),
                                              ("replan", None)])
def test_only_the_apply_job_is_bound_to_the_approved_plan(
    monkeypatch: pytest.MonkeyPatch, purpose: jobspec.Purpose, expected: str | None
) -> None:
    job = jobspec.build_job(body(), "img", purpose, expected_plan_hash="abc123")
    assert env(job).get("SCHEMASHIFT_EXPECT_PLAN_HASH") == expected
    assert run_job_params(job, monkeypatch)["expect_plan_hash"] == expected


def test_the_cpu_limit_reaches_the_runner_for_pg_dumps_jobs() -> None:
    limited = {**SPEC, "job": {**SPEC["job"], "resources": {"limits": {"cpu": "1500m"}}}}
    assert env(jobspec.build_job(body(limited), "img", "apply"))["SCHEMASHIFT_CPU_LIMIT"] == {
        "resourceFieldRef": {"containerName": "migrate", "resource": "limits.cpu",
                             "divisor": "1"}}
    assert "SCHEMASHIFT_CPU_LIMIT" not in env(jobspec.build_job(body(), "img", "apply"))
