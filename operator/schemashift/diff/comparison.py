"""Models vs. live database through Alembic autogenerate, plus what it cannot see."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import produce_migrations
from alembic.operations import ops
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from schemashift import db, errors, reasons
from schemashift.diff import (
    blindspots,
    changes,
    computed,
    defaults,
    enums,
    prefilter,
    renames,
    speed,
)
from schemashift.diff.report import ChangeReport
from schemashift.project import Project

VERSION_TABLE = "alembic_version"


@dataclass
class Comparison:
    """Everything one comparison found: Alembic's operations (for generate) and the report."""

    script: ops.MigrationScript
    enums: list[enums.EnumDelta]
    report: ChangeReport
    context: MigrationContext
    column_renames: list[renames.Rename] = field(default_factory=list)
    table_renames: list[renames.Rename] = field(default_factory=list)


def detect(project: Project) -> ChangeReport:
    metadata = project.metadata()
    engine = db.make_engine(project.require_database_url())
    with db.connect(engine) as conn:
        return compare(conn, metadata,
                       server_defaults=project.compare_server_defaults).report


def schemas_in(metadata: sa.MetaData) -> set[str | None]:
    return {None} | {table.schema for table in metadata.tables.values()}


def migration_context(
    conn: Connection, metadata: sa.MetaData, skip: frozenset[str] = frozenset(),
    server_defaults: defaults.ServerDefaults | None = None,
) -> MigrationContext:
    """`skip`: default-schema tables known to match their models (see prefilter)."""
    schemas = schemas_in(metadata)
    default_schema = conn.dialect.default_schema_name
    wanted = {schema or default_schema for schema in schemas}

    def include_name(name: str | None, type_: str, parents: dict[str, Any]) -> bool:
        if type_ == "schema":
            return (name or default_schema) in wanted
        if type_ == "table":
            return name != VERSION_TABLE and not (
                name in skip and parents.get("schema_name") in (None, default_schema))
        return True

    def include_object(
        item: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        return not (type_ == "table" and item.schema is None and name in skip)

    opts: dict[str, Any] = {
        "compare_type": True,
        # True, not a callable: Alembic's callable hook crashes on identity and generated
        # columns; the dialect-level method (replaced by `defaults`) sees plain defaults only.
        "compare_server_default": True,
        "include_schemas": schemas != {None},
        "include_name": include_name,
        "include_object": include_object,
        "target_metadata": metadata,
    }
    context = MigrationContext.configure(conn, opts=opts)
    speed.install(context, conn)
    if server_defaults is None:
        server_defaults = defaults.ServerDefaults(conn, metadata.tables.values(), enabled=True)
    server_defaults.install(context)
    return context


def compare(
    conn: Connection, metadata: sa.MetaData, *, shortcut: bool = True,
    server_defaults: bool = True,
) -> Comparison:
    """`shortcut=False` compares every table through Alembic (tests prove both agree);
    `server_defaults=False` leaves plain server defaults uncompared (identity and generated
    columns still are)."""
    unchanged = sorted(prefilter.unchanged_tables(conn, metadata)) if shortcut else []
    # Alembic pre-loads every table's reflection when none is left to compare: keep one in.
    skip = frozenset(unchanged[1:])
    compared = [t for t in metadata.tables.values() if t.schema is not None or t.name not in skip]
    default_check = defaults.ServerDefaults(conn, compared, enabled=server_defaults)
    context = migration_context(conn, metadata, skip, default_check)
    with warnings.catch_warnings(record=True) as alembic_warnings:
        warnings.simplefilter("always")
        try:
            script = produce_migrations(context, metadata)
        except sa.exc.IdentifierError as exc:
            raise _too_long(exc) from exc
    assert script.upgrade_ops is not None
    diffs = script.upgrade_ops.as_diffs()
    inspector = sa.inspect(conn)
    enum_deltas = enums.compare(inspector, metadata, schemas_in(metadata))
    found = changes.from_diffs(diffs, conn.dialect)
    for delta in enum_deltas:
        found += delta.changes()
    column_renames, table_renames = _renames(diffs, conn.dialect)
    report = ChangeReport(
        changes=found,
        warnings=_warnings(conn, inspector, metadata, diffs) + default_check.warnings()
        + _alembic_warnings(conn, metadata, alembic_warnings),
        suggestions=[r.suggestion("column") for r in column_renames]
        + [r.suggestion("table") for r in table_renames],
    ).sorted()
    return Comparison(script, enum_deltas, report, context, column_renames, table_renames)


def _too_long(exc: sa.exc.IdentifierError) -> errors.UsageError:
    return errors.UsageError(
        f"the models give a name PostgreSQL cannot keep ({exc}): PostgreSQL keeps 63 bytes of "
        "a name and would silently cut it, so SQLAlchemy refuses to compare or create it; "
        "nothing was written",
        hint="give it a name of at most 63 bytes in the models (names a naming_convention "
             "derives are shortened by SQLAlchemy with a hash suffix, and are fine)",
        reason=reasons.INVALID_INPUT)


def _warnings(
    conn: Connection, inspector: Any, metadata: sa.MetaData, diffs: list[Any]
) -> list[str]:
    added_or_removed = {
        (d[1].schema, d[1].name) for d in diffs
        if isinstance(d, tuple) and d[0] in ("add_table", "remove_table")
    }
    both = {
        (table.schema, table.name): table for table in metadata.tables.values()
        if (table.schema, table.name) not in added_or_removed
    }
    database_tables = len(both) + sum(
        1 for d in diffs if isinstance(d, tuple) and d[0] == "remove_table"
    )
    return (
        blindspots.never_stamped(conn, database_tables)
        + blindspots.unnamed_constraints(metadata)
        + blindspots.check_constraints(inspector, metadata, both)
        + blindspots.sequences(conn, metadata, schemas_in(metadata))
    )


def _alembic_warnings(
    conn: Connection, metadata: sa.MetaData, caught: list[warnings.WarningMessage]
) -> list[str]:
    """What Alembic and SQLAlchemy warned about while comparing (e.g. a generated column's
    expression that differs and cannot be altered), in the report instead of on stderr."""
    unique = list(dict.fromkeys(str(w.message) for w in caught))
    return [f"autogenerate: {message}" for message in computed.confirmed(conn, metadata, unique)]


def _renames(
    diffs: list[Any], dialect: sa.engine.Dialect
) -> tuple[list[renames.Rename], list[renames.Rename]]:
    removed_cols: dict[str, dict[str, str]] = {}
    added_cols: dict[str, dict[str, str]] = {}
    removed_tables: dict[str, sa.Table] = {}
    added_tables: dict[str, sa.Table] = {}
    for diff in diffs:
        if not isinstance(diff, tuple):
            continue
        if diff[0] in ("add_column", "remove_column"):
            _, schema, table, column = diff
            target = added_cols if diff[0] == "add_column" else removed_cols
            key = f"{schema}.{table}" if schema else table
            target.setdefault(key, {})[column.name] = changes.type_text(column.type, dialect)
        elif diff[0] in ("add_table", "remove_table"):
            tables = added_tables if diff[0] == "add_table" else removed_tables
            tables[diff[1].fullname] = diff[1]
    return (renames.column_renames(removed_cols, added_cols),
            renames.table_renames(removed_tables, added_tables))
