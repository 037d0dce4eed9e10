"""Putting targeted copies back once a downgrade has re-created what the upgrade dropped.

Two callers, one way of doing it:
- a generated revision's `downgrade()` calls `put_back(op, revision)` at its end (generate/
  preserve.py writes the call): the newest run's copies for that revision are read from the
  catalog (runner/copy_catalog.py), fetched from object storage with boto3's usual configuration
  (AWS_* variables, profiles), and applied in the downgrade's own transaction, so the revision
  and its values come back together or not at all. A plain `alembic downgrade` does it too.
- the runner's rollback by downgrade (runner/rollback.py) calls `put_back_run` for the copies of
  its run that no revision's downgrade put back already (a hand-written downgrade has no call).

Each copy is loaded into a temporary table of the recorded column types with `COPY FROM STDIN`,
in the session settings it was written with, while its sha256 and size are checked against the
catalog; only then are the values applied:
- a dropped table is refilled (`INSERT … OVERRIDING SYSTEM VALUE`; its sequences set past the
  highest value), only if the re-created table is empty;
- a dropped or retyped column is set on the rows matched by the primary key;
- without a primary key, rows are matched on every other column (compared as text) and rows
  identical in all of them are paired in order: each group gets back exactly the values it had.
Rows inserted after the copy was taken keep the downgrade's default (usually NULL); rows deleted
since are not brought back.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from schemashift import db, errors, events, reasons
from schemashift.progress import Reporter, TargetedCopy
from schemashift.runner import backup, copy_catalog
from schemashift.runner.copy_catalog import BY_OTHER_COLUMNS, BY_PRIMARY_KEY, WHOLE_TABLE, Entry
from schemashift.runner.targeted_copy import SESSION_SETTINGS
from schemashift.storage import s3

# Set to 1 to downgrade without putting the copied values back (they stay in object storage).
SKIP_ENV = "SCHEMASHIFT_SKIP_TARGETED_COPY"
_SEQUENCES_SQL = """
SELECT a.attname, pg_get_serial_sequence(:table, a.attname) FROM pg_attribute a
 WHERE a.attrelid = to_regclass(:table) AND a.attnum > 0 AND NOT a.attisdropped
   AND pg_get_serial_sequence(:table, a.attname) IS NOT NULL"""
_COLUMNS_SQL = """
SELECT a.attname, a.attgenerated <> '' FROM pg_attribute a
 WHERE a.attrelid = to_regclass(:table) AND a.attnum > 0 AND NOT a.attisdropped"""


class NotRestored(errors.MigrationFailed):
    reason = reasons.TARGETED_COPY_NOT_RESTORED


def put_back(op: Any, revision: str) -> None:
    """The end of a generated downgrade(): the values `revision`'s upgrade dropped, back."""
    if op.get_context().as_sql:
        op.execute(f"-- schemashift: the values revision {revision} dropped are put back "
                   "only when the downgrade runs online")
        return
    conn: Connection = op.get_bind()
    entries = copy_catalog.pending_for_revision(conn, revision)
    if not entries:
        return
    if os.environ.get(SKIP_ENV, "").strip().lower() in ("1", "true", "yes"):
        _say(f"{SKIP_ENV} is set: the values of {_tables(entries)} are not put back; they stay "
             f"at {', '.join(e.url for e in entries)}")
        return
    store = _store(entries)
    for entry in entries:
        restored = _fetched(functools.partial(restore_entry, conn, store, entry), entry)
        _say(f"put back {restored} row(s) of {_what(entry)} from {entry.url}")


def put_back_run(database_url: str, copies: Sequence[TargetedCopy], *,
                 downgraded: Sequence[str], reporter: Reporter) -> str:
    """After the rollback's downgrade: the copies of the `downgraded` revisions that no
    downgrade put back already go back, in one transaction; those of revisions never committed
    are marked void (nothing of theirs was dropped). Returns what the rollback reports ('' when
    nothing was pending)."""
    urls = [c.url for c in copies if c.revision in downgraded]
    never = [c.url for c in copies if c.revision not in downgraded]
    engine = db.make_engine(database_url)
    try:
        with db.connect(engine) as conn, conn.begin():
            copy_catalog.mark_void(conn, never)
            entries = copy_catalog.pending_by_url(conn, urls)
            if not entries:
                return ""
            store = _store(entries)
            done = []
            for entry in entries:
                reporter.emit(events.PhaseEntered(
                    phase="RollingBack", message=f"putting back {_what(entry)} from {entry.url}"))
                rows = _fetched(functools.partial(restore_entry, conn, store, entry), entry)
                done.append(f"{_what(entry)} ({rows} row(s))")
    finally:
        engine.dispose()
    return "put back the targeted copies of " + ", ".join(done)


