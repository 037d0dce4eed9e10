"""The runner's live progress, as the operator reads it: its pod log folded into status fields.

The migration pod has no API rights (no token is even mounted): it writes JSON lines to stdout and
its final result to the termination message. The operator alone writes the SchemaMigration's
status; while the Job runs it reads the pod's log and folds the lines into the fields below
(phase, revisions, stages, backup, plan). What a pod says is input, never truth: final phases,
conditions and the outcome come from the operator's own reading of the Job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

from schemashift import progress, redact
from schemashift.kube import resource, status

_REVISION_FIELDS = ("fromRevision", "targetRevision", "currentRevision")
_BACKUP_FIELDS = ("url", "sizeBytes", "sha256", "verified", "completedAt", "method",
                  "restorePoint", "lsn")


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value


@dataclass
class Progress:
    """What a runner's log says so far: the status fields, and each phase it entered in order
    (with its message), so every phase is announced even when several pass between two reads."""

    fields: dict[str, Any] = field(default_factory=dict)
    phases: list[tuple[str, str]] = field(default_factory=list)


def progress_from_log(text: str) -> Progress:
    """The runner's JSON lines folded in order (other lines, and lines that do not parse, are
    skipped: a pod may print anything)."""
    fold = ProgressFold()
    found = Progress()
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("event"), str):
            name = event.pop("event")
            event.pop("time", None)
            update = fold.status_update(name, event)
            if "phase" in update:
                found.phases.append((update["phase"], str(update.get("message") or "")))
            found.fields.update(update)
    return found


class ProgressFold:
    """Turns runner events into the status fields they change, remembering stages seen."""

    def __init__(self) -> None:
        self._stages: dict[str, dict[str, Any]] = {}

    def status_update(self, event: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The status fields an event changes (phase, revisions, stages, backup, plan)."""
        fields = {k: _plain(v) for k, v in fields.items()}
        update: dict[str, Any] = {k: fields[k] for k in _REVISION_FIELDS if fields.get(k)}
        # Final phases are the operator's to set (from the termination message): a plan Job's
        # "Succeeded" must never look like an applied migration to `schemashift wait`.
        if event == "phase" and fields.get("phase") not in (None, *resource.TERMINAL_PHASES):
            update["phase"] = fields["phase"]
        if isinstance(fields.get("message"), str) and event != "result":
            update["message"] = redact.redact(fields["message"])[:1000]
        stages = fields.get("stages")
        stage = fields.get("stage")
        if isinstance(stages, list):
            for item in stages:
                self._stages[str(item.get("name"))] = dict(item)
        elif isinstance(stage, Mapping):
            self._stages[str(stage.get("name"))] = dict(stage)
        elif event == "stage" and fields.get("name"):
            self._stages[str(fields["name"])] = {
                k: v for k, v in fields.items() if k in progress.StageStatus.__dataclass_fields__}
            if fields.get("state") == "Succeeded" and fields.get("revision"):
                update["currentRevision"] = fields["revision"]  # the stage's checkpoint
        if event in ("stage", "stages") or isinstance(stages, list) or isinstance(stage, Mapping):
            update["stages"] = list(self._stages.values())
        backup = fields.get("backup")
        if event == "backup" or isinstance(backup, Mapping):
            source = backup if isinstance(backup, Mapping) else fields
            found = {k: source[k] for k in _BACKUP_FIELDS if source.get(k) is not None}
            if "bytes" in source and "sizeBytes" not in found:
                found["sizeBytes"] = source["bytes"]
            if source.get("state") in ("InProgress", "Uploaded", "Verified"):
                found["verified"] = source["state"] == "Verified"
                found["state"] = source["state"]
            if source.get("mbps") is not None:
                found["mbps"] = source["mbps"]
            if found:
                found["summary"] = status.backup_summary(found)
                update["backup"] = found
        plan = fields.get("plan")
        if event == "plan" or isinstance(plan, Mapping):
            source = plan if isinstance(plan, Mapping) else fields
            update["plan"] = _plan_status(source)
            if source.get("fromRevision"):  # where the database is while the plan is made
                update["fromRevision"] = update["currentRevision"] = source["fromRevision"]
            if source.get("targetRevision"):
                update["targetRevision"] = source["targetRevision"]
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
