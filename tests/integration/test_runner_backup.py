"""`apply` with a backup to real S3 (SeaweedFS): verified backup first, restore as rollback,
and storage problems stopping the run before anything changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.histories import Revision, write_history
from tests.fixtures.postgres import PgServer
from tests.fixtures.runner_cli import columns, revision, run_apply, scalar, tables
from tests.fixtures.s3 import S3Server
from tests.integration.test_runner_apply import ADD_EMAIL, CREATE_PATIENTS, HISTORY
from tests.integration.test_runner_locks import CREATE_NOTES
from tests.integration.test_runner_rollback import FAILS_ON_DATA

pytestmark = pytest.mark.integration


def test_backup_is_verified_before_any_change(
    database_url: str, tmp_path: Path, pg_server: PgServer, s3_server: S3Server, s3_bucket: str
) -> None:
    migrations = write_history(tmp_path, HISTORY)
    assert run_apply(database_url, migrations, "--target", "a1").exit_code == 0

    run = run_apply(database_url, migrations, "--backup-url", f"s3://{s3_bucket}/app/",
                    "--env", "production", pg_bin_dir=pg_server.bin_dir, env=s3_server.env())

    assert run.exit_code == 0, run
    backup = run.result["backup"]
    assert backup["verified"] is True
    assert backup["url"].startswith(f"s3://{s3_bucket}/app/")
    assert backup["sizeBytes"] > 0
    assert len(backup["sha256"]) == 64
    phases = [e["phase"] for e in run.of("phase")]
    assert phases.index("BackingUp") < phases.index("Migrating")
    assert f"verified backup at {backup['url']}" in run.result["message"]
    key = backup["url"].removeprefix(f"s3://{s3_bucket}/")
    head = s3_server.client().head_object(Bucket=s3_bucket, Key=key)
    assert head["Metadata"]["schemashift-size"] == str(backup["sizeBytes"])
    assert head["Metadata"]["schemashift-sha256"] == backup["sha256"]
    assert revision(database_url) == "c3"


def test_first_deploy_onto_an_empty_database_with_a_backup(
    database_url: str, tmp_path: Path, pg_server: PgServer, s3_server: S3Server, s3_bucket: str
) -> None:
    migrations = write_history(tmp_path, HISTORY)

    run = run_apply(database_url, migrations, "--backup-url", f"s3://{s3_bucket}/app/",
                    pg_bin_dir=pg_server.bin_dir, env=s3_server.env())

    assert run.exit_code == 0, run
    assert revision(database_url) == "c3"


def test_restore_policy_puts_back_the_backup_and_drops_what_the_run_created(
    database_url: str, tmp_path: Path, pg_server: PgServer, s3_server: S3Server, s3_bucket: str
) -> None:
    migrations = write_history(tmp_path, [CREATE_PATIENTS, CREATE_NOTES, FAILS_ON_DATA])
    assert run_apply(database_url, migrations, "--target", "a1").exit_code == 0

    run = run_apply(database_url, migrations, "--backup-url", f"s3://{s3_bucket}/app/",
                    "--rollback-policy", "restore", pg_bin_dir=pg_server.bin_dir,
                    env=s3_server.env())

    assert run.exit_code == 1, run
    result = run.result
    assert (result["outcome"], result["reason"]) == ("RolledBack", "RolledBackByRestore")
    assert (result["currentRevision"], result["undone"]) == ("a1", ["n2"])
    assert result["backup"]["url"] in result["message"]
    assert revision(database_url) == "a1"
    assert tables(database_url) == {"alembic_version", "patients"}
    assert scalar(database_url, "SELECT string_agg(name, ',' ORDER BY id) FROM patients") == (
        "Ada,Grace")


def test_failing_downgrade_falls_back_to_the_backup(
    database_url: str, tmp_path: Path, pg_server: PgServer, s3_server: S3Server, s3_bucket: str
) -> None:
    broken_downgrade = Revision("b2", "add email, downgrade broken", ADD_EMAIL.upgrade_src,
                                'op.drop_column("patients", "no_such_column")')
    migrations = write_history(tmp_path, [CREATE_PATIENTS, broken_downgrade, FAILS_ON_DATA])
    assert run_apply(database_url, migrations, "--target", "a1").exit_code == 0

    run = run_apply(database_url, migrations, "--backup-url", f"s3://{s3_bucket}/app/",
                    pg_bin_dir=pg_server.bin_dir, env=s3_server.env())

    assert run.exit_code == 1, run
    result = run.result
    assert (result["outcome"], result["reason"]) == ("RolledBack", "RolledBackByRestore")
    assert "no_such_column" in result["message"]
    assert "restored the backup instead" in result["message"]
    assert result["undone"] == ["b2"]
    assert revision(database_url) == "a1"
    assert columns(database_url, "patients") == ["id", "name"]
    assert scalar(database_url, "SELECT count(*) FROM patients") == 2


@pytest.mark.parametrize("problem", ["unreachable", "wrong-credentials", "missing-bucket"])
def test_storage_problems_stop_the_run_before_any_change(
    database_url: str, tmp_path: Path, pg_server: PgServer, s3_server: S3Server, s3_bucket: str,
    problem: str,
) -> None:
    migrations = write_history(tmp_path, HISTORY)
    env = s3_server.env()
    bucket = s3_bucket
    if problem == "unreachable":
        env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:1"
    elif problem == "wrong-credentials":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret-key"
    else:
        bucket = "no-such-bucket-here"

    run = run_apply(database_url, migrations, "--backup-url", f"s3://{bucket}/app/",
                    pg_bin_dir=pg_server.bin_dir, env=env)

    assert run.exit_code == 3, run
    assert run.result["outcome"] == "Failed"
    assert run.result["reason"] in {"StorageUnreachable", "StorageAccessDenied",
                                    "BucketNotFound"}
    assert "Nothing was changed" in run.result["message"]
    assert "not-the-secret-key" not in run.stdout + run.stderr
    assert run.result["stages"][0]["state"] == "Pending"
    assert tables(database_url) == set()


def test_too_old_pg_dump_is_refused_in_preflight(
    database_url: str, tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    old = Path("/usr/lib/postgresql/15/bin")
    if not (old / "pg_dump").exists():
        pytest.skip("Debian's PostgreSQL 15 client tools are not installed")
    migrations = write_history(tmp_path, HISTORY)

    run = run_apply(database_url, migrations, "--backup-url", f"s3://{s3_bucket}/app/",
                    pg_bin_dir=old, env=s3_server.env())

    assert run.exit_code == 2, run
    assert run.result["reason"] == "PgDumpTooOld"
    assert "15" in run.result["message"] and "18" in run.result["message"]
    assert tables(database_url) == set()


def test_autocommit_leftovers_are_undone_by_the_backup(
    database_url: str, tmp_path: Path, pg_server: PgServer, s3_server: S3Server, s3_bucket: str
) -> None:
    from tests.integration.test_runner_rollback import PARTIAL_AUTOCOMMIT

    migrations = write_history(tmp_path, [CREATE_PATIENTS, ADD_EMAIL, PARTIAL_AUTOCOMMIT])
    assert run_apply(database_url, migrations, "--target", "a1").exit_code == 0

    run = run_apply(database_url, migrations, "--backup-url", f"s3://{s3_bucket}/app/",
                    pg_bin_dir=pg_server.bin_dir, env=s3_server.env())

    assert run.exit_code == 1, run
    result = run.result
    assert (result["outcome"], result["reason"]) == ("RolledBack", "RolledBackByRestore")
    assert "autocommit block" in result["message"]
    assert revision(database_url) == "a1"
    assert tables(database_url) == {"alembic_version", "patients"}
    assert scalar(database_url, "SELECT count(*) FROM pg_indexes WHERE indexname = "
                                "'ux_patients_name'") == 0
    assert scalar(database_url, "SELECT count(*) FROM patients") == 2


def test_a_failing_pg_dump_migrates_nothing(
    database_url: str, tmp_path: Path, pg_server: PgServer, s3_server: S3Server, s3_bucket: str
) -> None:
    migrations = write_history(tmp_path, HISTORY)
    assert run_apply(database_url, migrations, "--target", "a1").exit_code == 0
    database = database_url.rsplit("/", 1)[1]
    with pg_server.admin(database) as admin:  # a table the app's role may not read
        admin.execute("CREATE TABLE vault (secret text)")

    run = run_apply(database_url, migrations, "--backup-url", f"s3://{s3_bucket}/app/",
                    pg_bin_dir=pg_server.bin_dir, env=s3_server.env())

    assert run.exit_code in (1, 3), run
    assert run.result["outcome"] == "Failed"
    assert "permission denied" in run.result["message"]
    assert "Nothing was changed" in run.result["message"]
    assert run.result["backup"] is None
    assert revision(database_url) == "a1"
    assert s3_server.client().list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
