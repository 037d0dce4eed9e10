"""create-model-migration on a real PostgreSQL: real upgrade/downgrade, renames, refusals."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.migration import MigrationContext
from alembic.operations import Operations

from schemashift import db, scripts
from tests.fixtures.models import execute, invoke, query, run, snapshot, write_models

pytestmark = pytest.mark.integration

V1 = """
wards = sa.Table(
    "wards", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("title", sa.Text),
)
patients = sa.Table(
    "patients", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(50), nullable=False),
    sa.Column("notes", sa.Text, server_default="none"),
    sa.Column("ward_id", sa.Integer),
    sa.Column("mood", sa.Enum("calm", "anxious", name="mood")),
    sa.Column("fax", sa.Text),
    sa.Index("ix_patients_notes", "notes"),
)
legacy = sa.Table("legacy", metadata, sa.Column("id", sa.Integer, primary_key=True))
"""

# Every kind autogenerate sees, plus enum labels and a new enum shared by two tables.
V2 = """
status = sa.Enum("admitted", "discharged", name="status")
wards = sa.Table(
    "wards", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("title", sa.Text, comment="name on the door"),
    comment="hospital wards",
)
patients = sa.Table(
    "patients", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("notes", sa.Text, server_default="n/a", unique=True),
    sa.Column("ward_id", sa.Integer, sa.ForeignKey("wards.id")),
    sa.Column("mood", sa.Enum("calm", "anxious", "angry", name="mood")),
    sa.Column("status", status),
    sa.Column("email", sa.String(320)),
    sa.Index("ix_patients_name", "name"),
)
rooms = sa.Table(
    "rooms", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("ward_id", sa.Integer, sa.ForeignKey("wards.id"), nullable=False),
    sa.Column("status", status),
)
"""

FILE_NAME = re.compile(r"^(\d{14})_([0-9a-f]{8})_(\w+)\.py$")


def create(url: str, migrations: Path, ref: str, message: str, *extra: str) -> tuple[int, str]:
    result = invoke("create-model-migration", "--database-url", url, "--metadata", ref,
                    "--migrations", str(migrations), "-m", message, *extra)
    return result.code, result.text


def created_path(output: str) -> Path:
    match = re.search(r"^Created migration file: (.+)$", output, re.MULTILINE)
    assert match, output
    return Path(match.group(1))


def created_paths(output: str) -> list[Path]:
    """Every file written (an expand and a contract revision, by default)."""
    return [Path(line.split(": ", 1)[1]) for line in output.splitlines()
            if line.startswith("Created migration file: ")]


def detect(url: str, ref: str) -> str:
    return invoke("detect", "--database-url", url, "--metadata", ref).out


def downgrade(url: str, migrations: Path, target: str = "-1") -> None:
    command.downgrade(scripts.alembic_config(migrations, url), target)


def versions(migrations: Path) -> list[str]:
    return sorted(p.name for p in (migrations / "versions").glob("*.py"))


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    return tmp_path / "migrations"


def initial(url: str, migrations: Path, tmp_path: Path, body: str = V1) -> str:
    ref = write_models(tmp_path / "v1", body)
    code, output = create(url, migrations, ref, "initial", "--apply")
    assert code == 0, output
    return ref


def test_round_trip_of_every_kind_upgrades_clean_and_downgrades_to_before(
    tmp_path: Path, database_url: str, migrations: Path
) -> None:
    v1 = initial(database_url, migrations, tmp_path)
    assert detect(database_url, v1) == "No schema changes detected\n"
    execute(database_url, "INSERT INTO wards (title) VALUES ('A')",
            "INSERT INTO patients (name, ward_id, mood) VALUES ('Ann', 1, 'calm')")
    before = snapshot(database_url)
    v2 = write_models(tmp_path / "v2", V2)
    code, output = create(database_url, migrations, v2, "every kind", "--apply", "--no-split")
    assert code == 0, output
    assert detect(database_url, v2) == "No schema changes detected\n"
    assert query(database_url, "SELECT name, mood::text FROM patients") == [("Ann", "calm")]
    downgrade(database_url, migrations)
    assert snapshot(database_url) == before
    assert detect(database_url, v1) == "No schema changes detected\n"
    assert query(database_url, "SELECT name, mood::text FROM patients") == [("Ann", "calm")]


def test_removed_enum_labels_round_trip(
    tmp_path: Path, database_url: str, migrations: Path
) -> None:
    body = 'sa.Table("t", metadata, sa.Column("id", sa.Integer, primary_key=True), ' \
           'sa.Column("m", sa.Enum({labels}, name="mood")))'
    initial(database_url, migrations, tmp_path, body.format(labels='"a", "b", "c"'))
    execute(database_url, "INSERT INTO t (m) VALUES ('a'), ('b')")
    before = snapshot(database_url)
    v2 = write_models(tmp_path / "v2", body.format(labels='"b", "a"'))
    code, output = create(database_url, migrations, v2, "drop c", "--apply")
    assert code == 0, output
    assert query(database_url, "SELECT enum_range(NULL::mood)::text") == [("{b,a}",)]
    downgrade(database_url, migrations)
    assert snapshot(database_url) == before
    assert query(database_url, "SELECT m::text FROM t ORDER BY id") == [("a",), ("b",)]


def test_revision_file_is_named_chained_and_has_both_directions(
    tmp_path: Path, database_url: str, migrations: Path
) -> None:
    initial(database_url, migrations, tmp_path)
    head = scripts.script_directory(scripts.alembic_config(migrations)).get_current_head()
    v1_plus = V1.replace('sa.Column("fax", sa.Text),',
                         'sa.Column("fax", sa.Text), sa.Column("email", sa.Text),')
    ref = write_models(tmp_path / "v2", v1_plus)
    result = run("create-model-migration", "--database-url", database_url, "--metadata", ref,
                 "--migrations", str(migrations), "-m", "Add e-mail!", pythonpath=tmp_path / "v2")
    assert result.code == 0, result
    path = created_path(result.out)
    assert result.out == f"Created migration file: {path}\n"
    match = FILE_NAME.match(path.name)
    assert match and match.group(3) == "add_e_mail", path.name
    source = path.read_text()
    assert f"revision: str = '{match.group(2)}" in source
    assert f"down_revision: str | Sequence[str] | None = '{head}'" in source
    upgrade, downgrade_ = source.split("def downgrade", 1)
    assert "op.add_column('patients', sa.Column('email', sa.Text()" in upgrade
    assert "op.drop_column('patients', 'email')" in downgrade_
    assert "database_url" not in source and "app-Secr3t-pw" not in source
    # Not applied: the database is still at the previous head.
    assert "New column: patients.email" in detect(database_url, ref)


def test_rename_column_becomes_alter_column_and_keeps_the_data(
    tmp_path: Path, database_url: str, migrations: Path
) -> None:
    initial(database_url, migrations, tmp_path)
    execute(database_url, "INSERT INTO patients (name, fax) VALUES ('Ann', '555-1')")
    v2 = write_models(tmp_path / "v2", V1.replace('"fax"', '"fax_number"'))
    assert "use --rename patients.fax:patients.fax_number" in detect(database_url, v2)
    code, output = create(database_url, migrations, v2, "rename fax", "--apply", "--no-split",
                          "--rename", "patients.fax:patients.fax_number")
    assert code == 0, output
    source = created_path(output).read_text()
    upgrade, downgrade_ = source.split("def downgrade", 1)
    assert "new_column_name='fax_number'" in upgrade and "drop_column" not in upgrade
    assert "new_column_name='fax'" in downgrade_ and "add_column" not in downgrade_
    assert query(database_url, "SELECT fax_number FROM patients") == [("555-1",)]
    assert detect(database_url, v2) == "No schema changes detected\n"
    downgrade(database_url, migrations)
    assert query(database_url, "SELECT fax FROM patients") == [("555-1",)]


def test_rename_table_keeps_the_data(
    tmp_path: Path, database_url: str, migrations: Path
) -> None:
    initial(database_url, migrations, tmp_path)
    execute(database_url, "INSERT INTO legacy (id) VALUES (7)")
    v2 = write_models(tmp_path / "v2", V1.replace('"legacy"', '"archive"'))
    code, output = create(database_url, migrations, v2, "rename legacy", "--apply",
                          "--rename", "legacy:archive")
    assert code == 0, output
    assert "op.rename_table('legacy', 'archive')" in created_path(output).read_text()
    assert query(database_url, "SELECT id FROM archive") == [(7,)]
    assert detect(database_url, v2) == "No schema changes detected\n"
    downgrade(database_url, migrations)
    assert query(database_url, "SELECT id FROM legacy") == [(7,)]


@pytest.mark.parametrize("rename", ["patients.nope:patients.fax_number", "fax:fax_number",
                                    "patients.fax", "legacy:patients.x"])
def test_rename_that_matches_nothing_is_refused(
    tmp_path: Path, database_url: str, migrations: Path, rename: str
) -> None:
    initial(database_url, migrations, tmp_path)
    v2 = write_models(tmp_path / "v2", V1.replace('"fax"', '"fax_number"'))
    files = versions(migrations)
    code, output = create(database_url, migrations, v2, "rename", "--rename", rename)
    assert code == 2, output
    assert "--rename" in output and "Traceback" not in output
    assert versions(migrations) == files


def test_nothing_changed_writes_no_file(
    tmp_path: Path, database_url: str, migrations: Path
) -> None:
    ref = initial(database_url, migrations, tmp_path)
    files = versions(migrations)
    code, output = create(database_url, migrations, ref, "nothing")
    assert code == 2, output
    assert "error: no schema changes detected" in output and "no empty revision" in output
    assert versions(migrations) == files


def test_database_behind_head_is_refused(
    tmp_path: Path, database_url: str, migrations: Path
) -> None:
    initial(database_url, migrations, tmp_path)
    v2 = write_models(tmp_path / "v2", V2)
    assert create(database_url, migrations, v2, "second", "--apply")[0] == 0
    downgrade(database_url, migrations)
    before, files = snapshot(database_url), versions(migrations)
    code, output = create(database_url, migrations, v2, "third")
    assert code == 2, output
    assert "not at the history's head" in output and "upgrade the database" in output
    assert (snapshot(database_url), versions(migrations)) == (before, files)


def test_apply_failure_leaves_the_database_at_the_previous_revision(
    tmp_path: Path, database_url: str, migrations: Path
) -> None:
    initial(database_url, migrations, tmp_path)
    execute(database_url, "INSERT INTO patients (name, notes) VALUES ('a', 'x'), ('b', 'x')")
    before = snapshot(database_url)
    v2 = write_models(tmp_path / "v2", V1.replace('server_default="none"',
                                                  'server_default="none", unique=True'))
    code, output = create(database_url, migrations, v2, "unique notes", "--apply")
    assert code == 1, output
    assert "upgrading to it failed" in output and "could not create unique index" in output
    assert "app-Secr3t-pw" not in output
    assert snapshot(database_url) == before


def test_missing_script_directory_is_created_with_schemashift_env(
    tmp_path: Path, database_url: str
) -> None:
    migrations = tmp_path / "new" / "migrations"
    initial(database_url, migrations, tmp_path)
    assert sorted(p.name for p in migrations.iterdir()) == ["env.py", "script.py.mako", "versions"]
    assert 'config.attributes.get("connection")' in (migrations / "env.py").read_text()
    assert "transaction_per_migration" in (migrations / "env.py").read_text()
    assert len(versions(migrations)) == 1


def test_existing_env_py_and_alembic_ini_are_honoured(
    tmp_path: Path, database_url: str
) -> None:
    project = tmp_path / "project"
    migrations = project / "migrations"
    initial(database_url, migrations, tmp_path)
    env_py = migrations / "env.py"
    own_env = env_py.read_text().replace('"""Alembic environment written by schemashift',
                                         '"""Our own env.py, kept as is')
    env_py.write_text(own_env)
    (project / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/migrations\npath_separator = os\n"
        "version_locations = %(here)s/migrations/more_versions\n"
    )
    (migrations / "more_versions").mkdir()
    for path in (migrations / "versions").glob("*.py"):
        path.rename(migrations / "more_versions" / path.name)
    v2 = write_models(tmp_path / "v2", V2)
    code, output = create(database_url, migrations, v2, "second", "--apply")
    assert code == 0, output
    assert created_path(output).parent == migrations / "more_versions"
    assert env_py.read_text() == own_env
    assert detect(database_url, v2) == "No schema changes detected\n"


