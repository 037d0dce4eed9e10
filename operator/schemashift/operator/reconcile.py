"""What the operator does for a SchemaMigration, as plain async functions (no kopf here).

`status.step` is the operator's own state: "" (new) → waiting → plan | apply →
awaiting-approval → replan → apply → done. It is written only after the Job it names exists, and
Job names are derived from (uid, generation, step, jobSeq), so a restarted operator recomputes
the same name and adopts the Job instead of creating a second one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from schemashift import progress, reasons, redact
from schemashift.kube import conditions, jobspec, resource
from schemashift.kube import policy as kpolicy
from schemashift.kube import reporter as kreporter
from schemashift.kube import status as kstatus
from schemashift.kube.client import JobRejected

Body = Mapping[str, Any]
RUNNING_STEPS = frozenset({"plan", "replan", "apply"})
INVALID_RECHECK_S = 30.0  # the timer interval for resources whose Secret or image is missing
log = logging.getLogger("schemashift.operator")


class Api(Protocol):
    async def get_migration(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def list_migrations(self, namespace: str) -> list[dict[str, Any]]: ...
    async def patch_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None: ...
    async def secret_keys(self, namespace: str, name: str) -> set[str] | None: ...
    async def service_account_exists(self, namespace: str, name: str) -> bool: ...
    async def job_create_failures(self, namespace: str, job_name: str) -> str | None: ...
    async def create_job(self, job: Mapping[str, Any]) -> bool: ...
    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def delete_job(self, namespace: str, name: str) -> None: ...
    async def job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]: ...
    async def pod_log(self, namespace: str, pod: str) -> str | None: ...
    async def event(self, body: Body, type_: str, reason: str, message: str) -> None: ...


class Metrics(Protocol):
    def finished(self, outcome: str, seconds: float | None, backup_bytes: int) -> None: ...


class NoMetrics:
    def finished(self, outcome: str, seconds: float | None, backup_bytes: int) -> None:
        return None


@dataclass
class Context:
    api: Api
    job_image: str | None = None
    # schemashift.operator.run always sets it (strict unless the admin relaxed it); None skips
    # the check, for unit tests of other concerns.
    policy: kpolicy.Policy | None = None
    metrics: Metrics = field(default_factory=NoMetrics)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # uid → the status fields this operator last wrote: anything else there is forged.
    written: dict[str, dict[str, Any]] = field(default_factory=dict)
    phases_seen: dict[str, int] = field(default_factory=dict)  # Job → runner phases announced

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self.locks.setdefault(f"{namespace}/{name}", asyncio.Lock())


# -- entry points ------------------------------------------------------------------------------

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
        await _track_job(ctx, body)
    elif step == "awaiting-approval" and observed == generation:
        await _check_approval(ctx, body)
    elif step == "done" and observed == generation:
        return
    elif step == "done" and status.get("phase") == "Succeeded":
        await _note_spec_change(ctx, body, reasons.ALREADY_SUCCEEDED,
                                "this SchemaMigration already succeeded; a changed spec does not "
                                "run it again: create a new SchemaMigration")
    else:
        await _start(ctx, body)


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
            result = await _last_result(ctx, namespace, job_name, poll_s, timeout_s)
        elif job is not None:
            result = kstatus.termination_result(await ctx.api.job_pods(namespace, job_name))
        where = _database_state(status, result)
        message = f"deleted while running: Job {job_name} stopped; {where}"
        await ctx.api.event(body, "Warning", reasons.DELETED_WHILE_RUNNING, message)
        await ctx.api.patch_status(namespace, name, {"message": message, "step": "done"})
        log.warning("%s/%s: %s", namespace, name, message)
        return message


# -- steps ---------------------------------------------------------------------------------

async def _start(ctx: Context, body: Body) -> None:
    spec = resource.MigrationSpec.from_body(body["spec"])
    problem = await validate(ctx, body, spec)
    if problem is not None:
        await _invalid(ctx, body, *problem)
        return
    holder = await database_holder(ctx, body, spec)  # a namespace list: only for valid ones
    if holder is not None:
        await _wait_for_database(ctx, body, spec, holder)
        return
    purpose: jobspec.Purpose = "plan" if spec.dry_run or spec.approval_required else "apply"
    await _launch(ctx, body, spec, purpose, _fresh_fields())


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
        found = await ctx.api.secret_keys(namespace, name)
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
    await _set(ctx, body, "Pending", reasons.WAITING_FOR_DATABASE, message,
               {"step": "waiting", **_fresh_fields()}, event="Normal")


async def _launch(ctx: Context, body: Body, spec: resource.MigrationSpec,
                  purpose: jobspec.Purpose, extra: Mapping[str, Any] | None = None) -> None:
    status = body.get("status") or {}
    seq = int((extra or {}).get("jobSeq", status.get("jobSeq", 0)))
    # The apply Job re-plans under the migration lock and refuses a plan other than the approved.
    approved = (extra or {}).get("approvedHash", status.get("approvedHash"))
    expected = approved if spec.approval_required else None
    job = jobspec.build_job(body, spec.image or ctx.job_image or "", purpose, seq, expected)
    name = job["metadata"]["name"]
    try:
        created = await ctx.api.create_job(job)
    except JobRejected as exc:  # e.g. a quota or an admission webhook: no retry can help
        await _fail(ctx, body, reasons.JOB_REJECTED,
                    f"the API server refused Job {name} (HTTP {exc.status}): {exc}; "
                    "nothing was run", fields=_fresh_fields())
        return
    doing = {"plan": "plan", "replan": "re-plan (the database may have moved)",
             "apply": "migrate"}[purpose]
    message = f"Job {name} started to {doing} to {spec.target}"
    fields = {**(extra or {}), "step": purpose, "jobName": name, "jobPurpose": purpose}
    if purpose != "replan":
        fields["startedAt"] = progress.now()
    # A restart before the status patch finds the Job (409) and announces nothing twice.
    await _set(ctx, body, "Planning", reasons.JOB_CREATED, message, fields,
               event="Normal" if created else None)


async def _track_job(ctx: Context, body: Body) -> None:
    meta, status = body["metadata"], body.get("status") or {}
    generation = int(meta.get("generation", 1))
    if status.get("observedGeneration") != generation:
        await _note_spec_change(ctx, body, reasons.SPEC_CHANGED_DURING_RUN,
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


async def observe(ctx: Context, namespace: str, name: str) -> None:
    """A watch event: a new resource starts at once; a status this operator did not write (a
    forged phase or condition) is put back to what it wrote."""
    async with ctx.lock(namespace, name):
        body = await ctx.api.get_migration(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        status = body.get("status") or {}
        if not status.get("step"):
            await _reconcile(ctx, body)  # new: start now, not after kopf's finalizer round trip
            return
        written = ctx.written.get(str(body["metadata"].get("uid")))
        if written is None:
            return
        forged = {k: v for k, v in written.items() if status.get(k) != v}
        if forged:
            log.warning("%s/%s: status field(s) %s changed by someone else; restored",
                        namespace, name, ", ".join(sorted(forged)))
            await ctx.api.patch_status(namespace, name, forged)


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
        await _write(ctx, body, changed)
    return {**body, "status": {**status, **changed}}


def _already_announced(phases: list[tuple[str, str]], current: object) -> int:
    """After a restart: the phases up to the one the status shows were announced before."""
    names = [phase for phase, _ in phases]
    return len(names) - names[::-1].index(current) if current in names else 0


async def _write(ctx: Context, body: Body, patch: Mapping[str, Any]) -> None:
    """Every status write of the operator: remembered, so a forged one can be put back."""
    meta = body["metadata"]
    owned = {k: patch[k] for k in _OWNED if k in patch}
    ctx.written.setdefault(str(meta.get("uid")), {}).update(owned)
    await ctx.api.patch_status(meta["namespace"], meta["name"], patch)


# Fields whose forgery would change what `kubectl wait`, `schemashift wait` or a Helm hook decide.
_OWNED = ("phase", "conditions", "step", "observedGeneration", "currentRevision", "planHash",
          "approvedHash")


async def _finish_step(ctx: Context, body: Body, outcome: kstatus.JobOutcome) -> None:
    status = body.get("status") or {}
    spec = resource.MigrationSpec.from_body(body["spec"])
    result = outcome.result
    seq = {"jobSeq": int(status.get("jobSeq", 0)) + 1}
    if result is None or outcome.reason != result.reason:
        where = _database_state(status, result)
        fields = {**seq, **(kstatus.result_fields(result) if result else {})}
        await _fail(ctx, body, outcome.reason, f"{outcome.message}; {where}", fields=fields)
        return
    purpose = status.get("jobPurpose")
    planned = result.outcome == "Planned" and bool(result.planHash)
    if purpose == "apply" or not planned:
        await _finish_run(ctx, body, spec, result, seq)
    elif spec.dry_run:
        message = f"dry run: plan {result.planHash} from {result.fromRevision or 'base'} to " \
                  f"{result.targetRevision}; nothing changed"
        await _set(ctx, body, "Succeeded", reasons.DRY_RUN, message,
                   {**seq, **kstatus.result_fields(result), "step": "done"},
                   [conditions.Condition(conditions.PLANNED, "True", reasons.DRY_RUN, message)],
                   event="Normal")
        ctx.metrics.finished("DryRun", _seconds(status), 0)
    elif purpose == "replan" and result.planHash == status.get("approvedHash"):
        await _launch(ctx, body, spec, "apply", {**seq, "currentRevision": result.fromRevision})
    else:
        await _await_approval(ctx, body, result, seq, stale=purpose == "replan")


async def _finish_run(ctx: Context, body: Body, spec: resource.MigrationSpec,
                      result: progress.RunResult, seq: Mapping[str, Any]) -> None:
    phase = kstatus.PHASE_OF_OUTCOME.get(result.outcome, "Failed")
    message = redact.redact(result.message)
    found = conditions.from_result(result, spec.backup_enabled)
    fields = {**seq, **kstatus.result_fields(result), "step": "done", "finishedAt": progress.now()}
    await _set(ctx, body, phase, result.reason, message, fields, found,
               event="Normal" if phase == "Succeeded" else "Warning")
    size = result.backup.sizeBytes if result.backup and result.backup.verified else 0
    ctx.metrics.finished(phase, _seconds(body.get("status") or {}), size)


async def _await_approval(ctx: Context, body: Body, result: progress.RunResult,
                          seq: Mapping[str, Any], stale: bool) -> None:
    name = body["metadata"]["name"]
    how = (f"review status.plan, then: kubectl annotate smig {name} --overwrite "
           f"{resource.APPROVED_ANNOTATION}={result.planHash}")
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
    await _set(ctx, body, "AwaitingApproval", reason, message, fields, [
        conditions.Condition(conditions.PLANNED, "True", reasons.PLANNED,
                             f"plan {result.planHash}"),
        conditions.Condition(conditions.APPROVED, "False", reason, message)],
        event="Warning" if stale else "Normal")


async def _check_approval(ctx: Context, body: Body) -> None:
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
        await _set(ctx, body, "AwaitingApproval", reasons.APPROVAL_HASH_MISMATCH, message,
                   {"rejectedApproval": approved},
                   [conditions.Condition(conditions.APPROVED, "False",
                                         reasons.APPROVAL_HASH_MISMATCH, message)],
                   event="Warning")
        return
    spec = resource.MigrationSpec.from_body(body["spec"])
    holder = await database_holder(ctx, body, spec)
    if holder is not None:
        return  # approved; the re-plan starts once the other migration is done
    message = f"plan {expected} approved by annotation"
    await ctx.api.event(body, "Normal", reasons.APPROVED, message)
    body = {**body, "status": {**status, "conditions": conditions.merge(
        status.get("conditions") or (), [conditions.Condition(
            conditions.APPROVED, "True", reasons.APPROVED, message)], int(meta["generation"]))}}
    # The re-plan Job rewrites status.plan live; what was approved is kept apart.
    await _launch(ctx, body, spec, "replan", {"approvedHash": expected})


# -- status writing ------------------------------------------------------------------------

EventType = Literal["Normal", "Warning"]


async def _set(ctx: Context, body: Body, phase: str, reason: str, message: str,
               fields: Mapping[str, Any] | None = None,
               extra: list[conditions.Condition] | None = None,
               event: EventType | None = None) -> None:
    """The status write, after its event: whoever sees the phase finds the event posted."""
    meta, status = body["metadata"], body.get("status") or {}
    # A run belongs to the generation it started with; a later spec is looked at when it ends.
    running = status.get("step") in RUNNING_STEPS and "observedGeneration" in status
    generation = int(status["observedGeneration"] if running else meta.get("generation", 1))
    message = redact.redact(message)
    merged = conditions.merge(status.get("conditions") or (),
                              [*conditions.summary(phase, reason, message), *(extra or [])],
                              generation)
    patch: dict[str, Any] = {**(fields or {}), "message": message, "conditions": merged,
                             "observedGeneration": generation, "phase": phase}
    if event is not None:
        await ctx.api.event(body, event, reason, message)
    await _write(ctx, body, patch)
    log.info("%s/%s %s %s: %s", meta["namespace"], meta["name"], phase, reason, message)


async def _fail(ctx: Context, body: Body, reason: str, message: str,
                fields: Mapping[str, Any] | None = None) -> None:
    await _set(ctx, body, "Failed", reason, message,
               {**(fields or {}), "step": "done", "finishedAt": progress.now()},
               event="Warning")
    ctx.metrics.finished("Failed", _seconds(body.get("status") or {}), 0)


async def _invalid(ctx: Context, body: Body, reason: str, message: str) -> None:
    """Failed, and checked again now and then: creating the missing Secret is enough."""
    status = body.get("status") or {}
    message = f"{message} (checked again every {INVALID_RECHECK_S:.0f} s)"
    if status.get("step") == "invalid" and status.get("message") == message:
        return
    await _set(ctx, body, "Failed", reason, message, {**_fresh_fields(), "step": "invalid"},
               event="Warning")
    ctx.metrics.finished("Failed", None, 0)


async def _note_spec_change(ctx: Context, body: Body, reason: str, message: str) -> None:
    status = body.get("status") or {}
    generation = int(body["metadata"].get("generation", 1))
    noted = conditions.find(status.get("conditions") or (), conditions.SPEC_CHANGED)
    if noted and (noted.get("observedGeneration"), noted.get("reason")) == (generation, reason):
        return
    merged = conditions.merge(status.get("conditions") or (), [
        conditions.Condition(conditions.SPEC_CHANGED, "True", reason, message)], generation)
    patch: dict[str, Any] = {"conditions": merged}
    if reason == reasons.ALREADY_SUCCEEDED:
        patch["observedGeneration"] = generation  # seen, and deliberately not run
    await ctx.api.event(body, "Normal", reason, message)
    await _write(ctx, body, patch)


def _fresh_fields() -> dict[str, Any]:
    """A new run forgets the previous one's results (null deletes in a merge patch)."""
    return {k: None for k in ("plan", "stages", "backup", "undone", "fromRevision",
                              "targetRevision", "currentRevision", "rejectedApproval",
                              "approvedHash", "finishedAt", "startedAt")}


def _database_state(status: Mapping[str, Any], result: progress.RunResult | None) -> str:
    if result is not None and result.currentRevision:
        return f"the database is at revision {result.currentRevision} (runner's final report)"
    current = status.get("currentRevision") or status.get("fromRevision")
    if current:
        return (f"the runner last reported the database at revision {current}; check "
                "`alembic current` before retrying")
    return "the runner reported no revision before it stopped; check `alembic current`"


def _seconds(status: Mapping[str, Any]) -> float | None:
    started = status.get("startedAt")
    if not started:
        return None
    begun = datetime.strptime(started, "%Y-%m-%dT%H:%M:%SZ")
    finished = datetime.strptime(progress.now(), "%Y-%m-%dT%H:%M:%SZ")
    return (finished - begun).total_seconds()


async def _last_result(ctx: Context, namespace: str, job_name: str, poll_s: float,
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
