"""The runner's live progress, as the operator reads it: its pod log folded into status fields.

The migration pod has no API rights (no token is even mounted): it writes JSON lines to stdout and
its final result to the termination message. The operator alone writes the SchemaMigration's
status; while the Job runs it reads the pod's log and folds the lines into the fields below
(phase, revisions, stages, backup, plan). What a pod says is input, never truth: final phases,
conditions and the outcome come from the operator's own reading of the Job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from schemashift import events, progress, redact
from schemashift.kube import resource, status

_BACKUP_FIELDS = ("url", "sizeBytes", "sha256", "verified", "completedAt", "method",
                  "restorePoint", "lsn")
_UNVERIFIED = ("InProgress", "Uploaded")


@dataclass
class Progress:
    """What a runner's log says so far: the status fields, and each phase it entered in order
    (with its message), so every phase is announced even when several pass between two reads."""

    fields: dict[str, Any] = field(default_factory=dict)
    phases: list[tuple[str, str]] = field(default_factory=list)


def progress_from_log(text: str) -> Progress:
    """The runner's events folded in order (other lines, and lines that are no event the runner
    sends, are skipped: a pod may print anything)."""
    fold = ProgressFold()
    found = Progress()
    for line in text.splitlines():
        event = events.parse_line(line)
        if event is None:
            continue
        update = fold.status_update(event)
        if "phase" in update:
            found.phases.append((update["phase"], str(update.get("message") or "")))
        found.fields.update(update)
    return found


class ProgressFold:
    """Turns runner events into the status fields they change, remembering stages seen."""

    def __init__(self) -> None:
        self._stages: dict[str, dict[str, Any]] = {}

    def status_update(self, event: events.Event) -> dict[str, Any]:
        """The status fields an event changes (phase, revisions, stages, backup, plan)."""
        update: dict[str, Any] = {}
        # Final phases are the operator's to set (from the termination message): a plan Job's
        # "Succeeded" must never look like an applied migration to `schemashift wait`.
        if isinstance(event, events.PhaseEntered) and \
                event.phase not in resource.TERMINAL_PHASES:
            update["phase"] = event.phase
        message = _message(event)
        if message is not None:
            update["message"] = redact.redact(message)[:1000]
        match event:
            case events.StageChanged(stage=stage):
                update.update(self._stage(stage))
            case events.Transfer(kind="backup", state=state, url=url, bytes=size, mbps=mbps):
                update["backup"] = _backup({"url": url, "sha256": event.detail.get("sha256"),
                                            "sizeBytes": size}, state, mbps)
            case events.RestorePointProgress(state=state):
                update["backup"] = _backup({"method": event.method, "lsn": event.lsn,
                                            "restorePoint": event.restorePoint}, state, None)
            case events.PlanMade(plan=plan):
                update.update(_plan_fields(plan))
            case events.Finished(result=result):
                update.update(self._result(result))
        return update

    def _stage(self, stage: progress.StageStatus) -> dict[str, Any]:
        update: dict[str, Any] = {}
        if stage.name:
            self._stages[stage.name] = asdict(stage)
            if stage.state == "Succeeded" and stage.revision:
                update["currentRevision"] = stage.revision  # the stage's checkpoint
        update["stages"] = list(self._stages.values())
        return update

    def _result(self, result: progress.RunResult) -> dict[str, Any]:
        update: dict[str, Any] = {k: getattr(result, k) for k in (
            "fromRevision", "targetRevision", "currentRevision") if getattr(result, k)}
        for stage in result.stages:
            self._stages[stage.name] = asdict(stage)
        update["stages"] = list(self._stages.values())
        if result.backup is not None:
            update["backup"] = _backup(asdict(result.backup), None, None)
        return update


def _message(event: events.Event) -> str | None:
    """The message an event puts in status (the result's is the operator's to write)."""
    match event:
        case events.Transfer(detail=detail):
            return detail.get("message")
        case events.StageChanged(stage=stage):
            return stage.message
        case events.Finished() | events.PlanMade() | events.BackupEstimate():
            return None
        case _:
            return event.message


def _backup(source: Mapping[str, Any], state: str | None, mbps: float | None) -> dict[str, Any]:
    """Status backup fields: a transfer's progress, a restore point's, or the result's."""
    found = {k: source[k] for k in _BACKUP_FIELDS if source.get(k) is not None}
    if state in (*_UNVERIFIED, "Verified"):
        found["verified"] = state == "Verified"
        found["state"] = state
    if mbps is not None:
        found["mbps"] = mbps
    found["summary"] = status.backup_summary(found)
    return found


def _plan_fields(plan: Mapping[str, Any]) -> dict[str, Any]:
    update: dict[str, Any] = {"plan": _plan_status(plan)}
    if plan.get("fromRevision"):  # where the database is while the plan is made
        update["fromRevision"] = update["currentRevision"] = plan["fromRevision"]
    if plan.get("targetRevision"):
        update["targetRevision"] = plan["targetRevision"]
    return update


def _plan_status(plan: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a plan that belongs in status: revisions, lint findings, hash (no SQL)."""
    found: dict[str, Any] = {}
    if plan.get("hash") or plan.get("planHash"):
        found["hash"] = plan.get("hash") or plan.get("planHash")
    revisions = plan.get("revisions")
    if isinstance(revisions, list):
        found["revisions"] = [
            {k: v for k, v in r.items() if k in ("revision", "id", "message", "down_revision",
                                                    "downRevision", "stage")}
            if isinstance(r, Mapping) else {"revision": str(r)} for r in revisions][:200]
    stages = plan.get("stages")
    if isinstance(stages, list):
        found["stages"] = [
            {k: v for k, v in st.items() if k in ("name", "revisions", "target", "autocommit",
                                                   "sqlSha256")}
            for st in stages if isinstance(st, Mapping)][:200]
    lint = plan.get("lint") or plan.get("findings")
    if isinstance(lint, list):
        found["lint"] = [
            {k: (redact.redact(v) if isinstance(v, str) else v) for k, v in f.items()
             if k in ("rule", "severity", "revision", "message")}
            for f in lint if isinstance(f, Mapping)][:100]
    return found
