"""Changes no lock-safe form makes in one step: generated, marked in the file and by `plan`.

Dropping or renaming a table or column and a type change that rewrites need an expand/contract
release; identity, stored generated and volatile-default columns fill every row of a table
with rows. Each is still written as Alembic writes it, with a comment that says so, keeps its
lint error (`apply` under `lint: block` stops before any change), and `plan` lists the
expand/contract ones. Also: names past PostgreSQL's 63 bytes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from schemashift.generate import contract_marks
from tests.fixtures.models import execute, invoke, query, snapshot, write_models
from tests.fixtures.postgres import PgServer
from tests.integration.test_generate import (
    create,
    created_path,
    created_paths,
    downgrade,
    versions,
)
from tests.integration.test_generate_safe import (
    V1,
    apply,
    invalid_indexes,
    models,
    populated,
    unvalidated_constraints,
)

pytestmark = pytest.mark.integration

BASE = V1.format(extra="", extra_column="")
WARDS, PATIENTS = BASE.split("patients = ")
CONTRACT = [  # (the rule, the changed models, create-model-migration's extra arguments, the op)
    ("drop-column", BASE.replace('    sa.Column("email", sa.Text),\n', ""), (),
     "op.drop_column('patients', 'email')"),
    ("change-column-type", BASE.replace('("ward_id", sa.Integer)', '("ward_id", sa.BigInteger)'),
     (), "op.alter_column('patients', 'ward_id',"),
    ("drop-table", "patients = " + PATIENTS, (), "op.drop_table('wards')"),
    ("rename-table", WARDS.replace("wards", "units") + "patients = " + PATIENTS,
     ("--rename", "wards:units"), "op.rename_table('wards', 'units')"),
    ("rename-column", BASE.replace('("name", sa.Text)', '("full_name", sa.Text)'),
     ("--rename", "patients.name:patients.full_name"),
     "op.alter_column('patients', 'name', new_column_name='full_name'"),
]


def marked_rule(source: str, op_line: str) -> str | None:
    """The rule named by the mark comment right above `op_line`, if any."""
    found = source.split("\n")
    index = next(i for i, line in enumerate(found) if line.strip() == op_line.strip()
                 or line.strip().startswith(op_line.strip()))
    comments = []
    for line in reversed(found[:index]):
        if not line.strip().startswith("#"):
            break
        comments.insert(0, line.strip().lstrip("# "))
    match = re.search(r"schemashift: [A-Z /-]+ \(lint rule ([\w-]+), kept\)", " ".join(comments))
    return match.group(1) if match else None


@pytest.mark.parametrize(("name", "body", "args", "op_line"), CONTRACT,
                         ids=[c[0] for c in CONTRACT])
def test_a_change_needing_expand_contract_is_generated_marked_and_still_blocked(
    tmp_path: Path, database_url: str, name: str, body: str, args: tuple[str, ...],
    op_line: str,
) -> None:
    migrations = tmp_path / "migrations"
    populated(database_url, migrations, tmp_path)
    before = snapshot(database_url)
    v2 = write_models(tmp_path / "v2", body)

    made = invoke("create-model-migration", "--database-url", database_url, "--metadata", v2,
                  "--migrations", str(migrations), "-m", name, "--no-split", *args)

    assert made.code == 0, made
    rule = name
    path = created_path(made.out)
    upgrade = path.read_text().split("def downgrade", 1)[0]
    assert op_line in upgrade, upgrade
    assert marked_rule(upgrade, op_line) == rule, upgrade
    assert contract_marks.MARK in upgrade
    assert f"have no lock-safe form in one step ({rule})" in made.err, made.err
    shown = invoke("plan", "--database-url", database_url, "--migrations", str(migrations))
    assert shown.code == 0, shown
    assert "\nNeeds expand/contract (1): no lock-safe form makes these in one step" in shown.out
    assert f"\n  {rule} [{path.name.split('_')[1]}" in shown.out, shown.out

    run = apply(database_url, migrations, v2, tmp_path / "v2")

    assert run.exit_code == 2, run
    assert run.result["reason"] == "LintBlocked" and f"[{rule}]" in run.result["message"], run
    assert snapshot(database_url) == before


def test_unsafe_writes_no_mark(tmp_path: Path, database_url: str) -> None:
    migrations = tmp_path / "migrations"
    populated(database_url, migrations, tmp_path)
    v2 = write_models(tmp_path / "v2", CONTRACT[0][1])
    made = invoke("create-model-migration", "--database-url", database_url, "--metadata", v2,
                  "--migrations", str(migrations), "-m", "plain", "--unsafe")
    assert made.code == 0, made
    assert "schemashift:" not in created_path(made.out).read_text()
    assert made.err == ""


REWRITING = [
    ("identity", 'sa.Column("n", sa.Integer, sa.Identity()),'),
    ("stored", 'sa.Column("n", sa.Integer, sa.Computed("id * 2", persisted=True)),'),
    ("computed", 'sa.Column("n", sa.Integer, sa.Computed("id * 2")),'),
    ("volatile-default", 'sa.Column("n", sa.Float, server_default=sa.text("random()")),'),
]


@pytest.mark.parametrize(("name", "column"), REWRITING, ids=[r[0] for r in REWRITING])
def test_a_column_that_fills_every_row_is_marked_where_the_server_rewrites(
    tmp_path: Path, server: PgServer, server_database_url: str, name: str, column: str
) -> None:
    """A Computed without persisted is VIRTUAL on PostgreSQL 18 (with SQLAlchemy 2.0.4x+): no
    rewrite, no mark, nothing blocked; on 15 it is STORED: marked and blocked like the rest."""
    url, migrations = server_database_url, tmp_path / "migrations"
    populated(url, migrations, tmp_path)
    v2 = models(tmp_path / "v2", extra_column="\n    " + column)
    code, output = create(url, migrations, v2, name)
    assert code == 0, output
    upgrade = created_path(output).read_text().split("def downgrade", 1)[0]
    rule = marked_rule(upgrade, "op.add_column('patients'")
    relfilenode = "SELECT relfilenode FROM pg_class WHERE relname = 'patients'"
    before = query(url, relfilenode)

    run = apply(url, migrations, v2, tmp_path / "v2")

    if rule is None:  # a virtual column: nothing to rewrite
        assert name == "computed" and server.major >= 18, upgrade
        assert run.exit_code == 0, run
        assert query(url, relfilenode) == before
        return
    assert contract_marks.NO_SAFE_FORM in upgrade
    assert run.exit_code == 2 and f"[{rule}]" in run.result["message"], run
    allowed = apply(url, migrations, v2, tmp_path / "v2", "--allow", rule)
    assert allowed.exit_code == 0, allowed
    assert query(url, relfilenode) != before  # the mark was right: the table was rewritten


LONG = """
wards_of_the_hospital = sa.Table(
    "wards_of_the_hospital", metadata, sa.Column("id", sa.Integer, primary_key=True))
