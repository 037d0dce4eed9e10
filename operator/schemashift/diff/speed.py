"""Round trips Alembic makes per column on PostgreSQL, replaced by one query or none.

With 1,000 tables, Alembic's bulk reflection is quick, but two checks still cost a server round
trip per column: whether a `nextval()` default belongs to a SERIAL column (one query per integer
column with a sequence default) and whether two server defaults are equal (`SELECT a = b`). The
first is answered for all columns with one query; the second by `defaults` (one batch per run).
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

_OWNED_SEQUENCES = sa.text(
    """
    SELECT c.oid::regclass::text AS sequence, a.attname AS column_name
    FROM pg_class c
    JOIN pg_depend d ON d.objid = c.oid AND d.classid = 'pg_class'::regclass
                    AND d.refclassid = 'pg_class'::regclass
    JOIN pg_class t ON t.oid = d.refobjid
    JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
    WHERE c.relkind = 'S'
    """
)
NEXTVAL = re.compile(r"nextval\('(.+?)'::regclass\)")
CAST_LITERAL = re.compile(r"^'((?:[^']|'')*)'::[\w .\"]+(?:\(\d+(?:,\s*\d+)?\))?(?:\[\])?$")


def serial_columns(conn: Connection) -> dict[str, str]:
    """Sequence (as `nextval()` names it) → the column owning it."""
    return {row.sequence: row.column_name for row in conn.execute(_OWNED_SEQUENCES)}


def install(context: MigrationContext, conn: Connection) -> None:
    owned = serial_columns(conn)

    def autogen_column_reflect(inspector: Any, table: Any, column_info: dict[str, Any]) -> None:
        # Same rule as Alembic's PostgresqlImpl.autogen_column_reflect, without a query each.
        default = column_info.get("default")
        if default and isinstance(column_info["type"], sa.Integer):
            match = NEXTVAL.match(default)
            if match and owned.get(match.group(1)) == column_info["name"]:
                del column_info["default"]

    context.impl.autogen_column_reflect = autogen_column_reflect  # type: ignore[method-assign]
