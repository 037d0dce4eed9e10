"""create-model-migration: an Alembic revision (upgrade and downgrade) from the model changes."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import render
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from schemashift import db, errors, locations, reasons, redact, release_phases, scripts
from schemashift.diff import comparison
from schemashift.generate import (
    check_ops,
    checks,
    contract_marks,
    enum_ops,
    phases,
    preserve,
    rewrite,
    safe,
    safe_ops,
    scaffold,
)
from schemashift.project import Project

# YYYYMMDDHHMMSS_<rev8>_<slug>.py; {rev8} is filled in before Alembic sees the template.
SLUG_LENGTH = 60
FILE_TEMPLATE = "%(year)d%(month).2d%(day).2d%(hour).2d%(minute).2d%(second).2d_{rev8}_%(slug)s"


def create_model_migration(
    project: Project, message: str, renames: list[str] | None = None, apply: bool = False,
    *, unsafe: bool = False, backfills: list[str] | None = None, split: bool = True,
    note: Callable[[str], None] | None = None,
) -> list[Path]:
    """`unsafe`: Alembic's plain operations everywhere; by default the changes to existing tables
    are written in their lock-safe form (see generate/safe.py), and those no safe form makes in
    one step are marked (contract_marks; `note` is told which). `split` (not with `unsafe`): an
    expand and a contract revision, each marked with its phase (see generate/phases.py)."""
    if not message or not message.strip():
        raise errors.UsageError("the migration message is empty",
                                hint="say what the revision does: -m 'add hospital settings'")
    parsed_renames = rewrite.parse_renames(renames or [])
    parsed_backfills = safe.parse_backfills(backfills or [])
    if unsafe and parsed_backfills:
        raise errors.UsageError(
            "--backfill writes the safe form, and --unsafe asks for Alembic's plain one",
            hint="drop --unsafe to backfill, or drop --backfill and edit the plain revision",
            reason=reasons.INVALID_INPUT)
    metadata = project.metadata()
    url = project.require_database_url()
    migrations_dir = project.require_migrations_dir()
    script_dir = locations.locate(migrations_dir).script_dir  # --migrations may name an ini
    fresh = scaffold.needs_scaffold(script_dir)
    engine = db.make_engine(url)
    marked: list[list[str]] = []  # per part: the rules contract_marks marked
    with db.connect(engine) as conn:
        script = None if fresh else scripts.script_directory(
            scripts.alembic_config(migrations_dir, url))
        head = scripts.single_head(script) if script else None
        _require_at_head(conn, head, metadata)
        found = _comparison(conn, metadata, project.compare_server_defaults)
        parts: list[tuple[phases.Part | None, ops.MigrationScript]]
        if split and not unsafe:
            parts = [(part, part.script(conn)) for part in phases.split(
                conn, found.script, found.enums, parsed_renames, parsed_backfills)]
        else:
            parts = [(None, _migration_script(conn, found, parsed_renames))]
        for part, migration in parts:  # every refusal before the first file is written
            checks.refuse_rejected(metadata, migration)
            if not unsafe:
                safe.make_safe(conn, migration, [] if part else parsed_backfills)
                # A contract revision is the second step of the expand/contract its drops need.
                if part is None or part.phase != release_phases.CONTRACT:
                    marked.append(contract_marks.mark(conn, migration))
                else:
                    marked.append([])
                preserve.add_put_back(migration)  # issue 14: the downgrade puts data back
            if part is not None:
                part.finish(migration)
        if fresh:
            scaffold.scaffold(script_dir)
            script = scripts.script_directory(scripts.alembic_config(migrations_dir, url))
        assert script is not None
        paths = []
        for part, migration in parts:
            titled = message.strip() + (f" ({part.phase})" if part and len(parts) > 1 else "")
            path, head = _write(scaffold.with_template(script), conn, metadata, migration,
                                titled, head, phases.marker(part.phase) if part else "")
            paths.append(path)
    for path, rules in zip(paths, marked, strict=False):
        if rules and note is not None:
            note(contract_marks.note(path, rules))
    if apply:
        _upgrade(migrations_dir, url, paths[-1])
    return paths


def _upgrade(migrations_dir: Path, url: str, path: Path) -> None:
    try:
        command.upgrade(scripts.alembic_config(migrations_dir, url), "head")
    except errors.SchemashiftError:
        raise
    except Exception as exc:
        password = db.parse_url(url).password
        detail = (db.describe_db_error(exc, password) if isinstance(exc, DBAPIError)
                  else redact.redact(str(exc), password))
        raise errors.MigrationFailed(
            f"wrote {path} but upgrading to it failed: {detail}; the database stays at the "
            "previous revision (each revision runs in its own transaction; the lock-safe steps "
            "of its autocommit block that completed stay, and are skipped when it runs again)",
            hint="fix the revision file (or the models and regenerate), then apply again",
        ) from exc


def _require_at_head(conn: Connection, head: str | None, metadata: sa.MetaData) -> None:
    current = scripts.current_revision(conn)
    if current == head and (head is not None or not _has_user_tables(conn, metadata)):
        return
    if head is None and current is None:
        raise errors.PolicyRefused(
            "the database already has tables but the migration history is empty: an initial "
            "migration generated against it would not create them",
            hint="generate the initial migration against an empty database, then "
                 "`alembic stamp head` this one",
            reason=reasons.NEVER_STAMPED,
        )
    if current is None:
        raise errors.PolicyRefused(
            f"the database was never stamped by Alembic, but the history's head is {head}",
            hint="if its schema matches a revision, run `alembic stamp <revision>`; otherwise "
                 "upgrade an empty database to head and generate against that",
            reason=reasons.NEVER_STAMPED,
        )
    raise errors.PolicyRefused(
        f"the database is at revision {current}, not at the history's head {head or '(none)'}: "
        "a revision generated now would repeat or undo the missing ones",
        hint="upgrade the database to head first (schemashift apply), then generate",
        reason=reasons.NOT_AT_HEAD,
    )


def _has_user_tables(conn: Connection, metadata: sa.MetaData) -> bool:
    inspector = sa.inspect(conn)
    schemas = {table.schema for table in metadata.tables.values()} | {None}
    return any(
        name != comparison.VERSION_TABLE
        for schema in schemas for name in inspector.get_table_names(schema=schema)
    )


def _comparison(conn: Connection, metadata: sa.MetaData,
                server_defaults: bool = True) -> comparison.Comparison:
    """Alembic's comparison, plus the CHECK constraints it does not compare (check_ops)."""
    found = comparison.compare(conn, metadata, server_defaults=server_defaults)
    assert found.script.upgrade_ops is not None
    checks_added = check_ops.add_missing(conn, metadata, found.script.upgrade_ops)
    if not found.report.has_changes and not checks_added:
        raise errors.UsageError(
            "no schema changes detected: the database already matches the models, so there is "
            "nothing to write (no empty revision was created)",
            hint="change the models first; if this database was synced with sync-models-to-db, "
                 "generate against a database at head that was not synced",
            reason=reasons.NO_SCHEMA_CHANGES,
        )
    return found


