"""Inside the migration Job: live progress to the SchemaMigration's status, JSON lines always.

The status is a convenience; the termination message is the authority. So the API being slow,
forbidden or unreachable never fails a run: the reporter says so once on stderr and carries on
with JSON lines on stdout.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, is_dataclass
from typing import Any

from schemashift import progress, redact
from schemashift.kube import resource, status

Patcher = Callable[[dict[str, Any]], None]
_REVISION_FIELDS = ("fromRevision", "targetRevision", "currentRevision")
_BACKUP_FIELDS = ("url", "sizeBytes", "sha256", "verified", "completedAt")
_TIMEOUT = 5.0
_BACKOFF_S = 30.0  # after a failed write, later events skip the API this long


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value


class StatusReporter:
    """Turns runner events into merge patches of the resource's status."""

    def __init__(self, patch: Patcher):
        self._patch = patch
        self._stages: dict[str, dict[str, Any]] = {}
        self._pending: dict[str, Any] = {}
        self._quiet_until = 0.0

    def emit(self, event: str, **fields: Any) -> None:
        update = self.status_update(event, {k: _plain(v) for k, v in fields.items()})
        if not update:
            return
        # What could not be written is sent with the next update, so nothing is lost for good.
        self._pending.update(update)
        if time.monotonic() < self._quiet_until:
            return
        try:
            self._patch(self._pending)
        except Exception as exc:  # progress is best effort; the termination message is not
            self._quiet_until = time.monotonic() + _BACKOFF_S
            print(f"schemashift: live status update failed ({type(exc).__name__}: "
                  f"{redact.redact(str(exc))[:300]}); retrying in {_BACKOFF_S:.0f}s, the final "
                  "result goes to the termination message anyway", file=sys.stderr)
        else:
            self._pending = {}

    def status_update(self, event: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The status fields an event changes (phase, revisions, stages, backup, plan)."""
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


def _api_patcher(ref: str) -> Patcher:
    from kubernetes import client, config  # the in-cluster client only when there is a resource

    config.load_incluster_config()
    namespace, name = ref.split("/", 1)
    custom = client.CustomObjectsApi(client.ApiClient())

    def patch(update: dict[str, Any]) -> None:
        custom.patch_namespaced_custom_object_status(
            resource.GROUP, resource.VERSION, namespace, resource.PLURAL, name,
            {"status": update}, _request_timeout=_TIMEOUT)

    return patch


def job_reporter(ref: str | None) -> progress.Reporter:
    """JSON lines on stdout, plus live status of `ref` ("namespace/name") when given."""
    lines = progress.JsonLinesReporter()
    if not ref:
        return lines
    if "/" not in ref:
        print(f"schemashift: --resource {ref!r} is not NAMESPACE/NAME; reporting to stdout only",
              file=sys.stderr)
        return lines
    try:
        patcher = _api_patcher(ref)
    except Exception as exc:  # no in-cluster config: run anyway, report on stdout
        print(f"schemashift: no Kubernetes API for live status ({type(exc).__name__}: "
              f"{redact.redact(str(exc))[:300]}); reporting to stdout only", file=sys.stderr)
        return lines
    return progress.FanOutReporter([lines, StatusReporter(patcher)])
