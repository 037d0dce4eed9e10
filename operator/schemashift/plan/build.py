"""Build a plan: which revisions run from the database's revision to the target, and how."""

from __future__ import annotations

from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection

from schemashift import db, errors, reasons, scripts
from schemashift.plan import integrity, lint, live, planned_inspector, render, walk
from schemashift.plan.model import Plan, RevisionInfo, Stage, plan_hash
from schemashift.project import Project


def build_plan(project: Project, target: str = "head") -> Plan:
    """The CLI's entry: its own connection to the project's database."""
    url = project.require_database_url()
    config = scripts.alembic_config(project.require_migrations_dir(), url)
    scripts.script_directory(config)  # a broken directory is reported before connecting
    engine = db.make_engine(url)
    try:
        with db.connect(engine) as conn:
            return build_plan_for(conn, config, target)
    finally:
        engine.dispose()


def build_plan_for(
    conn: Connection,
    config: Config,
    target: str = "head",
    *,
    check_timeout: str = integrity.DEFAULT_TIMEOUT,
) -> Plan:
    """The runner's entry: plans on the caller's connection, leaving its transaction state as it
    was (a transaction this call had to begin is rolled back)."""
    script = scripts.script_directory(config)
    scripts.single_head(script)
    target_revision = scripts.resolve_target(script, target)
    was_in_transaction = conn.in_transaction()
    try:
        current = scripts.current_revision(conn)
        to_apply = revisions_between(script, current, target_revision)
        rendered = render.render_revisions(config, script, to_apply, current,
                                           planned_inspector.live_inspector(conn))
        checks = integrity.run_checks(conn, rendered, check_timeout)
        facts = live.read_facts(conn, *walk.touched_tables(rendered), check_timeout)
    finally:
        if not was_in_transaction and conn.in_transaction():
            conn.rollback()
    stages = [_stage(index, r) for index, r in enumerate(rendered, start=1)]
    return Plan(
        from_revision=current,
        target_revision=target_revision,
        revisions=[_info(s) for s in to_apply],
        stages=stages,
        lint=lint.lint(rendered, facts) + checks.incomplete,
        integrity=checks.findings,
        hash=plan_hash(current, target_revision, stages),
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


def _stage(index: int, rendered: render.RenderedRevision) -> Stage:
    return Stage(
        name=f"{index}-{rendered.revision}",
        revisions=[rendered.revision],
        target=rendered.revision,
        sql=rendered.sql,
        autocommit=rendered.autocommit,
    )
