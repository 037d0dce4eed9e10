"""Every status write of the operator (the only writer): events first, then the status."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from schemashift import progress, reasons, redact
from schemashift.kube import conditions
from schemashift.operator.context import (
    INVALID_RECHECK_S,
    RUNNING_STEPS,
    Body,
    Context,
    log,
)


async def write(ctx: Context, body: Body, patch: Mapping[str, Any]) -> None:
    """Every status write of the operator: remembered, so a forged one can be put back."""
    meta = body["metadata"]
    owned = {k: patch[k] for k in _OWNED if k in patch}
    ctx.written.setdefault(str(meta.get("uid")), {}).update(owned)
    await ctx.api.patch_status(meta["namespace"], meta["name"], patch)


# Fields whose forgery would change what `kubectl wait`, `schemashift wait` or a Helm hook decide.
_OWNED = ("phase", "conditions", "step", "observedGeneration", "currentRevision", "planHash",
          "approvedHash", "approvedBy")



EventType = Literal["Normal", "Warning"]


async def set_status(ctx: Context, body: Body, phase: str, reason: str, message: str,
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
    await write(ctx, body, patch)
    log.info("%s/%s %s %s: %s", meta["namespace"], meta["name"], phase, reason, message)


async def fail(ctx: Context, body: Body, reason: str, message: str,
                fields: Mapping[str, Any] | None = None) -> None:
    await set_status(ctx, body, "Failed", reason, message,
               {**(fields or {}), "step": "done", "finishedAt": progress.now()},
               event="Warning")
    ctx.metrics.finished("Failed", run_seconds(body.get("status") or {}), 0)


async def invalid(ctx: Context, body: Body, reason: str, message: str) -> None:
    """Failed, and checked again now and then: creating the missing Secret is enough."""
    status = body.get("status") or {}
    message = f"{message} (checked again every {INVALID_RECHECK_S:.0f} s)"
    if status.get("step") == "invalid" and status.get("message") == message:
        return
    await set_status(ctx, body, "Failed", reason, message, {**fresh_fields(), "step": "invalid"},
               event="Warning")
    ctx.metrics.finished("Failed", None, 0)


async def note_spec_change(ctx: Context, body: Body, reason: str, message: str) -> None:
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
    await write(ctx, body, patch)


def fresh_fields() -> dict[str, Any]:
    """A new run forgets the previous one's results (null deletes in a merge patch)."""
    return {k: None for k in ("plan", "stages", "backup", "undone", "fromRevision",
                              "targetRevision", "currentRevision", "rejectedApproval",
                              "approvedHash", "approvedBy", "finishedAt", "startedAt")}


def database_state(status: Mapping[str, Any], result: progress.RunResult | None) -> str:
    if result is not None and result.currentRevision:
        return f"the database is at revision {result.currentRevision} (runner's final report)"
    current = status.get("currentRevision") or status.get("fromRevision")
    if current:
        return (f"the runner last reported the database at revision {current}; check "
                "`alembic current` before retrying")
    return "the runner reported no revision before it stopped; check `alembic current`"


def run_seconds(status: Mapping[str, Any]) -> float | None:
    started = status.get("startedAt")
    if not started:
        return None
    begun = datetime.strptime(started, "%Y-%m-%dT%H:%M:%SZ")
    finished = datetime.strptime(progress.now(), "%Y-%m-%dT%H:%M:%SZ")
    return (finished - begun).total_seconds()
