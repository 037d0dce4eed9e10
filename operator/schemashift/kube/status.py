"""Reading a migration Job's outcome, and turning a run's result into SchemaMigration status.

The pod's termination message (the runner's RunResult JSON) is the authority for the final result;
Job conditions and pod states explain a run that never got to write it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from schemashift import progress, reasons, redact

Body = Mapping[str, Any]

PHASE_OF_OUTCOME = {"Succeeded": "Succeeded", "Failed": "Failed", "RolledBack": "RolledBack"}
_IMAGE_FAILURES = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
_CONFIG_FAILURES = frozenset({"CreateContainerConfigError", "CreateContainerError"})


@dataclass(frozen=True)
class JobOutcome:
    """`finished` with `result` (from the termination message) or a reason of our own."""

    finished: bool
    reason: str = ""
    message: str = ""
    result: progress.RunResult | None = None
    stop_job: bool = False  # the Job would hang until its deadline: delete it


def _condition(job: Body, type_: str) -> Mapping[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or ():
        if cond.get("type") == type_ and cond.get("status") == "True":
            return dict(cond)
    return None


def _container_status(pod: Body) -> Mapping[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or ()
    return statuses[0] if statuses else {}


def newest_pod(pods: Sequence[Body]) -> str | None:
    """The name of the Job's latest pod (whose log is the run's live progress)."""
    named = [p for p in pods if (p.get("metadata") or {}).get("name")]
    if not named:
        return None
    newest = max(named, key=lambda p: str(p["metadata"].get("creationTimestamp") or ""))
    return str(newest["metadata"]["name"])


def termination_result(pods: Sequence[Body]) -> progress.RunResult | None:
    """The RunResult a pod of the Job left in its termination message, if any."""
    for pod in pods:
        state = _container_status(pod).get("state") or {}
        message = (state.get("terminated") or {}).get("message") or ""
        try:
            data = json.loads(message)
            return progress.RunResult.from_dict(data)
        except (ValueError, TypeError, KeyError):
            continue
    return None


def _last_words(pods: Sequence[Body]) -> str:
    for pod in pods:
        state = _container_status(pod).get("state") or {}
        terminated = state.get("terminated") or {}
        if terminated:
            text = (terminated.get("message") or "").strip()
            tail = "\n".join(text.splitlines()[-5:])
            return f"exit code {terminated.get('exitCode')}" + (f": {tail}" if tail else "")
    return "no pod reported a result"


def job_outcome(job: Body, pods: Sequence[Body]) -> JobOutcome:
    """Where a migration Job stands, with the most precise reason available."""
    failed = _condition(job, "Failed") or _condition(job, "FailureTarget")
    done = _condition(job, "Complete") or _condition(job, "SuccessCriteriaMet")
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("reason") == "Evicted":
            return JobOutcome(True, reasons.POD_EVICTED, redact.redact(
                f"the migration pod was evicted: {status.get('message', '')}".strip()),
                termination_result(pods))
    if failed and failed.get("reason") == "DeadlineExceeded":
        return JobOutcome(True, reasons.DEADLINE_EXCEEDED,
                          f"the Job ran longer than activeDeadlineSeconds "
                          f"{(job.get('spec') or {}).get('activeDeadlineSeconds')} and was stopped",
                          termination_result(pods))
    if done or failed:
        result = termination_result(pods)
        if result is not None:
            return JobOutcome(True, result.reason, redact.redact(result.message), result)
        return JobOutcome(True, reasons.JOB_FAILED_WITHOUT_RESULT, redact.redact(
            f"the migration Job ended without a result ({_last_words(pods)})"))
    for pod in pods:
        waiting = (_container_status(pod).get("state") or {}).get("waiting") or {}
        why = waiting.get("reason", "")
        if why in _IMAGE_FAILURES:
            return JobOutcome(True, reasons.IMAGE_PULL_FAILED, redact.redact(
                f"{why}: {waiting.get('message', 'the image could not be pulled')}"),
                stop_job=True)
        if why in _CONFIG_FAILURES:
            return JobOutcome(True, reasons.CONTAINER_CONFIG_ERROR, redact.redact(
                f"{why}: {waiting.get('message', '')}"), stop_job=True)
    return JobOutcome(False)


def pods_stopping(job: Body, pods: Sequence[Body], grace_s: float = 90.0) -> bool:
    """Pods of a finished Job still running (being stopped), within a grace period."""
    from datetime import UTC, datetime

    running = [p for p in pods if (p.get("status") or {}).get("phase") in ("Pending", "Running")]
    if not running:
        return False
    stamps = [c.get("lastTransitionTime") for c in (job.get("status") or {}).get("conditions")
              or () if c.get("status") == "True" and c.get("lastTransitionTime")]
    if not stamps:
        return True
    ended = datetime.strptime(max(stamps), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return (datetime.now(UTC) - ended).total_seconds() < grace_s


def backup_summary(backup: Mapping[str, Any]) -> str:
    if backup.get("restorePoint"):  # method restorePoint: what a recovery targets
        state = "archived" if backup.get("verified") else "archiving"
        return f"restorePoint {backup['restorePoint']} @ {backup.get('lsn') or '?'} {state}"
    size = float(backup.get("sizeBytes") or 0)
    unit = "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    text = f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
    return f"{text} verified" if backup.get("verified") else f"{text} unverified"


def result_fields(result: progress.RunResult) -> dict[str, Any]:
    """Status fields a final result sets (message scrubbed, plan hash recorded)."""
    fields: dict[str, Any] = {
        "message": redact.redact(result.message),
        "fromRevision": result.fromRevision,
        "targetRevision": result.targetRevision,
        "currentRevision": result.currentRevision,
        "undone": list(result.undone),
    }
    if result.stages:
        fields["stages"] = [asdict(s) for s in result.stages]
    if result.backup is not None:
        backup = asdict(result.backup)
        fields["backup"] = {**backup, "summary": backup_summary(backup)}
    if result.targetedCopies:
        fields["targetedCopies"] = [asdict(c) for c in result.targetedCopies]
    if result.planHash:
        fields["plan"] = {"hash": result.planHash}
    return {k: v for k, v in fields.items() if v is not None}


def plan_hash(status: Mapping[str, Any]) -> str | None:
    plan = status.get("plan") or {}
    value = plan.get("hash")
    return str(value) if value else None
