"""A generated lock-safe revision whose runner is SIGKILLed mid-way: a rerun converges.

The runner is killed (and its database session ended, as when a pod dies) while a step waits
for a lock another session holds: during a concurrent index build (which leaves an INVALID
index behind), after the build while a foreign key waits, between a unique index and the
constraint that uses it, between ADD … NOT VALID and VALIDATE, and between two batches of a
backfill. Nothing is stamped; the rerun skips what is done, drops the INVALID index and builds
it again, validates what is not validated, fills the rest, and ends with every index valid and
every constraint validated.
"""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from schemashift.generate import safe_ops
from tests.fixtures.models import execute, invoke, query, write_models
from tests.fixtures.runner_cli import LiveRun, revision, run_apply, wait_until
from tests.integration.test_generate import create, created_path
from tests.integration.test_generate_safe import (
    V1,
    invalid_indexes,
    models,
    populated,
    unvalidated_constraints,
)

pytestmark = pytest.mark.integration

CHANGES = ('sa.Index("ix_patients_name", "name"), '
           'sa.ForeignKeyConstraint(["ward_id"], ["wards.id"]),')
MIGRATION_SESSIONS = ("SELECT pid, wait_event_type, query FROM pg_stat_activity "
                      "WHERE datname = current_database() "
                      "AND application_name = 'schemashift-migration'")


def _waiting_on(gate: psycopg.Connection[tuple[object, ...]], statement: str) -> bool:
    rows = gate.execute(MIGRATION_SESSIONS).fetchall()
    return any(kind == "Lock" and statement in str(sql) for _, kind, sql in rows)


def _end_migration_sessions(gate: psycopg.Connection[tuple[object, ...]]) -> None:
    gate.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE datname = current_database() "
                 "AND application_name LIKE 'schemashift-migration%'")
    wait_until(lambda: gate.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name LIKE 'schemashift-migration%'").fetchone() == (0,),
        "the killed runner's sessions to end")


@pytest.mark.parametrize("when", ["during-the-index-build", "before-the-foreign-key"])
def test_killed_between_index_and_constraint_a_rerun_converges(
    tmp_path: Path, database_url: str, when: str
) -> None:
    migrations = tmp_path / "migrations"
    populated(database_url, migrations, tmp_path)
    v2 = models(tmp_path / "v2", CHANGES)
    code, output = create(database_url, migrations, v2, "index and foreign key")
    assert code == 0, output
    head = created_path(output).name.split("_")[1]
    start = revision(database_url)
    gate = psycopg.connect(database_url, autocommit=True)
    blocker = psycopg.connect(database_url)
    try:
        # An open writer: CREATE INDEX CONCURRENTLY on patients waits for it with its index
        # already in the catalog, INVALID; the foreign key (SHARE ROW EXCLUSIVE on wards) waits
        # for the one on wards. Neither blocks the plan's reads.
        table = "patients" if when == "during-the-index-build" else "wards"
        blocker.execute(f"UPDATE {table} SET id = id WHERE id = -1")
        statement = "CREATE INDEX CONCURRENTLY" if table == "patients" else "FOREIGN KEY"
        live = LiveRun(database_url, migrations, "--lock-timeout", "60s", "--metadata", v2,
                       env={"PYTHONPATH": _pythonpath(tmp_path / "v2")})
        wait_until(lambda: _waiting_on(gate, statement), f"the runner to wait in {statement}")
        live.kill()
        _end_migration_sessions(gate)
        blocker.rollback()
        if when == "during-the-index-build":
            assert invalid_indexes(database_url) == [("ix_patients_name",)]
        else:
            assert invalid_indexes(database_url) == []
            assert query(database_url, "SELECT count(*) FROM pg_indexes "
                                       "WHERE indexname = 'ix_patients_name'") == [(1,)]
    finally:
        blocker.close()
        gate.close()
    assert revision(database_url) == start  # nothing stamped

    rerun = run_apply(database_url, migrations, "--metadata", v2,
                      env={"PYTHONPATH": _pythonpath(tmp_path / "v2")})

    assert rerun.exit_code == 0, rerun
    assert revision(database_url) is not None and revision(database_url).startswith(head)
    assert invalid_indexes(database_url) == []
    assert unvalidated_constraints(database_url) == []
    assert query(database_url, "SELECT conname FROM pg_constraint WHERE contype = 'f'") == [
        ("fk_patients_ward_id_wards",)]
    assert invoke("check", "--database-url", database_url, "--metadata", v2).code == 0


