"""The runner: preflight → lock → plan → backup → stages → verify → report, rollback on failure.

The Job (`run-job`) and local mode (`apply`) run this same code. `apply` never raises for a
failure a user can meet: it returns a RunResult stating exactly where the database is.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from alembic.config import Config
from sqlalchemy.engine import Connection

from schemashift import db, diff, errors, events, plan, progress, reasons, redact, scripts
from schemashift.progress import (
    BackupStatus,
    Outcome,
    Phase,
    Reporter,
    RunResult,
    StageStatus,
    TargetedCopy,
)
from schemashift.project import Project
from schemashift.runner import backup as backup_engine
from schemashift.runner import (
    compat_gate,
    lock,
    restore_point,
    retention,
    rollback,
    schema_snapshot,
    targeted_copy,
)
from schemashift.runner.options import RunOptions, parse_duration
from schemashift.runner.report import HumanReporter, local_reporter, write_termination_message
from schemashift.runner.stages import (
    LockRetriesExhausted,
    Migrator,
    describe,
    invalid_indexes,
)

if TYPE_CHECKING:
    from schemashift.plan import Plan, Stage

__all__ = [
    "HumanReporter", "RunOptions", "apply", "local_reporter", "parse_duration",
    "write_termination_message",
]

_FINAL_PHASE: dict[str, Phase] = {
    "Succeeded": "Succeeded", "Planned": "Succeeded", "Failed": "Failed",
    "RolledBack": "RolledBack",
}


def apply(project: Project, options: RunOptions, reporter: Reporter) -> RunResult:
    with _sigterm_interrupts():
        result = _Run(project, options, reporter).execute()
    reporter.emit(events.PhaseEntered(phase=_FINAL_PHASE[result.outcome], message=result.message))
    reporter.emit(events.Finished(result=result))
    return result


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (Job deadline, pod deletion) stops the run like Ctrl-C does: psycopg cancels the
    running statement, the pipeline rolls back per policy and still reports. Only the first
    one interrupts: the rollback that follows must not be cut short by a repeat."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def interrupt(signum: int, frame: object) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted(exc: KeyboardInterrupt) -> errors.MigrationFailed:
    how = str(exc) or "interrupted (Ctrl-C)"
    return errors.MigrationFailed(how, reason=reasons.INTERRUPTED)


class _LockLost(Exception):
    """Another runner may hold the lock now: touching the database further could race it."""


class _StageFailed(Exception):
    def __init__(self, cause: BaseException, stage: StageStatus | None,
                 objects_before: frozenset[rollback.ObjectKey] | None = None):
        super().__init__(str(cause))
        self.cause = cause
        self.stage = stage
        self.objects_before = objects_before  # set for a stage with an autocommit block


@dataclass
class _Run:
    project: Project
    options: RunOptions
    reporter: Reporter
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

    # -- the whole run -------------------------------------------------------------------------

    def execute(self) -> RunResult:
        try:
            return self._preflight_and_run()
        except errors.SchemashiftError as exc:
            return self._unchanged(exc.reason, exc.args[0] if exc.args else str(exc),
                                   exc.exit_code, exc.hint)
        except KeyboardInterrupt as exc:
            return self._unchanged(reasons.INTERRUPTED, _interrupted(exc).args[0],
                                   errors.EXIT_FAILED, None)
        except Exception as exc:  # a defect must still end in a result, not a traceback
            return self._unchanged(reasons.MIGRATION_FAILED, f"unexpected {describe(exc)}",
                                   errors.EXIT_FAILED, "report it, with the run's output")

    def _preflight_and_run(self) -> RunResult:
        url = self.project.require_database_url()
        self._phase("Planning", f"preflight: {db.safe_url(db.parse_url(url))}")  # never echoed
        config = scripts.alembic_config(self.project.require_migrations_dir(), url)
        script = scripts.script_directory(config)
        scripts.single_head(script)
        self.target_revision = scripts.resolve_target(script, self.options.target)
        self._check_policy()
        with db.connect(db.make_engine(url)) as conn:
            self.connection = conn
            self.current = self.from_revision = scripts.current_revision(conn)
            server_version = db.server_version_num(conn)
            conn.rollback()
            if restore_point.uses_restore_point(self.options.backup_method):
                restore_point.check(conn)  # archiving and rights: refused before any change
            elif self.options.backup_url:
                backup_engine.check_pg_dump_version(server_version)
            with lock.migration_lock(url, wait_seconds=self.options.lock_wait_s,
                                     on_wait=self._waiting_for_lock) as held:
                self._phase("Planning", "holding the migration lock; building the plan")
                return self._locked(url, config, conn, held)

    def _check_policy(self) -> None:
        if self.options.verify_models:
            self.project.metadata()  # a models module that does not load fails before changes
        if self.options.backup_url:  # URL, endpoint, region, stall limit: before connecting
            backup_engine.check_destination(self.options.backup_url)
        if self.options.dry_run:
            return
        restore_point.check_options(method=self.options.backup_method,
                                    rollback_policy=self.options.policy(),
                                    dry_run=self.options.dry_run)
        if self.project.environment == "production" and not self._backs_up():
            raise errors.PolicyRefused(
                "production runs need a backup: no backup URL given and the backup method is "
                "not restorePoint",
                hint="pass --backup-url s3://bucket/prefix/ (spec.backup.url), or "
                     "--backup-method restorePoint with WAL archiving (spec.backup.method)",
                reason=reasons.BACKUP_REQUIRED,
            )
        if self.options.policy() == "restore" and not self.options.backup_url:
            raise errors.PolicyRefused(
                "rollback policy 'restore' needs a backup, but no backup URL was given",
                hint="pass --backup-url s3://bucket/prefix/, or use --rollback-policy downgrade",
                reason=reasons.BACKUP_REQUIRED,
            )

    def _locked(self, url: str, config: Config, conn: Connection,
                held: lock.MigrationLock) -> RunResult:
        the_plan = plan.build_plan_for(conn, config, target=self.options.target,
                                       phase=self.options.phase)
        conn.rollback()
        self._adopt(the_plan)
        self.reporter.emit(events.PlanMade(plan=the_plan.to_dict()))
        self._gate(the_plan)
        if self.options.dry_run:
            return self._result("Planned", reasons.DRY_RUN,
                                f"dry run: {_plan_summary(the_plan)}; nothing was changed")
        if the_plan.is_empty:
            return self._result("Succeeded", reasons.UP_TO_DATE,
                                f"already at {self.from_revision or 'base'}: nothing to do")
        if self._backs_up():
            self._take_backup(url)
        if self.options.backup_url:  # also beside a restore point: the copy is what it lacks
            self._after_backup(url, the_plan)
        with contextlib.closing(Migrator(config, url, self.options,
                                         on_retry=self._retrying)) as migrator:
            return self._apply_stages(the_plan, migrator, held)

    def _apply_stages(self, the_plan: Plan, migrator: Migrator,
                      held: lock.MigrationLock) -> RunResult:
        undo = rollback.Rollback(
            migrator=migrator, database_url=migrator.database_url,
            from_revision=self.from_revision, boundaries=_boundaries(the_plan),
            backup=restore_point.restorable(self.backup),
            schema_before=schema_snapshot.take(migrator.connection),
            reporter=self.reporter, copies=self.copies,
        )
        expand_gate = compat_gate.ExpandGate.start(self.options.phase, migrator.witness)
        try:
            self._migrate(the_plan, migrator, held)
            self._check_expand(expand_gate, migrator)
            self._verify(migrator)
        except _StageFailed as failure:
            return self._roll_back(undo, failure)
        except _LockLost as lost:
            self.current = migrator.current()
            return self._result(
                "Failed", reasons.LOCK_LOST,
                f"lost the migration lock (its database session ended); stopped before stage "
                f"{lost} without rolling back, since another runner may hold the lock now. "
                f"The database is at revision {self.current or 'base'} (run started at "
                f"{self.from_revision or 'base'}, target {self.target_revision}); "
                f"{self._backup_note()}")
        except KeyboardInterrupt as exc:  # between stages, or while verifying
            return self._roll_back(undo, _StageFailed(_interrupted(exc), None))
        self.current = migrator.current()
        return self._result(
            "Succeeded", reasons.SUCCEEDED,
            f"migrated from {self.from_revision or 'base'} to {self.current} in "
            f"{len(self.stages)} stage(s); {self._backup_note()}",
        )

    # -- plan and gates ------------------------------------------------------------------------

    def _adopt(self, the_plan: Plan) -> None:
        self.plan = the_plan
        self.from_revision = self.current = the_plan.from_revision
        self.target_revision = the_plan.target_revision
        self.plan_hash = the_plan.hash
        self.stages = [StageStatus(name=s.name, revision=s.target) for s in the_plan.stages]

    def _gate(self, the_plan: Plan) -> None:
        expected = self.options.expect_plan_hash
        if expected and expected != the_plan.hash:
            raise errors.PolicyRefused(
                f"the plan is {the_plan.hash}, not the approved {expected}: the database "
                f"(now at {the_plan.from_revision or 'base'}) or the migrations changed since "
                "the plan was approved",
                hint="review the new plan (schemashift plan) and approve its hash",
                reason=reasons.PLAN_STALE,
            )
        refused = the_plan.refusal()  # expand/contract: this phase cannot run
        if refused is not None:
            raise refused
        if the_plan.is_empty and the_plan.from_revision != the_plan.target_revision:
            raise errors.PolicyRefused(
                f"the database is at {the_plan.from_revision or 'base'}, not behind the target "
                f"{the_plan.target_revision or 'base'}: apply only upgrades",
                hint="to go back, deploy migrations whose head is the database's revision, "
                "restore a backup (schemashift restore), or run `alembic downgrade` deliberately",
                reason=reasons.TARGET_BEHIND_DATABASE,
            )
        blocking = the_plan.blocking(self.options.lint(), self.options.allow)
        if blocking:
            lines = "; ".join(f"[{f.rule}] {f.revision}: {f.message}" for f in blocking)
            raise errors.PolicyRefused(
                f"lint blocked the run with {len(blocking)} finding(s): {lines}",
                hint="change the revision as suggested, or accept a rule for this run with "
                "--allow RULE (spec.safety.allow)",
                reason=reasons.LINT_BLOCKED,
            )
        if the_plan.integrity:
            lines = "; ".join(f"[{f.check}] {f.revision}: {f.message}" for f in the_plan.integrity)
            raise errors.CheckFailed(
                f"integrity check failed, {len(the_plan.integrity)} finding(s): {lines}",
                hint="fix the data the revision would reject (see the plan), then rerun",
                reason=reasons.INTEGRITY_CHECK_FAILED,
            )

    def _backs_up(self) -> bool:
        return bool(self.options.backup_url) or restore_point.uses_restore_point(
            self.options.backup_method)

    def _take_backup(self, url: str) -> None:
        if restore_point.uses_restore_point(self.options.backup_method):
            self._phase("BackingUp", "creating a restore point and waiting until it is archived")
            self.backup = restore_point.take(url, from_revision=self.from_revision,
                                             wait_seconds=self.options.archive_wait_s,
                                             reporter=self.reporter)
            return
        assert self.options.backup_url is not None
        self._phase("BackingUp", f"backing up to {self.options.backup_url}")
        deadline = self.options.deadline_seconds
        self.backup = backup_engine.take_backup(
            url, self.options.backup_url, from_revision=self.from_revision,
            reporter=self.reporter, deadline_at=None if deadline is None else
            self.started + deadline,
        )

    def _after_backup(self, url: str, the_plan: Plan) -> None:
        """Issue 14: retention once the new backup is verified; the targeted copy of what the
        plan drops or rewrites."""
        assert self.options.backup_url is not None
        if not restore_point.uses_restore_point(self.options.backup_method):
            retention.after_backup(self.options, self.backup, self.reporter, url)
        if the_plan.destroys:
            self._phase("BackingUp", "copying what the plan drops or rewrites: "
                        + ", ".join(d.where for d in the_plan.destroys))
            self.copies = targeted_copy.take(url, self.options.backup_url, the_plan,
                                             from_revision=self.from_revision,
                                             reporter=self.reporter)

    # -- stages, verify, rollback --------------------------------------------------------------

    def _migrate(self, the_plan: Plan, migrator: Migrator, held: lock.MigrationLock) -> None:
        """One Alembic command for all stages (see runner/stages.py); the checkpoints between
        revisions report each stage and stop the command when the lock is lost."""
        self._phase("Migrating", f"applying {len(the_plan.stages)} stage(s)")
        checkpoints = _Checkpoints(self, list(zip(the_plan.stages, self.stages, strict=True)),
                                   migrator, held)
        try:
            migrator.upgrade(the_plan.stages[-1].target, checkpoints)
        except (_StageFailed, _LockLost):
            raise
        except (Exception, KeyboardInterrupt) as caught:
            raise checkpoints.failed(caught) from caught
        self.current = migrator.current()
        for stage, status in checkpoints.stages:
            if status.state != "Succeeded":
                self._stage(status, "Failed", finishedAt=progress.now(),
                            message=f"database records {self.current}, not {stage.target}")
                raise _StageFailed(errors.MigrationFailed(
                    f"stage {stage.name} ended with the database at {self.current or 'base'} "
                    f"instead of {stage.target}"), status, checkpoints.before.get(stage.target))

    def _check_indexes(self, migrator: Migrator, stage: Stage, status: StageStatus,
                       before: frozenset[rollback.ObjectKey]) -> None:
        invalid = sorted(invalid_indexes(migrator.witness) - before)
        if not invalid:
            return
        names = ", ".join(f"{schema}.{name}" for schema, name, _ in invalid)
        message = (f"left the invalid index(es) {names}: a CREATE INDEX CONCURRENTLY was "
                   "interrupted (an IF NOT EXISTS retry then skips it)")
        self._stage(status, "Failed", finishedAt=progress.now(), message=message)
        # The revision is stamped: its downgrade is the precise undo.
        raise _StageFailed(errors.MigrationFailed(f"stage {stage.name} {message}"), status)

    def _check_expand(self, gate: compat_gate.ExpandGate | None, migrator: Migrator) -> None:
        broken = gate.violations(migrator.witness) if gate is not None else None
        if broken is not None:
            raise _StageFailed(errors.MigrationFailed(broken, reason=reasons.INCOMPATIBLE_EXPAND),
                               None)

    def _verify(self, migrator: Migrator) -> None:
        self._phase("Verifying", f"checking the database is at {self.target_revision}")
        current = migrator.current()
        if current != self.target_revision:
            raise _StageFailed(errors.MigrationFailed(
                f"after all stages the database is at {current or 'base'}, not at the target "
                f"{self.target_revision}", reason=reasons.VERIFY_FAILED), None)
        if self.options.verify_models:
            try:
                report = diff.detect(self.project)
            except Exception as exc:
                raise _StageFailed(errors.MigrationFailed(
                    f"comparing the database with the models failed: {describe(exc)}",
                    reason=reasons.VERIFY_FAILED), None) from exc
            if report.has_changes:
                raise _StageFailed(errors.MigrationFailed(
                    "the migrated database still differs from the models: "
                    + " ".join(report.to_text().split()), reason=reasons.VERIFY_FAILED),
                    None)

    def _roll_back(self, undo: rollback.Rollback, failure: _StageFailed) -> RunResult:
        cause = describe(failure.cause, self._password())
        what = f"stage {failure.stage.name} failed" if failure.stage else "the run failed"
        self._phase("RollingBack", f"{what}: {cause}; rollback policy {self.options.policy()}")
        try:
            done = undo.run(self.options.policy(), objects_before_stage=failure.objects_before)
        except (Exception, KeyboardInterrupt) as exc:  # the report stays exact even then
            done = rollback.RollbackOutcome("Failed", reasons.ROLLBACK_FAILED,
                                            f"rollback raised {describe(exc, self._password())}",
                                            None)
            try:
                done.current = undo.migrator.current()
            except (Exception, KeyboardInterrupt):
                done.current = self.current
        self.current = done.current
        for status in self.stages:
            if status.state == "Succeeded" and status.revision in done.undone:
                self._stage(status, "RolledBack")
        # The cause names the run's reason when it is one a user acts on (retry later, fix
        # the models); a failed or partial rollback always wins: the database needs a human.
        cause_reason = getattr(failure.cause, "reason", None)
        reason = done.reason
        needs_human = done.reason in (reasons.ROLLBACK_FAILED, reasons.PARTIALLY_ROLLED_BACK)
        if not needs_human and cause_reason in (
                reasons.LOCK_RETRIES_EXHAUSTED, reasons.VERIFY_FAILED, reasons.INTERRUPTED,
                reasons.INCOMPATIBLE_EXPAND):
            reason = cause_reason
        undone = ", ".join(done.undone) if done.undone else "nothing"
        message = (
            f"{what}: {cause}. {done.message[0].upper()}{done.message[1:]}. "
            f"The database is at revision {self.current or 'base'} "
            f"(run started at {self.from_revision or 'base'}, target {self.target_revision}); "
            f"undone: {undone}; {self._backup_note()}"
        )
        return self._result(done.outcome, reason, message, undone=done.undone)

    # -- reporting ----------------------------------------------------------------------------

    def _phase(self, phase: Phase, message: str) -> None:
        self.reporter.emit(events.PhaseEntered(phase=phase,
                                               message=redact.redact(message, self._password())))

    def _stage(self, status: StageStatus, state: str, **changes: Any) -> None:
        status.state = state  # type: ignore[assignment]
        for name, value in changes.items():
            setattr(status, name, value)
        self.reporter.emit(events.StageChanged(stage=replace(status)))

    def _retrying(self, attempt: int, wait: float, why: str) -> None:
        running = next((s for s in self.stages if s.state == "Running"), None)
        if running is not None:
            running.attempts = attempt + 1
        self.reporter.emit(events.LockRetried(
            stage=running.name if running else None, attempt=attempt,
            wait_seconds=wait, retries=self.options.lock_retries, message=why,
        ))

    def _waiting_for_lock(self, holder: lock.LockHolder | None) -> None:
        who = holder.describe() if holder else "another session"
        self._phase("Planning", f"waiting up to {self.options.lock_wait} for the migration "
                                f"lock held by {who}")

    def _backup_note(self) -> str:
        if self.backup is None:
            return "no backup taken"
        if self.backup.restorePoint:
            return restore_point.note(self.backup)
        return f"verified backup at {self.backup.url}"

    def _password(self) -> str | None:
        if not self.project.database_url:
            return None
        try:
            password = db.parse_url(self.project.database_url).password
        except errors.UsageError:
            return None
        return password if isinstance(password, str) else None

    def _unchanged(self, reason: str, message: str, exit_code: int,
                   hint: str | None) -> RunResult:
        if any(status.state != "Pending" for status in self.stages):
            text = (message.rstrip(".") + f". The database is at revision "
                    f"{self._read_current() or 'base'}")
        else:
            text = message.rstrip(".") + ". Nothing was changed"
        if hint:
            text += f" (hint: {hint})"
        return self._result("Failed", reason, text, exit_code=exit_code)

    def _result(self, outcome: Outcome, reason: str, message: str, *,
                exit_code: int | None = None, undone: list[str] | None = None) -> RunResult:
        if exit_code is None:
            exit_code = errors.EXIT_OK if outcome in ("Succeeded", "Planned") else \
                errors.EXIT_FAILED
        current = self._read_current()
        pending = self.plan.pending_contract(current) if self.plan is not None else []
        if pending and exit_code == errors.EXIT_OK:
            message += (f"; contract revision(s) pending: {', '.join(pending)} (apply them with "
                        "--phase contract once the previous release is gone)")
        return RunResult(
            outcome=outcome, reason=reason, message=redact.redact(message, self._password()),
            exitCode=exit_code, fromRevision=self.from_revision,
            targetRevision=self.target_revision, currentRevision=current,
            planHash=self.plan_hash, stages=self.stages, backup=self.backup,
            undone=list(undone or []), pendingContract=pending, targetedCopies=self.copies,
        )

    def _read_current(self) -> str | None:
        """The revision as the database says it at the end (the last known one if unreachable)."""
        if self.connection is None or self.connection.closed:
            return self.current
        try:
            self.current = scripts.current_revision(self.connection)
            self.connection.rollback()
        except Exception:
            pass
        return self.current


@dataclass
class _Checkpoints:
    """The stages' states as the one upgrade command commits and starts their revisions."""

    run: _Run
    stages: list[tuple[Stage, StageStatus]]
    migrator: Migrator
    held: lock.MigrationLock
    # Objects before an autocommit stage's first attempt (a retry must not hide what it left).
    before: dict[str, frozenset[rollback.ObjectKey]] = field(default_factory=dict)

    def starting(self, revision: str) -> None:
        stage, status = self._stage_of(revision)
        if not self.held.still_held():
            raise _LockLost(stage.name)
        if status.state == "Running":  # a lock retry resumes it
            return
        if stage.autocommit:
            self.before[revision] = rollback.snapshot_objects(self.migrator.witness)
        self.run._stage(status, "Running", startedAt=progress.now(), attempts=1)

    def committed(self, revision: str | None) -> None:
        self.run.current = revision
        done = [s.target for s, _ in self.stages]
        upto = done.index(revision) + 1 if revision in done else 0
        for stage, status in self.stages[:upto]:
            if status.state != "Running":
                continue
            if stage.target in self.before:
                self.run._check_indexes(self.migrator, stage, status, self.before[stage.target])
            self.run._stage(status, "Succeeded", finishedAt=progress.now())

    def failed(self, caught: BaseException) -> _StageFailed:
        exc = _interrupted(caught) if isinstance(caught, KeyboardInterrupt) else caught
        running = [pair for pair in self.stages if pair[1].state == "Running"]
        pending = [pair for pair in self.stages if pair[1].state == "Pending"]
        if not running and not pending:
            return _StageFailed(exc, None)
        stage, status = running[-1] if running else pending[0]
        for _, uncommitted in running[:-1]:  # an env.py that runs all in one transaction
            self.run._stage(uncommitted, "Pending", startedAt=None,
                            message=f"not committed: rolled back with stage {stage.name}")
        count = exc.attempts if isinstance(exc, LockRetriesExhausted) else status.attempts
        self.run._stage(status, "Failed", finishedAt=progress.now(), attempts=max(count, 1),
                        message=describe(exc, self.run._password()))
        return _StageFailed(exc, status, self.before.get(stage.target))

    def _stage_of(self, revision: str) -> tuple[Stage, StageStatus]:
        for stage, status in self.stages:
            if stage.target == revision:
                return stage, status
        raise errors.MigrationFailed(f"Alembic started revision {revision}, which is not in "
                                     "the plan")


def _boundaries(the_plan: Plan) -> list[tuple[str | None, list[str]]]:
    before: str | None = the_plan.from_revision
    result: list[tuple[str | None, list[str]]] = []
    for stage in the_plan.stages:
        result.append((before, list(stage.revisions)))
        before = stage.target
    return result


def _plan_summary(the_plan: Plan) -> str:
    return (f"{len(the_plan.revisions)} revision(s) in {len(the_plan.stages)} stage(s) from "
            f"{the_plan.from_revision or 'base'} to {the_plan.target_revision or 'base'}")
