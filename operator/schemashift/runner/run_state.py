"""What a run knows so far, and the result it ends with.

The pipeline and its checkpoints record revisions, stages, the backup and the copies here as
they happen; `result` turns that into the RunResult, reading the revision back from the
database: every "the database is at X" a run reports is what the database says at the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection

from schemashift import db, errors, events, redact, scripts
from schemashift.progress import (
    BackupStatus,
    Outcome,
    Phase,
    Reporter,
    RunResult,
    StageState,
    StageStatus,
    TargetedCopy,
)
from schemashift.runner import restore_point

if TYPE_CHECKING:
    from schemashift.plan import Plan


@dataclass
class RunState:
    reporter: Reporter
    password: str | None = None  # the database URL's, redacted from every message
    from_revision: str | None = None
    target_revision: str | None = None
    current: str | None = None
    plan_hash: str | None = None
    stages: list[StageStatus] = field(default_factory=list)
    backup: BackupStatus | None = None
    copies: list[TargetedCopy] = field(default_factory=list)  # issue 14
    connection: Connection | None = None
    plan: Plan | None = None  # once built: which contract revisions stay pending (issue 13)
    started: float = field(default_factory=time.monotonic)  # for the deadline's size guard

    def adopt(self, the_plan: Plan) -> None:
        self.plan = the_plan
        self.from_revision = self.current = the_plan.from_revision
        self.target_revision = the_plan.target_revision
        self.plan_hash = the_plan.hash
        self.stages = [StageStatus(name=s.name, revision=s.target) for s in the_plan.stages]

    # -- progress ------------------------------------------------------------------------------

    def phase(self, phase: Phase, message: str) -> None:
        self.reporter.emit(events.PhaseEntered(phase=phase,
                                               message=redact.redact(message, self.password)))

    def stage(self, status: StageStatus, state: StageState, **changes: Any) -> None:
        status.state = state
        for name, value in changes.items():
            setattr(status, name, value)
        self.reporter.emit(events.StageChanged(stage=replace(status)))  # a copy: it changes on

    def running_stage(self) -> StageStatus | None:
        return next((s for s in self.stages if s.state == "Running"), None)

    # -- the outcome ---------------------------------------------------------------------------

    def backup_note(self) -> str:
        if self.backup is None:
            return "no backup taken"
        if self.backup.restorePoint:
            return restore_point.note(self.backup)
        return f"verified backup at {self.backup.url}"

    def unchanged(self, reason: str, message: str, exit_code: int,
                  hint: str | None) -> RunResult:
        """A failure before or between changes: says the database is untouched, or where it is."""
        if any(status.state != "Pending" for status in self.stages):
            text = (message.rstrip(".") + f". The database is at revision "
                    f"{self.read_current() or 'base'}")
        else:
            text = message.rstrip(".") + ". Nothing was changed"
        if hint:
            text += f" (hint: {hint})"
        return self.result("Failed", reason, text, exit_code=exit_code)

    def result(self, outcome: Outcome, reason: str, message: str, *,
               exit_code: int | None = None, undone: list[str] | None = None) -> RunResult:
        if exit_code is None:
            exit_code = errors.EXIT_OK if outcome in ("Succeeded", "Planned") else \
                errors.EXIT_FAILED
        current = self.read_current()
        pending = self.plan.pending_contract(current) if self.plan is not None else []
        if pending and exit_code == errors.EXIT_OK:
            message += (f"; contract revision(s) pending: {', '.join(pending)} (apply them with "
                        "--phase contract once the previous release is gone)")
        return RunResult(
            outcome=outcome, reason=reason, message=redact.redact(message, self.password),
            exitCode=exit_code, fromRevision=self.from_revision,
            targetRevision=self.target_revision, currentRevision=current,
            planHash=self.plan_hash, stages=self.stages, backup=self.backup,
            undone=list(undone or []), pendingContract=pending, targetedCopies=self.copies,
        )

    def read_current(self) -> str | None:
        """The revision as the database says it at the end (the last known one if unreachable)."""
        if self.connection is None or self.connection.closed:
            return self.current
        try:
            self.current = scripts.current_revision(self.connection)
            self.connection.rollback()
        except Exception:
            pass
        return self.current


def url_password(database_url: str | None) -> str | None:
    """The password in a database URL, to keep out of messages (None if there is none)."""
    if not database_url:
        return None
    try:
        password = db.parse_url(database_url).password
    except errors.UsageError:
        return None
    return password if isinstance(password, str) else None
