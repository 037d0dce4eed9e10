"""Lock safety: lock timeouts with retries behind a long transaction, and one runner at a time."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.fixtures.histories import Revision, write_history
from tests.fixtures.postgres import PgServer
from tests.fixtures.runner_cli import (
    LiveRun,
    columns,
    revision,
    run_apply,
    scalar,
    tables,
    wait_inside_stage,
)
from tests.integration.test_runner_apply import CREATE_PATIENTS

pytestmark = pytest.mark.integration

CREATE_NOTES = Revision(
    "n2", "create notes", 'op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True))',
    'op.drop_table("notes")',
)
ADD_PHONE = Revision(
    "b3", "add phone", 'op.add_column("patients", sa.Column("phone", sa.Text))',
    'op.drop_column("patients", "phone")',
)


@pytest.fixture
def at_a1(database_url: str, tmp_path: Path) -> Path:
    migrations = write_history(tmp_path, [CREATE_PATIENTS, CREATE_NOTES, ADD_PHONE])
    assert run_apply(database_url, migrations, "--target", "a1").exit_code == 0
    return migrations


@pytest.fixture
def long_transaction(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An open transaction that has read `patients` (ACCESS SHARE) and does not finish."""
    conn = psycopg.connect(database_url)
    conn.execute("SELECT count(*) FROM patients")
    try:
        yield conn
    finally:
        conn.close()


def test_stage_retries_behind_a_long_transaction_and_app_queries_keep_running(
    database_url: str, at_a1: Path, long_transaction: psycopg.Connection[tuple[object, ...]]
) -> None:
    live = LiveRun(database_url, at_a1, "--lock-timeout", "200ms", "--lock-retries", "30")
    first = live.wait_for(lambda e: e["event"] == "lock_retry")
    assert first["stage"] == "2-b3"

    # Were the migration queued behind the long transaction without a lock timeout, these
    # would queue behind it in turn, until the long transaction ends (never, here).
    with psycopg.connect(database_url, autocommit=True) as app:
        app.execute("SET lock_timeout = '20s'")
        assert app.execute("SELECT count(*) FROM patients").fetchone() == (2,)
        app.execute("INSERT INTO patients (id, name) VALUES (3, 'Linus')")
    live.wait_for(lambda e: e["event"] == "lock_retry")  # still retrying after the app queries
    long_transaction.rollback()
    run = live.finish()

    assert run.exit_code == 0, run
    stages = {s["revision"]: s for s in run.result["stages"]}
    assert stages["b3"]["state"] == "Succeeded"
    assert stages["b3"]["attempts"] > 2
    assert stages["n2"]["attempts"] == 1
    assert revision(database_url) == "b3"
    assert "phone" in columns(database_url, "patients")
    assert scalar(database_url, "SELECT count(*) FROM patients") == 3


def test_exhausted_retries_fail_cleanly_and_roll_back(
    database_url: str, at_a1: Path, long_transaction: psycopg.Connection[tuple[object, ...]]
) -> None:
    run = run_apply(database_url, at_a1, "--lock-timeout", "100ms", "--lock-retries", "2")

    assert run.exit_code == 1, run
    result = run.result
    assert (result["outcome"], result["reason"]) == ("RolledBack", "LockRetriesExhausted")
    assert len(run.of("lock_retry")) == 2
    stages = {s["revision"]: s for s in result["stages"]}
    assert (stages["n2"]["state"], stages["b3"]["state"]) == ("RolledBack", "Failed")
    assert stages["b3"]["attempts"] == 3
    assert "lock timeout" in stages["b3"]["message"]
    assert (result["currentRevision"], result["undone"]) == ("a1", ["n2"])
    assert revision(database_url) == "a1"
    assert "notes" not in tables(database_url)
    assert "phone" not in columns(database_url, "patients")


APPLY_LOG = Revision(
    "s2", "log table, then wait for the test's signal",
    """
    op.create_table("applied_log", sa.Column("revision", sa.Text))
    op.execute("INSERT INTO applied_log VALUES ('s2')")
    op.execute("SELECT pg_advisory_xact_lock(424242)")
    """,
    'op.drop_table("applied_log")',
)
LOG_AGAIN = Revision("t3", "log again", "op.execute(\"INSERT INTO applied_log VALUES ('t3')\")",
                     "op.execute(\"DELETE FROM applied_log WHERE revision = 't3'\")")


