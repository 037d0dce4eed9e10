"""A generated revision that drops a column and a table and narrows a type: `apply` copies the data
first, and a plain `alembic downgrade -1` (no schemashift command) puts it back from S3."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.fixtures.models import execute, query, write_models
from tests.fixtures.postgres import PgServer
from tests.fixtures.runner_cli import cli_env, revision, run_apply
from tests.fixtures.s3 import S3Server
from tests.integration.test_generate import create, created_paths

pytestmark = pytest.mark.integration

V1 = """
patients = sa.Table(
    "patients", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("fax", sa.Text, nullable=False),
    sa.Column("weight", sa.Numeric(10, 4)),
)
archive = sa.Table(
    "archive", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("patient_id", sa.Integer, sa.ForeignKey("patients.id")),
    sa.Column("body", sa.LargeBinary),
)
"""
# fax dropped, archive dropped, weight narrowed (PostgreSQL rounds to 2 places: data lost).
V2 = """
patients = sa.Table(
    "patients", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("weight", sa.Numeric(10, 2)),
)
"""
SEED = (
    "INSERT INTO patients (name, fax, weight) VALUES ('Ann', E'+1\\t555', 70.1234), "
    "('Bob', '', NULL), ('Cy', 'ü \\\\N', -0.0001)",
    "INSERT INTO archive (patient_id, body) VALUES (1, '\\x00ff'), (2, NULL), (1, ''::bytea)",
)
PATIENTS = "SELECT id, name, textsend(fax), numeric_send(weight) FROM patients ORDER BY id"
ARCHIVE = "SELECT id, patient_id, byteasend(body) FROM archive ORDER BY id"


def alembic_downgrade(migrations: Path, database_url: str, env: dict[str, str]) -> \
        subprocess.CompletedProcess[str]:
    """`alembic -c alembic.ini downgrade -1`: Alembic's own command line, nothing of schemashift's
    but the env.py and the revision it wrote."""
    ini = migrations.parent / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {migrations}\n")
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), "downgrade", "-1"],
        capture_output=True, text=True, timeout=120,
        env=cli_env(extra={"SCHEMASHIFT_DATABASE_URL": database_url, **env}))


@pytest.fixture
def migrated(tmp_path: Path, database_url: str, pg_server: PgServer, s3_server: S3Server,
             s3_bucket: str) -> tuple[Path, list[tuple[object, ...]], list[tuple[object, ...]]]:
    migrations = tmp_path / "migrations"
    code, output = create(database_url, migrations, write_models(tmp_path / "v1", V1),
                          "initial", "--apply")
    assert code == 0, output
    execute(database_url, *SEED)
    before = (query(database_url, PATIENTS), query(database_url, ARCHIVE))
    code, output = create(database_url, migrations, write_models(tmp_path / "v2", V2),
                          "drop fax and archive, narrow weight")
    assert code == 0, output
    # Split into expand and contract (issue 13): the contract drops and narrows, so its
    # downgrade is the one that puts the values back; the expand destroys nothing.
    expand, contract = (path.read_text() for path in created_paths(output))
    assert '"phase": "contract"' in contract and "put_back" not in expand
    assert "from schemashift.runner.copy_restore import put_back" in contract
    assert contract.index("put_back(op, revision)") > contract.index("def downgrade")

    run = run_apply(database_url, migrations, "--backup-url", f"s3://{s3_bucket}/app/",
                    "--allow", "drop-column", "--allow", "drop-table",
                    "--allow", "change-column-type", pg_bin_dir=pg_server.bin_dir,
                    env=s3_server.env())

    assert run.exit_code == 0, run
    copies = {c["table"]: c for c in run.result["targetedCopies"]}
    assert sorted(copies["public.patients"]["columns"]) == ["fax", "weight"]
    assert sorted(copies["public.patients"]["rule"].split(",")) == [
        "change-column-type", "drop-column"]
    assert copies["public.archive"]["keyColumns"] == []  # the whole table
    assert copies["public.archive"]["columns"] == ["id", "patient_id", "body"]
    assert query(database_url, "SELECT weight::text FROM patients ORDER BY id") == [
        ("70.12",), (None,), ("0.00",)]
    return migrations, *before


def nullable(database_url: str, column: str) -> str:
    found = query(database_url, "SELECT is_nullable FROM information_schema.columns WHERE "
                                f"table_name = 'patients' AND column_name = '{column}'")
    return str(found[0][0])


def test_plain_alembic_downgrade_puts_the_dropped_and_narrowed_values_back(
    migrated: tuple[Path, list[tuple[object, ...]], list[tuple[object, ...]]],
    database_url: str, s3_server: S3Server,
) -> None:
    migrations, patients, archive = migrated
    head = revision(database_url)

    done = alembic_downgrade(migrations, database_url, s3_server.env())

    assert done.returncode == 0, done.stderr
    assert revision(database_url) != head
    assert query(database_url, PATIENTS) == patients
    assert query(database_url, ARCHIVE) == archive
    assert "put back 3 row(s) of the table public.archive" in done.stderr
    # The expand made fax nullable for the rollout; its own downgrade makes it NOT NULL again,
    # which holds because the contract's downgrade put every value back.
    assert nullable(database_url, "fax") == "YES"
    assert alembic_downgrade(migrations, database_url, s3_server.env()).returncode == 0
    assert nullable(database_url, "fax") == "NO"
    assert query(database_url, PATIENTS) == patients
    # the re-created sequence continues after the restored ids
    execute(database_url, "INSERT INTO archive (patient_id) VALUES (2)")
    assert query(database_url, "SELECT max(id) FROM archive") == [(4,)]
    assert s3_server.secret_key not in done.stdout + done.stderr
    # put back once: the catalog says so, and a second upgrade/downgrade finds nothing pending
    assert query(database_url, "SELECT count(*) FROM schemashift.preserved_data "
                               "WHERE restored_at IS NULL") == [(0,)]


def test_downgrade_without_object_storage_refuses_and_changes_nothing(
    migrated: tuple[Path, list[tuple[object, ...]], list[tuple[object, ...]]],
    database_url: str, s3_bucket: str,
) -> None:
    migrations, patients, _ = migrated
    head = revision(database_url)

    done = alembic_downgrade(migrations, database_url, {})

    assert done.returncode != 0
    assert f"s3://{s3_bucket}/app/" in done.stderr
    assert "AWS_ENDPOINT_URL" in done.stderr and "SCHEMASHIFT_SKIP_TARGETED_COPY" in done.stderr
    assert revision(database_url) == head
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('public.archive')").fetchone() == (None,)

    # Skipping the copy deliberately: the contract's downgrade re-creates the columns without
    # their values; the expand's downgrade then cannot make fax NOT NULL again: its lock-safe
    # NOT NULL (a check validated first) fails on the NULLs and says so.
    skipped = alembic_downgrade(migrations, database_url,
                                {"SCHEMASHIFT_SKIP_TARGETED_COPY": "1"})
    assert skipped.returncode == 0, skipped.stderr
    assert "are not put back" in skipped.stderr
    expand_head = revision(database_url)
    assert expand_head != head
    assert query(database_url, "SELECT count(fax) FROM patients") == [(0,)]

    failed = alembic_downgrade(migrations, database_url, {})
    assert failed.returncode != 0
    assert "rows of patients violate" in failed.stderr
    assert "VALIDATE CONSTRAINT failed" in failed.stderr
    assert revision(database_url) == expand_head
    assert len(query(database_url, "SELECT * FROM patients")) == len(patients)
