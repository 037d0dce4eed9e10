"""A revision fails during `apply`: rollback per policy (no backup), final state asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.histories import CONNECTION_ENV, Revision, write_history
from tests.fixtures.runner_cli import columns, revision, run_apply, scalar, tables
from tests.integration.test_runner_apply import ADD_EMAIL, CREATE_PATIENTS

pytestmark = pytest.mark.integration

# Fails on the live data only (a duplicate key), so the plan renders and lint has nothing to say.
FAILS_ON_DATA = Revision(
    "c3", "create visits, then insert a duplicate patient",
    """
    op.create_table("visits", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("INSERT INTO patients (id, name) VALUES (1, 'duplicate')")
    """,
    'op.drop_table("visits")',
)
# Raises in Python, as a data migration with a bug does (offline rendering skips it).
RAISES = Revision(
    "c3", "raise in upgrade",
    """
    from alembic import context
    op.create_table("visits", sa.Column("id", sa.Integer, primary_key=True))
    if not context.is_offline_mode():
        raise RuntimeError("boom: this data migration has a bug")
    """,
    'op.drop_table("visits")',
)


@pytest.mark.parametrize("failing", [FAILS_ON_DATA, RAISES], ids=["db-error", "python-error"])
def test_downgrade_policy_undoes_the_committed_stages(
    database_url: str, tmp_path: Path, failing: Revision
) -> None:
    migrations = write_history(tmp_path, [CREATE_PATIENTS, ADD_EMAIL, failing])

    run = run_apply(database_url, migrations)

    assert run.exit_code == 1, run
    result = run.result
    assert (result["outcome"], result["reason"]) == ("RolledBack", "RolledBackByDowngrade")
    assert result["currentRevision"] is None
    assert result["undone"] == ["b2", "a1"]
    assert [(s["revision"], s["state"]) for s in result["stages"]] == [
        ("a1", "RolledBack"), ("b2", "RolledBack"), ("c3", "Failed")]
    assert "stage 3-c3 failed" in result["message"]
    assert "The database is at revision base" in result["message"]
    assert "no backup taken" in result["message"]
    assert run.of("phase")[-1]["phase"] == "RolledBack"
    assert "RollingBack" in [e["phase"] for e in run.of("phase")]
    assert revision(database_url) is None
    assert tables(database_url) == {"alembic_version"}


def test_the_rollback_is_one_downgrade_command_reporting_each_revision(
    database_url: str, tmp_path: Path
) -> None:
    commands = tmp_path / "env-runs.txt"
    counting_env = CONNECTION_ENV.replace(
        "from alembic import context\n",
        f"from alembic import context\nopen({str(commands)!r}, 'a').write('ran\\n')\n", 1)
    migrations = write_history(tmp_path, [CREATE_PATIENTS, ADD_EMAIL, FAILS_ON_DATA],
                               env=counting_env)

    run = run_apply(database_url, migrations)

    assert run.result["reason"] == "RolledBackByDowngrade", run
    # One upgrade command, one downgrade command: as `alembic downgrade` runs a history.
    assert commands.read_text().splitlines() == ["ran", "ran"]
    assert [e["message"] for e in run.of("phase") if e["phase"] == "RollingBack"][-4:] == [
        "downgrading b2", "downgraded to a1", "downgrading a1", "downgraded to base"]
    assert revision(database_url) is None


def test_downgrade_stops_at_the_revision_the_run_started_from(
    database_url: str, tmp_path: Path
) -> None:
    migrations = write_history(tmp_path, [CREATE_PATIENTS, ADD_EMAIL, FAILS_ON_DATA])
    assert run_apply(database_url, migrations, "--target", "a1").exit_code == 0

    run = run_apply(database_url, migrations)

    assert run.exit_code == 1, run
    assert run.result["reason"] == "RolledBackByDowngrade"
    assert (run.result["fromRevision"], run.result["currentRevision"]) == ("a1", "a1")
    assert run.result["undone"] == ["b2"]
    assert revision(database_url) == "a1"
    assert columns(database_url, "patients") == ["id", "name"]
    assert scalar(database_url, "SELECT count(*) FROM patients") == 2


def test_policy_none_stops_where_it_failed(database_url: str, tmp_path: Path) -> None:
    migrations = write_history(tmp_path, [CREATE_PATIENTS, ADD_EMAIL, FAILS_ON_DATA])

    run = run_apply(database_url, migrations, "--rollback-policy", "none")

    assert run.exit_code == 1, run
    result = run.result
    assert (result["outcome"], result["reason"]) == ("Failed", "FailedWithoutRollback")
    assert result["currentRevision"] == "b2"
    assert result["undone"] == []
    assert [s["state"] for s in result["stages"]] == ["Succeeded", "Succeeded", "Failed"]
    assert "The database is at revision b2" in result["message"]
    assert revision(database_url) == "b2"
    assert tables(database_url) == {"alembic_version", "patients"}  # c3's transaction undone
    assert "email" in columns(database_url, "patients")
    # Nothing was rolled back, so no RollingBack phase is shown (a watcher would wait for it).
    assert [e["phase"] for e in run.of("phase")][-1] == "Failed"
    assert "RollingBack" not in {e["phase"] for e in run.of("phase")}


def test_first_stage_failing_leaves_the_database_untouched(
    database_url: str, tmp_path: Path
) -> None:
    migrations = write_history(tmp_path, [CREATE_PATIENTS, ADD_EMAIL, FAILS_ON_DATA])
    assert run_apply(database_url, migrations, "--target", "b2").exit_code == 0

    run = run_apply(database_url, migrations)

    assert run.exit_code == 1, run
    assert (run.result["outcome"], run.result["reason"]) == (
        "RolledBack", "RolledBackByTransaction")
    assert run.result["currentRevision"] == "b2"
    assert run.result["undone"] == []
    assert revision(database_url) == "b2"
    assert "visits" not in tables(database_url)


def test_failing_downgrade_without_backup_reports_where_it_stopped(
    database_url: str, tmp_path: Path
) -> None:
    broken_downgrade = Revision(
        "b2", "add email, downgrade broken", ADD_EMAIL.upgrade_src,
        'op.drop_column("patients", "no_such_column")',
    )
    migrations = write_history(tmp_path, [CREATE_PATIENTS, broken_downgrade, FAILS_ON_DATA])
    assert run_apply(database_url, migrations, "--target", "a1").exit_code == 0

    run = run_apply(database_url, migrations)

    assert run.exit_code == 1, run
    result = run.result
    assert (result["outcome"], result["reason"]) == ("Failed", "RollbackFailed")
    assert "downgrade failed" in result["message"].lower()
    assert "no_such_column" in result["message"]
    assert result["currentRevision"] == "b2"
    assert "The database is at revision b2" in result["message"]
    assert revision(database_url) == "b2"


def test_statement_timeout_cancels_a_slow_stage(database_url: str, tmp_path: Path) -> None:
    slow = Revision("s2", "slow", 'op.execute("SELECT pg_sleep(30)")', "pass")
    migrations = write_history(tmp_path, [CREATE_PATIENTS, slow])

    run = run_apply(database_url, migrations, "--statement-timeout", "300ms")

    assert run.exit_code == 1, run
    assert run.result["reason"] == "RolledBackByDowngrade"
    assert "statement timeout" in run.result["stages"][1]["message"]
    assert run.result["undone"] == ["a1"]
    assert revision(database_url) is None


MODELS = """
import sqlalchemy as sa

metadata = sa.MetaData()
sa.Table("patients", metadata, sa.Column("id", sa.Integer, primary_key=True),
         sa.Column("name", sa.Text, nullable=False), sa.Column("email", sa.Text){extra})
sa.Table("visits", metadata, sa.Column("id", sa.Integer, primary_key=True),
         sa.Column("patient_id", sa.Integer, sa.ForeignKey("patients.id")))
"""


@pytest.mark.parametrize("extra", ["", ', sa.Column("phone", sa.Text)'], ids=["match", "drift"])
def test_verify_models_after_migrating(database_url: str, tmp_path: Path, extra: str) -> None:
    from tests.integration.test_runner_apply import HISTORY

    migrations = write_history(tmp_path, HISTORY)
    (tmp_path / "verify_models_mod.py").write_text(MODELS.format(extra=extra))

    run = run_apply(database_url, migrations, "--verify-models",
                    "--metadata", "verify_models_mod:metadata",
                    env={"PYTHONPATH": str(tmp_path)})

    if not extra:
        assert run.exit_code == 0, run
        assert revision(database_url) == "c3"
        return
    assert run.exit_code == 1, run
    assert (run.result["outcome"], run.result["reason"]) == ("RolledBack", "VerificationFailed")
    assert "phone" in run.result["message"]
    assert run.result["undone"] == ["c3", "b2", "a1"]
    assert revision(database_url) is None


# CREATE UNIQUE INDEX CONCURRENTLY on duplicate names fails and leaves an INVALID index behind;
# the autocommit block committed the table created before it.
PARTIAL_AUTOCOMMIT = Revision(
    "p3", "scratch table, then a unique index that the data breaks",
    """
    op.create_table("scratch", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("INSERT INTO patients (id, name) VALUES (3, 'Ada')")
    with op.get_context().autocommit_block():
        op.create_index("ux_patients_name", "patients", ["name"], unique=True,
                        postgresql_concurrently=True)
    """,
    """
    with op.get_context().autocommit_block():
        op.drop_index("ux_patients_name", table_name="patients", postgresql_concurrently=True)
    op.drop_table("scratch")
    """,
)


def test_autocommit_leftovers_are_reported_not_hidden(database_url: str, tmp_path: Path) -> None:
    migrations = write_history(tmp_path, [CREATE_PATIENTS, ADD_EMAIL, PARTIAL_AUTOCOMMIT])
    assert run_apply(database_url, migrations, "--target", "a1").exit_code == 0

    run = run_apply(database_url, migrations)

    assert run.exit_code == 1, run
    result = run.result
    assert (result["outcome"], result["reason"]) == ("Failed", "PartiallyRolledBack")
    assert result["undone"] == ["b2"]
    assert "table public.scratch" in result["message"]
    assert "index public.ux_patients_name" in result["message"]
    assert revision(database_url) == "a1"
    assert "scratch" in tables(database_url)


def test_verify_models_with_models_that_do_not_load_changes_nothing(
    database_url: str, tmp_path: Path
) -> None:
    from tests.integration.test_runner_apply import HISTORY

    migrations = write_history(tmp_path, HISTORY)

    run = run_apply(database_url, migrations, "--verify-models",
                    "--metadata", "no_such_models_module:metadata")

    assert run.exit_code == 2, run
    assert "no_such_models_module" in run.result["message"]
    assert tables(database_url) == set()


def test_an_incomplete_downgrade_is_reported_object_by_object(
    database_url: str, tmp_path: Path
) -> None:
    create = Revision("a1", "create t",
                      'op.create_table("t", sa.Column("code", sa.String(50)))',
                      'op.drop_table("t")')
    widen = Revision(
        "w2", "widen code, add a mood enum and a scratch table",
        """
        op.alter_column("t", "code", type_=sa.String(200), existing_type=sa.String(50))
        op.execute("CREATE TYPE mood AS ENUM ('calm', 'busy')")
        op.execute("ALTER TABLE t ADD COLUMN mood mood")
        op.create_table("scratch", sa.Column("id", sa.Integer, primary_key=True))
        """,
        'op.drop_column("t", "mood")',  # forgets the type, the width and the table
    )
    fails = Revision("f3", "fails", 'op.execute("SELECT 1/0")', "pass")
    migrations = write_history(tmp_path, [create, widen, fails])
    assert run_apply(database_url, migrations, "--target", "a1").exit_code == 0

    run = run_apply(database_url, migrations, "--allow", "change-column-type")

    assert run.exit_code == 1, run
    result = run.result
    assert (result["outcome"], result["reason"]) == ("Failed", "PartiallyRolledBack"), run
    assert ("the schema differs from the one before the run: column public.t.code type "
            "character varying(200), was character varying(50); enum type public.mood still "
            "exists; table public.scratch still exists.") in result["message"]
    assert revision(database_url) == "a1"
