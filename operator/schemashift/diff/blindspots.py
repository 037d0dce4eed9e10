"""What Alembic autogenerate cannot see, said out loud: unnamed constraints, CHECKs, sequences."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Inspector

NAMING_DOCS = "https://alembic.sqlalchemy.org/en/latest/naming.html"
TableKey = tuple[str | None, str]

_STANDALONE_SEQUENCES = sa.text(
    """
    SELECT n.nspname AS schema, c.relname AS name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'S' AND NOT EXISTS (
        SELECT 1 FROM pg_depend d
        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i'))
    """
)


def is_unnamed(name: Any) -> bool:
    return name is None or type(name).__name__ == "_NoneName"


def unnamed_constraints(metadata: sa.MetaData) -> list[str]:
    found = []
    for table in sorted(metadata.tables.values(), key=lambda t: t.fullname):
        for constraint in sorted(table.constraints, key=_describe):
            if isinstance(constraint, sa.PrimaryKeyConstraint) or _type_bound(constraint):
                continue
            if is_unnamed(constraint.name):
                found.append(f"{table.fullname}: {_describe(constraint)}")
    if not found:
        return []
    shown = "; ".join(found[:5]) + (f"; and {len(found) - 5} more" if len(found) > 5 else "")
    return [
        f"{len(found)} unnamed constraint(s) in the models ({shown}): a generated downgrade "
        f"cannot drop them and renames cannot be told apart; give MetaData a naming_convention "
        f"({NAMING_DOCS})"
    ]


def _type_bound(constraint: sa.Constraint) -> bool:
    # Created by a SchemaType (Enum, Boolean) on platforms that need it, not declared by the user.
    return bool(getattr(constraint, "_type_bound", False))


def _describe(constraint: sa.Constraint) -> str:
    columns = ", ".join(sorted(c.name for c in getattr(constraint, "columns", ())))
    if isinstance(constraint, sa.ForeignKeyConstraint):
        return f"FOREIGN KEY ({columns})"
    if isinstance(constraint, sa.UniqueConstraint):
        return f"UNIQUE ({columns})"
    if isinstance(constraint, sa.CheckConstraint):
        return f"CHECK ({constraint.sqltext})"
    return f"{type(constraint).__name__} ({columns})"


def check_constraints(
    inspector: Inspector, metadata: sa.MetaData, tables: dict[TableKey, sa.Table]
) -> list[str]:
    """CHECK constraints of tables present on both sides: autogenerate never compares them."""
    warnings: list[str] = []
    by_schema: dict[str | None, list[str]] = {}
    for schema, name in tables:
        by_schema.setdefault(schema, []).append(name)
    for schema, names in sorted(by_schema.items(), key=lambda item: item[0] or ""):
        reflected = inspector.get_multi_check_constraints(schema=schema, filter_names=names)
        for (_, name), checks in sorted(reflected.items()):
            warnings += _compare_checks(tables[(schema, name)], checks, inspector.dialect)
    return warnings


def missing_checks(
    table: sa.Table, reflected: Iterable[Any], dialect: sa.engine.Dialect
) -> list[sa.CheckConstraint]:
    """The named CHECK constraints of the model's table that the database's table lacks
    (create-model-migration writes them; autogenerate itself never compares CHECKs)."""
    database_names = {str(check["name"]) for check in reflected}
    return sorted((c for c in _model_checks(table) if not is_unnamed(c.name)
                   and not any(n in database_names for n in _spellings(c, dialect))),
                  key=lambda c: str(c.name))


def _model_checks(table: sa.Table) -> list[sa.CheckConstraint]:
    return [c for c in table.constraints
            if isinstance(c, sa.CheckConstraint) and not _type_bound(c)]


def _compare_checks(
    table: sa.Table, reflected: Iterable[Any], dialect: sa.engine.Dialect
) -> list[str]:
    reflected = list(reflected)
    model = _model_checks(table)
    unnamed = sum(1 for c in model if is_unnamed(c.name))
    database_names = {str(check["name"]) for check in reflected}
    model_names = set()
    for constraint in model:
        if is_unnamed(constraint.name):
            continue
        spellings = _spellings(constraint, dialect)
        # Shown as the database spells it when it is there, so both sets line up.
        model_names.add(next((n for n in spellings if n in database_names), spellings[0]))
    hint = "autogenerate does not compare CHECK constraints; write it in a migration by hand"
    warnings = [
        f"CHECK constraint {_spellings(c, dialect)[0]} on {table.fullname} is in the models but "
        "not in the database (create-model-migration writes it: added NOT VALID, then "
        "validated)"
        for c in missing_checks(table, reflected, dialect)
    ]
    extra = sorted(database_names - model_names)
    if len(extra) > unnamed:
        warnings += [
            f"CHECK constraint {name} on {table.fullname} is in the database but not in the "
            f"models ({hint}: op.drop_constraint)"
            for name in extra
        ]
    elif unnamed > len(extra):
        warnings.append(
            f"{unnamed - len(extra)} unnamed CHECK constraint(s) on {table.fullname} are in the "
            f"models but not in the database ({hint}: op.create_check_constraint)"
        )
    return warnings


def _spellings(constraint: sa.Constraint, dialect: sa.engine.Dialect) -> list[str]:
    """The model's name, then the names a database may hold for it when it is past the limit:
    SQLAlchemy's (cut with a hash suffix, what a generated migration creates) and PostgreSQL's
    own (cut at 63 bytes, what hand-written SQL creates)."""
    name = str(constraint.name)
    limit = dialect.max_identifier_length or 63
    if len(name.encode()) <= limit:
        return [name]
    found = [name]
    # SQLAlchemy refuses an explicit (unconventional) long name: then only PostgreSQL's cut.
    with contextlib.suppress(Exception):
        found.append(str(dialect.identifier_preparer.format_constraint(constraint)).strip('"'))
    found.append(name.encode()[:limit].decode(errors="ignore"))
    return found


def sequences(conn: Connection, metadata: sa.MetaData, schemas: set[str | None]) -> list[str]:
    """Standalone sequences (not owned by a serial/identity column) on either side."""
    default_schema = conn.dialect.default_schema_name
    wanted = {schema or default_schema for schema in schemas}
    database = {
        (row.schema, row.name) for row in conn.execute(_STANDALONE_SEQUENCES)
        if row.schema in wanted
    }
    model = {(seq.schema or default_schema, seq.name) for seq in _model_sequences(metadata)}
    hint = "autogenerate does not compare sequences; write it in a migration by hand"
    return [
        f"sequence {_qualified(key, default_schema)} is in the models but not in the database "
        f"({hint}: op.execute(sa.schema.CreateSequence(...)))"
        for key in sorted(model - database)
    ] + [
        f"sequence {_qualified(key, default_schema)} is in the database but not in the models "
        f"({hint}: op.execute(sa.schema.DropSequence(...)))"
        for key in sorted(database - model)
    ]


def _model_sequences(metadata: sa.MetaData) -> list[sa.Sequence]:
    found = list(getattr(metadata, "_sequences", {}).values())
    for table in metadata.tables.values():
        for column in table.columns:
            if isinstance(column.default, sa.Sequence):
                found.append(column.default)
    return found


def _qualified(key: tuple[str | None, str], default_schema: str | None) -> str:
    return key[1] if key[0] in (None, default_schema) else f"{key[0]}.{key[1]}"


def never_stamped(
    conn: Connection, tables: int, version_table: str = "alembic_version"
) -> list[str]:
    if tables == 0 or sa.inspect(conn).has_table(version_table):
        return []
    return [
        f"the database has {tables} table(s) but no {version_table} table: Alembic never "
        "stamped it, so migrations cannot tell which revision it is at; if it matches a "
        "revision run `alembic stamp <revision>`, otherwise create the initial migration "
        "against an empty database"
    ]
