"""The runner's progress as typed events: what it emits, and what its JSON lines parse back into.

Each event knows its wire name (the JSON lines' "event" key, which tests, scripts and the operator
read, so the names never change) and its fields (`to_wire`). `parse` turns a JSON-lines record back
into an event, for the operator reading a pod's log: anything it does not recognise, or that does
not have the fields' types, is None, never an exception, since a pod may print anything.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal, TypedDict, Union, get_args, get_origin

from schemashift.progress import Phase, RunResult, StageStatus

TransferKind = Literal["backup", "restore", "targeted_copy"]
TransferState = Literal["InProgress", "Uploaded", "Verified", "Restored"]
RestorePointState = Literal["InProgress", "Verified"]


class _Wire:
    """Fields in declaration order; an optional field (default None) left None is not sent."""

    wire_name: ClassVar[str]

    def event_name(self) -> str:
        return self.wire_name

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {}
        for item in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            if value is not None or item.default is not None:
                wire[item.name] = value
        return wire


@dataclass(frozen=True, kw_only=True)
class PhaseEntered(_Wire):
    wire_name: ClassVar[str] = "phase"
    phase: Phase
    message: str


@dataclass(frozen=True, kw_only=True)
class PlanMade(_Wire):
    """The plan the run follows (plan.Plan.to_dict: revisions, stages, lint, hash, ...)."""

    wire_name: ClassVar[str] = "plan"
    plan: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class StageChanged(_Wire):
    """A stage's status as it changes (a copy: the runner goes on changing its own)."""

    wire_name: ClassVar[str] = "stage"
    stage: StageStatus

    def to_wire(self) -> dict[str, Any]:
        return asdict(self.stage)


@dataclass(frozen=True, kw_only=True)
class LockRetried(_Wire):
    """A lock timeout: the running stage is tried again after `wait_seconds`."""

    wire_name: ClassVar[str] = "lock_retry"
    stage: str | None  # the running stage's name
    attempt: int
    wait_seconds: float
    retries: int  # the most the run allows
    message: str


class TransferDetail(TypedDict, total=False):
    """What some transfers add; on the wire after the common fields, in the order given."""

    sha256: str
    entries: int  # TOC entries of a verified dump
    parts: int  # files of a directory-format dump
    rows: int  # rows of a targeted copy
    table: str
    columns: list[str]
    matchedBy: str
    waitingSeconds: int  # how long object storage has moved no data
    message: str


@dataclass(frozen=True, kw_only=True)
class Transfer(_Wire):
    """Bytes moving to or from object storage: a backup, a restore or a targeted copy."""

    kind: TransferKind  # the wire name
    state: TransferState
    url: str
    bytes: int
    mbps: float
    detail: TransferDetail = dataclasses.field(default_factory=TransferDetail)

    def event_name(self) -> str:
        return self.kind

    def to_wire(self) -> dict[str, Any]:
        return {"state": self.state, "url": self.url, "bytes": self.bytes, "mbps": self.mbps,
                **self.detail}


@dataclass(frozen=True, kw_only=True)
class RestorePointProgress(_Wire):
    """Backup method restorePoint: the named point's WAL segment being archived, then archived."""

    wire_name: ClassVar[str] = "backup"
    state: RestorePointState
    waitingSeconds: int | None = None
    lastArchivedWal: str | None = None
    message: str
    method: str
    restorePoint: str
    lsn: str
    segment: str

    def to_wire(self) -> dict[str, Any]:
        wire = {k: v for k, v in asdict(self).items()
                if k not in ("waitingSeconds", "lastArchivedWal")}
        if self.waitingSeconds is None:
            return wire
        # while waiting, the last archived segment is said even when there is none yet (null)
        return {"state": self.state, "waitingSeconds": self.waitingSeconds,
                "lastArchivedWal": self.lastArchivedWal, **wire}


@dataclass(frozen=True, kw_only=True)
class CopySkipped(_Wire):
    """A targeted copy the run could not make (the revision's change goes ahead without it)."""

    wire_name: ClassVar[str] = "targeted_copy"
    state: Literal["Skipped"] = "Skipped"
    revision: str
    table: str
    message: str


@dataclass(frozen=True, kw_only=True)
class BackupCleanup(_Wire):
    """Leftovers of earlier runs' backups under the prefix, removed or kept (too young)."""

    wire_name: ClassVar[str] = "backup_cleanup"
    prefix: str
    removed: list[str]
    kept: list[str]
    message: str


@dataclass(frozen=True, kw_only=True)
class BackupRetention(_Wire):
    wire_name: ClassVar[str] = "backup_retention"
    limits: str
    deleted: list[str]
    kept: list[str]
    problems: list[str] | None = None
    message: str


@dataclass(frozen=True, kw_only=True)
class BackupEstimate(_Wire):
    """The size guard's projection of the dump's duration from its first seconds."""

    wire_name: ClassVar[str] = "backup_estimate"
    copiedBytes: int
    tableBytes: int
    databaseBytes: int
    mbps: float
    projectedSeconds: int
    remainingSeconds: int
    fits: bool


