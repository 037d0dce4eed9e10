"""What the operator does for a SchemaMigration, as plain async functions (no kopf here).

`status.step` is the operator's own state: "" (new) → waiting → plan | apply →
awaiting-approval → replan → apply → done. It is written only after the Job it names exists, and
Job names are derived from (uid, generation, step, jobSeq), so a restarted operator recomputes
the same name and adopts the Job instead of creating a second one.
"""

from __future__ import annotations

from schemashift import reasons
from schemashift.kube import status as kstatus
from schemashift.operator.admission import next_in_line, peer_entry, start, validate
from schemashift.operator.approval import check_approval
from schemashift.operator.context import (
    INVALID_RECHECK_S,
    RUNNING_STEPS,
    Body,
    Context,
    Peer,
    log,
)
from schemashift.operator.status_writes import database_state, note_spec_change
from schemashift.operator.tracking import last_result, track_job


async def reconcile(ctx: Context, namespace: str, name: str) -> None:
    """Move one SchemaMigration forward from what the API server says now (idempotent)."""
    async with ctx.lock(namespace, name):
        body = await ctx.api.get_migration(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        await _reconcile(ctx, body)


async def _reconcile(ctx: Context, body: Body) -> None:
    status = body.get("status") or {}
    step = status.get("step", "")
    generation = int(body["metadata"].get("generation", 1))
    observed = status.get("observedGeneration")
    if step in RUNNING_STEPS and status.get("jobName"):
        await track_job(ctx, body)
    elif step == "awaiting-approval" and observed == generation:
        await check_approval(ctx, body)
    elif step == "done" and observed == generation:
        return
    elif step == "done" and status.get("phase") == "Succeeded":
        await note_spec_change(ctx, body, reasons.ALREADY_SUCCEEDED,
                                "this SchemaMigration already succeeded; a changed spec does not "
                                "run it again: create a new SchemaMigration")
    else:
        await start(ctx, body)


async def finalize(ctx: Context, namespace: str, name: str, poll_s: float = 0.2,
                   timeout_s: float = 60.0) -> str:
    """On deletion: stop a running Job, say where the database was left, then let go."""
    async with ctx.lock(namespace, name):
        body = await ctx.api.get_migration(namespace, name)
        ctx.locks.pop(f"{namespace}/{name}", None)
        if body is None:
            return "gone"
        ctx.written.pop(str(body["metadata"].get("uid")), None)
        status = body.get("status") or {}
        job_name = status.get("jobName")
        if status.get("step") not in RUNNING_STEPS or not job_name:
            return "idle"
        job = await ctx.api.get_job(namespace, job_name)
        result = None
        if job is not None and not kstatus.job_outcome(job, []).finished:
            await ctx.api.delete_job(namespace, job_name)
            result = await last_result(ctx, namespace, job_name, poll_s, timeout_s)
        elif job is not None:
            result = kstatus.termination_result(await ctx.api.job_pods(namespace, job_name))
        where = database_state(status, result)
        message = f"deleted while running: Job {job_name} stopped; {where}"
        await ctx.api.event(body, "Warning", reasons.DELETED_WHILE_RUNNING, message)
        await ctx.api.patch_status(namespace, name, {"message": message, "step": "done"})
        log.warning("%s/%s: %s", namespace, name, message)
        return message



async def observe(ctx: Context, body: Body) -> None:
    """A watch event (`body` as watched, also of a deleted resource): a new resource starts at
    once; a status this operator did not write (a forged phase or condition) is put back to
    what it wrote; the next waiting resource of its database gets its turn when none runs."""
    meta = body["metadata"]
    async with ctx.lock(meta["namespace"], meta["name"]):
        exists = await _observe(ctx, meta["namespace"], meta["name"])
    if not exists:  # its last event: nothing more to serialise for it
        ctx.locks.pop(f"{meta['namespace']}/{meta['name']}", None)
    waiting = next_in_line(ctx, body)
    if waiting is not None:
        await reconcile(ctx, meta["namespace"], waiting)


async def _observe(ctx: Context, namespace: str, name: str) -> bool:
    """False when the resource is gone."""
    body = await ctx.api.get_migration(namespace, name)
    if body is None:
        return False
    status = body.get("status") or {}
    if body["metadata"].get("deletionTimestamp"):
        return True
    if not status.get("step"):
        await _reconcile(ctx, body)  # new: start now, not after kopf's finalizer round trip
        return True
    written = ctx.written.get(str(body["metadata"].get("uid")))
    forged = {k: v for k, v in (written or {}).items() if status.get(k) != v}
    if forged:
        log.warning("%s/%s: status field(s) %s changed by someone else; restored",
                    namespace, name, ", ".join(sorted(forged)))
        await ctx.api.patch_status(namespace, name, forged)
    return True


__all__ = ["INVALID_RECHECK_S", "Context", "Peer", "finalize", "next_in_line", "observe",
           "peer_entry", "reconcile", "validate"]