def _pythonpath(models_dir: Path) -> str:
    import os

    return os.pathsep.join(p for p in (str(models_dir), os.environ.get("PYTHONPATH", "")) if p)


def _start(database_url: str, migrations: Path, v2: str, tmp_path: Path) -> LiveRun:
    return LiveRun(database_url, migrations, "--lock-timeout", "60s", "--metadata", v2,
                   env={"PYTHONPATH": _pythonpath(tmp_path / "v2")})


Session = psycopg.Connection[tuple[object, ...]]


def _queue_behind_the_runner(database_url: str) -> tuple[Session, Session]:
    """An open writer makes the runner's ADD … NOT VALID (ACCESS EXCLUSIVE) wait; a second
    session then asks for SHARE UPDATE EXCLUSIVE and queues behind the runner. When the writer
    ends, the runner's step runs and commits, and the lock manager grants the queued session
    its lock at that moment, so the runner's next step (VALIDATE) waits for it."""
    writer = psycopg.connect(database_url)
    writer.execute("UPDATE patients SET id = id WHERE id = -1")
    return writer, psycopg.connect(database_url)


def _rerun_converges(database_url: str, migrations: Path, v2: str, tmp_path: Path,
                     start: str | None) -> None:
    assert revision(database_url) == start  # nothing stamped
    rerun = run_apply(database_url, migrations, "--metadata", v2,
                      env={"PYTHONPATH": _pythonpath(tmp_path / "v2")})
    assert rerun.exit_code == 0, rerun
    assert revision(database_url) != start
    assert invalid_indexes(database_url) == []
    assert unvalidated_constraints(database_url) == []
    assert invoke("check", "--database-url", database_url, "--metadata", v2).code == 0


NOT_NULL_NAME = 'sa.Column("name", sa.Text),'


def test_killed_between_not_valid_and_validate_a_rerun_converges(
    tmp_path: Path, database_url: str
) -> None:
    migrations = tmp_path / "migrations"
    populated(database_url, migrations, tmp_path)
    v2 = write_models(tmp_path / "v2", V1.replace(NOT_NULL_NAME, 'sa.Column("name", sa.Text, '
                                                  'nullable=False),').format(extra="",
                                                                             extra_column=""))
    code, output = create(database_url, migrations, v2, "name not null")
    assert code == 0, output
    start = revision(database_url)
    gate = psycopg.connect(database_url, autocommit=True)
    writer, queued = _queue_behind_the_runner(database_url)
    try:
        live = _start(database_url, migrations, v2, tmp_path)
        wait_until(lambda: _waiting_on(gate, "ADD CONSTRAINT"), "the runner to wait to add")
        locker = threading.Thread(target=queued.execute, args=(
            "LOCK TABLE patients IN SHARE UPDATE EXCLUSIVE MODE",))
        locker.start()
        wait_until(lambda: _lock_waiters(gate) == 2, "the second session to queue")
        writer.rollback()
        locker.join(timeout=60)
        wait_until(lambda: _waiting_on(gate, "VALIDATE CONSTRAINT"), "the runner to wait to "
                                                                     "validate")
        live.kill()
        _end_migration_sessions(gate)
        queued.rollback()
        assert query(database_url, "SELECT conname, convalidated FROM pg_constraint WHERE "
                                   "conrelid = 'patients'::regclass AND contype = 'c'") == [
            ("patients_name_not_null_check", False)]
        assert query(database_url, "SELECT attnotnull FROM pg_attribute WHERE attrelid = "
                                   "'patients'::regclass AND attname = 'name'") == [(False,)]
    finally:
        writer.close()
        queued.close()
        gate.close()

    _rerun_converges(database_url, migrations, v2, tmp_path, start)
    assert query(database_url, "SELECT count(*) FROM pg_constraint WHERE conrelid = "
                               "'patients'::regclass AND contype = 'c'") == [(0,)]
    assert query(database_url, "SELECT attnotnull FROM pg_attribute WHERE attrelid = "
                               "'patients'::regclass AND attname = 'name'") == [(True,)]


def _lock_waiters(gate: Session) -> int:
    row = gate.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = "
                       "'relation' AND relation = 'patients'::regclass").fetchone()
    return int(row[0]) if row else 0


