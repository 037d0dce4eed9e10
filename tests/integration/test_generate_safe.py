"""create-model-migration on tables with rows: the lock-safe form, applied, checked, reversed.

Each kind is generated against a populated table, applied by `schemashift apply` under the
default `lint: block`, and must leave every index valid and every constraint validated, with
`check` clean and the same schema Alembic's plain revision (`--unsafe`) gives; plain `alembic
downgrade -1` then returns the schema and the rows exactly. On PostgreSQL 18 and 15: NOT NULL
is a catalog constraint only in 18, whose name the safe form must leave as SET NOT NULL does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic import command

from schemashift import scripts
from tests.fixtures.models import execute, invoke, query, snapshot, write_models
from tests.fixtures.postgres import PgServer
from tests.fixtures.runner_cli import CliRun, run_apply
from tests.integration.test_generate import (
    create,
    created_path,
    created_paths,
    downgrade,
    versions,
)

pytestmark = pytest.mark.integration

V1 = """
wards = sa.Table(
    "wards", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("code", sa.Text),
)
patients = sa.Table(
    "patients", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text),
    sa.Column("ward_id", sa.Integer),
    sa.Column("email", sa.Text),{extra_column}
    {extra}
)
"""
ROWS = 40


def models(directory: Path, extra: str = "", extra_column: str = "") -> str:
    return write_models(directory, V1.format(extra=extra, extra_column=extra_column))


@dataclass(frozen=True)
class Kind:
    name: str
    extra: str  # what the models add to patients (a column argument or a table argument)
    expected: tuple[str, ...]  # lines the generated upgrade() holds
    extra_column: str = ""
    before: str = ""  # what the first models already have on patients


KINDS = [
    Kind("index", 'sa.Index("ix_patients_name", "name"),', (
        "with op.get_context().autocommit_block():",
        "with _no_invalid_index('ix_patients_name'):",
        "if _missing(_INDEX, index='ix_patients_name'):",
        "op.create_index('ix_patients_name', 'patients', ['name'], unique=False, "
        "postgresql_concurrently=True)",
    )),
    Kind("unique", 'sa.UniqueConstraint("email"),', (
        "op.create_index('uq_patients_email', 'patients', ['email'], unique=True, "
        "postgresql_concurrently=True)",
        "if _missing(_CONSTRAINT, table='patients', name='uq_patients_email'):",
        "op.execute('ALTER TABLE patients ADD CONSTRAINT uq_patients_email UNIQUE USING INDEX "
        "uq_patients_email')",
    )),
    Kind("foreign-key", 'sa.ForeignKeyConstraint(["ward_id"], ["wards.id"]),', (
        "if _missing(_CONSTRAINT, table='patients', name='fk_patients_ward_id_wards'):",
        "op.create_foreign_key(op.f('fk_patients_ward_id_wards'), 'patients', 'wards', "
        "['ward_id'], ['id'], postgresql_not_valid=True)",
        "_validate('patients', 'fk_patients_ward_id_wards')",
    )),
    Kind("not-null", "", (
        "if _present(_NULLABLE, table='patients', column='name'):",
        "if _missing(_CONSTRAINT, table='patients', name='patients_name_not_null_check'):",
        "op.create_check_constraint('patients_name_not_null_check', 'patients', "
        "'name IS NOT NULL', postgresql_not_valid=True)",
        "_validate('patients', 'patients_name_not_null_check')",
        "op.alter_column('patients', 'name',", "existing_type=sa.TEXT(),", "nullable=False)",
        "if _present(_CONSTRAINT, table='patients', name='patients_name_not_null_check'):",
        "op.drop_constraint('patients_name_not_null_check', 'patients', type_='check')",
    )),
    Kind("check", 'sa.CheckConstraint("length(name) > 1", name="name_length"),', (
        "if _missing(_CONSTRAINT, table='patients', name='ck_patients_name_length'):",
        "op.create_check_constraint(op.f('ck_patients_name_length'), 'patients', "
        "'length(name) > 1', postgresql_not_valid=True)",
        "_validate('patients', 'ck_patients_name_length')",
    )),
    Kind("drop-index", "", (
        "with op.get_context().autocommit_block():",
        "if _present(_INDEX, index='ix_patients_name'):",
    ), before='sa.Index("ix_patients_name", "name"),'),
]


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    return tmp_path / "migrations"


def populated(url: str, migrations: Path, tmp_path: Path, before: str = "") -> str:
    """The first revision applied, and rows in both tables; returns the models' reference."""
    ref = models(tmp_path / "v1", before)
    code, output = create(url, migrations, ref, "initial", "--apply")
    assert code == 0, output
    fill(url)
    return ref


