"""Before any Job: what the schema cannot check (image, policy, ServiceAccount, Secrets) and the
queue of runs for one database."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemashift import reasons
from schemashift.kube import jobspec, resource
from schemashift.kube import policy as kpolicy
from schemashift.kube.client import SecretsNotReadable
from schemashift.operator.context import (
    RUNNING_STEPS,
    Body,
    Context,
    Peer,
)
from schemashift.operator.launch import launch
from schemashift.operator.status_writes import fresh_fields, invalid, set_status


async def start(ctx: Context, body: Body) -> None:
    spec = resource.MigrationSpec.from_body(body["spec"])
    if _still_waiting(ctx, body, spec):
        return  # its turn comes with a watch event of its database (next_in_line)
    problem = await validate(ctx, body, spec)
    if problem is not None:
        await invalid(ctx, body, *problem)
        return
    holder = database_holder(ctx, body, spec)
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


def peer_entry(body: Body) -> dict[str, Peer]:
    """The watched resource under its database's key (kopf index); nothing for a spec that
    names no database (the schema requires one: only a stored object from before that)."""
    meta = body["metadata"]
    try:
        key = resource.MigrationSpec.from_body(body.get("spec") or {}).database_key(
            meta["namespace"])
    except (KeyError, TypeError, ValueError):
        return {}
    return {key: Peer(uid=str(meta.get("uid")), name=meta["name"],
                      created=meta.get("creationTimestamp") or "",
                      step=(body.get("status") or {}).get("step", ""),
                      deleting=bool(meta.get("deletionTimestamp")))}


def database_holder(ctx: Context, body: Body, spec: resource.MigrationSpec) -> str | None:
    """Another SchemaMigration of the same database that runs, or is queued ahead of this one."""
    meta = body["metadata"]
    mine = (meta.get("creationTimestamp", ""), meta["name"])
    for other in ctx.peers.of(spec.database_key(meta["namespace"])):
        if other.uid == meta.get("uid"):
            continue
        queued_ahead = other.step in ("", "waiting") and not other.deleting and (
            other.created, other.name) < mine
        if other.step in RUNNING_STEPS or queued_ahead:
            return other.name
    return None


def next_in_line(ctx: Context, body: Body) -> str | None:
    """The waiting SchemaMigration whose turn it is on `body`'s database, when none of that
    database runs: reconciling it then starts it. Called on every watch event of a resource,
    after kopf's index took that event in, so the end (or the deletion) of a run, and a
    resource that just queued, are each seen with the other: no waiter is missed and none
    polls."""
    entry = peer_entry(body)
    if not entry:
        return None
    [key] = entry
    peers = list(ctx.peers.of(key))
    if any(p.step in RUNNING_STEPS for p in peers):
        return None
    queued = sorted((p for p in peers if p.step in ("", "waiting") and not p.deleting),
                    key=lambda p: (p.created, p.name))
    return queued[0].name if queued and queued[0].step == "waiting" else None


def _still_waiting(ctx: Context, body: Body, spec: resource.MigrationSpec) -> bool:
    """Queued with this spec behind the same holder: nothing to ask the API server."""
    status = body.get("status") or {}
    if status.get("observedGeneration") != body["metadata"].get("generation"):
        return False
    holder = database_holder(ctx, body, spec)
    return holder is not None and _waiting_as(status, spec, holder)


def _waiting_as(status: Mapping[str, Any], spec: resource.MigrationSpec, holder: str) -> bool:
    return status.get("step") == "waiting" and status.get("message") == _wait_message(spec,
                                                                                      holder)


def _wait_message(spec: resource.MigrationSpec, holder: str) -> str:
    return (f"waiting for SchemaMigration {holder}, which migrates the same database (Secret "
            f"{spec.database_url.name} key {spec.database_url.key}); starts when it finishes")


async def _wait_for_database(ctx: Context, body: Body, spec: resource.MigrationSpec,
                             holder: str) -> None:
    status = body.get("status") or {}
    message = _wait_message(spec, holder)
    if _waiting_as(status, spec, holder):
        return
    await set_status(ctx, body, "Pending", reasons.WAITING_FOR_DATABASE, message,
               {"step": "waiting", **fresh_fields()}, event="Normal")