def test_two_runners_never_both_apply(database_url: str, tmp_path: Path) -> None:
    _second_runner_is_refused(database_url, database_url, tmp_path)


@pytest.fixture
def one_database_two_urls(pg_server: PgServer) -> Iterator[tuple[str, str]]:
    """`…/name`, and a URL without a database name: libpq takes the user name, the same db."""
    name = f"same{os.getpid()}"
    password = "same-Pw-42"
    with pg_server.admin() as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    pg_server.create_database(name, owner=name)
    server = f"postgresql://{name}:{password}@{pg_server.host}:{pg_server.port}"
    try:
        yield f"{server}/{name}", server
    finally:
        pg_server.drop_database(name)
        with pg_server.admin() as conn:
            conn.execute(f"DROP ROLE {name}")


def test_two_urls_of_one_database_meet_the_same_lock(
    one_database_two_urls: tuple[str, str], tmp_path: Path
) -> None:
    named, unnamed = one_database_two_urls
    assert scalar(unnamed, "SELECT current_database()") == scalar(named,
                                                                  "SELECT current_database()")

    _second_runner_is_refused(named, unnamed, tmp_path)


def _second_runner_is_refused(database_url: str, other_url: str, tmp_path: Path) -> None:
    """While a run through `database_url` is inside a stage, one through `other_url` that does
    not wait is refused, and a patient one waits, then finds nothing left to do."""
    migrations = write_history(tmp_path, [CREATE_PATIENTS, APPLY_LOG, LOG_AGAIN])
    gate = psycopg.connect(database_url, autocommit=True)
    gate.execute("SELECT pg_advisory_lock(424242)")
    first = LiveRun(database_url, migrations, "--lock-timeout", "60s")
    try:
        wait_inside_stage(first, gate, "s2")
        holder_pid = gate.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = "
            "'schemashift-migration-lock' AND datname = current_database()").fetchone()

        impatient = run_apply(other_url, migrations, "--lock-wait", "1s")
        patient = LiveRun(other_url, migrations, "--lock-wait", "60s")
        patient.wait_for(lambda e: e["event"] == "phase" and "waiting up to" in e["message"])
    finally:
        gate.close()  # lets the first runner finish

    assert impatient.exit_code == 1, impatient
    assert impatient.result["reason"] == "LockedByAnotherMigration"
    assert holder_pid is not None
    assert f"pid {holder_pid[0]}, started at " in impatient.result["message"]
    assert impatient.result["stages"] == []
    done = first.finish()
    assert done.exit_code == 0, done
    late = patient.finish()
    assert late.exit_code == 0, late
    assert late.result["reason"] == "AlreadyAtTarget"
    assert revision(database_url) == "t3"
    assert scalar(database_url, "SELECT string_agg(revision, ',' ORDER BY revision) "
                                "FROM applied_log") == "s2,t3"


CONCURRENT_INDEX = Revision(
    "x2", "index concurrently, if not exists",
    """
    with op.get_context().autocommit_block():
        op.create_index("ix_patients_name", "patients", ["name"],
                        postgresql_concurrently=True, if_not_exists=True)
    """,
    """
    with op.get_context().autocommit_block():
        op.drop_index("ix_patients_name", table_name="patients",
                      postgresql_concurrently=True, if_exists=True)
    """,
)


def test_an_interrupted_concurrent_index_is_caught_not_kept(
    database_url: str, tmp_path: Path
) -> None:
    migrations = write_history(tmp_path, [CREATE_PATIENTS, CONCURRENT_INDEX])
    assert run_apply(database_url, migrations, "--target", "a1").exit_code == 0
    writer = psycopg.connect(database_url)  # an open write transaction: CIC waits for it
    writer.execute("UPDATE patients SET name = name WHERE id = 1")
    try:
        live = LiveRun(database_url, migrations, "--lock-timeout", "300ms",
                       "--lock-retries", "30")
        live.wait_for(lambda e: e["event"] == "lock_retry")
    finally:
        writer.close()
    run = live.finish()

    assert run.exit_code == 1, run
    assert run.result["reason"] == "RolledBackByDowngrade", run
    stage = run.result["stages"][0]
    assert stage["state"] == "Failed"
    assert "invalid index(es) public.ix_patients_name" in stage["message"]
    assert run.result["undone"] == ["x2"]
    assert revision(database_url) == "a1"
    assert scalar(database_url, "SELECT count(*) FROM pg_indexes "
                                "WHERE indexname = 'ix_patients_name'") == 0
