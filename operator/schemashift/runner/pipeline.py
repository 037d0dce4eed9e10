"""The runner: preflight → lock → plan → backup → stages → verify → report, rollback on failure.

The Job (`run-job`) and local mode (`apply`) run this same code. `apply` never raises for a
failure a user can meet: it returns a RunResult stating exactly where the database is. The
gates (runner/gates.py), the stage checkpoints (runner/checkpoints.py) and the state a result
is made from (runner/run_state.py) live beside it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from alembic.config import Config
from sqlalchemy.engine import Connection

from schemashift import db, diff, errors, events, plan, reasons, scripts
from schemashift.progress import Phase, Reporter, RunResult
from schemashift.project import Project
from schemashift.runner import backup as backup_engine
from schemashift.runner import (
    compat_gate,
    gates,
    lock,
    restore_point,
    retention,
    rollback,
    schema_snapshot,
    targeted_copy,
)
from schemashift.runner.checkpoints import Checkpoints, LockLost, StageFailed
from schemashift.runner.options import RunOptions, parse_duration
from schemashift.runner.report import HumanReporter, local_reporter, write_termination_message
from schemashift.runner.run_state import RunState, url_password
from schemashift.runner.signals import interrupted, sigterm_interrupts
from schemashift.runner.stages import Migrator, describe

if TYPE_CHECKING:
    from schemashift.plan import Plan

__all__ = [
    "HumanReporter", "RunOptions", "apply", "local_reporter", "parse_duration",
    "write_termination_message",
]

_FINAL_PHASE: dict[str, Phase] = {
    "Succeeded": "Succeeded", "Planned": "Succeeded", "Failed": "Failed",
    "RolledBack": "RolledBack",
}
# The cause names the run's reason when it is one a user acts on (retry later, fix the models);
# a failed or partial rollback always wins: the database needs a human.
_CAUSES_THAT_NAME_THE_RUN = (
    reasons.LOCK_RETRIES_EXHAUSTED, reasons.VERIFY_FAILED, reasons.INTERRUPTED,
    reasons.INCOMPATIBLE_EXPAND,
)


def apply(project: Project, options: RunOptions, reporter: Reporter) -> RunResult:
    with sigterm_interrupts():
        result = _Run(project, options, RunState(reporter, url_password(project.database_url)))\
            .execute()
    reporter.emit(events.PhaseEntered(phase=_FINAL_PHASE[result.outcome], message=result.message))
    reporter.emit(events.Finished(result=result))
    return result


@dataclass
class _Run:
    project: Project
    options: RunOptions
    state: RunState

    def execute(self) -> RunResult:
        try:
            return self._preflight_and_run()
        except errors.SchemashiftError as exc:
            return self.state.unchanged(exc.reason, exc.args[0] if exc.args else str(exc),
                                        exc.exit_code, exc.hint)
        except KeyboardInterrupt as exc:
            return self.state.unchanged(reasons.INTERRUPTED, interrupted(exc).args[0],
                                        errors.EXIT_FAILED, None)
        except Exception as exc:  # a defect must still end in a result, not a traceback
            return self.state.unchanged(reasons.MIGRATION_FAILED, f"unexpected {describe(exc)}",
                                        errors.EXIT_FAILED, "report it, with the run's output")

    def _preflight_and_run(self) -> RunResult:
        state = self.state
        url = self.project.require_database_url()
        state.phase("Planning", f"preflight: {db.safe_url(db.parse_url(url))}")  # never echoed
        config = scripts.alembic_config(self.project.require_migrations_dir(), url)
        script = scripts.script_directory(config)
        scripts.single_head(script)
        state.target_revision = scripts.resolve_target(script, self.options.target)
        gates.check_policy(self.project, self.options)
        with db.connect(db.make_engine(url)) as conn:
            state.connection = conn
            state.current = state.from_revision = scripts.current_revision(conn)
            server_version = db.server_version_num(conn)
            conn.rollback()
            if restore_point.uses_restore_point(self.options.backup_method):
                restore_point.check(conn)  # archiving and rights: refused before any change
            elif self.options.backup_url:
                backup_engine.check_pg_dump_version(server_version)
            with lock.migration_lock(url, wait_seconds=self.options.lock_wait_s,
                                     on_wait=self._waiting_for_lock) as held:
                state.phase("Planning", "holding the migration lock; building the plan")
                return self._locked(url, config, conn, held)

    def _locked(self, url: str, config: Config, conn: Connection,
                held: lock.MigrationLock) -> RunResult:
        the_plan = plan.build_plan_for(conn, config, target=self.options.target,
                                       phase=self.options.phase)
        conn.rollback()
        self.state.adopt(the_plan)
        self.state.reporter.emit(events.PlanMade(plan=the_plan.to_dict()))
        gates.check_plan(the_plan, self.options)
        if self.options.dry_run:
            return self.state.result("Planned", reasons.DRY_RUN,
                                     f"dry run: {_plan_summary(the_plan)}; nothing was changed")
        if the_plan.is_empty:
            return self.state.result(
                "Succeeded", reasons.UP_TO_DATE,
                f"already at {self.state.from_revision or 'base'}: nothing to do")
        if gates.backs_up(self.options):
            self._take_backup(url)
        if self.options.backup_url:  # also beside a restore point: the copy is what it lacks
            self._after_backup(url, the_plan)
        with contextlib.closing(Migrator(config, url, self.options,
                                         on_retry=self._retrying)) as migrator:
            return self._apply_stages(the_plan, migrator, held)

    def _apply_stages(self, the_plan: Plan, migrator: Migrator,
                      held: lock.MigrationLock) -> RunResult:
        state = self.state
        undo = rollback.Rollback(
            migrator=migrator, database_url=migrator.database_url,
            from_revision=state.from_revision, boundaries=_boundaries(the_plan),
            backup=restore_point.restorable(state.backup),
            schema_before=schema_snapshot.take(migrator.connection),
            reporter=state.reporter, copies=state.copies,
        )
        expand_gate = compat_gate.ExpandGate.start(self.options.phase, migrator.witness)
        try:
            self._migrate(the_plan, migrator, held)
            self._check_expand(expand_gate, migrator)
            self._verify(migrator)
        except StageFailed as failure:
            return self._roll_back(undo, failure)
        except LockLost as lost:
            state.current = migrator.current()
            return state.result(
                "Failed", reasons.LOCK_LOST,
                f"lost the migration lock (its database session ended); stopped before stage "
                f"{lost} without rolling back, since another runner may hold the lock now. "
                f"The database is at revision {state.current or 'base'} (run started at "
                f"{state.from_revision or 'base'}, target {state.target_revision}); "
                f"{state.backup_note()}")
        except KeyboardInterrupt as exc:  # between stages, or while verifying
            return self._roll_back(undo, StageFailed(interrupted(exc), None))
        state.current = migrator.current()
        return state.result(
            "Succeeded", reasons.SUCCEEDED,
            f"migrated from {state.from_revision or 'base'} to {state.current} in "
            f"{len(state.stages)} stage(s); {state.backup_note()}",
        )

    # -- backup --------------------------------------------------------------------------------

    def _take_backup(self, url: str) -> None:
        state = self.state
        if restore_point.uses_restore_point(self.options.backup_method):
            state.phase("BackingUp", "creating a restore point and waiting until it is archived")
            state.backup = restore_point.take(url, from_revision=state.from_revision,
                                              wait_seconds=self.options.archive_wait_s,
                                              reporter=state.reporter)
            return
        assert self.options.backup_url is not None
        state.phase("BackingUp", f"backing up to {self.options.backup_url}")
        deadline = self.options.deadline_seconds
        state.backup = backup_engine.take_backup(
            url, self.options.backup_url, from_revision=state.from_revision,
            reporter=state.reporter, deadline_at=None if deadline is None else
            state.started + deadline,
        )

    def _after_backup(self, url: str, the_plan: Plan) -> None:
        """Issue 14: retention once the new backup is verified; the targeted copy of what the
        plan drops or rewrites."""
        assert self.options.backup_url is not None
        state = self.state
        if not restore_point.uses_restore_point(self.options.backup_method):
            retention.after_backup(self.options, state.backup, state.reporter, url)
        if the_plan.destroys:
            state.phase("BackingUp", "copying what the plan drops or rewrites: "
                        + ", ".join(d.where for d in the_plan.destroys))
            state.copies = targeted_copy.take(url, self.options.backup_url, the_plan,
                                              from_revision=state.from_revision,
                                              reporter=state.reporter)

    # -- stages, verify, rollback --------------------------------------------------------------

    def _migrate(self, the_plan: Plan, migrator: Migrator, held: lock.MigrationLock) -> None:
        """One Alembic command for all stages (see runner/stages.py); the checkpoints between
        revisions report each stage and stop the command when the lock is lost."""
        self.state.phase("Migrating", f"applying {len(the_plan.stages)} stage(s)")
        checkpoints = Checkpoints(
            self.state, list(zip(the_plan.stages, self.state.stages, strict=True)), migrator,
            held)
        try:
            migrator.upgrade(the_plan.stages[-1].target, checkpoints)
        except (StageFailed, LockLost):
            raise
        except (Exception, KeyboardInterrupt) as caught:
            raise checkpoints.failed(caught) from caught
        checkpoints.check_all_committed()

    def _check_expand(self, gate: compat_gate.ExpandGate | None, migrator: Migrator) -> None:
        broken = gate.violations(migrator.witness) if gate is not None else None
        if broken is not None:
            raise StageFailed(errors.MigrationFailed(broken, reason=reasons.INCOMPATIBLE_EXPAND),
                              None)

    def _verify(self, migrator: Migrator) -> None:
        target = self.state.target_revision
        self.state.phase("Verifying", f"checking the database is at {target}")
        current = migrator.current()
        if current != target:
            raise StageFailed(errors.MigrationFailed(
                f"after all stages the database is at {current or 'base'}, not at the target "
                f"{target}", reason=reasons.VERIFY_FAILED), None)
        if self.options.verify_models:
            try:
                report = diff.detect(self.project)
            except Exception as exc:
                raise StageFailed(errors.MigrationFailed(
                    f"comparing the database with the models failed: {describe(exc)}",
                    reason=reasons.VERIFY_FAILED), None) from exc
            if report.has_changes:
                raise StageFailed(errors.MigrationFailed(
                    "the migrated database still differs from the models: "
                    + " ".join(report.to_text().split()), reason=reasons.VERIFY_FAILED),
                    None)

    def _roll_back(self, undo: rollback.Rollback, failure: StageFailed) -> RunResult:
        state, policy = self.state, self.options.policy()
        cause = describe(failure.cause, state.password)
        what = f"stage {failure.stage.name} failed" if failure.stage else "the run failed"
        if policy != "none":  # policy none undoes nothing: there is no rolling back to show
            state.phase("RollingBack", f"{what}: {cause}; rollback policy {policy}")
        done = self._undo(undo, policy, failure)
        state.current = done.current
        for status in state.stages:
            if status.state == "Succeeded" and status.revision in done.undone:
                state.stage(status, "RolledBack")
        cause_reason = getattr(failure.cause, "reason", None)
        needs_human = done.reason in (reasons.ROLLBACK_FAILED, reasons.PARTIALLY_ROLLED_BACK)
        reason = cause_reason if not needs_human and cause_reason in _CAUSES_THAT_NAME_THE_RUN \
            else done.reason
        undone = ", ".join(done.undone) if done.undone else "nothing"
        message = (
            f"{what}: {cause}. {done.message[0].upper()}{done.message[1:]}. "
            f"The database is at revision {state.current or 'base'} "
            f"(run started at {state.from_revision or 'base'}, target {state.target_revision}); "
            f"undone: {undone}; {state.backup_note()}"
        )
        return state.result(done.outcome, reason, message, undone=done.undone)

    def _undo(self, undo: rollback.Rollback, policy: str,
              failure: StageFailed) -> rollback.RollbackOutcome:
        try:
            return undo.run(policy, objects_before_stage=failure.objects_before)
        except (Exception, KeyboardInterrupt) as exc:  # the report stays exact even then
            done = rollback.RollbackOutcome(
                "Failed", reasons.ROLLBACK_FAILED,
                f"rollback raised {describe(exc, self.state.password)}", None)
            try:
                done.current = undo.migrator.current()
            except (Exception, KeyboardInterrupt):
                done.current = self.state.current
            return done

    # -- progress ------------------------------------------------------------------------------

    def _retrying(self, attempt: int, wait: float, why: str) -> None:
        running = self.state.running_stage()
        if running is not None:
            running.attempts = attempt + 1
        self.state.reporter.emit(events.LockRetried(
            stage=running.name if running else None, attempt=attempt,
            wait_seconds=wait, retries=self.options.lock_retries, message=why,
        ))

    def _waiting_for_lock(self, holder: lock.LockHolder | None) -> None:
        who = holder.describe() if holder else "another session"
        self.state.phase("Planning", f"waiting up to {self.options.lock_wait} for the "
                                     f"migration lock held by {who}")


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