def fill(url: str) -> None:
    execute(url, "INSERT INTO wards (code) SELECT 'w' || g FROM generate_series(1, 3) g",
            f"INSERT INTO patients (name, ward_id, email) SELECT 'p' || g, 1 + g % 3, "
            f"'p' || g || '@example.org' FROM generate_series(1, {ROWS}) g")


def apply(url: str, migrations: Path, ref: str, models_dir: Path, *args: str) -> CliRun:
    """`schemashift apply` as a user runs it, the models importable from `models_dir`."""
    paths = [str(models_dir), os.environ.get("PYTHONPATH", "")]
    return run_apply(url, migrations, "--metadata", ref, *args,
                     env={"PYTHONPATH": os.pathsep.join(p for p in paths if p)})


def upgrade_source(path: Path) -> str:
    return path.read_text().split("def downgrade", 1)[0]


def lines(source: str) -> list[str]:
    return [line.strip() for line in source.splitlines()]


def invalid_indexes(url: str) -> list[tuple[str, ...]]:
    return query(url, "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid")


def unvalidated_constraints(url: str) -> list[tuple[str, ...]]:
    return query(url, "SELECT conname FROM pg_constraint WHERE NOT convalidated")


def constraints(url: str) -> list[tuple[str, ...]]:
    return query(url, "SELECT conname FROM pg_constraint WHERE connamespace = "
                      "'public'::regnamespace ORDER BY 1")


def counts(url: str) -> list[tuple[int, ...]]:
    return query(url, "SELECT (SELECT count(*) FROM wards), (SELECT count(*) FROM patients)")


def changed_models(tmp_path: Path, kind: Kind) -> str:
    if kind.name == "not-null":
        body = V1.replace('sa.Column("name", sa.Text),', 'sa.Column("name", sa.Text, '
                                                         'nullable=False),')
        return write_models(tmp_path / "v2", body.format(extra="", extra_column=""))
    return models(tmp_path / "v2", kind.extra, kind.extra_column)


def schema_dump(server: PgServer, url: str) -> str:
    """`pg_dump --schema-only` of the server's own version, without what differs per database."""
    done = subprocess.run(
        [str(server.bin_dir / "pg_dump"), "--schema-only", "--no-owner", "--no-privileges",
         "--exclude-table=alembic_version", url],
        capture_output=True, text=True, timeout=120, check=True)
    return "\n".join(line for line in done.stdout.splitlines()
                     if not line.startswith(("--", "\\restrict", "\\unrestrict")))


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_each_kind_is_generated_safe_applies_under_lint_block_and_reverses_exactly(
    tmp_path: Path, server: PgServer, server_database_url: str, kind: Kind
) -> None:
    url, migrations = server_database_url, tmp_path / "migrations"
    populated(url, migrations, tmp_path, kind.before)
    before, rows = snapshot(url), counts(url)
    v2 = changed_models(tmp_path, kind)
    code, output = create(url, migrations, v2, kind.name)
    assert code == 0, output
    safe_path = created_path(output)
    source = upgrade_source(safe_path)
    found = lines(source)
    for expected in kind.expected:
        assert expected in found, f"{expected!r} not in:\n{source}"
    plain = _plain_end_state(server, tmp_path, migrations, safe_path, v2, kind)

    run = apply(url, migrations, v2, tmp_path / "v2")

    assert run.exit_code == 0, run
    assert run.result["outcome"] == "Succeeded", run
    assert invalid_indexes(url) == []
    assert unvalidated_constraints(url) == []
    assert invoke("check", "--database-url", url, "--metadata", v2).code == 0
    assert counts(url) == rows
    assert schema_dump(server, url) == plain  # what Alembic's plain revision leaves
    downgrade(url, migrations)
    assert snapshot(url) == before
    assert counts(url) == rows
    assert invalid_indexes(url) == []


def _plain_end_state(server: PgServer, tmp_path: Path, migrations: Path, safe: Path, v2: str,
                     kind: Kind) -> str:
    """The schema Alembic's plain revision (`--unsafe`, run by `alembic upgrade`) leaves on a
    second database with the same history and rows."""
    name = server.create_database()
    try:
        url = server.app_url(name)
        copy = tmp_path / "plain"
        shutil.copytree(migrations, copy, ignore=shutil.ignore_patterns(safe.name))
        command.upgrade(scripts.alembic_config(copy, url), "head")
        fill(url)
        code, output = create(url, copy, v2, kind.name, "--unsafe", "--apply")
        assert code == 0, output
        return schema_dump(server, url)
    finally:
        server.drop_database(name)


