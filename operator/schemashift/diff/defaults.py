"""Server defaults compared as PostgreSQL itself renders them, in one batch per run.

The database side of a server default is what `pg_get_expr()` printed at reflection; the model
side is the DDL text SQLAlchemy would write. Text comparison calls `gen_random_uuid()` and
`(GEN_RANDOM_UUID())` different, and Alembic's own fallback (`SELECT a = b` per column) evaluates
the defaults, so two calls of a volatile function never compare equal. Here the server renders
the model's defaults too: inside a savepoint that is always rolled back, a temporary table gets
one column per model default (typed as the database column is) and `pg_get_expr()` reads them
back. A default the server cannot render (an unknown function, a read-only transaction) falls
back to text and says so in a warning.

This replaces Alembic's dialect-level comparison (`impl.compare_server_default`), which Alembic
calls only for plain defaults: identity and generated columns keep Alembic's own comparators
(its user-callable hook reads `.arg.text` of those and crashes from Alembic 1.18).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from schemashift.diff import speed

ColumnKey = tuple[str, str, str]  # schema (never None), table, column

# One query for every candidate: does the column exist, and with which type (as the server
# prints it, so the temporary column can always be created with it).
_COLUMN_TYPES = sa.text(
    """
    SELECT v.k, format_type(a.atttypid, a.atttypmod) AS type
    FROM unnest(CAST(:schemas AS text[]), CAST(:tables AS text[]), CAST(:columns AS text[]))
         WITH ORDINALITY AS v(s, t, c, k)
    JOIN pg_namespace n ON n.nspname = v.s
    JOIN pg_class r ON r.relnamespace = n.oid AND r.relname = v.t
    JOIN pg_attribute a ON a.attrelid = r.oid AND a.attname = v.c AND NOT a.attisdropped
    """
)
_RENDERED = sa.text(
    """
    SELECT a.attname, pg_get_expr(d.adbin, d.adrelid) AS rendered
    FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
    WHERE d.adrelid = CAST(:table AS regclass)
    """
)
_PROBE_TABLE = "pg_temp.schemashift_default_probe"
# PostgreSQL allows 1,600 columns per table; stay well below.
_CHUNK = 1000


class ServerDefaults:
    """Alembic's `impl.compare_server_default`, answered from one server-side rendering."""

    def __init__(self, conn: Connection, tables: Collection[sa.Table], *, enabled: bool) -> None:
        self._conn = conn
        self._tables = list(tables)
        self._enabled = enabled
        self._rendered: dict[ColumnKey, str] | None = None
        self._unrendered: dict[ColumnKey, str] = {}

    def install(self, context: Any) -> None:
        context.impl.compare_server_default = self.compare

    def compare(
        self, inspector_column: Any, metadata_column: sa.Column[Any],
        rendered_metadata_default: str | None, rendered_inspector_default: str | None,
    ) -> bool:
        """True when the defaults differ (Alembic's contract for this method)."""
        if not self._enabled:
            return False
        table = metadata_column.table
        if metadata_column.primary_key and metadata_column is table._autoincrement_column:
            return False  # SERIAL: Alembic's rule, the sequence default is implied
        database, model = rendered_inspector_default, rendered_metadata_default
        if database is None or model is None or metadata_column.server_default is None:
            return database != model
        if database == model or _same_literal(database, metadata_column):
            return False
        rendered = self._render().get(self._key(metadata_column))
        if rendered is not None:
            return rendered != database
        return True

    def warnings(self) -> list[str]:
        if not self._unrendered:
            return []
        shown = sorted(self._unrendered.items())
        first_key, first_error = shown[0]
        return [
            f"{len(shown)} server default(s) could not be rendered by PostgreSQL and were "
            f"compared as text (first: {_qualified(first_key)}: {first_error}); a difference "
            "reported for them may only be spelling: pass --no-compare-server-defaults to skip "
            "server default comparison"
        ]

    def _key(self, column: sa.Column[Any]) -> ColumnKey:
        schema = column.table.schema or str(self._conn.dialect.default_schema_name)
        return (schema, column.table.name, column.name)

    def _render(self) -> dict[ColumnKey, str]:
        if self._rendered is None:
            self._rendered = {}
            wanted = self._existing(self._candidates())
            for start in range(0, len(wanted), _CHUNK):
                self._render_chunk(wanted[start:start + _CHUNK])
        return self._rendered

    def _candidates(self) -> dict[ColumnKey, str]:
        """Column → the DDL text of its model default (plain defaults only)."""
        empty = sa.DDL("")  # type: ignore[no-untyped-call]
        compiler = self._conn.dialect.ddl_compiler(self._conn.dialect, empty)
        found = {}
        for table in self._tables:
            for column in table.columns:
                if isinstance(column.server_default, sa.DefaultClause):
                    try:
                        text = compiler.get_column_default_string(column)
                    except Exception as exc:  # named in the warning instead
                        self._unrendered[self._key(column)] = _first_line(exc)
                        continue
                    if text is not None:
                        found[self._key(column)] = str(text)
        return found

    def _existing(self, candidates: dict[ColumnKey, str]) -> list[tuple[ColumnKey, str, str]]:
        """(column, its database type, model default) for candidates that exist in the database."""
        if not candidates:
            return []
        keys = list(candidates)
        rows = self._conn.execute(_COLUMN_TYPES, {
            "schemas": [k[0] for k in keys], "tables": [k[1] for k in keys],
            "columns": [k[2] for k in keys],
        })
        return [(keys[row.k - 1], row.type, candidates[keys[row.k - 1]])
                for row in sorted(rows, key=lambda r: r.k)]

    def _render_chunk(self, chunk: list[tuple[ColumnKey, str, str]]) -> None:
        try:
            self._rendered_by_server(chunk)
            return
        except DBAPIError as exc:
            error = _first_line(exc.orig or exc)
        if not self._server_can_render():
            for key, _, _ in chunk:
                self._unrendered[key] = error
            return
        for item in chunk:  # only after a failure: find the defaults the server rejects
            try:
                self._rendered_by_server([item])
            except DBAPIError as exc:
                self._unrendered[item[0]] = _first_line(exc.orig or exc)

    def _rendered_by_server(self, chunk: list[tuple[ColumnKey, str, str]]) -> None:
        assert self._rendered is not None
        columns = ", ".join(f"c{i} {type_} DEFAULT {default}"
                            for i, (_, type_, default) in enumerate(chunk))
        savepoint = self._conn.begin_nested()
        try:
            self._conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {_PROBE_TABLE} ({columns})")
            rows = self._conn.execute(_RENDERED, {"table": _PROBE_TABLE}).all()
        finally:
            savepoint.rollback()
        for row in rows:
            self._rendered[chunk[int(row.attname[1:])][0]] = row.rendered

    def _server_can_render(self) -> bool:
        try:
            self._rendered_by_server([])
        except DBAPIError:
            return False
        return True


def _same_literal(database: str, column: sa.Column[Any]) -> bool:
    """`'x'::character varying` against the model's 'x': equal without asking the server."""
    default = column.server_default
    arg = getattr(default, "arg", None)
    match = speed.CAST_LITERAL.match(database)
    return isinstance(arg, str) and match is not None and match.group(1).replace("''", "'") == arg


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _qualified(key: ColumnKey) -> str:
    return ".".join(key)
