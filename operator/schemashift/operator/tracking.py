"""A running Job: live progress from its pod log, forged status put back, its end turned into
the next step or the outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from schemashift import progress, reasons, redact
from schemashift.kube import conditions, resource
from schemashift.kube import reporter as kreporter
from schemashift.kube import status as kstatus
from schemashift.operator.approval import await_approval
from schemashift.operator.context import (
    Body,
    Context,
)
from schemashift.operator.launch import launch
from schemashift.operator.status_writes import (
    database_state,
    fail,
    note_spec_change,
    run_seconds,
    set_status,
    write,
)


async def track_job(ctx: Context, body: Body) -> None:
    meta, status = body["metadata"], body.get("status") or {}
    generation = int(meta.get("generation", 1))
    if status.get("observedGeneration") != generation:
        await note_spec_change(ctx, body, reasons.SPEC_CHANGED_DURING_RUN,
                                f"the spec changed to generation {generation} while generation "
                                f"{status.get('observedGeneration')} runs; the running migration "
                                "is not changed, the new spec is considered when it finishes")
    job = await ctx.api.get_job(meta["namespace"], status["jobName"])
    if job is None:
        outcome = kstatus.JobOutcome(True, reasons.JOB_NOT_FOUND,
                                     f"Job {status['jobName']} disappeared before it reported")
    else:
        pods = await ctx.api.job_pods(meta["namespace"], status["jobName"])
        outcome = kstatus.job_outcome(job, pods)
        if not pods and not outcome.finished:
            refused = await ctx.api.job_create_failures(meta["namespace"], status["jobName"])
            if refused is not None:
                outcome = kstatus.JobOutcome(
                    True, reasons.JOB_REJECTED,
                    f"the Job controller cannot create the pod of Job {status['jobName']}: "
                    f"{refused}", stop_job=True)
    if job is not None:  # the log up to now, also its last lines when the run just ended
        body = await _progress(ctx, body, pods)
    if not outcome.finished:
        return
    if not outcome.stop_job and job is not None and kstatus.pods_stopping(job, pods):
        return  # e.g. past its deadline: the runner is still reporting; its last word counts
    ctx.phases_seen.pop(str(status.get("jobName")), None)
    if outcome.stop_job:
        await ctx.api.delete_job(meta["namespace"], status["jobName"])
    await _finish_step(ctx, body, outcome)


async def _progress(ctx: Context, body: Body, pods: list[dict[str, Any]]) -> Body:
    """The Job's pod log, read by the operator, as live status; each phase the runner entered
    since the last read is announced (event, then the Reconciling condition). Returns the body
    as written."""
    meta, status = body["metadata"], dict(body.get("status") or {})
    pod = kstatus.newest_pod(pods)
    text = await ctx.api.pod_log(meta["namespace"], pod) if pod else None
    found = kreporter.progress_from_log(text or "")
    changed = {k: v for k, v in found.fields.items() if status.get(k) != v}
    job = str(status.get("jobName"))
    seen = ctx.phases_seen.get(job, _already_announced(found.phases, status.get("phase")))
    generation = int(status.get("observedGeneration") or meta.get("generation", 1))
    for phase, message in found.phases[seen:]:
        message = message or f"phase {phase}"
        changed["conditions"] = conditions.merge(
            changed.get("conditions") or status.get("conditions") or (),
            conditions.summary(phase, reasons.IN_PROGRESS, message), generation)
        await ctx.api.event(body, "Normal", phase, redact.redact(message))
    ctx.phases_seen[job] = len(found.phases)
    if changed:
        await write(ctx, body, changed)
    return {**body, "status": {**status, **changed}}


def _already_announced(phases: list[tuple[str, str]], current: object) -> int:
    """After a restart: the phases up to the one the status shows were announced before."""
    names = [phase for phase, _ in phases]
    return len(names) - names[::-1].index(current) if current in names else 0


async def _finish_step(ctx: Context, body: Body, outcome: kstatus.JobOutcome) -> None:
    status = body.get("status") or {}
    spec = resource.MigrationSpec.from_body(body["spec"])
    result = outcome.result
    seq = {"jobSeq": int(status.get("jobSeq", 0)) + 1}
    if result is None or outcome.reason != result.reason:
        where = database_state(status, result)
        fields = {**seq, **(kstatus.result_fields(result) if result else {})}
        await fail(ctx, body, outcome.reason, f"{outcome.message}; {where}", fields=fields)
        return
    purpose = status.get("jobPurpose")
    planned = result.outcome == "Planned" and bool(result.planHash)
    if purpose == "apply" or not planned:
        await _finish_run(ctx, body, spec, result, seq)
    elif spec.dry_run:
        message = f"dry run: plan {result.planHash} from {result.fromRevision or 'base'} to " \
                  f"{result.targetRevision}; nothing changed"
        await set_status(ctx, body, "Succeeded", reasons.DRY_RUN, message,
                   {**seq, **kstatus.result_fields(result), "step": "done"},
                   [conditions.Condition(conditions.PLANNED, "True", reasons.DRY_RUN, message),
                    *filter(None, [conditions.contract_pending(result)])],
                   event="Normal")
        ctx.metrics.finished("DryRun", run_seconds(status), 0)
    elif purpose == "replan" and result.planHash == status.get("approvedHash"):
        await launch(ctx, body, spec, "apply", {**seq, "currentRevision": result.fromRevision})
    else:
        await await_approval(ctx, body, result, seq, stale=purpose == "replan")


async def _finish_run(ctx: Context, body: Body, spec: resource.MigrationSpec,
                      result: progress.RunResult, seq: Mapping[str, Any]) -> None:
    phase = kstatus.PHASE_OF_OUTCOME.get(result.outcome, "Failed")
    message = redact.redact(result.message)
    found = conditions.from_result(result, spec.backup_enabled)
    fields = {**seq, **kstatus.result_fields(result), "step": "done", "finishedAt": progress.now()}
    await set_status(ctx, body, phase, result.reason, message, fields, found,
               event="Normal" if phase == "Succeeded" else "Warning")
    size = result.backup.sizeBytes if result.backup and result.backup.verified else 0
    ctx.metrics.finished(phase, run_seconds(body.get("status") or {}), size)


async def last_result(ctx: Context, namespace: str, job_name: str, poll_s: float,
                       timeout_s: float) -> progress.RunResult | None:
    """Watch the stopping pods for the runner's last word until they are gone."""
    result = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        pods = await ctx.api.job_pods(namespace, job_name)
        result = kstatus.termination_result(pods) or result
        if not pods:
            break
        await asyncio.sleep(poll_s)
    return result