def void_uncommitted(database_url: str, copies: Sequence[TargetedCopy],
                     committed: Sequence[str]) -> None:
    """Copies of revisions that never committed protect nothing: marked void (best effort)."""
    never = [c.url for c in copies if c.revision not in committed]
    if not never:
        return
    engine = db.make_engine(database_url)
    try:
        with db.connect(engine) as conn, conn.begin():
            copy_catalog.mark_void(conn, never)
    finally:
        engine.dispose()


def restore_entry(conn: Connection, store: s3.ObjectStore, entry: Entry) -> int:
    """Apply one copy in the caller's transaction; returns the rows it loaded."""
    quote = conn.dialect.identifier_preparer.quote
    target = f"{quote(entry.table_schema)}.{quote(entry.table_name)}"
    present = _present_columns(conn, target, entry)
    saved = _settings(conn)
    temporary = quote(f"schemashift_restore_{entry.id}")
    names = entry.key_columns + entry.columns
    types = entry.key_types + entry.column_types
    conn.execute(sa.text(f"CREATE TEMPORARY TABLE {temporary} ("
                         + ", ".join(f"{quote(n)} {t}" for n, t in zip(names, types, strict=True))
                         + ") ON COMMIT DROP"))
    rows = _load(conn, store, entry, f"COPY {temporary} FROM STDIN")
    if entry.matched_by == WHOLE_TABLE:
        _refill(conn, target, temporary, [c for c in entry.columns if c in present], entry)
    elif entry.matched_by == BY_PRIMARY_KEY:
        keys = " AND ".join(f"t.{quote(k)} = r.{quote(k)}" for k in entry.key_columns)
        sets = ", ".join(f"{quote(c)} = r.{quote(c)}" for c in entry.columns)
        conn.execute(sa.text(f"UPDATE {target} AS t SET {sets} FROM {temporary} AS r "
                             f"WHERE {keys}"))
    else:
        _update_by_other_columns(conn, target, temporary, entry)
    conn.execute(sa.text(f"DROP TABLE {temporary}"))
    for name, value in saved:
        conn.execute(sa.text("SELECT set_config(:name, :value, true)"),
                     {"name": name, "value": value})
    copy_catalog.mark_restored(conn, entry.id)
    return rows


def _present_columns(conn: Connection, target: str, entry: Entry) -> set[str]:
    found = {str(n): bool(g) for n, g in conn.execute(sa.text(_COLUMNS_SQL), {"table": target})}
    if not found:
        raise NotRestored(f"{entry.table} does not exist, so the copy {entry.url} cannot go "
                          "back: the downgrade did not re-create it",
                          hint="re-create the table, then load the copy by hand "
                               "(docs/targeted-copy.md)")
    needed = entry.key_columns + ([] if entry.matched_by == WHOLE_TABLE else entry.columns)
    missing = [c for c in needed if c not in found]
    if missing:
        raise NotRestored(f"{entry.table} has no column {', '.join(missing)}, so the copy "
                          f"{entry.url} ({_what(entry)}) cannot go back: the downgrade did not "
                          "re-create it", hint="docs/targeted-copy.md says how to load a copy")
    return {name for name, generated in found.items() if not generated}


def _settings(conn: Connection) -> list[tuple[str, str]]:
    saved = []
    for name, value in SESSION_SETTINGS:
        saved.append((name, str(conn.execute(sa.text("SELECT current_setting(:name)"),
                                             {"name": name}).scalar())))
        conn.execute(sa.text("SELECT set_config(:name, :value, true)"),
                     {"name": name, "value": value})
    return saved


def _load(conn: Connection, store: s3.ObjectStore, entry: Entry, statement: str) -> int:
    """Stream the object into COPY FROM STDIN, checking its size and sha256 on the way; a
    mismatch raises before any value is applied."""
    digest = hashlib.sha256()
    size = 0
    raw: Any = conn.connection.driver_connection
    with raw.cursor() as cursor:
        with cursor.copy(statement) as copy:
            def sink(chunk: bytes) -> None:
                nonlocal size
                digest.update(chunk)
                size += len(chunk)
                copy.write(chunk)

            store.read(s3.parse_url(entry.url), sink)
        rows = int(cursor.rowcount)
    if size != entry.size_bytes or digest.hexdigest() != entry.sha256:
        raise NotRestored(
            f"the copy {entry.url} does not match its record ({size} bytes read, "
            f"{entry.size_bytes} recorded, or a different sha256): nothing was put back",
            hint="check the object store; the copy was verified when it was taken")
    return rows