def test_script_directory_without_a_template_is_rendered_with_ours(
    tmp_path: Path, database_url: str, migrations: Path
) -> None:
    initial(database_url, migrations, tmp_path)
    (migrations / "script.py.mako").unlink()  # as in many real projects and package histories
    v2 = write_models(tmp_path / "v2", V2)
    code, output = create(database_url, migrations, v2, "second", "--apply")
    assert code == 0, output
    path = created_path(output)
    assert path.parent == migrations / "versions"
    assert "def upgrade() -> None:" in path.read_text()
    assert "def downgrade() -> None:" in path.read_text()
    assert sorted(p.name for p in migrations.iterdir() if p.name != "__pycache__") == [
        "env.py", "versions"]
    assert detect(database_url, v2) == "No schema changes detected\n"
    downgrade(database_url, migrations)
    assert detect(database_url, v2) != "No schema changes detected\n"


# No naming convention: PostgreSQL names the constraints itself, the models do not know the names.
PLAIN = "import sqlalchemy as sa\nmetadata = sa.MetaData()\n"
TABLE_T = """
t = sa.Table("t", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("x", sa.Text),
             sa.Column("code", sa.Text){extra})
"""
W_TABLE = """
w = sa.Table("w", metadata, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("code", sa.Text{unique}))
"""


