"""A third party's history (12 revisions, data migrations, batch ops, an autocommit block, an
env.py that reads only sqlalchemy.url) runs end to end and rolls back."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures import third_party_history as thirdparty
from tests.fixtures.histories import URL_ONLY_ENV, Revision, write_history
from tests.fixtures.runner_cli import columns, revision, run_apply, scalar, tables

pytestmark = pytest.mark.integration


def test_third_party_history_runs_end_to_end(database_url: str, tmp_path: Path) -> None:
    migrations = thirdparty.copy_third_party(tmp_path)

    run = run_apply(database_url, migrations, "--lint", "warn")

    assert run.exit_code == 0, run
    assert [s["revision"] for s in run.result["stages"]] == thirdparty.REVISIONS
    assert all(s["state"] == "Succeeded" for s in run.result["stages"])
    assert revision(database_url) == thirdparty.HEAD
    assert tables(database_url) == thirdparty.TABLES
    assert columns(database_url, "customers") == [
        "id", "name", "email_address", "created_at", "phone"]
    assert scalar(database_url, "SELECT count(*) FROM orders WHERE status_id IS NULL") == 0
    assert scalar(database_url, "SELECT count(*) FROM audit_log") == 3
    assert scalar(database_url, "SELECT total FROM order_totals WHERE customer_id = 1") == 35.5
    assert scalar(database_url, "SELECT i.indisvalid FROM pg_index i JOIN pg_class c "
                                "ON c.oid = i.indexrelid WHERE c.relname = 'ix_orders_customer_id'")


def test_third_party_history_rolls_back_through_every_revision(
    database_url: str, tmp_path: Path
) -> None:
    migrations = thirdparty.copy_third_party(tmp_path)
    thirdparty.add_revision(
        migrations, "2c0a8d4f6e13", thirdparty.HEAD,
        "op.execute(\"INSERT INTO customers (id, name, email_address) "
        "VALUES (1, 'dup', 'dup@example.org')\")",
    )

    run = run_apply(database_url, migrations, "--lint", "warn")

    assert run.exit_code == 1, run
    result = run.result
    assert (result["outcome"], result["reason"]) == ("RolledBack", "RolledBackByDowngrade")
    assert result["undone"] == list(reversed(thirdparty.REVISIONS))
    assert result["currentRevision"] is None
    assert [s["state"] for s in result["stages"]] == ["RolledBack"] * 12 + ["Failed"]
    assert revision(database_url) is None
    assert tables(database_url) == {"alembic_version"}
    assert scalar(database_url, "SELECT count(*) FROM pg_views WHERE schemaname = 'public'") == 0


def test_url_only_env_py_gets_the_runner_session_settings(
    database_url: str, tmp_path: Path
) -> None:
    record = Revision(
        "s1", "record the session settings",
        """
        op.execute("CREATE TABLE seen AS SELECT current_setting('lock_timeout') AS lock_timeout, "
                   "current_setting('statement_timeout') AS statement_timeout, "
                   "current_setting('application_name') AS app")
        """,
        'op.drop_table("seen")',
    )
    migrations = write_history(tmp_path, [record], env=URL_ONLY_ENV)

    run = run_apply(database_url, migrations, "--lock-timeout", "1500ms",
                    "--statement-timeout", "2m")

    assert run.exit_code == 0, run
    assert scalar(database_url, "SELECT lock_timeout || ' ' || statement_timeout || ' ' || app "
                                "FROM seen") == "1500ms 2min schemashift-migration"


def test_cookbook_env_py_runs_on_the_runner_connection(database_url: str, tmp_path: Path) -> None:
    record = Revision(
        "s1", "record the session",
        """
        op.execute("CREATE TABLE seen AS SELECT current_setting('lock_timeout') AS lock_timeout, "
                   "current_setting('application_name') AS app")
        """,
        'op.drop_table("seen")',
    )
    migrations = write_history(tmp_path, [record])

    run = run_apply(database_url, migrations, "--lock-timeout", "3s")

    assert run.exit_code == 0, run
    assert scalar(database_url, "SELECT lock_timeout || ' ' || app FROM seen") == (
        "3s schemashift-migration")
