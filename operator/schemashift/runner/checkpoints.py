"""The stages' states as the one upgrade command commits and starts their revisions.

runner/stages.py runs all stages as one Alembic command; it calls `starting` before each
revision and `committed` after each commit. A failure anywhere becomes a StageFailed naming the
stage it happened in; a lost migration lock stops the command before the next stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from schemashift import errors, progress
from schemashift.progress import StageStatus
from schemashift.runner import lock, rollback
from schemashift.runner.run_state import RunState
from schemashift.runner.signals import interrupted
from schemashift.runner.stages import LockRetriesExhausted, Migrator, describe, invalid_indexes

if TYPE_CHECKING:
    from schemashift.plan import Stage


class LockLost(Exception):
    """Another runner may hold the lock now: touching the database further could race it."""


class StageFailed(Exception):
    def __init__(self, cause: BaseException, stage: StageStatus | None,
                 objects_before: frozenset[rollback.ObjectKey] | None = None):
        super().__init__(str(cause))
        self.cause = cause
        self.stage = stage
        self.objects_before = objects_before  # set for a stage with an autocommit block


@dataclass
class Checkpoints:
    state: RunState
    stages: list[tuple[Stage, StageStatus]]
    migrator: Migrator
    held: lock.MigrationLock
    # Objects before an autocommit stage's first attempt (a retry must not hide what it left).
    before: dict[str, frozenset[rollback.ObjectKey]] = field(default_factory=dict)

    def starting(self, revision: str) -> None:
        stage, status = self._stage_of(revision)
        if not self.held.still_held():
            raise LockLost(stage.name)
        if status.state == "Running":  # a lock retry resumes it
            return
        if stage.autocommit:
            self.before[revision] = rollback.snapshot_objects(self.migrator.witness)
        self.state.stage(status, "Running", startedAt=progress.now(), attempts=1)

    def committed(self, revision: str | None) -> None:
        self.state.current = revision
        done = [s.target for s, _ in self.stages]
        upto = done.index(revision) + 1 if revision in done else 0
        for stage, status in self.stages[:upto]:
            if status.state != "Running":
                continue
            if stage.target in self.before:
                self._check_indexes(stage, status, self.before[stage.target])
            self.state.stage(status, "Succeeded", finishedAt=progress.now())

    def failed(self, caught: BaseException) -> StageFailed:
        exc = interrupted(caught) if isinstance(caught, KeyboardInterrupt) else caught
        running = [pair for pair in self.stages if pair[1].state == "Running"]
        pending = [pair for pair in self.stages if pair[1].state == "Pending"]
        if not running and not pending:
            return StageFailed(exc, None)
        stage, status = running[-1] if running else pending[0]
        for _, uncommitted in running[:-1]:  # an env.py that runs all in one transaction
            self.state.stage(uncommitted, "Pending", startedAt=None,
                             message=f"not committed: rolled back with stage {stage.name}")
        count = exc.attempts if isinstance(exc, LockRetriesExhausted) else status.attempts
        self.state.stage(status, "Failed", finishedAt=progress.now(), attempts=max(count, 1),
                         message=describe(exc, self.state.password))
        return StageFailed(exc, status, self.before.get(stage.target))

    def check_all_committed(self) -> None:
        """After the command: every stage committed, as the database's revision says."""
        current = self.state.current = self.migrator.current()
        for stage, status in self.stages:
            if status.state != "Succeeded":
                self.state.stage(status, "Failed", finishedAt=progress.now(),
                                 message=f"database records {current}, not {stage.target}")
                raise StageFailed(errors.MigrationFailed(
                    f"stage {stage.name} ended with the database at {current or 'base'} "
                    f"instead of {stage.target}"), status, self.before.get(stage.target))

    def _check_indexes(self, stage: Stage, status: StageStatus,
                       before: frozenset[rollback.ObjectKey]) -> None:
        invalid = sorted(invalid_indexes(self.migrator.witness) - before)
        if not invalid:
            return
        names = ", ".join(f"{schema}.{name}" for schema, name, _ in invalid)
        message = (f"left the invalid index(es) {names}: a CREATE INDEX CONCURRENTLY was "
                   "interrupted (an IF NOT EXISTS retry then skips it)")
        self.state.stage(status, "Failed", finishedAt=progress.now(), message=message)
        # The revision is stamped: its downgrade is the precise undo.
        raise StageFailed(errors.MigrationFailed(f"stage {stage.name} {message}"), status)

    def _stage_of(self, revision: str) -> tuple[Stage, StageStatus]:
        for stage, status in self.stages:
            if stage.target == revision:
                return stage, status
        raise errors.MigrationFailed(f"Alembic started revision {revision}, which is not in "
                                     "the plan")