@dataclass(frozen=True, kw_only=True)
class EstimateUnavailable(_Wire):
    wire_name: ClassVar[str] = "backup_estimate"
    message: str


@dataclass(frozen=True, kw_only=True)
class Finished(_Wire):
    """The run's last event: its result (also the Job's termination message)."""

    wire_name: ClassVar[str] = "result"
    result: RunResult

    def to_wire(self) -> dict[str, Any]:
        return self.result.to_dict()


Event = Union[  # noqa: UP007 - a runtime value too: parse() walks its members
    PhaseEntered, PlanMade, StageChanged, LockRetried, Transfer, RestorePointProgress,
    CopySkipped, BackupCleanup, BackupRetention, BackupEstimate, EstimateUnavailable, Finished,
]


def parse(record: Mapping[str, Any]) -> Event | None:
    """The event a JSON-lines record (`{"event": name, "time": ..., **fields}`) carries."""
    name = record.get("event")
    if not isinstance(name, str):
        return None
    fields = {k: v for k, v in record.items() if k not in ("event", "time")}
    for build in _BUILDERS.get(name, ()):
        try:
            event = build(name, fields)
        except (TypeError, ValueError, KeyError, AttributeError):
            event = None  # a record that does not fit this class may fit the next
        if event is not None:
            return event
    return None


def parse_line(line: str) -> Event | None:
    """The event on one line of a runner's output; None for any other line."""
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than json can read
        return None
    return parse(record) if isinstance(record, dict) else None


def _flat(cls: type[_Wire]) -> typing.Callable[[str, dict[str, Any]], Event | None]:
    """Builds `cls` from its own fields, each present (or defaulted) with its declared type."""
    hints = typing.get_type_hints(cls)

    def build(_name: str, fields: dict[str, Any]) -> Event | None:
        values: dict[str, Any] = {}
        for item in dataclasses.fields(cls):  # type: ignore[arg-type]
            if item.name in fields:
                if not _fits(fields[item.name], hints[item.name]):
                    return None
                values[item.name] = fields[item.name]
            elif item.default is dataclasses.MISSING:
                return None
        return typing.cast(Event, cls(**values))
    return build


def _transfer(name: str, fields: dict[str, Any]) -> Event | None:
    common = {"state": TransferState, "url": str, "bytes": int, "mbps": float}
    if name not in get_args(TransferKind) or not all(
            _fits(fields.get(key), hint) for key, hint in common.items()):
        return None
    hints = typing.get_type_hints(TransferDetail)
    if not all(_fits(value, hints[key]) for key, value in fields.items() if key in hints):
        return None
    detail = typing.cast(TransferDetail, {k: v for k, v in fields.items() if k in hints})
    return Transfer(kind=name, state=fields["state"], url=fields["url"],  # type: ignore[arg-type]
                    bytes=fields["bytes"], mbps=fields["mbps"], detail=detail)


def _stage(_name: str, fields: dict[str, Any]) -> Event | None:
    known = {k: v for k, v in fields.items() if k in StageStatus.__dataclass_fields__}
    stage = StageStatus(**known)
    return StageChanged(stage=stage) if _typed(stage) else None


def _finished(_name: str, fields: dict[str, Any]) -> Event | None:
    result = RunResult.from_dict(fields)
    return Finished(result=result) if _typed(result) else None


def _typed(value: object) -> bool:
    """Whether each field of a dataclass built from JSON (and of those within) has its
    declared type."""
    hints = typing.get_type_hints(type(value))
    for item in dataclasses.fields(value):  # type: ignore[arg-type]
        field_value = getattr(value, item.name)
        if not _fits(field_value, hints[item.name]):
            return False
        inner = field_value if isinstance(field_value, list) else [field_value]
        if not all(_typed(v) for v in inner if dataclasses.is_dataclass(v)):
            return False
    return True


def _fits(value: object, hint: Any) -> bool:
    """Whether a JSON value has the declared type (the few shapes events use)."""
    origin = get_origin(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_fits(value, arm) for arm in get_args(hint))
    if origin is Literal:
        return value in get_args(hint)
    if origin is list:
        return isinstance(value, list) and all(_fits(v, get_args(hint)[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(hint, type) and isinstance(value, hint)


_Builder = typing.Callable[[str, dict[str, Any]], Event | None]
_BUILDERS: dict[str, tuple[_Builder, ...]] = {
    "phase": (_flat(PhaseEntered),),
    "plan": (_flat(PlanMade),),
    "stage": (_stage,),
    "lock_retry": (_flat(LockRetried),),
    "backup": (_flat(RestorePointProgress), _transfer),
    "restore": (_transfer,),
    "targeted_copy": (_flat(CopySkipped), _transfer),
    "backup_cleanup": (_flat(BackupCleanup),),
    "backup_retention": (_flat(BackupRetention),),
    "backup_estimate": (_flat(BackupEstimate), _flat(EstimateUnavailable)),
    "result": (_finished,),
}