def test_the_downgrade_is_the_same_change_reversed_in_the_safe_form(
    tmp_path: Path, database_url: str, migrations: Path
) -> None:
    populated(database_url, migrations, tmp_path)
    v2 = models(tmp_path / "v2", 'sa.Index("ix_patients_name", "name"),')
    code, output = create(database_url, migrations, v2, "index", "--apply")
    assert code == 0, output
    downgrade_ = created_path(output).read_text().split("def downgrade", 1)[1]
    found = lines(downgrade_)
    assert "with op.get_context().autocommit_block():" in found
    assert "if _present(_INDEX, index='ix_patients_name'):" in found
    assert ("op.drop_index('ix_patients_name', table_name='patients', "
            "postgresql_concurrently=True)") in found
    # and back: removing the index again drops it concurrently, re-creating it on downgrade
    v3 = models(tmp_path / "v3")
    code, output = create(database_url, migrations, v3, "no index")
    assert code == 0, output
    upgrade_, downgrade_ = created_path(output).read_text().split("def downgrade", 1)
    # Alembic 1.13 writes a reflected index's name bare, later versions as op.f(...)
    name = r"(?:op\.f\('ix_patients_name'\)|'ix_patients_name')"
    assert any(re.fullmatch(rf"op\.drop_index\({name}, table_name='patients', "
                            r"postgresql_concurrently=True\)", line) for line in lines(upgrade_))
    assert any(re.fullmatch(rf"op\.create_index\({name}, 'patients', \['name'\], unique=False, "
                            r"postgresql_concurrently=True\)", line)
               for line in lines(downgrade_))


def test_new_table_keeps_alembics_plain_operations(
    tmp_path: Path, database_url: str, migrations: Path
) -> None:
    populated(database_url, migrations, tmp_path)
    body = V1.format(extra="", extra_column="") + """
rooms = sa.Table("rooms", metadata, sa.Column("id", sa.Integer, primary_key=True),
                 sa.Column("label", sa.Text), sa.Index("ix_rooms_label", "label"))
"""
    v2 = write_models(tmp_path / "v2", body)
    code, output = create(database_url, migrations, v2, "rooms")
    assert code == 0, output
    source = created_path(output).read_text()
    assert "autocommit_block" not in source and "_catalog" not in source
    assert "op.create_index('ix_rooms_label', 'rooms', ['label'], unique=False)" in source


def test_unsafe_keeps_alembics_plain_output(
    tmp_path: Path, database_url: str, migrations: Path
) -> None:
    populated(database_url, migrations, tmp_path)
    v2 = models(tmp_path / "v2", 'sa.Index("ix_patients_name", "name"),')
    code, output = create(database_url, migrations, v2, "index", "--unsafe")
    assert code == 0, output
    source = created_path(output).read_text()
    assert "autocommit_block" not in source and "_catalog" not in source
    assert "op.create_index('ix_patients_name', 'patients', ['name'], unique=False)" in source


def test_output_is_deterministic_apart_from_the_ids(
    tmp_path: Path, database_url: str, migrations: Path
) -> None:
    populated(database_url, migrations, tmp_path, 'sa.Index("ix_patients_ward_id", "ward_id"),')
    extra = ('sa.Index("ix_patients_name", "name"), sa.UniqueConstraint("email"), '
             'sa.ForeignKeyConstraint(["ward_id"], ["wards.id"]), '
             'sa.CheckConstraint("length(name) > 1", name="name_length"),')
    body = V1.replace('sa.Column("name", sa.Text),', 'sa.Column("name", sa.Text, nullable=False),')
    v2 = write_models(tmp_path / "v2", body.format(
        extra=extra, extra_column="\n    " + NEW_NOT_NULL + '\n    sa.Column("age", sa.Integer),'))
    sources = []
    for _ in range(3):
        code, output = create(database_url, migrations, v2, "all kinds", "--backfill",
                              "patients.status='new'")
        assert code == 0, output
        paths = created_paths(output)  # expand and contract
        sources.append(_without_ids("".join(path.read_text() for path in paths)))
        for path in paths:
            path.unlink()
    assert sources[0] == sources[1] == sources[2]
    for step in ("_no_invalid_index('ix_patients_name')",  # every kind is in the file
                 "if _present(_INDEX, index='ix_patients_ward_id'):", "USING INDEX",
                 "_validate('patients', 'fk_patients_ward_id_wards')",
                 "_validate('patients', 'ck_patients_name_length')",
                 "_validate('patients', 'patients_name_not_null_check')", "_backfill("):
        assert step in sources[0], step


def _without_ids(source: str) -> str:
    """The source with this generation's revision ids (also where the contract names its
    expand as down_revision) and dates left out."""
    for made in re.findall(r"^revision: str = '(\w+)'$", source, flags=re.MULTILINE):
        source = source.replace(made, "<id>")
    return re.sub(r"^Create Date: .*$", "", source, flags=re.MULTILINE)


NEW_NOT_NULL = 'sa.Column("status", sa.Text, nullable=False),'