patients_admitted = sa.Table(
    "patients_admitted", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("ward_identifier_for_the_assigned_wing", sa.Integer),
    sa.Column("email_address_as_given_at_admission", sa.Text),{extra}
)
"""
LONG_EXTRA = """
    sa.ForeignKeyConstraint(["ward_identifier_for_the_assigned_wing"],
                            ["wards_of_the_hospital.id"]),
    sa.Index(None, "ward_identifier_for_the_assigned_wing"),
    sa.UniqueConstraint("email_address_as_given_at_admission"),
    sa.CheckConstraint("ward_identifier_for_the_assigned_wing > 0",
                       name="ward_identifier_for_the_assigned_wing_is_positive"),"""


def test_names_a_naming_convention_makes_past_63_bytes_are_the_ones_sqlalchemy_sends(
    tmp_path: Path, database_url: str
) -> None:
    """SQLAlchemy cuts a convention's long name to 63 characters with a hash suffix: the safe
    steps' catalog checks and raw SQL (VALIDATE, USING INDEX) use that name too."""
    migrations = tmp_path / "migrations"
    v1 = write_models(tmp_path / "v1", LONG.format(extra=""))
    code, output = create(database_url, migrations, v1, "initial", "--apply")
    assert code == 0, output
    execute(database_url, "INSERT INTO wards_of_the_hospital VALUES (1), (2)",
            "INSERT INTO patients_admitted SELECT g, 1 + g % 2, 'p' || g "
            "FROM generate_series(1, 30) g")
    before = snapshot(database_url)
    v2 = write_models(tmp_path / "v2", LONG.format(extra=LONG_EXTRA))
    code, output = create(database_url, migrations, v2, "long names")
    assert code == 0, output

    run = apply(database_url, migrations, v2, tmp_path / "v2")

    assert run.exit_code == 0, run
    assert run.result["outcome"] == "Succeeded", run
    names = [str(n) for (n,) in query(
        database_url, "SELECT conname FROM pg_constraint WHERE conrelid = "
                      "'patients_admitted'::regclass AND contype IN ('f', 'u', 'c') "
                      "UNION ALL SELECT indexrelid::regclass::text FROM pg_index "
                      "WHERE indrelid = 'patients_admitted'::regclass ORDER BY 1")]
    assert len(names) == 6 and all(len(name.encode()) <= 63 for name in names), names
    # the foreign key's and the check's names were cut (VALIDATE names them in raw SQL)
    assert sum(bool(re.search(r"_[0-9a-f]{4}$", name)) for name in names) == 2, names
    assert invalid_indexes(database_url) == [] and unvalidated_constraints(database_url) == []
    assert invoke("check", "--database-url", database_url, "--metadata", v2).code == 0
    downgrade(database_url, migrations)
    assert snapshot(database_url) == before


def test_an_explicit_name_past_63_characters_is_a_clear_error_and_writes_nothing(
    tmp_path: Path, database_url: str
) -> None:
    migrations = tmp_path / "migrations"
    populated(database_url, migrations, tmp_path)
    files = versions(migrations)
    v2 = models(tmp_path / "v2", 'sa.Index("ix_patients_" + "n" * 60, "name"),')
    code, output = create(database_url, migrations, v2, "long")
    assert code == 2, output
    assert "the models give a name PostgreSQL cannot keep" in output
    assert "give it a name of at most 63 bytes" in output and "Traceback" not in output
    assert versions(migrations) == files


def test_split_by_default_the_contract_revision_is_the_answer_and_carries_no_mark(
    tmp_path: Path, database_url: str
) -> None:
    """Without --no-split a drop goes into a contract revision (issue 13), which is the
    second step the mark asks for: it is not marked."""
    migrations = tmp_path / "migrations"
    populated(database_url, migrations, tmp_path)
    v2 = write_models(tmp_path / "v2", CONTRACT[0][1])
    made = invoke("create-model-migration", "--database-url", database_url, "--metadata", v2,
                  "--migrations", str(migrations), "-m", "drop email")
    assert made.code == 0, made
    [contract] = created_paths(made.out)  # nothing to expand: the column is nullable
    assert contract.read_text().rstrip().endswith('schemashift = {"phase": "contract"}')
    assert "op.drop_column('patients', 'email')" in contract.read_text()
    assert contract_marks.MARK not in contract.read_text()
    assert "no lock-safe form" not in made.err
