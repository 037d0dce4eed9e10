"""Alembic's "generated column cannot be modified" warning, checked against PostgreSQL itself.

Alembic compares a generated column's model expression with the reflected one as crudely
normalised text. PostgreSQL stores the expression respelled: `price * qty` comes back as
`(price * (qty)::numeric)`, `qty IN (1, 2)` as `(qty = ANY (ARRAY[1, 2]))`. Alembic 1.13 keeps
the `::type` casts in that text, so every such column is said to have changed; later versions
strip casts but still not other respellings. Here, for each column Alembic warned about, the
server renders the model's expression too: a temporary copy of the table (`LIKE`, so the same
column types) gets it as a generated column, inside a savepoint that is always rolled back, and
`pg_get_expr()` prints both. The warning stays unless the two renderings are equal; a server
that cannot render the model's expression keeps it.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

# Alembic's text (alembic.autogenerate.compare: _warn_computed_not_supported), table unqualified.
_WARNING = re.compile(r"Computed default on (?P<table>.+)\.(?P<column>[^.]+) cannot be modified")
_GENERATED = sa.text(
    """
    SELECT pg_get_expr(d.adbin, d.adrelid) AS expression,
           format_type(a.atttypid, a.atttypmod) AS type
    FROM pg_attribute a JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attrelid = to_regclass(:table) AND a.attname = :column AND a.attgenerated <> ''
    """
)
_PROBE_TABLE = "pg_temp.schemashift_generated_probe"
_PROBE_COLUMN = "schemashift_probe"


def confirmed(conn: Connection, metadata: sa.MetaData, messages: list[str]) -> list[str]:
    """`messages` (Alembic's warnings) without the generated-column ones PostgreSQL disproves."""
    return [message for message in messages if not _false_alarm(conn, metadata, message)]


def _false_alarm(conn: Connection, metadata: sa.MetaData, message: str) -> bool:
    match = _WARNING.fullmatch(message)
    if match is None:
        return False
    columns = [table.c[match["column"]] for table in metadata.tables.values()
               if table.name == match["table"] and match["column"] in table.c]
    return bool(columns) and all(_unchanged(conn, column) for column in columns)


def _unchanged(conn: Connection, column: sa.Column[Any]) -> bool:
    computed = column.server_default
    if not isinstance(computed, sa.Computed):
        return False
    preparer = conn.dialect.identifier_preparer
    table = preparer.format_table(column.table)
    database = conn.execute(_GENERATED, {"table": table, "column": column.name}).first()
    if database is None:
        return False
    expression = computed.sqltext.compile(dialect=conn.dialect,
                                          compile_kwargs={"literal_binds": True})
    savepoint = conn.begin_nested()
    try:
        conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {_PROBE_TABLE} (LIKE {table})")
        conn.exec_driver_sql(
            f"ALTER TABLE {_PROBE_TABLE} ADD COLUMN {_PROBE_COLUMN} {database.type} "
            f"GENERATED ALWAYS AS ({expression}) STORED")
        model = conn.execute(_GENERATED, {"table": _PROBE_TABLE, "column": _PROBE_COLUMN}).first()
    except DBAPIError:
        return False
    finally:
        savepoint.rollback()
    return model is not None and model.expression == database.expression
