"""Targeted copy: before any change, the data the plan drops or rewrites goes to object storage.

What is copied is what lint reports as lost (plan/destroys.py): for a dropped or retyped column
its values with the row's primary key, for a dropped table every row. Each is one
`COPY (SELECT …) TO STDOUT` in PostgreSQL's text format, streamed into a verified object
(storage/verified.py: `.partial`, read back, sha256, then the final key) under

    <prefix><database>/copies/<YYYYmmddTHHMMSS.fffZ>-<revision>-<schema>.<table>.copy

All copies of a run read one snapshot (REPEATABLE READ), taken after the backup and before the
first stage, under the migration lock. Once every copy is verified, the database's catalog
(runner/copy_catalog.py) records where each is, so a downgrade can find it; the run's result
lists them (RunResult.targetedCopies).

A table without a primary key has no stable row identity (ctid changes with any update or
VACUUM FULL): its whole rows are copied, and the values go back to the rows that match on every
other column (runner/copy_restore.py says how duplicates are paired). A generated column is not
copied (the downgrade computes it again). A target that does not exist before the run (created
or renamed by an earlier revision of the same plan) is not copied, and the run says so.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, cast
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from schemashift import db, errors, events, progress, reasons
from schemashift.plan.model import Destroyed, Plan
from schemashift.progress import TargetedCopy
from schemashift.runner import backup, copy_catalog
from schemashift.runner.copy_catalog import BY_OTHER_COLUMNS, BY_PRIMARY_KEY, WHOLE_TABLE, Entry
from schemashift.storage import s3
from schemashift.storage.upload import UploadedStream
from schemashift.storage.verified import store_verified

COPY_SUFFIX = ".copy"
COPIES_FOLDER = "copies/"
META_KIND = "schemashift-kind"
KIND = "targeted-copy"
META_REVISION = "schemashift-revision"
META_TABLE = "schemashift-table"
META_COLUMNS = "schemashift-columns"
META_ROWS = "schemashift-rows"
# pg_dump's own settings: values print the same, and read back the same, on any server.
SESSION_SETTINGS = (("DateStyle", "ISO"), ("IntervalStyle", "postgres"),
                    ("extra_float_digits", "3"), ("bytea_output", "hex"), ("TimeZone", "UTC"))

_COLUMNS_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attgenerated <> ''
  FROM pg_attribute a
 WHERE a.attrelid = :oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"""
_PRIMARY_KEY_SQL = """
SELECT a.attname FROM pg_index i
  CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
 WHERE i.indrelid = :oid AND i.indisprimary ORDER BY k.n"""
_TABLE_SQL = """
SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = to_regclass(:name)"""


