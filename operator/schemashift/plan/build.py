"""Build a plan: which revisions run from the database's revision to the target, and how."""

from __future__ import annotations

from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection

from schemashift import db, errors, reasons, scripts
from schemashift.plan import (
    destroys,
    integrity,
    lint,
    live,
    live_constraints,
    locks,
    override,
    phases,
    planned_inspector,
    render,
    walk,
)
from schemashift.plan.model import Plan, RevisionInfo, Stage, plan_hash
from schemashift.project import Project
from schemashift.release_phases import ALL


def build_plan(project: Project, target: str = "head", phase: str = ALL) -> Plan:
    """The CLI's entry: its own connection to the project's database."""
    url = project.require_database_url()
    config = scripts.alembic_config(project.require_migrations_dir(), url)
    scripts.script_directory(config)  # a broken directory is reported before connecting
    engine = db.make_engine(url)
    try:
        with db.connect(engine) as conn:
            return build_plan_for(conn, config, target, phase=phase)
    finally:
        engine.dispose()


def build_plan_for(
    conn: Connection,
    config: Config,
    target: str = "head",
    *,
    check_timeout: str = integrity.DEFAULT_TIMEOUT,
    phase: str = ALL,
) -> Plan:
    """The runner's entry: plans on the caller's connection, leaving its transaction state as it
    was (a transaction this call had to begin is rolled back). `phase` narrows the plan to the
    pending revisions that phase applies (plan/phases.py); its target is then the last of them."""
    script = scripts.script_directory(config)
    scripts.single_head(script)
    target_revision = scripts.resolve_target(script, target)
    was_in_transaction = conn.in_transaction()
    try:
        current = scripts.current_revision(conn)
        to_apply = revisions_between(script, current, target_revision)
        rendered = render.render_revisions(config, script, to_apply, current,
                                           planned_inspector.live_inspector(conn), conn.dialect)
        touched, typed = walk.touched_tables(rendered)
        facts = live.read_facts(conn, touched, typed, check_timeout)
        by_phase = phases.plan_phases(phase, rendered, current, facts)
        to_apply, rendered = to_apply[:by_phase.selected], rendered[:by_phase.selected]
        if by_phase.selected < len(by_phase.revisions):
            target_revision = to_apply[-1].revision if to_apply else current
        checks = integrity.run_checks(conn, rendered, check_timeout)
        checks_held = live_constraints.read_constraints(conn, touched, check_timeout)
    finally:
        if not was_in_transaction and conn.in_transaction():
            conn.rollback()
    steps = locks.steps_by_revision(rendered, facts, checks_held)
    stages = [_stage(index, r, steps[r.revision]) for index, r in enumerate(rendered, start=1)]
    return Plan(
        from_revision=current,
        target_revision=target_revision,
        revisions=[_info(s) for s in to_apply],
        stages=stages,
        lint=phases.lint_for_phase(override.apply_overrides(
            lint.lint(rendered, facts, checks_held) + checks.incomplete,
            {r.revision: r.override for r in rendered}), by_phase),
        integrity=checks.findings,
        hash=plan_hash(current, target_revision, stages),
        phases=by_phase,
        destroys=destroys.find(rendered, facts),
    )


def revisions_between(
    script: ScriptDirectory, current: str | None, target: str | None
) -> list[Script]:
    """Revisions to upgrade through, oldest first; empty when the target is not ahead."""
    if current is not None:
        _known(script, current)
    if target is None or target == current:
        return []
    if current is not None and target in _ancestors(script, current):
        return []
    try:
        newest_first = list(script.iterate_revisions(target, current))
    except CommandError as exc:
        raise errors.UsageError(
            f"target {target} is not reachable by upgrading from the database's revision "
            f"{current}: {exc}",
            hint="pick a target on the database's branch, or merge the branches first",
            reason=reasons.UNKNOWN_REVISION,
        ) from None
    return [s for s in reversed(newest_first) if s is not None]


def _known(script: ScriptDirectory, revision: str) -> None:
    try:
        found = script.get_revision(revision)
    except CommandError:
        found = None
    if found is None:
        raise errors.UsageError(
            f"the database is at revision {revision}, which the migrations directory does not "
            "contain",
            hint="use the migrations the database was migrated with (a newer image?), or "
            "restore the missing revision file",
            reason=reasons.UNKNOWN_REVISION,
        )


def _ancestors(script: ScriptDirectory, revision: str) -> set[str]:
    return {s.revision for s in script.walk_revisions(base="base", head=revision)}


def _info(script: Script) -> RevisionInfo:
    down = script.down_revision
    return RevisionInfo(
        revision=script.revision,
        down_revision=",".join(down) if isinstance(down, (tuple, list)) else down,
        message=(script.doc or "").strip(),
        path=str(script.path),
    )


def _stage(index: int, rendered: render.RenderedRevision, steps: list[str]) -> Stage:
    return Stage(
        name=f"{index}-{rendered.revision}",
        revisions=[rendered.revision],
        target=rendered.revision,
        sql=rendered.sql,
        autocommit=rendered.autocommit,
        steps=steps,
    )