def _migration_script(conn: Connection, found: comparison.Comparison,
                      renames: list[tuple[str, str]]) -> ops.MigrationScript:
    migration = found.script
    assert migration.upgrade_ops is not None
    rewrite.apply_renames(migration.upgrade_ops, renames)
    migration.downgrade_ops = migration.upgrade_ops.reverse()
    enum_ops.wrap(migration, enum_ops.plan(conn, found.enums))
    return migration


def _write(
    script: ScriptDirectory, conn: Connection, metadata: sa.MetaData,
    migration: ops.MigrationScript, message: str, head: str | None, marker: str = "",
) -> tuple[Path, str]:
    """The revision file (`marker` appended: the expand/contract phase); its path and id."""
    rev_id = uuid.uuid4().hex[:12]
    context = comparison.migration_context(conn, metadata)
    opts = {"sqlalchemy_module_prefix": "sa.", "alembic_module_prefix": "op.",
            "user_module_prefix": None, "render_item": rewrite.render_item}
    autogen = AutogenContext(context, metadata=metadata, opts=opts)
    template_args: dict[str, Any] = {}
    render._render_python_into_templatevars(autogen, migration, template_args)
    helpers = _uses_safe_steps(migration)
    if helpers:  # module level, after the imports: upgrade() and downgrade() both call them
        imports = str(template_args["imports"]) + safe_ops.HELPERS
        template_args["imports"] = imports.rstrip() + "\n"
    script.file_template = FILE_TEMPLATE.format(rev8=rev_id[:8])
    script.truncate_slug_length = SLUG_LENGTH
    script.messaging_opts = {"quiet": True}  # the CLI prints the one line users expect
    created = script.generate_revision(rev_id, message, head=head or "head", refresh=True,
                                       **template_args)
    if created is None:
        raise errors.UsageError("Alembic did not write the revision", reason=reasons.INVALID_INPUT)
    path = Path(created.path)
    if helpers and safe_ops.HELPERS_MARKER not in path.read_text():
        path.unlink()
        raise errors.UsageError(
            f"the revision template {Path(script.dir, 'script.py.mako')} does not write "
            "${imports}, where the lock-safe steps' helpers go, so no revision was written",
            hint="add `${imports if imports else \"\"}` after the imports of script.py.mako "
                 "(Alembic's own template has it), or generate with --unsafe",
            reason=reasons.INVALID_INPUT)
    if marker:
        path.write_text(path.read_text().rstrip("\n") + "\n" + marker)
    return path, rev_id


def _uses_safe_steps(migration: ops.MigrationScript) -> bool:
    return any(isinstance(op, safe_ops.AutocommitSteps)
               for container in (migration.upgrade_ops, migration.downgrade_ops)
               for op in (container.ops if container is not None else []))
