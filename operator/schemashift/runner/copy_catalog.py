"""Where a database keeps the locations of its targeted copies: `schemashift.preserved_data`.

A plain `alembic downgrade` knows only the revision it undoes. So the runner writes, in the
database it migrates, one row per verified copy (revision, table, columns, object URL, size,
sha256, …) and the generated downgrade reads it back (runner/copy_restore.py). The data itself
stays in object storage: a row is a few hundred bytes whatever the copy's size, and the database
does not grow by what the migration meant to drop. Rows are marked `restored_at` when their
values are put back (or `void` when the revision they protect was never committed), so a
second downgrade never applies the same values twice.

The schema is schemashift's own bookkeeping, like Alembic's version table: the rollback's schema
comparison leaves it out (runner/schema_snapshot.py), and the schemashift env.py never compares
it (it is not a schema of the models). An env.py with `include_schemas=True` should exclude it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

SCHEMA = "schemashift"
TABLE = "preserved_data"
QUALIFIED = f"{SCHEMA}.{TABLE}"
# How rows are matched when the values go back.
BY_PRIMARY_KEY = "primary key"
BY_OTHER_COLUMNS = "other columns"  # no primary key: the row's other columns, as text
WHOLE_TABLE = "whole table"

_DDL = (
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {QUALIFIED} (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run text NOT NULL,
        revision text NOT NULL,
        rule text NOT NULL,
        table_schema text NOT NULL,
        table_name text NOT NULL,
        matched_by text NOT NULL,
        key_columns text[] NOT NULL,
        key_types text[] NOT NULL,
        columns text[] NOT NULL,
        column_types text[] NOT NULL,
        url text NOT NULL,
        size_bytes bigint NOT NULL,
        sha256 text NOT NULL,
        row_count bigint NOT NULL,
        from_revision text,
        created_at timestamptz NOT NULL DEFAULT now(),
        restored_at timestamptz,
        void boolean NOT NULL DEFAULT false)""",
    f"COMMENT ON TABLE {QUALIFIED} IS 'schemashift: where the targeted copies of dropped or "
    "rewritten data are (docs/targeted-copy.md)'",
)
_FIELDS = ("id", "run", "revision", "rule", "table_schema", "table_name", "matched_by",
           "key_columns", "key_types", "columns", "column_types", "url", "size_bytes",
           "sha256", "row_count")


@dataclass(frozen=True)
class Entry:
    id: int
    run: str
    revision: str
    rule: str
    table_schema: str
    table_name: str
    matched_by: str
    key_columns: list[str]
    key_types: list[str]
    columns: list[str]
    column_types: list[str]
    url: str
    size_bytes: int
    sha256: str
    row_count: int

    @property
    def table(self) -> str:
        return f"{self.table_schema}.{self.table_name}"


def ensure(conn: Connection) -> None:
    """The schema and table exist (in the caller's transaction)."""
    exists = conn.execute(sa.text("SELECT to_regclass(:name) IS NOT NULL"),
                          {"name": QUALIFIED}).scalar()
    if not exists:
        for statement in _DDL:
            conn.execute(sa.text(statement))


def exists(conn: Connection) -> bool:
    return bool(conn.execute(sa.text("SELECT to_regclass(:name) IS NOT NULL"),
                             {"name": QUALIFIED}).scalar())


def record(conn: Connection, entries: Sequence[Entry], from_revision: str | None) -> None:
    insert = sa.text(
        f"INSERT INTO {QUALIFIED} (run, revision, rule, table_schema, table_name, matched_by, "
        "key_columns, key_types, columns, column_types, url, size_bytes, sha256, row_count, "
        "from_revision) VALUES (:run, :revision, :rule, :table_schema, :table_name, "
        ":matched_by, :key_columns, :key_types, :columns, :column_types, :url, :size_bytes, "
        ":sha256, :row_count, :from_revision)")
    for entry in entries:
        values = {name: getattr(entry, name) for name in _FIELDS if name != "id"}
        conn.execute(insert, {**values, "from_revision": from_revision})


def pending_for_revision(conn: Connection, revision: str) -> list[Entry]:
    """The newest run's copies for `revision` not yet put back, in the order they go back."""
    if not exists(conn):
        return []
    rows = conn.execute(sa.text(
        f"SELECT {', '.join(_FIELDS)} FROM {QUALIFIED} WHERE revision = :revision "
        "AND restored_at IS NULL AND NOT void AND run = (SELECT run FROM "
        f"{QUALIFIED} WHERE revision = :revision AND NOT void ORDER BY id DESC LIMIT 1)"),
        {"revision": revision})
    return in_restore_order([Entry(*row) for row in rows])


def pending_by_url(conn: Connection, urls: Sequence[str]) -> list[Entry]:
    if not urls or not exists(conn):
        return []
    rows = conn.execute(sa.text(
        f"SELECT {', '.join(_FIELDS)} FROM {QUALIFIED} WHERE url = ANY(:urls) "
        "AND restored_at IS NULL AND NOT void"), {"urls": list(urls)})
    return in_restore_order([Entry(*row) for row in rows])


def in_restore_order(entries: list[Entry]) -> list[Entry]:
    """Whole tables first, the last dropped first (a revision drops a referencing table before
    the one it references, so its downgrade re-creates them the other way round); then columns."""
    return sorted(entries, key=lambda e: (e.matched_by != WHOLE_TABLE, -e.id))


def mark_restored(conn: Connection, entry_id: int) -> None:
    conn.execute(sa.text(f"UPDATE {QUALIFIED} SET restored_at = now() WHERE id = :id"),
                 {"id": entry_id})


def mark_void(conn: Connection, urls: Sequence[str]) -> None:
    """The copies of revisions that never committed: nothing of theirs was dropped."""
    if urls and exists(conn):
        conn.execute(sa.text(f"UPDATE {QUALIFIED} SET void = true WHERE url = ANY(:urls) "
                             "AND restored_at IS NULL"), {"urls": list(urls)})
