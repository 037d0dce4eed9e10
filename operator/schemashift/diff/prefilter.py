"""Tables that certainly match their model, found with SQLAlchemy's bulk reflection.

Alembic builds a full `Table` from reflection for every existing table before comparing, which
dominates `detect` on large schemas. Here one `get_multi_*` query per kind fingerprints every
table in the default schema; a table whose fingerprint equals its model's (columns with type,
nullability, server default and comment; primary key; indexes; unique constraints; foreign keys;
table comment) is left out of Alembic's comparison. Anything unusual (enum, identity, computed
columns, expression or dialect-specific indexes, unnamed constraints, FK options, a default we
cannot compare as text) makes the table "not certain" and Alembic compares it as usual: the
shortcut may only ever skip work, never a difference.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from schemashift.diff import speed

Fingerprint = tuple[Any, ...]


class Uncertain(Exception):
    """This table needs Alembic's full comparison."""


def unchanged_tables(conn: Connection, metadata: sa.MetaData) -> set[str]:
    models = {t.name: t for t in metadata.tables.values() if t.schema is None}
    inspector = sa.inspect(conn)
    names = sorted(set(models) & set(inspector.get_table_names()))
    if not names:
        return set()
    reflected = {
        kind: getattr(inspector, f"get_multi_{kind}")(filter_names=names)
        for kind in ("columns", "pk_constraint", "indexes", "unique_constraints",
                     "foreign_keys", "table_comment")
    }
    owned = speed.serial_columns(conn)
    unchanged = set()
    for name in names:
        key = (None, name)
        try:
            database = _database_fingerprint({k: v[key] for k, v in reflected.items()},
                                             owned, conn.dialect)
            if database == _model_fingerprint(models[name], conn.dialect):
                unchanged.add(name)
        except Uncertain:
            continue
    return unchanged


def _type(type_: Any, dialect: Dialect) -> str:
    if isinstance(type_, (sa.Enum, sa.types.NullType)):
        raise Uncertain  # enum labels and unknown types: Alembic (and enums.py) decide
    try:
        return str(type_.compile(dialect=dialect))
    except Exception:
        raise Uncertain from None


def _model_default(column: sa.Column[Any], dialect: Dialect) -> str | None:
    default = column.server_default
    if default is None:
        return None
    if not isinstance(default, sa.DefaultClause):
        raise Uncertain
    arg = default.arg
    if isinstance(arg, str):
        return "'" + arg.replace("'", "''") + "'"
    return str(arg.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def _database_default(column: dict[str, Any], table: str, owned: dict[str, str]) -> str | None:
    default = column.get("default")
    if default is None:
        return None
    match = speed.NEXTVAL.match(default)
    if match and owned.get(match.group(1)) == column["name"]:
        return None  # SERIAL: the model has no server default for it either
    literal = speed.CAST_LITERAL.match(default)
    return f"'{literal.group(1)}'" if literal else str(default)


def _model_fingerprint(table: sa.Table, dialect: Dialect) -> Fingerprint:
    columns = []
    for column in table.columns:
        if column.computed is not None or column.identity is not None:
            raise Uncertain
        columns.append((column.name, _type(column.type, dialect), bool(column.nullable),
                        _model_default(column, dialect), column.comment))
    indexes = []
    for index in table.indexes:
        if any(v for v in index.dialect_kwargs.values()) or any(
            not isinstance(e, sa.Column) for e in index.expressions
        ):
            raise Uncertain
        names = tuple(e.name for e in index.expressions if isinstance(e, sa.Column))
        indexes.append((_name(index.name), names, bool(index.unique)))
    uniques, fks = [], []
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint):
            if constraint.deferrable or constraint.initially or constraint.dialect_kwargs:
                raise Uncertain
            uniques.append((_name(constraint.name), tuple(c.name for c in constraint.columns)))
        elif isinstance(constraint, sa.ForeignKeyConstraint):
            fks.append(_model_fk(constraint))
    return (
        sorted(columns),
        sorted(c.name for c in table.primary_key.columns),
        sorted(indexes),
        sorted(uniques),
        sorted(fks),
        table.comment,
    )


def _model_fk(constraint: sa.ForeignKeyConstraint) -> Fingerprint:
    if (constraint.ondelete or constraint.onupdate or constraint.deferrable
            or constraint.initially or constraint.match or constraint.use_alter):
        raise Uncertain
    elements = constraint.elements
    target = elements[0].column.table
    if target.schema is not None:
        raise Uncertain
    return (_name(constraint.name), tuple(e.parent.name for e in elements), target.name,
            tuple(e.column.name for e in elements))


def _database_fingerprint(
    info: dict[str, Any], owned: dict[str, str], dialect: Dialect
) -> Fingerprint:
    columns = []
    for column in info["columns"]:
        if column.get("identity") or column.get("computed"):
            raise Uncertain
        columns.append((column["name"], _type(column["type"], dialect), bool(column["nullable"]),
                        _database_default(column, "", owned), column.get("comment")))
    indexes = []
    for index in info["indexes"]:
        if index.get("duplicates_constraint"):
            continue
        if (index.get("expressions") or None in index["column_names"]
                or any(v for v in index.get("dialect_options", {}).values())
                or index.get("column_sorting")):
            raise Uncertain
        indexes.append((index["name"], tuple(index["column_names"]), bool(index["unique"])))
    uniques = [(u["name"], tuple(u["column_names"])) for u in info["unique_constraints"]]
    fks = []
    for fk in info["foreign_keys"]:
        if fk.get("options") or fk.get("referred_schema"):
            raise Uncertain
        fks.append((fk["name"], tuple(fk["constrained_columns"]), fk["referred_table"],
                    tuple(fk["referred_columns"])))
    return (
        sorted(columns),
        sorted(info["pk_constraint"].get("constrained_columns") or []),
        sorted(indexes),
        sorted(uniques),
        sorted(fks),
        info["table_comment"].get("text"),
    )


def _name(name: Any) -> str:
    if name is None or type(name).__name__ == "_NoneName":
        raise Uncertain  # unnamed: Alembic matches these by signature
    return str(name)