def refused(url: str, migrations: Path, ref: str) -> str:
    files, before = versions(migrations) if migrations.exists() else None, snapshot(url)
    code, output = create(url, migrations, ref, "second", "--apply")
    assert code == 2, output
    assert "would fail when it runs" in output and "not written" in output
    assert "Traceback" not in output
    assert (versions(migrations) if migrations.exists() else None, snapshot(url)) == (files, before)
    return output


def test_index_without_columns_is_refused_and_nothing_is_written(
    tmp_path: Path, database_url: str, migrations: Path
) -> None:
    ref = write_models(tmp_path / "v1", TABLE_T.format(extra=', sa.Index("ix_nothing")'))
    output = refused(database_url, migrations, ref)
    assert "upgrade: create_index('ix_nothing', 't', [])" in output
    assert "needs at least one column" in output
    assert "give the model's Index('ix_nothing')" in output
    assert not migrations.exists()


def test_unnamed_constraint_is_refused_naming_the_cause(
    tmp_path: Path, database_url: str, migrations: Path
) -> None:
    initial(database_url, migrations, tmp_path,
            body=TABLE_T.format(extra=""))
    ref = write_models(tmp_path / "v2", TABLE_T.format(extra=', sa.UniqueConstraint("x")'),
                       header=PLAIN)
    output = refused(database_url, migrations, ref)
    assert "downgrade: drop_constraint(None, 't', type_='unique')" in output
    assert "the unique constraint on t (x) has no name in the models" in output
    assert "give the constraint a name (name=...) or set a naming_convention" in output
    named = write_models(tmp_path / "v3", TABLE_T.format(
        extra=', sa.UniqueConstraint("x", name="uq_t_x")'), header=PLAIN)
    code, output = create(database_url, migrations, named, "named", "--apply")
    assert code == 0, output
    downgrade(database_url, migrations)


