"""What must hold before a run changes anything: the run's policy, then its plan's gates.

Each gate raises the error (with its reason and a hint) that ends the run with "Nothing was
changed"; none of them touches the database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from schemashift import errors, reasons
from schemashift.project import Project
from schemashift.runner import backup as backup_engine
from schemashift.runner import restore_point
from schemashift.runner.options import RunOptions

if TYPE_CHECKING:
    from schemashift.plan import Plan


def backs_up(options: RunOptions) -> bool:
    """Whether the run takes a backup: a pg_dump to a URL, or a restore point."""
    return bool(options.backup_url) or restore_point.uses_restore_point(options.backup_method)


def check_policy(project: Project, options: RunOptions) -> None:
    """The run's options against the environment's policy, before connecting."""
    if options.verify_models:
        project.metadata()  # a models module that does not load fails before changes
    if options.backup_url:  # URL, endpoint, region, stall limit: before connecting
        backup_engine.check_destination(options.backup_url)
    if options.dry_run:
        return
    restore_point.check_options(method=options.backup_method, rollback_policy=options.policy(),
                                dry_run=options.dry_run)
    if project.environment == "production" and not backs_up(options):
        raise errors.PolicyRefused(
            "production runs need a backup: no backup URL given and the backup method is "
            "not restorePoint",
            hint="pass --backup-url s3://bucket/prefix/ (spec.backup.url), or "
                 "--backup-method restorePoint with WAL archiving (spec.backup.method)",
            reason=reasons.BACKUP_REQUIRED,
        )
    if options.policy() == "restore" and not options.backup_url:
        raise errors.PolicyRefused(
            "rollback policy 'restore' needs a backup, but no backup URL was given",
            hint="pass --backup-url s3://bucket/prefix/, or use --rollback-policy downgrade",
            reason=reasons.BACKUP_REQUIRED,
        )


def check_plan(the_plan: Plan, options: RunOptions) -> None:
    """The plan against the approval, the phase, the direction, the lint and the data."""
    _approved(the_plan, options.expect_plan_hash)
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
    blocking = the_plan.blocking(options.lint(), options.allow)
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


def _approved(the_plan: Plan, expected: str | None) -> None:
    if expected and expected != the_plan.hash:
        raise errors.PolicyRefused(
            f"the plan is {the_plan.hash}, not the approved {expected}: the database "
            f"(now at {the_plan.from_revision or 'base'}) or the migrations changed since "
            "the plan was approved",
            hint="review the new plan (schemashift plan) and approve its hash",
            reason=reasons.PLAN_STALE,
        )
