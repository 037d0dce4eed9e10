"""sync-models-to-db on a real PostgreSQL: development only, additive only."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.models import execute, invoke, query, run, snapshot, write_models

pytestmark = pytest.mark.integration

START = (
    "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)",
    "CREATE TABLE patients (id serial CONSTRAINT pk_patients PRIMARY KEY, name varchar(50), "
    "fax text)",
    "INSERT INTO patients (name) VALUES ('Ann')",
)

MODELS = """
patients = sa.Table(
    "patients", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text),
    sa.Column("preferences", postgresql.JSONB, server_default=sa.text("'{{}}'::jsonb"),
              nullable=False),
    sa.Column("mood", sa.Enum("calm", "anxious", name="mood")),
    {extra_column}
)
wards = sa.Table("wards", metadata, sa.Column("id", sa.Integer, primary_key=True))
hospital_settings = sa.Table(
    "hospital_settings", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("ward_id", sa.Integer, sa.ForeignKey("wards.id")),
    sa.Column("key", sa.String(100), nullable=False, unique=True),
)
"""


def sync(url: str, ref: str, *extra: str) -> tuple[int, str]:
    result = invoke("sync-models-to-db", "--database-url", url, "--metadata", ref, *extra)
    return result.code, result.text


def test_creates_tables_and_columns_never_drops_or_alters(
    tmp_path: Path, database_url: str
) -> None:
    execute(database_url, *START)
    ref = write_models(tmp_path, MODELS.format(extra_column=""))
    code, output = sync(database_url, ref)
    assert code == 0, output
    assert output.splitlines() == [
        "Creating table: wards",
        "Table wards created successfully",
        "Creating table: hospital_settings",
        "Table hospital_settings created successfully",
        "Adding column: patients.preferences",
        "Column patients.preferences added successfully",
        "Adding column: patients.mood",
        "Column patients.mood added successfully",
        "Skipped (sync never drops or alters; write a migration with create-model-migration):",
        "  - Removed column: patients.fax (data loss if applied)",
        "  - Type changed: patients.name VARCHAR(50) -> TEXT",
        "Database synced with models",
    ]
    assert query(database_url, "SELECT name, preferences, fax FROM patients") == [
        ("Ann", {}, None)]
    execute(database_url, "INSERT INTO patients (name, mood) VALUES ('Bob', 'calm')",
            "INSERT INTO wards DEFAULT VALUES",
            "INSERT INTO hospital_settings (ward_id, key) VALUES (1, 'beds')")
    remaining = invoke("detect", "--database-url", database_url, "--metadata", ref).out
    assert remaining.splitlines()[1:] == [
        "- Removed column: patients.fax (data loss if applied)",
        "- Type changed: patients.name VARCHAR(50) -> TEXT",
    ]
    again = sync(database_url, ref)
    assert again[1].splitlines()[0].startswith("Skipped"), again


def test_not_null_column_without_default_on_a_table_with_rows_is_explained(
    tmp_path: Path, database_url: str
) -> None:
    execute(database_url, *START)
    before = snapshot(database_url)
    ref = write_models(tmp_path, MODELS.format(
        extra_column='sa.Column("ward_id", sa.Integer, nullable=False),'))
    code, output = sync(database_url, ref)
    assert code == 2, output
    assert ("cannot add NOT NULL column patients.ward_id without a server default: patients "
            "already has rows") in output
    assert "nothing was changed" in output and "Traceback" not in output
    assert snapshot(database_url) == before


def test_not_null_column_on_an_empty_table_is_added(tmp_path: Path, database_url: str) -> None:
    execute(database_url, START[1])
    ref = write_models(tmp_path, MODELS.format(
        extra_column='sa.Column("ward_id", sa.Integer, nullable=False),'))
    code, output = sync(database_url, ref)
    assert code == 0, output
    assert query(database_url, "SELECT is_nullable FROM information_schema.columns "
                               "WHERE table_name = 'patients' AND column_name = 'ward_id'") == [
        ("NO",)]


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_refused_outside_development(tmp_path: Path, database_url: str, environment: str) -> None:
    execute(database_url, *START)
    before = snapshot(database_url)
    ref = write_models(tmp_path, MODELS.format(extra_column=""))
    result = run("sync-models-to-db", "--env", environment, "--database-url", database_url,
                 "--metadata", ref, pythonpath=tmp_path)
    assert result.code == 2, result
    assert f"sync-models-to-db is for development databases only, and this is {environment}" \
        in result.err
    assert "create-model-migration" in result.err and "schemashift apply" in result.err
    assert snapshot(database_url) == before


def test_in_sync_database_prints_only_the_last_line(tmp_path: Path, database_url: str) -> None:
    ref = write_models(tmp_path, "t = sa.Table('t', metadata, sa.Column('id', sa.Integer, "
                                 "primary_key=True))\n")
    assert sync(database_url, ref) == (0, "Creating table: t\nTable t created successfully\n"
                                          "Database synced with models\n")
    assert sync(database_url, ref) == (0, "Database synced with models\n")