def test_killed_between_the_unique_index_and_its_constraint_a_rerun_converges(
    tmp_path: Path, database_url: str
) -> None:
    """An open reader does not stop CREATE UNIQUE INDEX CONCURRENTLY, but the ACCESS EXCLUSIVE
    `ADD CONSTRAINT … USING INDEX` waits for it: killed there, the index is built and valid."""
    migrations = tmp_path / "migrations"
    populated(database_url, migrations, tmp_path)
    v2 = models(tmp_path / "v2", 'sa.UniqueConstraint("email"),')
    code, output = create(database_url, migrations, v2, "unique email")
    assert code == 0, output
    start = revision(database_url)
    gate = psycopg.connect(database_url, autocommit=True)
    reader = psycopg.connect(database_url)
    try:
        reader.execute("SELECT count(*) FROM patients")
        live = _start(database_url, migrations, v2, tmp_path)
        wait_until(lambda: _waiting_on(gate, "USING INDEX"), "the runner to wait to attach")
        live.kill()
        _end_migration_sessions(gate)
        reader.rollback()
        assert query(database_url, "SELECT indexrelid::regclass::text, indisvalid FROM pg_index "
                                   "WHERE indrelid = 'patients'::regclass AND NOT indisprimary"
                     ) == [("uq_patients_email", True)]
        assert query(database_url, "SELECT count(*) FROM pg_constraint WHERE conrelid = "
                                   "'patients'::regclass AND contype = 'u'") == [(0,)]
    finally:
        reader.close()
        gate.close()

    _rerun_converges(database_url, migrations, v2, tmp_path, start)
    assert query(database_url, "SELECT conname FROM pg_constraint WHERE conrelid = "
                               "'patients'::regclass AND contype = 'u'") == [("uq_patients_email",)]


BACKFILL_ROWS = 25_000
ADVISORY_KEY = 7


def test_killed_mid_backfill_a_rerun_fills_the_rest_and_converges(
    tmp_path: Path, database_url: str
) -> None:
    """Two batches are committed; the third reaches the last row, whose value waits for an
    advisory lock the test holds (no table lock, so nothing else in the revision waits)."""
    migrations = tmp_path / "migrations"
    populated(database_url, migrations, tmp_path)
    execute(database_url, "INSERT INTO patients (name) SELECT 'q' || g FROM generate_series("
                          f"1, {BACKFILL_ROWS - 40}) g")
    last = query(database_url, "SELECT max(id) FROM patients")[0][0]
    value = "'seen:' || id::text"
    expression = (f"CASE WHEN id = {last} THEN (SELECT {value} FROM (SELECT "
                  f"pg_advisory_xact_lock_shared({ADVISORY_KEY})) AS waits) ELSE {value} END")
    v2 = models(tmp_path / "v2", extra_column='\n    sa.Column("status", sa.Text, '
                                              'nullable=False),')
    code, output = create(database_url, migrations, v2, "status", "--backfill",
                          f"patients.status={expression}")
    assert code == 0, output
    start = revision(database_url)
    gate = psycopg.connect(database_url, autocommit=True)
    try:
        gate.execute(f"SELECT pg_advisory_lock({ADVISORY_KEY})")
        live = _start(database_url, migrations, v2, tmp_path)
        wait_until(lambda: _waiting_on(gate, "WITH batch AS (UPDATE"), "a batch to wait")
        filled = query(database_url, "SELECT count(status) FROM patients")[0][0]
        live.kill()
        _end_migration_sessions(gate)
        gate.execute(f"SELECT pg_advisory_unlock({ADVISORY_KEY})")
        assert filled == 2 * safe_ops.BACKFILL_BATCH_ROWS  # two batches committed, then killed
        assert query(database_url, "SELECT attnotnull FROM pg_attribute WHERE attrelid = "
                                   "'patients'::regclass AND attname = 'status'") == [(False,)]
    finally:
        gate.close()

    _rerun_converges(database_url, migrations, v2, tmp_path, start)
    assert query(database_url, f"SELECT count(*), count(*) FILTER (WHERE status = {value}) "
                               "FROM patients") == [(BACKFILL_ROWS, BACKFILL_ROWS)]
    assert query(database_url, "SELECT attnotnull FROM pg_attribute WHERE attrelid = "
                               "'patients'::regclass AND attname = 'status'") == [(True,)]
