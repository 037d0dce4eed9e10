"""What the runner tells the world while it works, and the result it ends with.

One interface, several outputs: JSON lines on stdout (local mode), the SchemaMigration status
(in the Job, wired by kube/), and the pod's termination message for the final result, which must
survive any API hiccup. Events are typed (events.py); on the wire each is a flat JSON object
with an "event" key.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, TextIO

if TYPE_CHECKING:  # events.py builds on this module's dataclasses
    from schemashift.events import Event

Phase = Literal[
    "Pending", "Planning", "AwaitingApproval", "BackingUp", "Migrating", "Verifying",
    "Succeeded", "Failed", "RollingBack", "RolledBack",
]
Outcome = Literal["Succeeded", "Failed", "RolledBack", "Planned"]
StageState = Literal["Pending", "Running", "Succeeded", "Failed", "RolledBack"]

# The kubelet truncates a termination message beyond 4096 bytes.
TERMINATION_MESSAGE_LIMIT = 4096


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class StageStatus:
    name: str
    revision: str
    state: StageState = "Pending"
    startedAt: str | None = None
    finishedAt: str | None = None
    attempts: int = 0
    message: str | None = None


@dataclass
class BackupStatus:
    url: str
    sizeBytes: int = 0
    sha256: str | None = None
    verified: bool = False
    completedAt: str | None = None
    method: str = "pgDump"  # options_table.BACKUP_METHOD's choices
    restorePoint: str | None = None  # restorePoint: the name given to pg_create_restore_point
    lsn: str | None = None  # restorePoint: its WAL location


@dataclass
class TargetedCopy:
    """Issue 14: data a revision of the run drops or rewrites, copied to object storage before
    the change (runner/targeted_copy.py); a downgrade puts it back (runner/copy_restore.py)."""

    url: str
    revision: str  # the revision whose upgrade drops or rewrites it
    rule: str  # the lint rule that found it: drop-column, drop-table or change-column-type
    table: str  # schema.table
    columns: list[str]  # the copied columns (every column for a dropped table)
    keyColumns: list[str]  # how rows are matched on restore (empty: a whole table)
    rows: int = 0
    sizeBytes: int = 0
    sha256: str | None = None
    verified: bool = False


@dataclass
class RunResult:
    """The final word of a run; the operator treats it as the authority (termination message)."""

    outcome: Outcome
    reason: str
    message: str
    exitCode: int
    fromRevision: str | None = None
    targetRevision: str | None = None
    currentRevision: str | None = None
    planHash: str | None = None
    stages: list[StageStatus] = field(default_factory=list)
    backup: BackupStatus | None = None
    undone: list[str] = field(default_factory=list)
    # Contract revisions still to apply after this run (issue 13: status condition ContractPending).
    pendingContract: list[str] = field(default_factory=list)
    # Issue 14: what the run copied before dropping or rewriting it (verified objects).
    targetedCopies: list[TargetedCopy] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def termination_message(self) -> str:
        """Compact JSON under the kubelet's limit: drops stage messages, then stages, if needed."""
        data = self.to_dict()
        text = json.dumps(data, separators=(",", ":"))
        if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
            for stage in data["stages"]:
                stage["message"] = None
            text = json.dumps(data, separators=(",", ":"))
        if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
            data["stages"] = []
            data["message"] = data["message"][:1000]
            text = json.dumps(data, separators=(",", ":"))
        while len(text.encode()) > TERMINATION_MESSAGE_LIMIT and data["targetedCopies"]:
            data["targetedCopies"].pop()  # the catalog table and the run's events list them all
            text = json.dumps(data, separators=(",", ":"))
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        stages = [StageStatus(**s) for s in data.get("stages") or []]
        backup = BackupStatus(**data["backup"]) if data.get("backup") else None
        copies = [TargetedCopy(**c) for c in data.get("targetedCopies") or []]
        fields = {k: v for k, v in data.items()
                  if k not in {"stages", "backup", "targetedCopies"}}
        return cls(**fields, stages=stages, backup=backup, targetedCopies=copies)


class Reporter(Protocol):
    def emit(self, event: Event) -> None:
        """Record one event, e.g. emit(PhaseEntered(phase="BackingUp", message="…"))."""


class JsonLinesReporter:
    """Local mode: one JSON object per line on stdout."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout

    def emit(self, event: Event) -> None:
        record = {"event": event.event_name(), "time": now(), **event.to_wire()}
        self.stream.write(json.dumps(record, default=_jsonable) + "\n")
        self.stream.flush()


def _jsonable(value: object) -> object:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)  # type: ignore[call-overload]
    return str(value)
