"""detect-schema-changes / check against a real PostgreSQL: one test per change kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemashift import db, project
from schemashift.diff import comparison, prefilter
from tests.fixtures.models import execute, invoke, run, write_models

pytestmark = pytest.mark.integration

VERSION_TABLE = "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)"
BASE_SQL = (
    VERSION_TABLE,
    "CREATE TABLE wards (id serial CONSTRAINT pk_wards PRIMARY KEY, title text)",
    "CREATE TABLE patients (id serial CONSTRAINT pk_patients PRIMARY KEY, "
    "name varchar(50) NOT NULL, notes text DEFAULT 'none', ward_id integer)",
)

MODELS = """
wards = sa.Table(
    "wards", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("title", sa.Text){wards_extra},
)
patients = sa.Table(
    "patients", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", {name_type}, nullable={name_nullable}),
    sa.Column("notes", sa.Text, server_default={notes_default}{notes_extra}),
    sa.Column("ward_id", sa.Integer{ward_fk}),
    {patients_extra}
)
{extra}
"""

DEFAULTS = {
    "wards_extra": "", "name_type": "sa.String(50)", "name_nullable": "False",
    "notes_default": '"none"', "notes_extra": "", "ward_fk": "", "patients_extra": "",
    "extra": "",
}


def models(**changes: str) -> str:
    return MODELS.format(**{**DEFAULTS, **changes})


def setup(tmp_path: Path, database_url: str, *sql: str, **changes: str) -> list[str]:
    execute(database_url, *BASE_SQL, *sql)
    return ["--database-url", database_url, "--metadata", write_models(tmp_path, models(**changes))]


CASES: list[tuple[str, tuple[str, ...], dict[str, str], str]] = [
    ("table_added", (), {"extra": 'sa.Table("rooms", metadata, sa.Column("id", sa.Integer, '
                                  'primary_key=True))'},
     "- New table: rooms"),
    ("table_removed", ("CREATE TABLE old_stuff (id int)",), {},
     "- Removed table: old_stuff (data loss if applied)"),
    ("column_added", (), {"patients_extra": 'sa.Column("email", sa.Text),'},
     "- New column: patients.email"),
    ("column_removed", ("ALTER TABLE patients ADD COLUMN fax text",), {},
     "- Removed column: patients.fax (data loss if applied)"),
    ("type_changed", (), {"name_type": "sa.Text"},
     "- Type changed: patients.name VARCHAR(50) -> TEXT"),
    ("nullable_changed", (), {"name_nullable": "True"},
     "- Nullable changed: patients.name NOT NULL -> NULL"),
    ("server_default_changed", (), {"notes_default": '"n/a"'},
     "- Server default changed: patients.notes 'none'::text -> 'n/a'"),
    ("comment_changed", (), {"notes_extra": ', comment="free text"'},
     "- Comment changed: patients.notes none -> 'free text'"),
    ("table_comment_changed", (), {"wards_extra": ', comment="hospital wards"'},
     "- Table comment changed: wards none -> 'hospital wards'"),
    ("index_added", (), {"patients_extra": 'sa.Index("ix_patients_name", "name"),'},
     "- New index: ix_patients_name on patients (name)"),
    ("index_removed", ("CREATE INDEX ix_patients_notes ON patients (notes)",), {},
     "- Removed index: ix_patients_notes on patients (notes)"),
    ("unique_added", (), {"patients_extra": 'sa.UniqueConstraint("name"),'},
     "- New unique constraint: uq_patients_name on patients (name)"),
    ("unique_removed",
     ("ALTER TABLE patients ADD CONSTRAINT uq_patients_notes UNIQUE (notes)",), {},
     "- Removed unique constraint: uq_patients_notes on patients (notes)"),
    ("foreign_key_added", (), {"ward_fk": ', sa.ForeignKey("wards.id")'},
     "- New foreign key: fk_patients_ward_id_wards on patients (ward_id) -> wards (id)"),
    ("foreign_key_removed",
     ("ALTER TABLE patients ADD CONSTRAINT fk_old FOREIGN KEY (ward_id) REFERENCES wards (id)",),
     {}, "- Removed foreign key: fk_old on patients (ward_id) -> wards (id)"),
    ("enum_added", (),
     {"patients_extra": 'sa.Column("mood", sa.Enum("calm", "anxious", name="mood")),'},
     "- New enum: mood ('calm', 'anxious')"),
    ("enum_values_added",
     ("CREATE TYPE mood AS ENUM ('calm')", "ALTER TABLE patients ADD COLUMN mood mood"),
     {"patients_extra": 'sa.Column("mood", sa.Enum("calm", "anxious", name="mood")),'},
     "- Enum values added: mood ('anxious')"),
    ("enum_values_removed",
     ("CREATE TYPE mood AS ENUM ('calm', 'anxious', 'gone')",
      "ALTER TABLE patients ADD COLUMN mood mood"),
     {"patients_extra": 'sa.Column("mood", sa.Enum("calm", "anxious", name="mood")),'},
     "- Enum values removed: mood ('gone') (data loss if applied)"),
    ("enum_removed", ("CREATE TYPE leftover AS ENUM ('x')",), {},
     "- Removed enum: leftover ('x')"),
]


def test_models_matching_the_database_report_no_changes(tmp_path: Path, database_url: str) -> None:
    args = setup(tmp_path, database_url)
    result = invoke("detect-schema-changes", *args)
    assert (result.code, result.out) == (0, "No schema changes detected\n"), result
    data = json.loads(invoke("detect", "--json", *args).out)
    assert data == {"has_changes": False, "changes": [], "warnings": [], "suggestions": []}


@pytest.mark.parametrize(("kind", "sql", "changes", "line"), CASES, ids=[c[0] for c in CASES])
def test_each_change_kind_has_a_line_and_a_json_record(
    tmp_path: Path, database_url: str, kind: str, sql: tuple[str, ...], changes: dict[str, str],
    line: str,
) -> None:
    args = setup(tmp_path, database_url, *sql, **changes)
    text = invoke("detect-schema-changes", *args)
    assert text.code == 0, text
    lines = text.out.splitlines()
    assert lines[0] == "Detected schema changes:"
    assert line in lines, text
    data: dict[str, Any] = json.loads(invoke("detect-schema-changes", "--json", *args).out)
    records = [c for c in data["changes"] if c["kind"] == kind]
    assert len(records) == 1, data
    assert records[0]["description"] == line[2:]
    assert records[0]["data_loss"] == line.endswith("(data loss if applied)")
    assert set(records[0]) == {"kind", "table", "column", "name", "schema", "old", "new",
                               "data_loss", "description"}
    assert data["has_changes"] is True


def test_json_record_names_table_and_column(tmp_path: Path, database_url: str) -> None:
    args = setup(tmp_path, database_url, name_type="sa.Text")
    data = json.loads(invoke("detect", "--json", *args).out)
    assert data["changes"] == [{
        "kind": "type_changed", "table": "patients", "column": "name", "name": None,
        "schema": None, "old": "VARCHAR(50)", "new": "TEXT", "data_loss": False,
        "description": "Type changed: patients.name VARCHAR(50) -> TEXT",
    }]


def test_check_exits_1_on_drift_and_0_when_clean_through_the_console_script(
    tmp_path: Path, database_url: str
) -> None:
    args = setup(tmp_path, database_url, patients_extra='sa.Column("email", sa.Text),')
    drift = run("check", *args, pythonpath=tmp_path)
    assert drift.code == 1, drift
    assert drift.out.splitlines() == ["Detected schema changes:", "- New column: patients.email"]
    execute(database_url, "ALTER TABLE patients ADD COLUMN email text")
    clean = run("check", *args, pythonpath=tmp_path)
    assert (clean.code, clean.out) == (0, "No schema changes detected\n"), clean
    detect = run("detect-schema-changes", *args, pythonpath=tmp_path)
    assert detect.code == 0, detect


def test_alembic_version_table_is_not_a_removed_table(tmp_path: Path, database_url: str) -> None:
    args = setup(tmp_path, database_url, "INSERT INTO alembic_version VALUES ('abc123')")
    result = invoke("detect", *args)
    assert result.out == "No schema changes detected\n", result
    assert "alembic_version" not in invoke("detect", "--json", *args).out


def test_empty_database_reports_every_table_as_new(tmp_path: Path, database_url: str) -> None:
    ref = write_models(tmp_path, models())
    result = invoke("detect", "--database-url", database_url, "--metadata", ref)
    assert result.out.splitlines() == [
        "Detected schema changes:", "- New table: patients", "- New table: wards"], result


def test_renamed_column_is_suggested_as_a_rename(tmp_path: Path, database_url: str) -> None:
    args = setup(tmp_path, database_url, "ALTER TABLE patients ADD COLUMN fullname text",
                 patients_extra='sa.Column("full_name", sa.Text),')
    result = invoke("detect", *args)
    assert result.out.splitlines()[-2:] == [
        "Suggestions:",
        "- column patients.full_name looks like a rename of patients.fullname; "
        "use --rename patients.fullname:patients.full_name",
    ], result
    data = json.loads(invoke("detect", "--json", *args).out)
    assert data["suggestions"] == [result.out.splitlines()[-1][2:]]


def test_columns_of_different_types_are_not_suggested_as_renames(
    tmp_path: Path, database_url: str
) -> None:
    args = setup(tmp_path, database_url, "ALTER TABLE patients ADD COLUMN fullname integer",
                 patients_extra='sa.Column("full_name", sa.Text),')
    assert "Suggestions:" not in invoke("detect", *args).out


def test_renamed_table_is_suggested_as_a_rename(tmp_path: Path, database_url: str) -> None:
    args = setup(tmp_path, database_url, "CREATE TABLE room (id int PRIMARY KEY, label text)",
                 extra='sa.Table("rooms", metadata, sa.Column("id", sa.Integer, primary_key=True),'
                       ' sa.Column("label", sa.Text))')
    assert ("- table rooms looks like a rename of room; use --rename room:rooms"
            in invoke("detect", *args).out.splitlines())


def test_blind_spots_are_warnings_not_silence(tmp_path: Path, database_url: str) -> None:
    execute(database_url, *BASE_SQL,
            "ALTER TABLE patients ADD CONSTRAINT ck_db_only CHECK (length(name) > 0)",
            "CREATE SEQUENCE invoice_numbers")
    body = models(patients_extra='sa.CheckConstraint("ward_id > 0", name="ck_model_only"),'
                                 'sa.UniqueConstraint("notes", name=None),')
    header = "import sqlalchemy as sa\nmetadata = sa.MetaData()\n"
    ref = write_models(tmp_path, body, header=header)
    result = invoke("detect", "--database-url", database_url, "--metadata", ref)
    warnings = result.out.split("Warnings:\n", 1)[1].splitlines()
    assert any(w.startswith("- 1 unnamed constraint(s) in the models (patients: UNIQUE (notes))")
               and "naming_convention" in w for w in warnings), result
    assert any("CHECK constraint ck_model_only on patients is in the models but not in the "
               "database" in w for w in warnings), result
    assert any("CHECK constraint ck_db_only on patients is in the database but not in the "
               "models" in w for w in warnings), result
    assert any("sequence invoice_numbers is in the database but not in the models" in w
               for w in warnings), result
    data = json.loads(invoke("detect", "--json", "--database-url", database_url,
                             "--metadata", ref).out)
    assert len(data["warnings"]) == len(warnings)


def test_never_stamped_database_with_tables_is_named_in_a_warning(
    tmp_path: Path, database_url: str
) -> None:
    args = setup(tmp_path, database_url, "DROP TABLE alembic_version")
    result = invoke("detect", *args)
    assert result.code == 0
    assert result.out.startswith("No schema changes detected\nWarnings:\n- the database has 2 "
                                 "table(s) but no alembic_version table"), result
    assert "alembic stamp" in result.out


def _compare_both_ways(database_url: str, ref: str) -> tuple[dict[str, Any], dict[str, Any]]:
    metadata = project.load_metadata(ref)
    engine = db.make_engine(database_url)
    with engine.connect() as conn:
        fast = comparison.compare(conn, metadata).report.to_dict()
        full = comparison.compare(conn, metadata, shortcut=False).report.to_dict()
    engine.dispose()
    return fast, full


@pytest.mark.parametrize(("kind", "sql", "changes", "line"), CASES, ids=[c[0] for c in CASES])
def test_shortcut_for_unchanged_tables_never_hides_a_change(
    tmp_path: Path, database_url: str, kind: str, sql: tuple[str, ...], changes: dict[str, str],
    line: str,
) -> None:
    args = setup(tmp_path, database_url, *sql, **changes)
    fast, full = _compare_both_ways(database_url, args[3])
    assert fast == full
    assert line[2:] in [c["description"] for c in fast["changes"]]


def test_shortcut_skips_tables_that_match(tmp_path: Path, database_url: str) -> None:
    args = setup(tmp_path, database_url, patients_extra='sa.Index("ix_patients_name", "name"),',
                 name_nullable="False")
    execute(database_url, "CREATE INDEX ix_patients_name ON patients (name)")
    engine = db.make_engine(database_url)
    with engine.connect() as conn:
        skipped = prefilter.unchanged_tables(conn, project.load_metadata(args[3]))
    engine.dispose()
    assert skipped == {"patients", "wards"}
