"""Undoing a failed run per policy: downgrade the committed stages, restore the backup, or stop.

Whatever happens, the outcome names the revision the database is at afterwards (read back from
the database, never assumed) and the revisions that were undone. After any rollback the schema
is compared with the snapshot taken before the run: a downgrade that is `pass` or incomplete
leaves tables, columns or types behind although `alembic_version` is back. Such a difference is
reported object by object (PartiallyRolledBack), after falling back to the verified backup when
there is one. A restore is atomic (pgrestore): when it fails, the database is as it was before
the restore, and the comparison says what of the run is still in place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from schemashift import events, reasons
from schemashift.progress import BackupStatus, Reporter, TargetedCopy
from schemashift.runner import backup as backup_engine
from schemashift.runner import copy_restore, schema_reparse, schema_snapshot
from schemashift.runner.stages import Migrator, describe

ObjectKey = tuple[str, str, str]

# What a stage with an autocommit block may commit outside a transaction (the pipeline takes
# this before such a stage; a leftover means no downgrade can be trusted to undo it).
# Extension members belong to their extension.
_OBJECTS_SQL = """
SELECT n.nspname, c.relname, c.relkind::text FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'i', 'I')
   AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = c.oid)
   AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                   AND d.objid = c.oid AND d.deptype = 'e')
UNION ALL
SELECT n.nspname, t.typname, 'T' FROM pg_type t
  JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE (t.typtype IN ('e', 'd')
        OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
   AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                   AND d.objid = t.oid AND d.deptype = 'e')
UNION ALL
SELECT nspname, '', 'N' FROM pg_namespace
 WHERE nspname <> 'information_schema' AND nspname NOT LIKE 'pg\\_%'
"""

def snapshot_objects(connection: Connection) -> frozenset[ObjectKey]:
    try:
        return frozenset(
            (str(row[0]), str(row[1]), str(row[2]))
            for row in connection.execute(sa.text(_OBJECTS_SQL))
        )
    finally:
        connection.rollback()


@dataclass
class _DowngradeProgress:
    """Checkpoints of the rollback's downgrade: each revision reported as it is undone."""

    reporter: Reporter

    def starting(self, revision: str) -> None:
        self.reporter.emit(events.PhaseEntered(phase="RollingBack",
                                               message=f"downgrading {revision}"))

    def committed(self, revision: str | None) -> None:
        self.reporter.emit(events.PhaseEntered(phase="RollingBack",
                                               message=f"downgraded to {revision or 'base'}"))


@dataclass
class RollbackOutcome:
    outcome: Literal["RolledBack", "Failed"]
    reason: str
    message: str
    current: str | None
    undone: list[str] = field(default_factory=list)


