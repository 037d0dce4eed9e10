"""create-model-migration splits a model change into an expand and a contract revision, and
`apply --phase` runs them around a rollout on real PostgreSQL: the old release's SQL keeps
working during the expand, the contract finishes the change, and each half downgrades."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from alembic import command

from schemashift import scripts
from tests.fixtures.models import execute, invoke, query, snapshot, write_models
from tests.fixtures.runner_cli import CliRun, columns, revision, run_apply
from tests.integration.test_generate import V1 as EVERY_KIND_V1
from tests.integration.test_generate import V2 as EVERY_KIND_V2
from tests.integration.test_generate import create, created_paths, downgrade

pytestmark = pytest.mark.integration

V1 = """
patients = sa.Table(
    "patients", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("fullname", sa.Text),
    sa.Column("fax", sa.Text, nullable=False),
)
"""
ROWS = 30


def populated(url: str, migrations: Path, tmp_path: Path, body: str = V1) -> str:
    ref = write_models(tmp_path / "v1", body)
    code, output = create(url, migrations, ref, "initial", "--apply")
    assert code == 0, output
    execute(url, f"INSERT INTO patients (fullname, fax) SELECT 'p' || g, 'fax' || g "
                 f"FROM generate_series(1, {ROWS}) g")
    return ref


def revision_id(path: Path) -> str:
    return str(re.search(r"^revision\b[^=]*= '(\w+)'", path.read_text(), re.MULTILINE)[1])


def apply(url: str, migrations: Path, models_dir: Path, *args: str) -> CliRun:
    """`schemashift apply` under the default lint (block), the models importable."""
    paths = [str(models_dir), os.environ.get("PYTHONPATH", "")]
    return run_apply(url, migrations, *args,
                     env={"PYTHONPATH": os.pathsep.join(p for p in paths if p)})


def split_change(url: str, migrations: Path, tmp_path: Path, body: str, message: str,
                 *extra: str) -> tuple[str, str]:
    ref = write_models(tmp_path / "v2", body)
    code, output = create(url, migrations, ref, message, *extra)
    assert code == 0, output
    expand, contract = created_paths(output)
    assert expand.read_text().rstrip().endswith('schemashift = {"phase": "expand"}'), expand
    assert contract.read_text().rstrip().endswith('schemashift = {"phase": "contract"}')
    assert re.search(rf"^down_revision\b[^=]*= '{revision_id(expand)}'$", contract.read_text(),
                     re.MULTILINE)  # one linear chain
    return revision_id(expand), revision_id(contract)


def test_drop_column_expand_keeps_old_code_working_and_contract_drops_it(
        database_url: str, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    populated(database_url, migrations, tmp_path)
    before = snapshot(database_url)
    expand, contract = split_change(database_url, migrations, tmp_path,
                                    V1.replace('sa.Column("fax", sa.Text, nullable=False),', ''),
                                    "drop fax")

    run = apply(database_url, migrations, tmp_path / "v2", "--phase", "expand")

    assert run.exit_code == 0, run
    assert run.result["pendingContract"] == [contract]
    assert revision(database_url) == expand
    assert columns(database_url, "patients") == ["id", "fullname", "fax"]
    # The old release reads and writes fax; the new one leaves it out.
    execute(database_url, "INSERT INTO patients (fullname, fax) VALUES ('old code', '555')",
            "INSERT INTO patients (fullname) VALUES ('new code')")
    assert query(database_url, "SELECT fullname, fax FROM patients WHERE id > 30 ORDER BY id") \
        == [("old code", "555"), ("new code", None)]
    execute(database_url, "DELETE FROM patients WHERE fullname = 'new code'")

    downgrade(database_url, migrations)  # the expand's downgrade: the schema as before
    assert snapshot(database_url) == before
    assert query(database_url, "SELECT count(*), count(fax) FROM patients") == [(ROWS + 1,
                                                                                ROWS + 1)]
    assert apply(database_url, migrations, tmp_path / "v2", "--phase", "expand").exit_code == 0
    expanded = snapshot(database_url)

    contract_run = apply(database_url, migrations, tmp_path / "v2", "--phase", "contract")

    assert contract_run.exit_code == 0, contract_run
    assert contract_run.result["pendingContract"] == []
    assert revision(database_url) == contract
    assert columns(database_url, "patients") == ["id", "fullname"]
    lint = contract_run.of("plan")[0]["plan"]["lint"]
    assert [(f["rule"], f["severity"]) for f in lint] == [("drop-column", "notice")]

    downgrade(database_url, migrations)  # the contract's: the column is back, its values not
    assert snapshot(database_url) == expanded
    assert query(database_url, "SELECT count(*), count(fax) FROM patients") == [(ROWS + 1, 0)]


def test_rename_keeps_both_names_in_step_during_the_expand(
        database_url: str, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    populated(database_url, migrations, tmp_path)
    initial = revision(database_url)
    split_change(
        database_url, migrations, tmp_path, V1.replace('"fullname"', '"name"'), "rename",
        "--rename", "patients.fullname:patients.name")

    run = apply(database_url, migrations, tmp_path / "v2", "--phase", "expand")

    assert run.exit_code == 0, run
    assert query(database_url, "SELECT count(*) FROM patients WHERE name = fullname") == [(ROWS,)]
    execute(database_url,
            "INSERT INTO patients (fullname, fax) VALUES ('written by old code', 'f')",
            "INSERT INTO patients (name, fax) VALUES ('written by new code', 'f')",
            "UPDATE patients SET fullname = 'renamed by old code' WHERE id = 1")
    assert query(database_url, "SELECT name, fullname FROM patients WHERE id IN (1, 31, 32) "
                               "ORDER BY id") == [
        ("renamed by old code", "renamed by old code"),
        ("written by old code", "written by old code"),
        ("written by new code", "written by new code")]

    contract_run = apply(database_url, migrations, tmp_path / "v2", "--phase", "contract")

    assert contract_run.exit_code == 0, contract_run
    assert columns(database_url, "patients") == ["id", "fax", "name"]
    assert query(database_url, "SELECT count(name) FROM patients") == [(ROWS + 2,)]
    execute(database_url, "INSERT INTO patients (name, fax) VALUES ('after', 'f')")

    downgrade(database_url, migrations)  # contract undone: the old column, filled back
    assert query(database_url, "SELECT count(*) FROM patients WHERE fullname = name") == [
        (ROWS + 3,)]
    downgrade(database_url, migrations)  # expand undone: only the old name, with every value
    assert columns(database_url, "patients") == ["id", "fax", "fullname"]
    assert query(database_url, "SELECT fullname FROM patients WHERE id = 1") == [
        ("renamed by old code",)]
    assert query(database_url, "SELECT count(*) FROM patients WHERE fullname IS NOT NULL") == [
        (ROWS + 3,)]
    assert query(database_url, "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal") == [(0,)]
    assert revision(database_url) == initial


def test_plain_alembic_applies_both_halves(database_url: str, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    populated(database_url, migrations, tmp_path)
    _, contract = split_change(database_url, migrations, tmp_path,
                               V1.replace('sa.Column("fax", sa.Text, nullable=False),', ''),
                               "drop fax")

    command.upgrade(scripts.alembic_config(migrations, database_url), "head")

    assert revision(database_url) == contract
    assert columns(database_url, "patients") == ["id", "fullname"]


def test_every_kind_split_applies_phase_by_phase_and_downgrades_to_before(
        database_url: str, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    v1 = write_models(tmp_path / "v1", EVERY_KIND_V1)
    assert create(database_url, migrations, v1, "initial", "--apply")[0] == 0
    execute(database_url, "INSERT INTO wards (title) VALUES ('A')",
            "INSERT INTO patients (name, ward_id, mood) VALUES ('Ann', 1, 'calm')")
    before = snapshot(database_url)
    v2 = write_models(tmp_path / "v2", EVERY_KIND_V2)
    code, output = create(database_url, migrations, v2, "every kind")
    assert code == 0, output
    expand, contract = created_paths(output)

    expanded = run_apply(database_url, migrations, "--phase", "expand")
    contracted = run_apply(database_url, migrations, "--phase", "contract")

    assert (expanded.exit_code, contracted.exit_code) == (0, 0), (expanded, contracted)
    assert (applied_revisions(expanded), applied_revisions(contracted)) == (
        [revision_id(expand)], [revision_id(contract)])
    assert invoke("check", "--database-url", database_url, "--metadata", v2).code == 0
    assert query(database_url, "SELECT name, mood::text FROM patients") == [("Ann", "calm")]
    downgrade(database_url, migrations, "-2")
    assert snapshot(database_url) == before
    assert query(database_url, "SELECT name, mood::text FROM patients") == [("Ann", "calm")]


def applied_revisions(run: CliRun) -> list[str]:
    return [s["revision"] for s in run.result["stages"] if s["state"] == "Succeeded"]


def test_new_not_null_column_is_filled_by_both_halves(database_url: str, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    populated(database_url, migrations, tmp_path)
    body = V1.replace('sa.Column("fax", sa.Text, nullable=False),',
                      'sa.Column("fax", sa.Text, nullable=False),\n'
                      '    sa.Column("code", sa.Text, nullable=False),')
    split_change(database_url, migrations, tmp_path, body, "code",
                 "--backfill", "patients.code='P' || id")

    expand = apply(database_url, migrations, tmp_path / "v2", "--phase", "expand")

    assert expand.exit_code == 0, expand
    assert query(database_url, "SELECT count(*) FROM patients WHERE code = 'P' || id") == [
        (ROWS,)]
    execute(database_url, "INSERT INTO patients (fullname, fax) VALUES ('old code', 'f')")

    contract = apply(database_url, migrations, tmp_path / "v2", "--phase", "contract")

    assert contract.exit_code == 0, contract
    assert query(database_url, "SELECT count(*) FROM patients WHERE code = 'P' || id") == [
        (ROWS + 1,)]
    assert query(database_url, "SELECT is_nullable FROM information_schema.columns WHERE "
                               "table_name = 'patients' AND column_name = 'code'") == [("NO",)]
    downgrade(database_url, migrations, "-2")
    assert columns(database_url, "patients") == ["id", "fullname", "fax"]


def test_rename_of_an_indexed_column_builds_the_new_index_after_the_new_column(
        database_url: str, tmp_path: Path) -> None:
    """The index the models give the new name is built concurrently on the column the expand
    adds, so it must come after that column exists (seen in docs/workflow.md section 7)."""
    migrations = tmp_path / "migrations"
    indexed = V1.replace('sa.Column("fullname", sa.Text),', 'sa.Column("fullname", sa.Text),\n'
                         '    sa.Index("ix_patients_fullname", "fullname"),')
    populated(database_url, migrations, tmp_path, indexed)
    renamed = indexed.replace('"fullname"', '"name"').replace("ix_patients_fullname",
                                                              "ix_patients_name")
    expand, contract = split_change(database_url, migrations, tmp_path, renamed, "rename",
                                    "--rename", "patients.fullname:patients.name")

    run = apply(database_url, migrations, tmp_path / "v2", "--phase", "expand")

    assert run.exit_code == 0, run
    assert revision(database_url) == expand
    assert query(database_url, "SELECT indisvalid FROM pg_index "
                               "WHERE indexrelid = 'ix_patients_name'::regclass") == [(True,)]
    contract_run = apply(database_url, migrations, tmp_path / "v2", "--phase", "contract")
    assert contract_run.exit_code == 0, contract_run
    assert revision(database_url) == contract
    assert columns(database_url, "patients") == ["id", "fax", "name"]


def test_dropping_the_default_of_a_not_null_column_waits_for_the_contract(
        database_url: str, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    defaulted = V1.replace('sa.Column("fax", sa.Text, nullable=False),',
                           'sa.Column("fax", sa.Text, nullable=False, server_default="none"),')
    populated(database_url, migrations, tmp_path, defaulted)
    body = V1.replace('sa.Column("fax", sa.Text, nullable=False),',
                      'sa.Column("fax", sa.Text, nullable=False),\n'
                      '    sa.Column("email", sa.Text),')
    expand_id, contract_id = split_change(database_url, migrations, tmp_path, body,
                                          "email, no fax default")
    old_code_insert = "INSERT INTO patients (fullname) VALUES ('old code')"

    expand = apply(database_url, migrations, tmp_path / "v2", "--phase", "expand")

    assert expand.exit_code == 0, expand
    assert revision(database_url) == expand_id
    execute(database_url, old_code_insert)  # the default still fills fax for the old release

    contract = apply(database_url, migrations, tmp_path / "v2", "--phase", "contract")

    assert contract.exit_code == 0, contract
    assert revision(database_url) == contract_id
    assert query(database_url, "SELECT column_default FROM information_schema.columns WHERE "
                               "table_name = 'patients' AND column_name = 'fax'") == [(None,)]
    assert query(database_url, "SELECT count(*) FROM patients WHERE fax = 'none'") == [(1,)]
    downgrade(database_url, migrations, "-2")
    execute(database_url, old_code_insert)  # the default is back
    assert columns(database_url, "patients") == ["id", "fullname", "fax"]
