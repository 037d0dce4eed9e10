"""`schemashift apply` end to end through the real CLI against real PostgreSQL (no backup)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.histories import Revision, write_history
from tests.fixtures.postgres import APP_PASSWORD, PgServer
from tests.fixtures.runner_cli import columns, revision, run_apply, scalar, tables

pytestmark = pytest.mark.integration

CREATE_PATIENTS = Revision(
    "a1", "create patients",
    """
    op.create_table("patients", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.Text, nullable=False))
    op.execute("INSERT INTO patients (id, name) VALUES (1, 'Ada'), (2, 'Grace')")
    """,
    'op.drop_table("patients")',
)
ADD_EMAIL = Revision(
    "b2", "add email", 'op.add_column("patients", sa.Column("email", sa.Text))',
    'op.drop_column("patients", "email")',
)
CREATE_VISITS = Revision(
    "c3", "create visits",
    """
    op.create_table("visits", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("patient_id", sa.Integer, sa.ForeignKey("patients.id")))
    """,
    'op.drop_table("visits")',
)
HISTORY = [CREATE_PATIENTS, ADD_EMAIL, CREATE_VISITS]


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    return write_history(tmp_path, HISTORY)


def test_applies_every_stage_and_reports_the_exact_state(
    database_url: str, migrations: Path
) -> None:
    run = run_apply(database_url, migrations)

    assert run.exit_code == 0, run
    result = run.result
    assert (result["outcome"], result["reason"]) == ("Succeeded", "Succeeded")
    assert (result["fromRevision"], result["targetRevision"], result["currentRevision"]) == (
        None, "c3", "c3")
    assert [(s["revision"], s["state"], s["attempts"]) for s in result["stages"]] == [
        ("a1", "Succeeded", 1), ("b2", "Succeeded", 1), ("c3", "Succeeded", 1)]
    phases = [e["phase"] for e in run.of("phase")]
    assert phases.index("Planning") < phases.index("Migrating") < phases.index("Verifying")
    assert phases[-1] == "Succeeded"
    assert [s["revision"] for s in run.of("plan")[0]["plan"]["revisions"]] == ["a1", "b2", "c3"]
    running = [e["revision"] for e in run.of("stage") if e["state"] == "Running"]
    assert running == ["a1", "b2", "c3"]
    assert revision(database_url) == "c3"
    assert {"patients", "visits"} <= tables(database_url)
    assert columns(database_url, "patients") == ["id", "name", "email"]
    assert scalar(database_url, "SELECT count(*) FROM patients") == 2
    assert APP_PASSWORD not in run.stdout + run.stderr


def test_second_run_is_already_at_target(database_url: str, migrations: Path) -> None:
    assert run_apply(database_url, migrations).exit_code == 0

    again = run_apply(database_url, migrations)

    assert again.exit_code == 0, again
    assert (again.result["outcome"], again.result["reason"]) == ("Succeeded", "AlreadyAtTarget")
    assert again.result["stages"] == []


def test_target_revision_stops_there_and_a_rerun_continues(
    database_url: str, migrations: Path
) -> None:
    first = run_apply(database_url, migrations, "--target", "b2")
    assert first.exit_code == 0, first
    assert revision(database_url) == "b2"

    rest = run_apply(database_url, migrations)

    assert rest.exit_code == 0, rest
    assert rest.result["fromRevision"] == "b2"
    assert [s["revision"] for s in rest.result["stages"]] == ["c3"]
    assert revision(database_url) == "c3"


def test_dry_run_emits_the_plan_and_changes_nothing(database_url: str, migrations: Path) -> None:
    run = run_apply(database_url, migrations, "--dry-run")

    assert run.exit_code == 0, run
    assert (run.result["outcome"], run.result["reason"]) == ("Planned", "DryRunCompleted")
    assert len(run.of("plan")[0]["plan"]["stages"]) == 3
    assert all(s["state"] == "Pending" for s in run.result["stages"])
    assert revision(database_url) is None
    assert tables(database_url) == set()


DROP_NAME = Revision("d4", "drop name", 'op.drop_column("patients", "name")',
                     'op.add_column("patients", sa.Column("name", sa.Text))')


def test_lint_block_stops_before_any_change_and_names_the_safe_alternative(
    database_url: str, tmp_path: Path
) -> None:
    migrations = write_history(tmp_path, [*HISTORY, DROP_NAME])
    assert run_apply(database_url, migrations, "--target", "c3").exit_code == 0

    run = run_apply(database_url, migrations)

    assert run.exit_code == 2, run
    assert (run.result["outcome"], run.result["reason"]) == ("Failed", "LintBlocked")
    assert "drop-column" in run.result["message"]
    assert "safe alternative" in run.result["message"]
    assert "Nothing was changed" in run.result["message"]
    assert revision(database_url) == "c3"
    assert "name" in columns(database_url, "patients")


@pytest.mark.parametrize("how", [["--allow", "drop-column"], ["--lint", "warn"],
                                 ["--lint", "off"]])
def test_lint_allow_or_warn_lets_the_run_through(
    database_url: str, tmp_path: Path, how: list[str]
) -> None:
    migrations = write_history(tmp_path, [*HISTORY, DROP_NAME])
    assert run_apply(database_url, migrations, "--target", "c3").exit_code == 0

    run = run_apply(database_url, migrations, *how)

    assert run.exit_code == 0, run
    assert revision(database_url) == "d4"
    assert "name" not in columns(database_url, "patients")


def test_integrity_failure_stops_the_run(database_url: str, tmp_path: Path) -> None:
    require_email = Revision(
        "e5", "email required",
        'op.alter_column("patients", "email", existing_type=sa.Text, nullable=False)',
        'op.alter_column("patients", "email", existing_type=sa.Text, nullable=True)',
    )
    migrations = write_history(tmp_path, [*HISTORY, require_email])
    assert run_apply(database_url, migrations, "--target", "c3").exit_code == 0

    run = run_apply(database_url, migrations, "--allow", "set-not-null")

    assert run.exit_code == 1, run
    assert (run.result["outcome"], run.result["reason"]) == ("Failed", "IntegrityCheckFailed")
    assert "patients" in run.result["message"]
    assert revision(database_url) == "c3"


def test_unknown_target_is_refused(database_url: str, migrations: Path) -> None:
    run = run_apply(database_url, migrations, "--target", "zzzz")

    assert run.exit_code == 2, run
    assert run.result["reason"] == "UnknownRevision"
    assert revision(database_url) is None


def test_multiple_heads_are_refused(database_url: str, tmp_path: Path) -> None:
    fork = Revision("f6", "fork", "pass", "pass", down_revision="a1")
    migrations = write_history(tmp_path, [*HISTORY, fork])

    run = run_apply(database_url, migrations)

    assert run.exit_code == 2, run
    assert run.result["reason"] == "MultipleHeads"
    assert tables(database_url) == set()


def test_production_without_backup_url_is_refused(database_url: str, migrations: Path) -> None:
    run = run_apply(database_url, migrations, "--env", "production")

    assert run.exit_code == 2, run
    assert (run.result["outcome"], run.result["reason"]) == ("Failed", "BackupRequired")
    assert tables(database_url) == set()


def test_restore_policy_without_backup_url_is_refused(
    database_url: str, migrations: Path
) -> None:
    run = run_apply(database_url, migrations, "--rollback-policy", "restore")

    assert run.exit_code == 2, run
    assert run.result["reason"] == "BackupRequired"
    assert tables(database_url) == set()


def test_unreachable_database_exits_3_without_the_password(
    pg_server: PgServer, migrations: Path
) -> None:
    url = f"postgresql://app:{APP_PASSWORD}@127.0.0.1:1/nowhere"

    run = run_apply(url, migrations)

    assert run.exit_code == 3, run
    assert run.result["reason"] == "DatabaseUnreachable"
    assert "127.0.0.1:1" in run.result["message"]
    assert APP_PASSWORD not in run.stdout + run.stderr


@pytest.mark.parametrize("option", [["--lock-timeout", "soon"], ["--statement-timeout", "-1s"],
                                    ["--lock-timeout", "0s"], ["--lock-wait", "5 parsecs"]])
def test_bad_durations_are_usage_errors(
    database_url: str, migrations: Path, option: list[str]
) -> None:
    run = run_apply(database_url, migrations, *option)

    assert run.exit_code == 2, run
    assert "error:" in run.stderr
    assert tables(database_url) == set()


def test_autocommit_block_revision_builds_its_index_concurrently(
    database_url: str, tmp_path: Path
) -> None:
    concurrent_index = Revision(
        "g7", "index concurrently",
        """
        with op.get_context().autocommit_block():
            op.create_index("ix_patients_email", "patients", ["email"],
                            postgresql_concurrently=True)
        """,
        """
        with op.get_context().autocommit_block():
            op.drop_index("ix_patients_email", table_name="patients",
                          postgresql_concurrently=True)
        """,
    )
    migrations = write_history(tmp_path, [*HISTORY, concurrent_index])

    run = run_apply(database_url, migrations)

    assert run.exit_code == 0, run
    assert revision(database_url) == "g7"
    assert run.result["stages"][-1]["state"] == "Succeeded"
    assert scalar(database_url, "SELECT i.indisvalid FROM pg_index i JOIN pg_class c "
                                "ON c.oid = i.indexrelid WHERE c.relname = 'ix_patients_email'")


def test_human_output_without_json(database_url: str, migrations: Path) -> None:
    import subprocess
    import sys

    from tests.fixtures.runner_cli import cli_env

    done = subprocess.run(
        [sys.executable, "-m", "schemashift.cli", "apply", "--database-url", database_url,
         "--migrations", str(migrations), "--target", "zzzz"],
        capture_output=True, text=True, timeout=120, env=cli_env(),
    )

    assert done.returncode == 2
    assert "error: Failed (UnknownRevision)" in done.stderr
    assert "[Planning]" in done.stdout


def test_a_target_behind_the_database_is_refused_not_reported_as_done(
    database_url: str, migrations: Path
) -> None:
    assert run_apply(database_url, migrations).exit_code == 0

    run = run_apply(database_url, migrations, "--target", "a1")

    assert run.exit_code == 2, run
    assert run.result["reason"] == "TargetBehindDatabase"
    assert (run.result["currentRevision"], run.result["targetRevision"]) == ("c3", "a1")
    assert revision(database_url) == "c3"


def test_a_backup_url_that_is_not_s3_is_refused_first(database_url: str, migrations: Path) -> None:
    run = run_apply(database_url, migrations, "--backup-url", "https://bucket/prefix")

    assert run.exit_code == 2, run
    assert run.result["reason"] == "InvalidInput"
    assert "s3://" in run.result["message"]
    assert tables(database_url) == set()


def test_run_job_takes_its_options_from_the_environment_and_writes_the_termination_log(
    database_url: str, migrations: Path, tmp_path: Path
) -> None:
    import json
    import subprocess
    import sys

    from tests.fixtures.runner_cli import cli_env, parse_events

    termination_log = tmp_path / "termination-log"
    env = cli_env(extra={
        "SCHEMASHIFT_DATABASE_URL": database_url, "SCHEMASHIFT_MIGRATIONS": str(migrations),
        "SCHEMASHIFT_TARGET": "b2", "SCHEMASHIFT_LOCK_TIMEOUT": "2s",
        "SCHEMASHIFT_TERMINATION_LOG": str(termination_log),
    })

    done = subprocess.run([sys.executable, "-m", "schemashift.cli", "run-job"],
                          capture_output=True, text=True, timeout=120, env=env)

    assert done.returncode == 0, done.stderr
    result = json.loads(termination_log.read_text())
    assert (result["outcome"], result["currentRevision"]) == ("Succeeded", "b2")
    event = next(e for e in parse_events(done.stdout) if e["event"] == "result")
    assert result == {k: v for k, v in event.items() if k not in ("event", "time")}
    assert revision(database_url) == "b2"


def test_an_approved_plan_hash_that_no_longer_matches_changes_nothing(
    database_url: str, migrations: Path
) -> None:
    approved = run_apply(database_url, migrations, "--dry-run").result["planHash"]
    # The database moves after the approval: the same target now means a different plan.
    assert run_apply(database_url, migrations, "--target", "a1").exit_code == 0

    stale = run_apply(database_url, migrations, "--expect-plan-hash", approved)

    assert stale.exit_code == 2, stale
    assert stale.result["reason"] == "PlanStale"
    assert approved in stale.result["message"]
    assert revision(database_url) == "a1"
    assert columns(database_url, "patients") == ["id", "name"]


def test_the_approved_plan_hash_lets_the_run_proceed(database_url: str, migrations: Path) -> None:
    approved = run_apply(database_url, migrations, "--dry-run").result["planHash"]

    run = run_apply(database_url, migrations, "--expect-plan-hash", approved)

    assert run.exit_code == 0, run
    assert run.result["planHash"] == approved
    assert revision(database_url) == "c3"