def test_new_not_null_column_without_default_on_a_table_with_rows_is_refused(
    tmp_path: Path, database_url: str, migrations: Path
) -> None:
    populated(database_url, migrations, tmp_path)
    files, before = versions(migrations), snapshot(database_url)
    v2 = models(tmp_path / "v2", extra_column="\n    " + NEW_NOT_NULL)
    code, output = create(database_url, migrations, v2, "status")
    assert code == 2, output
    assert "the models add patients.status as NOT NULL without a server default" in output
    assert "patients already has rows" in output
    assert "server_default" in output and '--backfill "patients.status=SQL_EXPR"' in output
    assert "Traceback" not in output
    assert (versions(migrations), snapshot(database_url)) == (files, before)


def test_backfill_adds_nullable_fills_in_batches_then_sets_not_null(
    tmp_path: Path, database_url: str, migrations: Path
) -> None:
    populated(database_url, migrations, tmp_path)
    before, rows = snapshot(database_url), counts(database_url)
    v2 = models(tmp_path / "v2", extra_column="\n    " + NEW_NOT_NULL)
    code, output = create(database_url, migrations, v2, "status", "--no-split",
                          "--backfill", "patients.status='ward:' || ward_id::text")
    assert code == 0, output
    source = upgrade_source(created_path(output))
    assert "op.add_column('patients', sa.Column('status', sa.Text(), nullable=True))" in source
    assert ("_backfill(\"WITH batch AS (UPDATE patients SET status = ('ward:' || ward_id::text)"
            " WHERE ctid = ANY (ARRAY(SELECT ctid FROM patients WHERE status IS NULL LIMIT "
            "10000)) RETURNING status)") in source, source
    assert source.index("op.add_column('patients'") < source.index("_backfill(\"WITH") \
        < source.index("_validate('patients', 'patients_status_not_null_check')") \
        < source.index("op.alter_column('patients', 'status'")

    run = apply(database_url, migrations, v2, tmp_path / "v2")

    assert run.exit_code == 0, run
    assert query(database_url, "SELECT count(*) FROM patients WHERE status = 'ward:' || "
                               "ward_id::text") == [(ROWS,)]
    assert query(database_url, "SELECT is_nullable FROM information_schema.columns WHERE "
                               "table_name = 'patients' AND column_name = 'status'") == [("NO",)]
    assert unvalidated_constraints(database_url) == []
    assert invoke("check", "--database-url", database_url, "--metadata", v2).code == 0
    downgrade(database_url, migrations)
    assert snapshot(database_url) == before
    assert counts(database_url) == rows


@pytest.mark.parametrize(("args", "message"), [
    (("--backfill", "patients.status"), "is not TABLE.COLUMN=SQL_EXPR"),
    (("--backfill", "patients.status='x'", "--backfill", "patients.nope=1"),
     "--backfill patients.nope: no such new NOT NULL"),
    (("--backfill", "patients.status='x'", "--unsafe"), "--unsafe asks for Alembic's plain"),
], ids=["no-expression", "no-such-column", "with-unsafe"])
def test_bad_backfill_is_refused_and_writes_nothing(
    tmp_path: Path, database_url: str, migrations: Path, args: tuple[str, ...], message: str
) -> None:
    populated(database_url, migrations, tmp_path)
    files = versions(migrations)
    v2 = models(tmp_path / "v2", extra_column="\n    " + NEW_NOT_NULL)
    code, output = create(database_url, migrations, v2, "status", *args)
    assert code == 2, output
    assert message in output and "Traceback" not in output
    assert versions(migrations) == files


VIOLATIONS = [
    ("unique", 'sa.UniqueConstraint("email"),',
     "UPDATE patients SET email = 'same@example.org' WHERE id <= 3"),
    ("foreign-key", 'sa.ForeignKeyConstraint(["ward_id"], ["wards.id"]),',
     "UPDATE patients SET ward_id = 99 WHERE id <= 3"),
    ("not-null", "", "UPDATE patients SET name = NULL WHERE id <= 3"),
]


@pytest.mark.parametrize(("name", "extra", "violate"), VIOLATIONS,
                         ids=[v[0] for v in VIOLATIONS])
def test_rows_that_violate_the_new_constraint_stop_the_run_before_any_change(
    tmp_path: Path, database_url: str, migrations: Path, name: str, extra: str, violate: str
) -> None:
    populated(database_url, migrations, tmp_path)
    execute(database_url, violate)
    kind = next(k for k in KINDS if k.name == name)
    v2 = changed_models(tmp_path, kind)
    code, output = create(database_url, migrations, v2, name)
    assert code == 0, output
    before, constraints_before = snapshot(database_url), constraints(database_url)

    run = apply(database_url, migrations, v2, tmp_path / "v2")

    assert run.exit_code == 1, run
    assert run.result["reason"] == "IntegrityCheckFailed", run
    assert "3 row(s)" in run.result["message"], run
    assert snapshot(database_url) == before
    assert constraints(database_url) == constraints_before
    assert invalid_indexes(database_url) == []
