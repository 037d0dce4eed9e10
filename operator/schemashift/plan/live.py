"""What the live database says about the tables a plan touches, read before lint runs.

Lint rules about locks and rewrites only matter on tables that hold rows, and a type change only
matters when the type really changes, so lint asks the server: which tables exist, whether each
holds a row (`SELECT EXISTS (SELECT 1 FROM t)`, stopped by a statement timeout), and each
touched column's type as PostgreSQL reports it. Everything runs read-only in a transaction (or
savepoint) that is rolled back, like the integrity checks. A table whose check cannot run is
taken to hold rows: an unanswered question never exempts anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from schemashift import column_types

# Past this many tables, "every table is empty" is not checked (it is then taken as false).
FRESH_CHECK_LIMIT = 500
# The plan's reads take ACCESS SHARE locks only; waiting for one blocks no application query,
# so this is how long a plan may wait behind a running migration, not the runner's lockTimeout.
READ_LOCK_TIMEOUT = "5s"

_TABLES = sa.text(
    "SELECT n.nspname, c.relname, pg_table_is_visible(c.oid) AS visible "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' "
    "AND NOT (c.relname = 'alembic_version')"
)


def table_key(table: str, schema: str | None = None) -> str:
    return f"{schema}.{table}".lower() if schema else table.lower()


@dataclass
class LiveFacts:
    """Tables of the database before the plan, keyed by `table_key`: schema-qualified, and also
    bare where the search_path resolves the bare name to that table."""

    read: bool = False  # the server was asked (else nothing is known and nothing is exempt)
    existing: set[str] = field(default_factory=set)
    empty: set[str] = field(default_factory=set)  # existing tables known to hold no row
    column_types: dict[tuple[str, str], Any] = field(default_factory=dict)
    all_empty: bool = False  # no table of the database holds a row (a fresh database)
    # SQLAlchemy writes a Computed without `persisted` VIRTUAL for this server (18+), not STORED
    virtual_generated_columns: bool = True

    def holds_no_rows(self, table: str, schema: str | None = None) -> bool:
        return table_key(table, schema) in self.empty

    def did_not_exist(self, table: str, schema: str | None = None) -> bool:
        """Absent before the plan: whatever holds it by this step, the plan created it (perhaps
        in a revision that could not be rendered)."""
        return self.read and table_key(table, schema) not in self.existing

    def column_type(self, table: str, column: str, schema: str | None = None) -> Any:
        return self.column_types.get((table_key(table, schema), column.lower()))


NO_FACTS = LiveFacts()  # planning without a server (unit tests): nothing is known, nothing exempt


def read_facts(
    conn: Connection,
    touched: Iterable[tuple[str | None, str]],
    typed: Iterable[tuple[str | None, str]],
    timeout: str,
) -> LiveFacts:
    """`touched`: (schema, table) the plan's operations name; `typed`: those whose column types
    lint needs (an ALTER COLUMN … TYPE)."""
    facts = LiveFacts(read=True,
                      virtual_generated_columns=column_types.writes_virtual_columns(conn.dialect))
    with read_only(conn, timeout):
        tables = [(str(s), str(t), bool(v)) for s, t, v in conn.execute(_TABLES)]
        keys = {table_key(table, schema): (schema, table) for schema, table, _ in tables}
        keys.update({table_key(table): (schema, table)
                     for schema, table, visible in tables if visible})
        facts.existing = set(keys)
        wanted = {keys[k] for k in {table_key(t, s) for s, t in touched} & facts.existing}
        empty = {name for name in sorted(wanted) if _holds_no_rows(conn, *name)}
        facts.empty = {key for key, name in keys.items() if name in empty}
        facts.all_empty = len(tables) <= FRESH_CHECK_LIMIT and all(
            name in empty or (name not in wanted and _holds_no_rows(conn, *name))
            for name in sorted({(schema, table) for schema, table, _ in tables}))
        for key in sorted({table_key(t, s) for s, t in typed} & facts.existing):
            facts.column_types.update(_column_types(conn, key, *keys[key]))
    return facts


@contextmanager
def read_only(conn: Connection, timeout: str) -> Iterator[None]:
    """A transaction (or savepoint) with timeouts set locally, always rolled back."""
    outer = conn.begin_nested() if conn.in_transaction() else conn.begin()
    try:
        conn.execute(sa.text("SELECT set_config('statement_timeout', :t, true)"), {"t": timeout})
        conn.execute(
            sa.text("SELECT set_config('lock_timeout', :t, true)"), {"t": READ_LOCK_TIMEOUT}
        )
        yield
    finally:
        outer.rollback()


def _holds_no_rows(conn: Connection, schema: str, table: str) -> bool:
    savepoint = conn.begin_nested()
    try:
        select = sa.select(sa.exists().select_from(sa.table(table, schema=schema)))
        return not conn.execute(select).scalar_one()
    except DBAPIError:  # timeout, no privilege: unknown, so not exempt
        return False
    finally:
        savepoint.rollback()


def _column_types(conn: Connection, key: str, schema: str, table: str) -> dict[
        tuple[str, str], Any]:
    savepoint = conn.begin_nested()
    try:
        columns = sa.inspect(conn).get_columns(table, schema=schema)
    except (DBAPIError, sa.exc.NoSuchTableError):
        return {}
    finally:
        savepoint.rollback()
    return {(key, str(c["name"]).lower()): c["type"] for c in columns}


__all__ = ["NO_FACTS", "LiveFacts", "read_facts", "read_only", "table_key"]