def _refill(conn: Connection, target: str, temporary: str, columns: list[str],
            entry: Entry) -> None:
    quote = conn.dialect.identifier_preparer.quote
    held = conn.execute(sa.text(f"SELECT count(*) FROM {target}")).scalar()
    if held:
        raise NotRestored(f"{entry.table} already holds {held} row(s), so the copy of the "
                          f"dropped table {entry.url} was not loaded into it",
                          hint="empty the table, or load the copy by hand "
                               "(docs/targeted-copy.md)")
    listed = ", ".join(map(quote, columns))
    conn.execute(sa.text(f"INSERT INTO {target} ({listed}) OVERRIDING SYSTEM VALUE "
                         f"SELECT {listed} FROM {temporary}"))
    for column, sequence in conn.execute(sa.text(_SEQUENCES_SQL), {"table": target}).all():
        conn.execute(sa.text(f"SELECT setval(:sequence, max({quote(column)})) FROM {target} "
                             f"HAVING max({quote(column)}) IS NOT NULL"),
                     {"sequence": sequence})


def _update_by_other_columns(conn: Connection, target: str, temporary: str,
                             entry: Entry) -> None:
    """No primary key: rows with equal other columns form a group; the n-th row of a group in
    the table gets the values of the n-th copied row of the same group."""
    quote = conn.dialect.identifier_preparer.quote
    keys = [quote(k) for k in entry.key_columns]
    group = f"PARTITION BY {', '.join(f'{k}::text' for k in keys)} " if keys else ""
    texts = "".join(f", {k}::text AS {k}" for k in keys)
    match = "".join(f" AND t.{k} IS NOT DISTINCT FROM r.{k}" for k in keys)
    values = "".join(f", {quote(c)}" for c in entry.columns)
    sets = ", ".join(f"{quote(c)} = r.{quote(c)}" for c in entry.columns)
    conn.execute(sa.text(
        f"WITH t AS (SELECT ctid AS row_id, row_number() OVER ({group}ORDER BY ctid) AS n"
        f"{texts} FROM {target}), "
        f"r AS (SELECT row_number() OVER ({group}) AS n{texts}{values} FROM {temporary}) "
        f"UPDATE {target} SET {sets} FROM t JOIN r ON t.n = r.n{match} "
        f"WHERE {target}.ctid = t.row_id"))


_STORE_HINT = (f"configure object storage as for the backup (AWS_ENDPOINT_URL, "
               f"AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), or set {SKIP_ENV}=1 to downgrade "
               "without the values (they stay in object storage)")


def _store(entries: Sequence[Entry]) -> s3.ObjectStore:
    try:
        return backup.open_store()
    except errors.SchemashiftError as exc:
        raise NotRestored(
            f"the copies of {_tables(entries)} are in object storage "
            f"({', '.join(e.url for e in entries)}), which is not usable here: "
            f"{exc.args[0]}", hint=_STORE_HINT) from None


def _fetched(work: Callable[[], int], entry: Entry) -> int:
    """A storage failure while reading a copy names the copy and the way out."""
    try:
        return work()
    except NotRestored:
        raise
    except errors.SchemashiftError as exc:
        raise NotRestored(f"cannot read the copy of {_what(entry)} at {entry.url}: "
                          f"{exc.args[0]}", hint=_STORE_HINT) from None


def _what(entry: Entry) -> str:
    if entry.matched_by == WHOLE_TABLE:
        return f"the table {entry.table}"
    return ", ".join(f"{entry.table}.{c}" for c in entry.columns)


def _tables(entries: Sequence[Entry]) -> str:
    return ", ".join(dict.fromkeys(_what(e) for e in entries))


def _say(text: str) -> None:
    print(f"schemashift: {text}", file=sys.stderr, flush=True)


__all__ = ["BY_OTHER_COLUMNS", "SKIP_ENV", "NotRestored", "put_back", "put_back_run",
           "restore_entry", "void_uncommitted"]
