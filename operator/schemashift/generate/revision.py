"""create-model-migration: an Alembic revision (upgrade and downgrade) from the model changes."""

from __future__ import annotations

import uuid
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

from schemashift import db, errors, locations, reasons, redact, scripts
from schemashift.diff import comparison
from schemashift.generate import checks, enum_ops, rewrite, scaffold
from schemashift.project import Project

# YYYYMMDDHHMMSS_<rev8>_<slug>.py; {rev8} is filled in before Alembic sees the template.
SLUG_LENGTH = 60
FILE_TEMPLATE = "%(year)d%(month).2d%(day).2d%(hour).2d%(minute).2d%(second).2d_{rev8}_%(slug)s"


def create_model_migration(
    project: Project, message: str, renames: list[str] | None = None, apply: bool = False
) -> Path:
    if not message or not message.strip():
        raise errors.UsageError("the migration message is empty",
                                hint="say what the revision does: -m 'add hospital settings'")
    parsed_renames = rewrite.parse_renames(renames or [])
    metadata = project.metadata()
    url = project.require_database_url()
    migrations_dir = project.require_migrations_dir()
    script_dir = locations.locate(migrations_dir).script_dir  # --migrations may name an ini
    fresh = scaffold.needs_scaffold(script_dir)
    engine = db.make_engine(url)
    with db.connect(engine) as conn:
        script = None if fresh else scripts.script_directory(
            scripts.alembic_config(migrations_dir, url))
        head = scripts.single_head(script) if script else None
        _require_at_head(conn, head, metadata)
        migration = _migration_script(conn, metadata, parsed_renames,
                                      project.compare_server_defaults)
        checks.refuse_rejected(metadata, migration)
        if fresh:
            scaffold.scaffold(script_dir)
            script = scripts.script_directory(scripts.alembic_config(migrations_dir, url))
        assert script is not None
        path = _write(scaffold.with_template(script), conn, metadata, migration,
                      message.strip(), head)
    if apply:
        _upgrade(migrations_dir, url, path)
    return path


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
            "previous revision (each revision runs in its own transaction)",
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


def _migration_script(
    conn: Connection, metadata: sa.MetaData, renames: list[tuple[str, str]],
    server_defaults: bool = True,
) -> ops.MigrationScript:
    found = comparison.compare(conn, metadata, server_defaults=server_defaults)
    if not found.report.has_changes:
        raise errors.UsageError(
            "no schema changes detected: the database already matches the models, so there is "
            "nothing to write (no empty revision was created)",
            hint="change the models first; if this database was synced with sync-models-to-db, "
                 "generate against a database at head that was not synced",
            reason=reasons.NO_SCHEMA_CHANGES,
        )
    migration = found.script
    assert migration.upgrade_ops is not None
    rewrite.apply_renames(migration.upgrade_ops, renames)
    migration.downgrade_ops = migration.upgrade_ops.reverse()
    enum_ops.wrap(migration, enum_ops.plan(conn, found.enums))
    return migration


def _write(
    script: ScriptDirectory, conn: Connection, metadata: sa.MetaData,
    migration: ops.MigrationScript, message: str, head: str | None,
) -> Path:
    rev_id = uuid.uuid4().hex[:12]
    context = comparison.migration_context(conn, metadata)
    opts = {"sqlalchemy_module_prefix": "sa.", "alembic_module_prefix": "op.",
            "user_module_prefix": None, "render_item": rewrite.render_item}
    autogen = AutogenContext(context, metadata=metadata, opts=opts)
    template_args: dict[str, Any] = {}
    render._render_python_into_templatevars(autogen, migration, template_args)
    script.file_template = FILE_TEMPLATE.format(rev8=rev_id[:8])
    script.truncate_slug_length = SLUG_LENGTH
    script.messaging_opts = {"quiet": True}  # the CLI prints the one line users expect
    created = script.generate_revision(rev_id, message, head=head or "head", refresh=True,
                                       **template_args)
    if created is None:
        raise errors.UsageError("Alembic did not write the revision", reason=reasons.INVALID_INPUT)
    return Path(created.path)