@pytest.mark.parametrize("header", [PLAIN, None], ids=["unnamed", "naming-convention"])
def test_foreign_key_onto_columns_without_a_unique_key_is_refused(
    tmp_path: Path, database_url: str, migrations: Path, header: str | None
) -> None:
    initial(database_url, migrations, tmp_path, body=TABLE_T.format(extra=""))
    fk = ', sa.ForeignKeyConstraint(["code"], ["w.code"], name="fk_t_code")'
    body = W_TABLE.format(unique="") + TABLE_T.format(extra=fk)
    ref = write_models(tmp_path / "v2", body, **({"header": header} if header else {}))
    output = refused(database_url, migrations, ref)
    assert "upgrade: foreign key t → w (code)" in output
    assert "w (code) is neither its primary key nor covered by a unique constraint" in output
    assert "add sa.UniqueConstraint('code') to w" in output
    unique = write_models(tmp_path / "v3", W_TABLE.format(unique=", unique=True")
                          + TABLE_T.format(extra=fk), **({"header": header} if header else {}))
    code, output = create(database_url, migrations, unique, "unique", "--apply")
    assert code == 0, output


@pytest.mark.parametrize(
    ("attempt", "error", "message"),
    [(lambda op: op.create_index("ix_nothing", "t", []), sa.exc.ProgrammingError,
      "syntax error"),
     (lambda op: op.create_foreign_key(None, "t", "w", ["code"], ["code"]),
      sa.exc.ProgrammingError, "no unique constraint matching given keys"),
     (lambda op: op.drop_constraint(None, "t", type_="unique"), sa.exc.CompileError,
      "it has no name")],
    ids=["index-without-columns", "foreign-key-onto-non-unique", "drop-unnamed-constraint"],
)
def test_what_is_refused_fails_when_run(
    database_url: str, attempt: Callable[[Operations], object], error: type[Exception],
    message: str,
) -> None:
    """The refusals are not opinions: each op, run as Alembic runs it, fails on PostgreSQL."""
    execute(database_url, "CREATE TABLE w (id int PRIMARY KEY, code text)",
            "CREATE TABLE t (id int PRIMARY KEY, code text)")
    engine = db.make_engine(database_url)
    try:
        with engine.connect() as conn, pytest.raises(error, match=message):
            attempt(Operations(MigrationContext.configure(conn)))
    finally:
        engine.dispose()


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hms"


def test_example_history_builds_exactly_the_example_models(database_url: str) -> None:
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    config = scripts.alembic_config(EXAMPLE / "migrations", database_url)
    command.upgrade(config, "head")
    assert detect(database_url, "hms.models:Base") == "No schema changes detected\n"
    command.downgrade(config, "base")
    assert snapshot(database_url)["tables"] == {}


def test_schemashift_env_py_renders_sql_offline(
    tmp_path: Path, database_url: str, migrations: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    initial(database_url, migrations, tmp_path)
    capsys.readouterr()
    command.upgrade(scripts.alembic_config(migrations, database_url), "base:head", sql=True)
    sql = capsys.readouterr().out
    assert "CREATE TABLE patients" in sql and "CREATE TYPE mood AS ENUM ('calm', 'anxious')" in sql
