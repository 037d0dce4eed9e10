"""Restoring a backup over a database a run changed: all or nothing, and reported as it is.

The run adds what `pg_restore --clean` of the older backup cannot undo (a foreign key from a
table that existed before onto another one's primary key, a schema, an enum type, an
extension); the database must end exactly as the backup (compared with pg_dump's schema and
every table's content) or, when the restore fails, exactly as it was before the restore.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from schemashift import errors, reasons
from schemashift.runner import backup
from tests.fixtures.histories import Revision, write_history
from tests.fixtures.postgres import PgServer
from tests.fixtures.runner_cli import revision, run_apply, scalar, tables
from tests.fixtures.s3 import S3Server
from tests.integration.test_backup import Events, cli, snapshot
from tests.integration.test_runner_apply import CREATE_PATIENTS

pytestmark = pytest.mark.integration

CREATE_CLINICS = Revision(
    "k2", "create clinics",
    """
    op.create_table("clinics", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.Text))
    op.execute("INSERT INTO clinics (id, name) VALUES (1, 'North')")
    """,
    'op.drop_table("clinics")',
)
LINK_UP = """
op.add_column("clinics", sa.Column("patient_id", sa.Integer,
                                   sa.ForeignKey("patients.id", name="clinics_patient_fk")))
op.execute("CREATE SCHEMA audit")
op.execute("CREATE TYPE audit.kind AS ENUM ('in', 'out')")
op.execute("CREATE TABLE audit.log (id int PRIMARY KEY, kind audit.kind)")
op.execute("CREATE EXTENSION citext")
op.execute("CREATE TABLE tags (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name citext)")
"""
LINK_DOWN = """
op.drop_table("tags")
op.execute("DROP EXTENSION citext")
op.execute("DROP SCHEMA audit CASCADE")
op.drop_column("clinics", "patient_id")
"""
LINK = Revision("l3", "link clinics to patients; audit schema, enum, extension", LINK_UP,
                LINK_DOWN)
LINK_DOWNGRADE_PASS = Revision("l3", "link, downgrade forgotten", LINK_UP, "pass")
# The foreign key is validated while clinics is locked: lint flags it, these tests accept it.
ALLOW = ("--allow", "add-foreign-key-validated")
FAILS = Revision(
    "f4", "insert a duplicate patient",
    'op.execute("INSERT INTO patients (id, name) VALUES (1, \'duplicate\')")',
    "pass",
)


def _at_k2(database_url: str, tmp_path: Path, linked: Revision = LINK) -> Path:
    migrations = write_history(tmp_path, [CREATE_PATIENTS, CREATE_CLINICS, linked, FAILS])
    assert run_apply(database_url, migrations, "--target", "k2").exit_code == 0
    return migrations


def _apply_with_backup(database_url: str, migrations: Path, pg_server: PgServer,
                       s3_server: S3Server, bucket: str, *args: str) -> Any:
    return run_apply(database_url, migrations, "--backup-url", f"s3://{bucket}/app/", *ALLOW,
                     *args, pg_bin_dir=pg_server.bin_dir, env=s3_server.env())


def _extensions(database_url: str) -> set[str]:
    with psycopg.connect(database_url) as conn:
        return {str(r[0]) for r in conn.execute("SELECT extname FROM pg_extension")}


def test_restore_policy_undoes_a_foreign_key_onto_an_older_table(
    database_url: str, tmp_path: Path, pg_server: PgServer, s3_server: S3Server, s3_bucket: str
) -> None:
    migrations = _at_k2(database_url, tmp_path)
    before = snapshot(database_url, pg_server.bin_dir)

    run = _apply_with_backup(database_url, migrations, pg_server, s3_server, s3_bucket,
                             "--rollback-policy", "restore")

    assert run.exit_code == 1, run
    result = run.result
    assert (result["outcome"], result["reason"]) == ("RolledBack", "RolledBackByRestore"), run
    assert (result["currentRevision"], result["undone"]) == ("k2", ["l3"])
    assert snapshot(database_url, pg_server.bin_dir) == before
    assert _extensions(database_url) == {"plpgsql"}
    assert tables(database_url) == {"alembic_version", "patients", "clinics"}


def test_a_forgotten_downgrade_falls_back_to_the_backup(
    database_url: str, tmp_path: Path, pg_server: PgServer, s3_server: S3Server, s3_bucket: str
) -> None:
    migrations = _at_k2(database_url, tmp_path, LINK_DOWNGRADE_PASS)
    before = snapshot(database_url, pg_server.bin_dir)

    run = _apply_with_backup(database_url, migrations, pg_server, s3_server, s3_bucket)

    assert run.exit_code == 1, run
    result = run.result
    assert (result["outcome"], result["reason"]) == ("RolledBack", "RolledBackByRestore"), run
    message = result["message"]
    assert "rolled back by running the downgrades, but the schema still differed" in (
        message.lower())
    for leftover in ("column public.clinics.patient_id still exists",
                     "schema audit still exists", "extension citext still exists",
                     "table public.tags still exists"):
        assert leftover in message
    assert "restored the backup instead" in message
    assert result["currentRevision"] == "k2"
    assert snapshot(database_url, pg_server.bin_dir) == before


def _vault(pg_server: PgServer, database_url: str) -> None:
    """A schema and table the app's role may read (so pg_dump works) but not drop."""
    with pg_server.admin(database_url.rsplit("/", 1)[1]) as admin:
        admin.execute("CREATE SCHEMA vault")
        admin.execute("CREATE TABLE vault.secrets (id int PRIMARY KEY, value text)")
        admin.execute("INSERT INTO vault.secrets VALUES (1, 'kept')")
        admin.execute("GRANT USAGE ON SCHEMA vault TO app")
        admin.execute("GRANT SELECT ON vault.secrets TO app")


