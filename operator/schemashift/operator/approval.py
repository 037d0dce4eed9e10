"""Approval: the plan waits for its hash in an annotation; a moved database is re-planned."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemashift import progress, reasons
from schemashift.kube import conditions, resource
from schemashift.kube import status as kstatus
from schemashift.operator.admission import database_holder
from schemashift.operator.context import (
    Body,
    Context,
)
from schemashift.operator.launch import launch
from schemashift.operator.status_writes import set_status


async def await_approval(ctx: Context, body: Body, result: progress.RunResult,
                          seq: Mapping[str, Any], stale: bool) -> None:
    name = body["metadata"]["name"]
    how = (f"review status.plan, then: schemashift approve {name} (or kubectl annotate smig "
           f"{name} --overwrite {resource.APPROVED_ANNOTATION}={result.planHash} "
           f"{resource.APPROVED_BY_ANNOTATION}=<your user name>)")
    if stale:
        reason = reasons.PLAN_STALE
        message = (f"the database moved since the plan was made (now at "
                   f"{result.fromRevision or 'base'}); the plan was recomputed, nothing was "
                   f"applied; {how}")
    else:
        reason, message = reasons.AWAITING_APPROVAL, f"plan {result.planHash} ready; {how}"
    # A stale plan's approval is already answered by PlanStale: not again as a hash mismatch.
    approved = (body["metadata"].get("annotations") or {}).get(resource.APPROVED_ANNOTATION)
    fields = {**seq, **kstatus.result_fields(result), "step": "awaiting-approval",
              "rejectedApproval": approved if stale else None}
    await set_status(ctx, body, "AwaitingApproval", reason, message, fields, [
        conditions.Condition(conditions.PLANNED, "True", reasons.PLANNED,
                             f"plan {result.planHash}"),
        conditions.Condition(conditions.APPROVED, "False", reason, message)],
        event="Warning" if stale else "Normal")


async def check_approval(ctx: Context, body: Body) -> None:
    meta, status = body["metadata"], body.get("status") or {}
    approved = (meta.get("annotations") or {}).get(resource.APPROVED_ANNOTATION)
    expected = kstatus.plan_hash(status)
    if not approved:
        return
    if approved != expected:
        if status.get("rejectedApproval") == approved:
            return
        message = (f"annotation {resource.APPROVED_ANNOTATION}={approved} does not match the "
                   f"current plan hash {expected}: the plan you approved is not the one that "
                   f"would run; review status.plan and approve {expected}")
        await set_status(ctx, body, "AwaitingApproval", reasons.APPROVAL_HASH_MISMATCH, message,
                   {"rejectedApproval": approved},
                   [conditions.Condition(conditions.APPROVED, "False",
                                         reasons.APPROVAL_HASH_MISMATCH, message)],
                   event="Warning")
        return
    spec = resource.MigrationSpec.from_body(body["spec"])
    holder = database_holder(ctx, body, spec)
    if holder is not None:
        return  # approved; the re-plan starts once the other migration is done
    approver = (meta.get("annotations") or {}).get(resource.APPROVED_BY_ANNOTATION)
    message = f"plan {expected} approved by {approver or 'annotation (no approver named)'}"
    await ctx.api.event(body, "Normal", reasons.APPROVED, message)
    body = {**body, "status": {**status, "conditions": conditions.merge(
        status.get("conditions") or (), [conditions.Condition(
            conditions.APPROVED, "True", reasons.APPROVED, message)], int(meta["generation"]))}}
    # The re-plan Job rewrites status.plan live; what was approved is kept apart.
    await launch(ctx, body, spec, "replan", {"approvedHash": expected, "approvedBy": approver})
