"""`plan`'s lock table against what PostgreSQL 18 and 15 really take: each sample statement runs
on a table with rows and pg_locks is read for the strongest lock its session holds (or waits
for) on the table. The sample is also classified by `locks.raw_kind`, so a statement shown under
a kind takes that kind's lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command

from schemashift import db, scripts
from schemashift.plan import locks
from tests.fixtures.histories import write_history
from tests.fixtures.lint_cases import BASE
from tests.fixtures.safe_forms import CLEAN_SEED

pytestmark = pytest.mark.integration

# Weakest to strongest (PostgreSQL's table-level lock modes).
MODES = ["AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock",
         "ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"]

# (kind, setup committed before, the statement, the table whose lock is read)
SAMPLES = [
    ("CREATE TABLE", "", "CREATE TABLE fresh (id int)", "fresh"),
    ("DROP TABLE", "", "DROP TABLE visits", "visits"),
    ("RENAME TABLE", "", "ALTER TABLE visits RENAME TO calls", "visits"),
    ("ADD COLUMN", "", "ALTER TABLE users ADD COLUMN x int", "users"),
    ("ADD COLUMN (rewrite)", "",
     "ALTER TABLE users ADD COLUMN x bigint GENERATED ALWAYS AS IDENTITY", "users"),
    ("DROP COLUMN", "", "ALTER TABLE users DROP COLUMN age", "users"),
    ("RENAME COLUMN", "", "ALTER TABLE users RENAME COLUMN age TO years", "users"),
    ("ALTER COLUMN TYPE", "", "ALTER TABLE users ALTER COLUMN age TYPE bigint", "users"),
    ("ALTER COLUMN", "", "ALTER TABLE users ALTER COLUMN age SET DEFAULT 0", "users"),
    ("SET NOT NULL", "", "ALTER TABLE users ALTER COLUMN email SET NOT NULL", "users"),
    ("CREATE INDEX", "", "CREATE INDEX ix_name ON users (name)", "users"),
    ("DROP INDEX", "CREATE INDEX ix_name ON users (name)", "DROP INDEX ix_name", "users"),
    ("ADD FOREIGN KEY", "",
     "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id)",
     "orders"),
    ("ADD FOREIGN KEY", "",
     "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id)",
     "users"),  # "on both tables"
    ("ADD FOREIGN KEY NOT VALID", "",
     "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id) "
     "NOT VALID", "orders"),
    ("ADD CHECK", "", "ALTER TABLE users ADD CONSTRAINT ck CHECK (age >= 0)", "users"),
    ("ADD CHECK NOT VALID", "",
     "ALTER TABLE users ADD CONSTRAINT ck CHECK (age >= 0) NOT VALID", "users"),
    ("VALIDATE CONSTRAINT", "ALTER TABLE users ADD CONSTRAINT ck CHECK (age >= 0) NOT VALID",
     "ALTER TABLE users VALIDATE CONSTRAINT ck", "users"),
    ("ADD UNIQUE", "", "ALTER TABLE users ADD CONSTRAINT uq UNIQUE (email)", "users"),
    ("ADD PRIMARY KEY", "", "ALTER TABLE visits ADD CONSTRAINT pk PRIMARY KEY (id)", "visits"),
    ("ADD CONSTRAINT USING INDEX", "CREATE UNIQUE INDEX uq ON users (email)",
     "ALTER TABLE users ADD CONSTRAINT uq UNIQUE USING INDEX uq", "users"),
    ("ADD EXCLUDE", "",
     "ALTER TABLE orders ADD CONSTRAINT ex EXCLUDE USING btree (user_id WITH =)", "orders"),
    ("DROP CONSTRAINT", "", "ALTER TABLE users DROP CONSTRAINT users_pkey", "users"),
    ("INSERT/UPDATE/DELETE", "", "UPDATE users SET age = 1", "users"),
]
# CONCURRENTLY cannot run in a transaction: read while it waits for a writer's transaction.
CONCURRENT_SAMPLES = [
    ("CREATE INDEX CONCURRENTLY", "", "CREATE INDEX CONCURRENTLY ix_name ON users (name)"),
    ("DROP INDEX CONCURRENTLY", "CREATE INDEX ix_name ON users (name)",
     "DROP INDEX CONCURRENTLY ix_name"),
]


@pytest.fixture
def with_rows(tmp_path: Path, server_database_url: str) -> Iterator[str]:
    database_url = server_database_url
    directory = write_history(tmp_path, [BASE])
    config = scripts.alembic_config(directory, str(db.parse_url(database_url).render_as_string(
        hide_password=False)))
    engine = db.make_engine(database_url)
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    finally:
        engine.dispose()
    with psycopg.connect(database_url) as conn:
        conn.execute(CLEAN_SEED)
    yield database_url


def strongest(conn: psycopg.Connection[tuple[object, ...]], pid: int, oid: int) -> str:
    rows = conn.execute("SELECT mode FROM pg_locks WHERE locktype = 'relation' AND pid = %s "
                        "AND relation = %s", (pid, oid)).fetchall()
    return max((str(r[0]) for r in rows), key=MODES.index)


def expected_mode(kind: str) -> str:
    lock, _ = locks.LOCKS[kind]
    return "".join(word.title() for word in lock.split()) + "Lock"


@pytest.mark.parametrize(("kind", "setup", "statement", "table"), SAMPLES,
                         ids=[f"{s[0]}:{s[3]}" for s in SAMPLES])
def test_each_kind_takes_the_lock_the_table_says(
    with_rows: str, kind: str, setup: str, statement: str, table: str
) -> None:
    assert locks.raw_kind(statement) == kind
    with psycopg.connect(with_rows) as conn:
        if setup:
            conn.execute(setup)
            conn.commit()
        oid = conn.execute("SELECT to_regclass(%s)::oid", (table,)).fetchone()
        conn.execute(statement)
        if oid is None or oid[0] is None:  # created by the statement itself
            oid = conn.execute("SELECT to_regclass(%s)::oid", (table,)).fetchone()
        assert oid is not None
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert pid is not None
        assert strongest(conn, int(pid[0]), int(oid[0])) == expected_mode(kind)
        conn.rollback()


@pytest.mark.parametrize(("kind", "setup", "statement"), CONCURRENT_SAMPLES,
                         ids=[s[0] for s in CONCURRENT_SAMPLES])
def test_each_concurrent_kind_takes_the_lock_the_table_says(
    with_rows: str, kind: str, setup: str, statement: str
) -> None:
    assert locks.raw_kind(statement) == kind
    with psycopg.connect(with_rows, autocommit=True) as admin:
        if setup:
            admin.execute(setup)
        oid = admin.execute("SELECT 'users'::regclass::oid").fetchone()
        assert oid is not None
        with psycopg.connect(with_rows) as writer, psycopg.connect(
                with_rows, autocommit=True) as migrator:
            writer.execute("UPDATE users SET age = age WHERE id = 1")  # an open transaction
            pid = migrator.execute("SELECT pg_backend_pid()").fetchone()
            assert pid is not None
            worker = threading.Thread(target=migrator.execute, args=(statement,))
            worker.start()
            try:
                mode = _waited_mode(admin, int(pid[0]), int(oid[0]))
            finally:
                writer.rollback()
                worker.join(timeout=60)
    assert mode == expected_mode(kind)


def _waited_mode(admin: psycopg.Connection[tuple[object, ...]], pid: int, oid: int) -> str:
    """The migrator's lock on the table once it waits (for the writer's transaction)."""
    for _ in range(200):
        waiting = admin.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                (pid,)).fetchone()
        if waiting is not None and waiting[0] == "Lock":
            return strongest(admin, pid, oid)
        time.sleep(0.05)
    raise AssertionError("the concurrent statement never waited for the open writer")