def test_a_restore_that_fails_midway_changes_nothing_and_says_so(
    database_url: str, tmp_path: Path, pg_server: PgServer, s3_server: S3Server, s3_bucket: str
) -> None:
    migrations = _at_k2(database_url, tmp_path)
    _vault(pg_server, database_url)

    run = _apply_with_backup(database_url, migrations, pg_server, s3_server, s3_bucket,
                             "--rollback-policy", "restore")

    assert run.exit_code == 1, run
    result = run.result
    assert (result["outcome"], result["reason"]) == ("Failed", "RollbackFailed"), run
    message = result["message"]
    assert "restoring the backup failed, and the restore was rolled back" in message.lower()
    assert "must be owner" in message and "vault" in message
    assert "(after:" not in message
    assert "column public.clinics.patient_id still exists" in message
    assert "The database is at revision l3" in message
    assert result["currentRevision"] == "l3" == revision(database_url)
    # Nothing of the failed restore stayed: not even the drops it ran before failing.
    assert tables(database_url) == {"alembic_version", "patients", "clinics", "tags"}
    assert scalar(database_url, "SELECT count(*) FROM audit.log") == 0
    assert scalar(database_url, "SELECT string_agg(name, ',' ORDER BY id) FROM patients") == (
        "Ada,Grace")
    assert "citext" in _extensions(database_url)


def test_restore_clean_that_fails_midway_leaves_the_database_as_it_was(
    database_url: str, tmp_path: Path, pg_server: PgServer, s3_env: dict[str, str],
    s3_bucket: str,
) -> None:
    migrations = _at_k2(database_url, tmp_path)
    _vault(pg_server, database_url)
    status = backup.take_backup(database_url, f"s3://{s3_bucket}/app/", from_revision="k2",
                                reporter=Events(), pg_bin_dir=pg_server.bin_dir)
    assert run_apply(database_url, migrations, "--target", "l3", *ALLOW).exit_code == 0
    changed = snapshot(database_url, pg_server.bin_dir)

    with pytest.raises(errors.MigrationFailed) as caught:
        backup.restore_backup(database_url, status.url, clean=True, jobs=1, reporter=Events(),
                              pg_bin_dir=pg_server.bin_dir)

    assert caught.value.reason == reasons.RESTORE_FAILED
    assert "nothing was changed" in str(caught.value)
    assert "app-Secr3t-pw" not in str(caught.value)
    assert snapshot(database_url, pg_server.bin_dir) == changed


def test_cli_restore_clean_undoes_what_a_later_revision_added(
    database_url: str, tmp_path: Path, pg_server: PgServer, s3_server: S3Server, s3_bucket: str
) -> None:
    migrations = _at_k2(database_url, tmp_path)
    before = snapshot(database_url, pg_server.bin_dir)
    done = cli("backup", "--json", "--database-url", database_url,
               "--backup-url", f"s3://{s3_bucket}/app", env=s3_server.env(),
               bin_dir=pg_server.bin_dir)
    assert done.returncode == 0, done.stderr
    url = json.loads(done.stdout[done.stdout.index("\n{\n") + 1:])["url"]
    assert run_apply(database_url, migrations, "--target", "l3", *ALLOW).exit_code == 0
    assert snapshot(database_url, pg_server.bin_dir) != before

    done = cli("restore", "--clean", url, "--database-url", database_url,
               env=s3_server.env(), bin_dir=pg_server.bin_dir)

    assert done.returncode == 0, done.stderr
    assert snapshot(database_url, pg_server.bin_dir) == before
    assert _extensions(database_url) == {"plpgsql"}
    assert revision(database_url) == "k2"
