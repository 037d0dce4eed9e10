"""The migration Job, as a plain dict, from a SchemaMigration (pure functions).

Secrets reach the pod only through `secretKeyRef`/`envFrom`: no value is ever copied into the Job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal

from schemashift.kube import resource
from schemashift.runner import options_table as table
from schemashift.runner.dump_dir import CPU_LIMIT_ENV

Purpose = Literal["plan", "replan", "apply"]

TERMINATION_LOG = "/dev/termination-log"
CONTAINER = "migrate"
DEFAULT_RESOURCES: Mapping[str, Any] = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"memory": "1Gi"},
}
_NAME_LIMIT = 63  # a Job's name becomes its pods' `job-name` label value


def job_name(name: str, uid: str, generation: int, purpose: Purpose, seq: int) -> str:
    """Deterministic per (resource, generation, step): a restarted operator finds, never dupes."""
    digest = hashlib.sha256(f"{uid}/{generation}/{purpose}/{seq}".encode()).hexdigest()[:5]
    suffix = f"-{generation}-{purpose[0]}{seq}-{digest}"
    return f"{name[: _NAME_LIMIT - len(suffix)].rstrip('-.')}{suffix}"


def label_value(name: str) -> str:
    if len(name) <= _NAME_LIMIT:
        return name
    return f"{name[:50].rstrip('-.')}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def owner_reference(body: resource.Body) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": resource.API_VERSION,
        "kind": resource.KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def run_option_values(spec: resource.MigrationSpec, purpose: Purpose,
                      expected_plan_hash: str | None = None) -> dict[str, Any]:
    """The run options this Job runs with, by RunOptions field (unset ones: the runner's default).

    Only an apply Job changes anything, and only it is bound to the approved plan.
    """
    values: dict[str, Any] = {option.name: getattr(spec, option.name)
                              for option in table.SPEC_OPTIONS}
    values[table.DRY_RUN.name] = purpose != "apply"
    values[table.BACKUP_URL.name] = spec.backup_url if spec.backup_enabled else None
    if not spec.backup_enabled:  # backup.enabled: false takes no backup, whatever the method
        values[table.BACKUP_METHOD.name] = table.BACKUP_METHOD.default
    if purpose == "apply":
        values[table.EXPECT_PLAN_HASH.name] = expected_plan_hash
    return values


def job_env(spec: resource.MigrationSpec, ref: str, purpose: Purpose,
            expected_plan_hash: str | None = None) -> list[dict[str, Any]]:
    """Options of `schemashift run-job`, by the environment variables it reads."""
    plain = {
        "SCHEMASHIFT_RESOURCE": ref,
        "SCHEMASHIFT_MIGRATIONS": spec.script_location,
        table.ENVIRONMENT.env: spec.environment,
    }
    for name, value in run_option_values(spec, purpose, expected_plan_hash).items():
        option = table.BY_NAME[name]
        text = option.env_text(value)
        if text is not None:
            plain[option.env] = text
    if spec.backup_enabled and spec.backup_endpoint:
        plain["AWS_ENDPOINT_URL"] = spec.backup_endpoint
    plain.update({
        "SCHEMASHIFT_TERMINATION_LOG": TERMINATION_LOG,
        "HOME": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    url_ref = {"name": spec.database_url.name, "key": spec.database_url.key}
    return [
        {"name": "SCHEMASHIFT_DATABASE_URL", "valueFrom": {"secretKeyRef": url_ref}},
        *({"name": k, "value": v} for k, v in plain.items()),
        *cpu_limit_env(spec),
    ]


def cpu_limit_env(spec: resource.MigrationSpec) -> list[dict[str, Any]]:
    """The container's CPU limit (rounded up) for pg_dump's job count, when it has one
    (without one the Downward API would give the node's CPUs)."""
    if "cpu" not in (spec.resources.get("limits") or {}):
        return []
    return [{"name": CPU_LIMIT_ENV, "valueFrom": {"resourceFieldRef": {
        "containerName": CONTAINER, "resource": "limits.cpu", "divisor": "1"}}}]


def container(
    spec: resource.MigrationSpec, image: str, ref: str, purpose: Purpose,
    expected_plan_hash: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["schemashift", "run-job"],
        "env": job_env(spec, ref, purpose, expected_plan_hash),
        "resources": dict(spec.resources) or dict(DEFAULT_RESOURCES),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if spec.backup_enabled and spec.backup_credentials:
        body["envFrom"] = [{"secretRef": {"name": spec.backup_credentials}}]
    return body


def build_job(
    body: resource.Body, image: str, purpose: Purpose, seq: int = 0,
    expected_plan_hash: str | None = None,
) -> dict[str, Any]:
    """The Job for one step (plan, replan or apply) of a SchemaMigration's current generation."""
    meta = body["metadata"]
    spec = resource.MigrationSpec.from_body(body["spec"])
    generation = int(meta.get("generation", 1))
    name = job_name(meta["name"], meta["uid"], generation, purpose, seq)
    labels = {
        **resource.MANAGED_BY,
        resource.MIGRATION_LABEL: label_value(meta["name"]),
        resource.PURPOSE_LABEL: purpose,
        resource.GENERATION_LABEL: str(generation),
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": spec.service_account or resource.DEFAULT_JOB_SERVICE_ACCOUNT,
        # No API rights, no token: progress is read from the pod's log by the operator.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container(spec, image, resource.ref(body), purpose, expected_plan_hash)],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in spec.tolerations]
    if spec.priority_class:
        pod_spec["priorityClassName"] = spec.priority_class
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in spec.image_pull_secrets]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": {"schemashift.io/resource": resource.ref(body)},
            "ownerReferences": [owner_reference(body)],
        },
        "spec": {
            "backoffLimit": 0,  # the runner retries safely itself; a blind pod rerun is unsafe
            "activeDeadlineSeconds": spec.deadline_seconds,
            "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
