"""sync-models-to-db: development only; creates missing tables and columns, never drops."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic.operations import Operations, ops
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from schemashift import db, environments, errors, reasons
from schemashift.diff import Change, comparison
from schemashift.project import Project

Echo = Callable[[str], Any]
DONE = "Database synced with models"
_ADDITIVE = {"table_added", "column_added", "enum_added"}


def sync_models_to_db(project: Project, echo: Echo) -> None:
    if project.environment != environments.DEFAULT:
        raise errors.PolicyRefused(
            "sync-models-to-db is for development databases only, and this is "
            f"{project.environment}: it changes the schema without a migration, a backup or a "
            "way back",
            hint="write a revision with `schemashift create-model-migration -m MSG` and apply it "
                 "with `schemashift apply` (it takes a backup and can roll back)",
            reason=reasons.DEVELOPMENT_ONLY,
        )
    metadata = project.metadata()
    url = project.require_database_url()
    with db.connect(db.make_engine(url)) as conn:
        found = comparison.compare(conn, metadata)
        upgrade = found.script.upgrade_ops
        assert upgrade is not None
        new_tables = [op.to_table() for op in upgrade.ops if isinstance(op, ops.CreateTableOp)]
        new_columns = [op for container in upgrade.ops if isinstance(container, ops.ModifyTableOps)
                       for op in container.ops if isinstance(op, ops.AddColumnOp)]
        _refuse_impossible_columns(conn, new_columns)
        try:
            _create(conn, metadata, new_tables, new_columns, echo)
            conn.commit()
        except DBAPIError as exc:
            conn.rollback()
            raise errors.MigrationFailed(
                f"sync failed and was rolled back (nothing changed): "
                f"{db.describe_db_error(exc, db.parse_url(url).password)}",
                hint="fix the models, or write a revision with create-model-migration",
            ) from None
    _report_skipped(found.report.changes, echo)
    echo(DONE)


def _refuse_impossible_columns(conn: Connection, columns: list[ops.AddColumnOp]) -> None:
    for op in columns:
        column = op.column
        if column.nullable or column.server_default is not None:
            continue
        table = sa.table(op.table_name, schema=op.schema)
        if conn.execute(sa.select(sa.exists().select_from(table))).scalar():
            where = f"{op.schema}.{op.table_name}" if op.schema else op.table_name
            raise errors.PolicyRefused(
                f"cannot add NOT NULL column {where}.{column.name} without a server default: "
                f"{where} already has rows, and PostgreSQL would have no value to put in them "
                "(nothing was changed)",
                hint="give the column a server_default, or add it nullable, backfill it, and set "
                     "NOT NULL in a migration (create-model-migration)",
                reason=reasons.NOT_NULL_WITHOUT_DEFAULT,
            )


def _create(
    conn: Connection, metadata: sa.MetaData, new_tables: list[sa.Table],
    new_columns: list[ops.AddColumnOp], echo: Echo,
) -> None:
    wanted = {(table.schema, table.name) for table in new_tables}
    for table in metadata.sorted_tables:  # dependency order: referenced tables first
        if (table.schema, table.name) in wanted:
            echo(f"Creating table: {table.fullname}")
            table.create(conn, checkfirst=True)
            echo(f"Table {table.fullname} created successfully")
    operations = Operations(MigrationContext.configure(conn))
    for op in new_columns:
        where = f"{op.schema}.{op.table_name}" if op.schema else op.table_name
        echo(f"Adding column: {where}.{op.column.name}")
        if isinstance(op.column.type, sa.Enum) and op.column.type.native_enum:
            op.column.type.create(conn, checkfirst=True)
        operations.add_column(op.table_name, op.column._copy(), schema=op.schema)
        echo(f"Column {where}.{op.column.name} added successfully")


def _report_skipped(changes: list[Change], echo: Echo) -> None:
    skipped = [change for change in changes if change.kind not in _ADDITIVE]
    if skipped:
        echo("Skipped (sync never drops or alters; write a migration with create-model-migration):")
        for change in skipped:
            echo(f"  {change.to_text()}")
