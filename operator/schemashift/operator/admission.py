"""Before any Job: what the schema cannot check (image, policy, ServiceAccount, Secrets) and the
queue of runs for one database."""

from __future__ import annotations

from schemashift import reasons
from schemashift.kube import jobspec, resource
from schemashift.kube import policy as kpolicy
from schemashift.kube.client import SecretsNotReadable
from schemashift.operator.context import (
    RUNNING_STEPS,
    Body,
    Context,
)
from schemashift.operator.launch import launch
from schemashift.operator.status_writes import fresh_fields, invalid, set_status


async def start(ctx: Context, body: Body) -> None:
    spec = resource.MigrationSpec.from_body(body["spec"])
    problem = await validate(ctx, body, spec)
    if problem is not None:
        await invalid(ctx, body, *problem)
        return
    holder = await database_holder(ctx, body, spec)  # a namespace list: only for valid ones
    if holder is not None:
        await _wait_for_database(ctx, body, spec, holder)
        return
    purpose: jobspec.Purpose = "plan" if spec.dry_run or spec.approval_required else "apply"
    await launch(ctx, body, spec, purpose, fresh_fields())


async def validate(
    ctx: Context, body: Body, spec: resource.MigrationSpec
) -> tuple[str, str] | None:
    """What the schema cannot check: the image, the policy, that the ServiceAccount exists and
    the Secrets exist with their keys."""
    namespace = body["metadata"]["namespace"]
    if not (spec.image or ctx.job_image):
        return reasons.IMAGE_NOT_SET, ("spec.migrations.image is empty and the operator has no "
                                       "default --job-image: set spec.migrations.image")
    denied = [] if ctx.policy is None else kpolicy.check(ctx.policy, spec, ctx.job_image)
    if denied:  # before any Secret is looked at: a refused spec learns nothing about them
        return reasons.POLICY_DENIED, kpolicy.describe(denied)
    account = spec.service_account or resource.DEFAULT_JOB_SERVICE_ACCOUNT
    if not await ctx.api.service_account_exists(namespace, account):
        # The Job controller would only retry creating its pod until the deadline.
        return reasons.SERVICE_ACCOUNT_NOT_FOUND, (
            f"ServiceAccount {namespace}/{account} does not exist: create it (an admin installs "
            "schemashift-migration per namespace, see docs/install.md) or set "
            "spec.job.serviceAccountName")
    for name, keys in spec.secret_keys().items():
        try:
            found = await ctx.api.secret_keys(namespace, name)
        except SecretsNotReadable:  # not granted here: the pod reports a missing Secret itself
            return None
        if found is None:
            return reasons.SECRET_NOT_FOUND, (f"Secret {namespace}/{name} does not exist: create "
                                              f"it with key(s) {', '.join(keys)}")
        missing = [k for k in keys if k not in found]
        if missing:
            return reasons.SECRET_KEY_NOT_FOUND, (f"Secret {namespace}/{name} has no key(s) "
                                                  f"{', '.join(missing)}: add them")
    return None


async def database_holder(ctx: Context, body: Body, spec: resource.MigrationSpec) -> str | None:
    """Another SchemaMigration of the same database that runs, or is queued ahead of this one."""
    meta = body["metadata"]
    key = spec.database_key(meta["namespace"])
    mine = (meta.get("creationTimestamp", ""), meta["name"])
    for other in await ctx.api.list_migrations(meta["namespace"]):
        ometa = other["metadata"]
        if ometa.get("uid") == meta.get("uid"):
            continue
        if resource.MigrationSpec.from_body(other.get("spec") or {}).database_key(
                meta["namespace"]) != key:
            continue
        ostep = (other.get("status") or {}).get("step", "")
        queued_ahead = ostep in ("", "waiting") and not ometa.get("deletionTimestamp") and (
            ometa.get("creationTimestamp", ""), ometa["name"]) < mine
        if ostep in RUNNING_STEPS or queued_ahead:
            return str(ometa["name"])
    return None


async def _wait_for_database(ctx: Context, body: Body, spec: resource.MigrationSpec,
                             holder: str) -> None:
    status = body.get("status") or {}
    message = (f"waiting for SchemaMigration {holder}, which migrates the same database (Secret "
               f"{spec.database_url.name} key {spec.database_url.key}); starts when it finishes")
    if status.get("step") == "waiting" and status.get("message") == message:
        return
    await set_status(ctx, body, "Pending", reasons.WAITING_FOR_DATABASE, message,
               {"step": "waiting", **fresh_fields()}, event="Normal")
