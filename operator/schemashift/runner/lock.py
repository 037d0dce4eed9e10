"""One migration per database: a session-level advisory lock on a connection of its own.

Session-level (not transaction-level) because `autocommit_block()` commits the migration's
transaction; on its own connection so that nothing the migration does can release it. The key
is a stable 64-bit hash of the database name (Rails/Flyway style), the same in every version of
schemashift and of PostgreSQL (`hashtext` is not guaranteed stable across major versions).

The name is the one the server reports (`current_database()`), never the URL's text: two URLs
reach one database in many ways (no database name, which libpq resolves to the user name;
`?dbname=`, a service file, PGDATABASE), and all of them must meet the same lock. Advisory locks
are per database already; hashing the reported name keeps the key older versions derived from
a URL that named the database.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from schemashift import db, errors, reasons

LOCK_APPLICATION_NAME = "schemashift-migration-lock"
POLL_SECONDS = 0.5


def lock_key(database_name: str) -> int:
    digest = hashlib.sha256(f"schemashift:{database_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass(frozen=True)
class LockHolder:
    pid: int
    started_at: str | None
    application_name: str | None
    client: str | None

    def describe(self) -> str:
        started = f", started at {self.started_at}" if self.started_at else ""
        who = f", {self.application_name}" if self.application_name else ""
        client = f" from {self.client}" if self.client else ""
        return f"pid {self.pid}{started}{who}{client}"


@dataclass
class MigrationLock:
    connection: Connection
    key: int

    def still_held(self) -> bool:
        """False when the lock's connection died (the server then released the lock)."""
        try:
            held = self.connection.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND pid = pg_backend_pid() AND granted AND objsubid = 1 "
                    "AND ((classid::bigint << 32) | objid::bigint) = :k"
                ),
                {"k": self.key},
            ).scalar_one()
            return bool(held)
        except SQLAlchemyError:
            return False


def _lock_engine(database_url: str) -> Engine:
    return db.make_engine(database_url).execution_options(isolation_level="AUTOCOMMIT")


def holder(conn: Connection, key: int) -> LockHolder | None:
    row = conn.execute(
        sa.text(
            "SELECT l.pid, to_char(a.backend_start AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), a.application_name, "
            "host(a.client_addr) FROM pg_locks l "
            "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND ((l.classid::bigint << 32) | l.objid::bigint) = :k LIMIT 1"
        ),
        {"k": key},
    ).first()
    if row is None:
        return None
    return LockHolder(pid=row[0], started_at=row[1], application_name=row[2] or None,
                      client=row[3])


@contextmanager
def migration_lock(
    database_url: str,
    *,
    wait_seconds: float,
    on_wait: Callable[[LockHolder | None], None] | None = None,
) -> Iterator[MigrationLock]:
    """Hold the database's migration lock for the duration of the block.

    Waits up to `wait_seconds` for another runner to finish, then refuses with who holds it.
    """
    engine = _lock_engine(database_url)
    with db.connect(engine) as conn:
        conn.exec_driver_sql(f"SET application_name = '{LOCK_APPLICATION_NAME}'")
        key = lock_key(conn.execute(sa.text("SELECT current_database()")).scalar_one())
        deadline = time.monotonic() + wait_seconds
        announced = False
        while not conn.execute(
            sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}
        ).scalar_one():
            current = holder(conn, key)
            if time.monotonic() >= deadline:
                raise _locked(current, wait_seconds)
            if not announced and on_wait is not None:
                on_wait(current)
                announced = True
            time.sleep(POLL_SECONDS)
        try:
            yield MigrationLock(connection=conn, key=key)
        finally:
            # If the connection is gone, the server released the lock with it.
            with contextlib.suppress(SQLAlchemyError):
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})


def _locked(current: LockHolder | None, wait_seconds: float) -> errors.MigrationFailed:
    who = current.describe() if current else "a session that has just released it"
    return errors.MigrationFailed(
        f"another migration holds the lock on this database ({who}); "
        f"gave up after waiting {wait_seconds:g}s, nothing was changed",
        hint="wait for it to finish (or raise --lock-wait); if that process is gone, its "
        "session still holds the lock: end it with pg_terminate_backend(pid)",
        reason=reasons.LOCKED_BY_ANOTHER_MIGRATION,
    )
