"""Conditions in the kstatus style, so Argo CD, Flux and `kubectl wait` read them as they are.

Ready is the summary; Reconciling (work in progress) and Stalled (stopped, needs a person) are
the abnormal-true pair; Planned, Approved, BackupCompleted, Migrated, RolledBack and Failed say
what happened.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from schemashift import progress, reasons, redact

Status = Literal["True", "False", "Unknown"]

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
PLANNED = "Planned"
APPROVED = "Approved"
BACKUP_COMPLETED = "BackupCompleted"
MIGRATED = "Migrated"
ROLLED_BACK = "RolledBack"
FAILED = "Failed"
SPEC_CHANGED = "SpecChanged"
# Not part of the kstatus summary: a succeeded expand with contract work left is still Ready.
CONTRACT_PENDING = "ContractPending"


@dataclass(frozen=True)
class Condition:
    type: str
    status: Status
    reason: str
    message: str


def merge(
    existing: Iterable[Mapping[str, Any]],
    updates: Iterable[Condition],
    generation: int,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """Conditions with `updates` applied; lastTransitionTime moves only when the status flips."""
    stamp = now or progress.now()
    result = {c["type"]: dict(c) for c in existing}
    for cond in updates:
        old = result.get(cond.type)
        changed = old is None or old.get("status") != cond.status
        result[cond.type] = {
            "type": cond.type,
            "status": cond.status,
            "reason": cond.reason,
            "message": redact.redact(cond.message)[:2000],
            "lastTransitionTime": stamp if changed else old["lastTransitionTime"],  # type: ignore[index]
            "observedGeneration": generation,
        }
    return list(result.values())


def find(conditions: Iterable[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def summary(phase: str, reason: str, message: str) -> list[Condition]:
    """Ready / Reconciling / Stalled / Failed for a phase."""
    if phase == "Succeeded":
        return [
            Condition(READY, "True", reason, message),
            Condition(RECONCILING, "False", reason, message),
            Condition(STALLED, "False", reason, message),
            Condition(FAILED, "False", reason, message),
        ]
    if phase in ("Failed", "RolledBack"):
        return [
            Condition(READY, "False", reason, message),
            Condition(RECONCILING, "False", reason, message),
            Condition(STALLED, "True", reason, message),
            Condition(FAILED, "True", reason, message),
        ]
    return [
        Condition(READY, "False", reason, message),
        Condition(RECONCILING, "True", reason, message),
        Condition(STALLED, "False", reason, message),
        Condition(FAILED, "False", reason, message),
    ]


def from_result(result: progress.RunResult, backup_enabled: bool) -> list[Condition]:
    """What a run's final result says about planning, backup, migration and rollback."""
    found: list[Condition] = []
    if result.planHash:
        reason = reasons.DRY_RUN if result.outcome == "Planned" else reasons.PLANNED
        found.append(Condition(PLANNED, "True", reason, f"plan hash {result.planHash}"))
    elif result.outcome != "Succeeded":
        found.append(Condition(PLANNED, "False", result.reason, result.message))
    if result.backup is not None and result.backup.verified:
        found.append(Condition(BACKUP_COMPLETED, "True", reasons.BACKUP_VERIFIED,
                               f"{result.backup.url} ({result.backup.sizeBytes} bytes, "
                               f"sha256 {result.backup.sha256})"))
    elif backup_enabled and result.outcome != "Planned":
        found.append(Condition(BACKUP_COMPLETED, "False", result.reason,
                               "no verified backup was recorded"))
    if result.outcome == "Succeeded":
        found.append(Condition(MIGRATED, "True", result.reason, result.message))
    elif result.outcome != "Planned":
        found.append(Condition(MIGRATED, "False", result.reason, result.message))
    if result.outcome == "RolledBack":
        found.append(Condition(ROLLED_BACK, "True", result.reason, result.message))
    if (contract := contract_pending(result)) is not None:
        found.append(contract)
    return found


def contract_pending(result: progress.RunResult) -> Condition | None:
    """ContractPending from the runner's read-back of the history: True names the revisions,
    False after a success that names none. A failed run that names none may not have looked:
    Unknown (an earlier run's True must not stay). A plan that names none says nothing."""
    pending = list(result.pendingContract)
    if pending:
        return Condition(CONTRACT_PENDING, "True", reasons.CONTRACT_PENDING,
                         f"contract revisions not applied yet: {', '.join(pending)}; apply them "
                         "(spec.phase: contract) once no release older than this one runs")
    if result.outcome == "Succeeded":
        return Condition(CONTRACT_PENDING, "False", reasons.NO_CONTRACT_PENDING,
                         "no contract revision is pending")
    if result.outcome == "Planned":
        return None
    return Condition(CONTRACT_PENDING, "Unknown", result.reason,
                     f"the run ended {result.outcome} without reading back which contract "
                     "revisions are pending; `schemashift plan --phase contract` lists them")
