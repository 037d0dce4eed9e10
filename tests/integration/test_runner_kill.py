"""The runner SIGKILLed mid-run: the database is at exactly one revision of the plan, and a
rerun continues from there (transactional DDL, the lock dies with its session)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.fixtures.histories import Revision, write_history
from tests.fixtures.runner_cli import (
    LiveRun,
    revision,
    run_apply,
    tables,
    wait_inside_stage,
    wait_until,
)
from tests.integration.test_runner_apply import ADD_EMAIL, CREATE_PATIENTS

pytestmark = pytest.mark.integration

# Creates a table, then waits (inside its transaction) until the test lets it go.
WAITS = Revision(
    "c3", "create visits, then wait",
    """
    op.create_table("visits", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("SELECT pg_advisory_xact_lock(515151)")
    """,
    'op.drop_table("visits")',
)
LAST = Revision("d4", "create rooms",
                'op.create_table("rooms", sa.Column("id", sa.Integer, primary_key=True))',
                'op.drop_table("rooms")')


@contextlib.contextmanager
def _run_held_in_c3(
    database_url: str, tmp_path: Path
) -> Iterator[tuple[Path, psycopg.Connection[tuple[object, ...]], LiveRun]]:
    """A live `apply` of four revisions whose third waits on the advisory lock `gate` holds."""
    migrations = write_history(tmp_path, [CREATE_PATIENTS, ADD_EMAIL, WAITS, LAST])
    gate = psycopg.connect(database_url, autocommit=True)
    gate.execute("SELECT pg_advisory_lock(515151)")
    try:
        yield migrations, gate, LiveRun(database_url, migrations, "--lock-timeout", "60s")
    finally:
        gate.close()


def _no_migration_sessions(gate: psycopg.Connection[tuple[object, ...]]) -> bool:
    row = gate.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name LIKE 'schemashift-migration%'").fetchone()
    return row == (0,)


@pytest.mark.parametrize("when", ["mid-stage", "after-a-checkpoint"])
def test_killed_runner_leaves_one_revision_and_a_rerun_continues(
    database_url: str, tmp_path: Path, when: str
) -> None:
    with _run_held_in_c3(database_url, tmp_path) as (migrations, gate, live):
        if when == "mid-stage":
            wait_inside_stage(live, gate, "c3")
        else:
            live.wait_for(lambda e: e["event"] == "stage" and e["revision"] == "b2"
                          and e["state"] == "Succeeded")
        live.kill()
        # The killed client's backend notices only when it next talks to it: let it go on.
        gate.execute("SELECT pg_advisory_unlock(515151)")
        wait_until(lambda: _no_migration_sessions(gate), "the killed sessions to end")

    assert revision(database_url) == "b2"
    assert tables(database_url) == {"alembic_version", "patients"}

    rerun = run_apply(database_url, migrations)

    assert rerun.exit_code == 0, rerun
    assert rerun.result["fromRevision"] == "b2"
    assert [s["revision"] for s in rerun.result["stages"]] == ["c3", "d4"]
    assert revision(database_url) == "d4"
    assert {"visits", "rooms"} <= tables(database_url)


def test_sigterm_mid_stage_rolls_back_and_still_reports(
    database_url: str, tmp_path: Path
) -> None:
    import signal

    with _run_held_in_c3(database_url, tmp_path) as (_, gate, live):
        wait_inside_stage(live, gate, "c3")
        live.process.send_signal(signal.SIGTERM)
        run = live.finish()

    assert run.exit_code == 1, run
    result = run.result
    assert (result["outcome"], result["reason"]) == ("RolledBack", "Interrupted")
    assert "SIGTERM" in result["stages"][2]["message"]
    assert result["undone"] == ["b2", "a1"]
    assert revision(database_url) is None
    assert tables(database_url) == {"alembic_version"}


def test_losing_the_migration_lock_stops_before_the_next_stage(
    database_url: str, tmp_path: Path
) -> None:
    with _run_held_in_c3(database_url, tmp_path) as (_, gate, live):
        live.wait_for(lambda e: e["event"] == "stage" and e["revision"] == "c3"
                      and e["state"] == "Running")
        gate.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                     "application_name = 'schemashift-migration-lock' "
                     "AND datname = current_database()")
        gate.execute("SELECT pg_advisory_unlock(515151)")
        run = live.finish()

    assert run.exit_code == 1, run
    result = run.result
    assert (result["outcome"], result["reason"]) == ("Failed", "MigrationLockLost"), run
    assert result["currentRevision"] == "c3"
    assert [s["state"] for s in result["stages"]] == [
        "Succeeded", "Succeeded", "Succeeded", "Pending"]
    assert revision(database_url) == "c3"