@dataclass
class _Target:
    revision: str
    schema: str | None
    table: str
    rules: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    whole: bool = False

    @property
    def where(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table


def targets(destroys: Iterable[Destroyed]) -> list[_Target]:
    """One copy per revision and table: its dropped and retyped columns, or the whole table."""
    grouped: dict[tuple[str, str | None, str], _Target] = {}
    for item in destroys:
        target = grouped.setdefault((item.revision, item.schema, item.table),
                                    _Target(item.revision, item.schema, item.table))
        if item.rule not in target.rules:
            target.rules.append(item.rule)
        if item.column is None:
            target.whole = True
        elif item.column not in target.columns:
            target.columns.append(item.column)
    return list(grouped.values())


def take(database_url: str, backup_url: str, the_plan: Plan, *, from_revision: str | None,
         reporter: progress.Reporter) -> list[TargetedCopy]:
    """Copy what `the_plan` destroys; returns the verified copies (recorded in the catalog)."""
    wanted = targets(the_plan.destroys)
    if not wanted:
        return []
    destination = s3.parse_url(backup_url, prefix=True)
    store = backup.open_store()
    database = db.parse_url(database_url).database or ""
    run = uuid.uuid4().hex
    engine = db.make_engine(database_url)
    try:
        with db.connect(engine) as conn:
            _ensure_catalog(conn)
            snapshot = conn.execution_options(isolation_level="REPEATABLE READ")
            copier = _Copier(snapshot, store, destination, database, run, reporter)
            with snapshot.begin():
                for name, value in SESSION_SETTINGS:
                    snapshot.execute(sa.text("SELECT set_config(:name, :value, true)"),
                                     {"name": name, "value": value})
                entries = [entry for target in wanted
                           if (entry := copier.copy(target, from_revision)) is not None]
            with conn.begin():
                copy_catalog.record(conn, entries, from_revision)
    finally:
        engine.dispose()
    return [_status(entry) for entry in entries]


def _ensure_catalog(conn: Connection) -> None:
    try:
        with conn.begin():
            copy_catalog.ensure(conn)
    except sa.exc.DBAPIError as exc:
        raise errors.MigrationFailed(
            f"cannot create the catalog of targeted copies {copy_catalog.QUALIFIED}: "
            f"{db.describe_db_error(exc)}",
            hint=f"let the migration role create the schema {copy_catalog.SCHEMA} (GRANT "
                 "CREATE ON DATABASE …), or create it and the table once as an owner",
            reason=reasons.TARGETED_COPY_FAILED) from None


def _status(entry: Entry) -> TargetedCopy:
    return TargetedCopy(url=entry.url, revision=entry.revision, rule=entry.rule,
                        table=entry.table, columns=list(entry.columns),
                        keyColumns=list(entry.key_columns), rows=entry.row_count,
                        sizeBytes=entry.size_bytes, sha256=entry.sha256, verified=True)


@dataclass
class _Shape:
    schema: str
    table: str
    matched_by: str
    keys: list[tuple[str, str]]  # (name, type)
    columns: list[tuple[str, str]]


class _Copier:
    def __init__(self, conn: Connection, store: s3.ObjectStore, destination: s3.S3Url,
                 database: str, run: str, reporter: progress.Reporter):
        self.conn = conn
        self.store = store
        self.destination = destination
        self.database = database
        self.run = run
        self.reporter = reporter

    def copy(self, target: _Target, from_revision: str | None) -> Entry | None:
        shape = self._shape(target)
        if shape is None:
            return None
        final = self.destination.child(_object_key(self.database, target, shape))
        quote_ = self.conn.dialect.identifier_preparer.quote
        names = [name for name, _ in shape.keys + shape.columns]
        select = (f"COPY (SELECT {', '.join(map(quote_, names))} FROM "
                  f"{quote_(shape.schema)}.{quote_(shape.table)}) TO STDOUT")
        meter = backup.Progress(self.reporter, "targeted_copy", str(final))
        meter.waiting_on(self.store)
        meter.emit("InProgress", 0, table=f"{shape.schema}.{shape.table}",
                   columns=[name for name, _ in shape.columns], matchedBy=shape.matched_by)
        metadata = {
            META_KIND: KIND, backup.META_DATABASE: quote(self.database, safe=""),
            backup.META_FROM_REVISION: quote(from_revision or "base", safe=""),
            backup.META_STARTED_AT: progress.now(), META_REVISION: quote(target.revision),
            META_TABLE: quote(f"{shape.schema}.{shape.table}"),
            META_COLUMNS: quote(",".join(name for name, _ in shape.columns)),
        }
        raw: Any = self.conn.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(select) as copy:
            stream = _CopyOut(copy)
            uploaded = store_verified(
                self.store, final, cast(IO[bytes], stream), metadata, on_progress=meter,
                sealed=lambda done: _sealed(done, stream.rows))
        meter.emit("Verified", uploaded.size, sha256=uploaded.sha256, rows=stream.rows)
        return Entry(
            id=0, run=self.run, revision=target.revision, rule=",".join(target.rules),
            table_schema=shape.schema, table_name=shape.table, matched_by=shape.matched_by,
            key_columns=[n for n, _ in shape.keys], key_types=[t for _, t in shape.keys],
            columns=[n for n, _ in shape.columns], column_types=[t for _, t in shape.columns],
            url=str(final), size_bytes=uploaded.size, sha256=uploaded.sha256,
            row_count=stream.rows)

    def _shape(self, target: _Target) -> _Shape | None:
        quote_ = self.conn.dialect.identifier_preparer.quote
        name = f"{quote_(target.schema)}.{quote_(target.table)}" if target.schema \
            else quote_(target.table)
        found = self.conn.execute(sa.text(_TABLE_SQL), {"name": name}).first()
        if found is None:
            self._skipped(target, f"{target.where} does not exist before the run (an earlier "
                                  "revision of the plan creates or renames it)")
            return None
        oid, schema, table = found
        every = [(str(n), str(t), bool(g)) for n, t, g in
                 self.conn.execute(sa.text(_COLUMNS_SQL), {"oid": oid})]
        stored = [(n, t) for n, t, generated in every if not generated]
        if target.whole:
            return _Shape(schema, table, WHOLE_TABLE, [], stored)
        types = dict(stored)
        missing = [c for c in target.columns if c not in {n for n, _, _ in every}]
        generated = [c for c in target.columns if c in {n for n, _, g in every if g}]
        if missing or generated:
            self._skipped(target, ", ".join(
                [f"{c} does not exist before the run" for c in missing]
                + [f"{c} is generated (the downgrade computes it again)" for c in generated]))
        columns = [(c, types[c]) for c in target.columns if c in types]
        if not columns:
            return None
        primary = [str(row[0]) for row in
                   self.conn.execute(sa.text(_PRIMARY_KEY_SQL), {"oid": oid})]
        if primary and not set(primary) & set(target.columns):
            return _Shape(schema, table, BY_PRIMARY_KEY, [(k, types[k]) for k in primary],
                          columns)
        others = [(n, t) for n, t in stored if n not in target.columns]
        return _Shape(schema, table, BY_OTHER_COLUMNS, others, columns)

    def _skipped(self, target: _Target, why: str) -> None:
        self.reporter.emit(events.CopySkipped(revision=target.revision, table=target.where,
                                              message=f"not copied: {why}"))


def _sealed(uploaded: UploadedStream, rows: int) -> dict[str, str]:
    return {backup.META_SHA256: uploaded.sha256, backup.META_SIZE: str(uploaded.size),
            backup.META_VERIFIED_AT: progress.now(), META_ROWS: str(rows)}


def _object_key(database: str, target: _Target, shape: _Shape) -> str:
    when = datetime.now(UTC)
    stamp = when.strftime("%Y%m%dT%H%M%S.") + f"{when.microsecond // 1000:03d}Z"
    name = quote(f"{target.revision}-{shape.schema}.{shape.table}", safe="")
    return f"{quote(database, safe='')}/{COPIES_FOLDER}{stamp}-{name}{COPY_SUFFIX}"


class _CopyOut(io.RawIOBase):
    """psycopg's COPY TO STDOUT rows as a readable stream; counts the rows (text format: one
    line per row, newlines inside values are escaped)."""

    def __init__(self, copy: Iterable[Any]):
        super().__init__()
        self._chunks: Iterator[Any] = iter(copy)
        self._left = memoryview(b"")
        self.rows = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        filled = 0
        while filled < len(buffer):
            if not self._left:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                data = bytes(chunk)
                self.rows += data.count(b"\n")
                self._left = memoryview(data)
                continue
            count = min(len(buffer) - filled, len(self._left))
            buffer[filled:filled + count] = self._left[:count]
            self._left = self._left[count:]
            filled += count
        return filled