@dataclass
class Rollback:
    """What a rollback needs to know about the run it undoes."""

    migrator: Migrator
    database_url: str
    from_revision: str | None
    boundaries: list[tuple[str | None, list[str]]]  # (revision before the stage, its revisions)
    backup: BackupStatus | None
    schema_before: schema_snapshot.Snapshot
    reporter: Reporter
    copies: list[TargetedCopy] = field(default_factory=list)  # issue 14: the run's copies
    _restored: bool = field(default=False, init=False)  # a restore was tried
    _put_back: str = field(default="", init=False)  # what went back from the copies

    def run(self, policy: str, *,
            objects_before_stage: frozenset[ObjectKey] | None = None) -> RollbackOutcome:
        """Undo per policy. `objects_before_stage` is given when the failed stage had an
        autocommit block: what it committed outside a transaction (no downgrade and no
        rollback undoes that) is found by comparing with what existed before it."""
        applied = self._applied(self.migrator.current())
        leftovers = objects_before_stage is not None and bool(
            snapshot_objects(self.migrator.connection) - objects_before_stage)
        done = self._undo(policy, applied, leftovers)
        self._void_uncommitted(applied)
        if done.reason == reasons.NOT_ROLLED_BACK:
            return done
        differences = self._differences()
        if differences and policy != "none" and self.backup is not None \
                and not self._restored:
            done = self._restore_outcome(
                f"{done.message}, but the schema still differed from before the run "
                f"({schema_snapshot.summary(differences)})", applied, instead=True)
            differences = self._differences()
        if differences:
            done.message += ("; the schema differs from the one before the run: "
                             + schema_snapshot.summary(differences))
            done.outcome = "Failed"
            if done.reason != reasons.ROLLBACK_FAILED:
                done.reason = reasons.PARTIALLY_ROLLED_BACK
        elif objects_before_stage is not None and not self._restored:
            done.message += ("; the failed stage had an autocommit block: no object of it "
                             "remains, but data it changed outside a transaction stays changed")
        return done

    def _differences(self) -> list[str]:
        connection = self.migrator.connection
        return schema_snapshot.differences(
            self.schema_before, schema_snapshot.take(connection),
            lambda *texts: schema_reparse.equivalent(connection, *texts))

    def _undo(self, policy: str, applied: list[str], leftovers: bool) -> RollbackOutcome:
        restorable = self.backup is not None and policy != "none"
        if leftovers and restorable:
            note = "" if policy == "restore" else (
                "the failed stage committed part of an autocommit block, which no downgrade "
                "undoes")
            return self._restore_outcome(note, applied)
        if not applied:
            return self._outcome("RolledBack", reasons.ROLLED_BACK_TRANSACTION,
                                 "the failed stage's transaction was rolled back and no "
                                 "earlier stage of this run had been committed", applied)
        if policy == "none":
            return self._outcome("Failed", reasons.NOT_ROLLED_BACK,
                                 "rollback policy is none: left as it is", applied)
        if policy == "restore":
            return self._restore_outcome("", applied)
        problem = self._downgrade() or self._put_back_copies(applied)
        if problem is None:
            note = f", then {self._put_back}" if self._put_back else ""
            return self._outcome("RolledBack", reasons.ROLLED_BACK_DOWNGRADE,
                                 f"rolled back by running the downgrades{note}", applied)
        if self.backup is None:
            return self._outcome("Failed", reasons.ROLLBACK_FAILED,
                                 f"downgrade failed ({problem}) and there is no backup "
                                 "to restore", applied)
        return self._restore_outcome(f"downgrade failed ({problem})", applied, instead=True)

    def _restore_outcome(self, why: str, applied: list[str], *,
                         instead: bool = False) -> RollbackOutcome:
        """Restore the backup; `why` says what led here (empty when the policy is restore)."""
        lead = f"{why}; " if why else ""
        if self.backup is None:
            return self._outcome("Failed", reasons.ROLLBACK_FAILED,
                                 f"{lead}rollback policy is restore but there is no backup",
                                 applied)
        self._restored = True
        problem = self._restore()
        if problem is not None:
            return self._outcome(
                "Failed", reasons.ROLLBACK_FAILED,
                f"{lead}restoring the backup failed, and the restore was rolled back, so the "
                f"database is as it was before the restore: {problem}", applied)
        done = "restored the backup instead" if instead else "restored the backup"
        return self._outcome("RolledBack", reasons.ROLLED_BACK_RESTORE, lead + done, applied)

    def _all_revisions(self) -> list[str]:
        return [rev for _, revisions in self.boundaries for rev in revisions]

    def _applied(self, current: str | None) -> list[str]:
        revisions = self._all_revisions()
        return revisions[: revisions.index(current) + 1] if current in revisions else []

    def _outcome(self, outcome: Literal["RolledBack", "Failed"], reason: str, what: str,
                 applied: Sequence[str]) -> RollbackOutcome:
        try:
            current = self.migrator.current()
        except Exception as exc:  # the database went away during the rollback
            return RollbackOutcome("Failed", reasons.ROLLBACK_FAILED,
                                   f"{what}; then could not read the revision: {describe(exc)}",
                                   None, [])
        still = self._applied(current)
        undone = [rev for rev in reversed(applied) if rev not in still]
        if outcome == "RolledBack" and current != self.from_revision:
            outcome, reason = "Failed", reasons.ROLLBACK_FAILED
            what += f", but the database is at {current or 'base'}, not {self.from_revision}"
        return RollbackOutcome(outcome, reason, what, current, undone)

    def _downgrade(self) -> str | None:
        """One downgrade command to the from-revision, a transaction per revision, each
        revision reported as it starts; None when it got there."""
        try:
            if self.migrator.current() != self.from_revision:
                self.migrator.downgrade(self.from_revision, _DowngradeProgress(self.reporter))
        except Exception as exc:
            return describe(exc, self.migrator.database_url)
        return None

    def _put_back_copies(self, downgraded: list[str]) -> str | None:
        """The targeted copies of the downgraded revisions that their downgrade did not put
        back (a hand-written one); None when done."""
        if not self.copies:
            return None
        try:
            self._put_back = copy_restore.put_back_run(
                self.database_url, self.copies, downgraded=downgraded, reporter=self.reporter)
        except Exception as exc:
            return "putting back the targeted copies failed: " + describe(
                exc, self.migrator.database_url)
        return None

    def _void_uncommitted(self, applied: list[str]) -> None:
        if self.copies:
            with contextlib.suppress(Exception):  # bookkeeping: never fails the rollback
                copy_restore.void_uncommitted(self.database_url, self.copies, applied)

    def _restore(self) -> str | None:
        """Everything in the database replaced by the backup, in one transaction."""
        assert self.backup is not None
        self.reporter.emit(events.PhaseEntered(
            phase="RollingBack", message=f"restoring the verified backup {self.backup.url}"))
        try:
            backup_engine.restore_backup(self.database_url, self.backup.url, clean=True, jobs=1,
                                         reporter=self.reporter)
        except Exception as exc:
            return describe(exc, self.migrator.database_url)
        return None
