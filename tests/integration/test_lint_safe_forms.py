"""The lock-safe forms on a real PostgreSQL 18 with rows: lint accepts them, `apply` runs them
under `lint: block`, every index and constraint ends valid, and `alembic downgrade -1` returns the
schema and the rows. Also what lint reads from the live database (checks an interrupted run
left behind), the per-revision override through the CLI, and `plan`'s locks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable

from schemashift import db, errors, scripts
from schemashift.plan import RULES, Plan, build_plan_for
from tests.fixtures.histories import Revision, write_history
from tests.fixtures.lint_cases import BASE
from tests.fixtures.postgres import PgServer
from tests.fixtures.runner_cli import cli_env, run_apply
from tests.fixtures.safe_forms import AUTOCOMMIT, CLEAN_SEED, SAFE_FORMS

pytestmark = pytest.mark.integration

SCHEMA = """
SELECT 'column', table_name || '.' || column_name, data_type || ' ' || is_nullable
  FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT 'constraint', conrelid::regclass || '.' || conname,
       pg_get_constraintdef(oid) || ' ' || convalidated
  FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'index', indexrelid::regclass::text, pg_get_indexdef(indexrelid) || ' ' || indisvalid
  FROM pg_index WHERE indrelid::regclass::text IN ('users', 'orders', 'visits')
ORDER BY 1, 2, 3
"""
ROWS = "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM orders), " \
       "(SELECT count(*) FROM visits)"


def config_for(directory: Path, database_url: str) -> Any:
    return scripts.alembic_config(directory, str(db.parse_url(database_url).render_as_string(
        hide_password=False)))


def alembic(directory: Path, database_url: str, verb: str, revision: str) -> None:
    """`alembic upgrade/downgrade REV` as users run it, on a connection of its own."""
    config = config_for(directory, database_url)
    engine = db.make_engine(database_url)
    try:
        with engine.connect() as conn:
            config.attributes["connection"] = conn
            getattr(command, verb)(config, revision)
            conn.commit()
    finally:
        engine.dispose()


def seeded(tmp_path: Path, database_url: str, *revisions: Revision) -> Path:
    directory = write_history(tmp_path, [BASE, *revisions])
    alembic(directory, database_url, "upgrade", "base0")
    with psycopg.connect(database_url) as conn:
        conn.execute(CLEAN_SEED)
    return directory


def plan_for(directory: Path, database_url: str) -> Plan:
    engine = db.make_engine(database_url)
    try:
        with engine.connect() as conn:
            return build_plan_for(conn, config_for(directory, database_url))
    finally:
        engine.dispose()


def snapshot(database_url: str) -> tuple[list[tuple[Any, ...]], tuple[Any, ...] | None]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(SCHEMA).fetchall(), conn.execute(ROWS).fetchone()


def leftovers(database_url: str) -> list[tuple[Any, ...]]:
    """Indexes not valid and constraints not validated: a safe form must leave none."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid "
            "UNION ALL SELECT conname FROM pg_constraint WHERE NOT convalidated").fetchall()


@pytest.mark.parametrize("form", SAFE_FORMS)
def test_each_safe_form_passes_plan_applies_under_lint_block_and_downgrades_exactly(
    tmp_path: Path, database_url: str, form: str
) -> None:
    directory = seeded(tmp_path, database_url, SAFE_FORMS[form])
    before = snapshot(database_url)

    plan = plan_for(directory, database_url)
    assert plan.lint == [] and plan.integrity == [], (plan.lint, plan.integrity)
    run = run_apply(database_url, directory)  # the default is --lint block

    assert run.exit_code == 0, run
    assert run.result["outcome"] == "Succeeded", run
    assert leftovers(database_url) == []
    assert snapshot(database_url) != before  # the form changed something
    alembic(directory, database_url, "downgrade", "-1")
    assert snapshot(database_url) == before


NOT_VALID_CHECK = Revision("a1", "check NOT VALID", """
    op.create_check_constraint("ck_users_email_nn", "users", "email IS NOT NULL",
                               postgresql_not_valid=True)
""", 'op.drop_constraint("ck_users_email_nn", "users", type_="check")')
VALIDATE = f"""
{AUTOCOMMIT}
    op.execute("ALTER TABLE users VALIDATE CONSTRAINT ck_users_email_nn")
"""
SET_NOT_NULL = """
op.alter_column("users", "email", nullable=False, existing_type=sa.String(50))
op.drop_constraint("ck_users_email_nn", "users", type_="check")
"""


@pytest.mark.parametrize(("validated_before", "second", "expected"), [
    (False, VALIDATE + SET_NOT_NULL, []),  # the plan validates the check the database holds
    (True, SET_NOT_NULL, []),  # an interrupted run validated it already: nothing left to scan
    (False, SET_NOT_NULL, ["set-not-null"]),  # held but NOT VALID: SET NOT NULL still scans
])
def test_a_not_null_check_the_database_already_holds_counts_for_set_not_null(
    tmp_path: Path, database_url: str, validated_before: bool, second: str,
    expected: list[str],
) -> None:
    directory = seeded(tmp_path, database_url, NOT_VALID_CHECK, Revision("a2", "not null",
                                                                         second))
    alembic(directory, database_url, "upgrade", "a1")
    if validated_before:
        with psycopg.connect(database_url) as conn:
            conn.execute("ALTER TABLE users VALIDATE CONSTRAINT ck_users_email_nn")

    plan = plan_for(directory, database_url)

    assert [r.revision for r in plan.revisions] == ["a2"]
    assert [f.rule for f in plan.lint] == expected, plan.lint


@pytest.mark.parametrize(("name", "expected"), [
    ("ck_not_there", []),  # IF EXISTS of a constraint the database does not hold: nothing lost
    ("orders_pkey", ["drop-constraint"]),
])
def test_drop_constraint_if_exists_is_judged_by_what_the_database_holds(
    tmp_path: Path, database_url: str, name: str, expected: list[str]
) -> None:
    directory = seeded(tmp_path, database_url, Revision(
        "d1", "drop", f'op.execute("ALTER TABLE orders DROP CONSTRAINT IF EXISTS {name}")'))
    assert [f.rule for f in plan_for(directory, database_url).lint] == expected


def relfilenode(database_url: str) -> Any:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT relfilenode FROM pg_class WHERE relname = 'users'").fetchone()


def _writes_stored(column: sa.Column[Any]) -> bool:
    """SQLAlchemy before 2.0.4x writes STORED for every computed column on PostgreSQL; later
    versions leave it out unless persisted=True (PostgreSQL 18 then makes it virtual)."""
    table = sa.Table("t", sa.MetaData(), sa.Column("age", sa.Integer), column)
    return "STORED" in str(CreateTable(table).compile(dialect=postgresql.dialect()))


@pytest.mark.parametrize(("column", "rewrites"), [
    ('sa.Column("n", sa.Integer, sa.Identity())', True),
    ('sa.Column("n", sa.Integer, sa.Computed("age * 2", persisted=True))', True),
    ('sa.Column("n", sa.Integer, sa.Computed("age * 2"))',
     _writes_stored(sa.Column("n", sa.Integer, sa.Computed("age * 2")))),
    ('sa.Column("n", sa.BigInteger)', False),
])
def test_rewriting_column_rule_matches_what_the_server_rewrites(
    tmp_path: Path, server: PgServer, server_database_url: str, column: str, rewrites: bool
) -> None:
    """PostgreSQL 15 has no virtual generated columns: SQLAlchemy writes STORED there, and the
    table is rewritten; lint and the SQL preview follow the server planned against."""
    database_url = server_database_url
    if server.major < 18 and "Computed" in column:
        rewrites = True
    directory = seeded(tmp_path, database_url,
                       Revision("c1", "add n", f'op.add_column("users", {column})'))
    plan = plan_for(directory, database_url)
    flagged = "add-column-rewrites-table" in {f.rule for f in plan.lint}
    before = relfilenode(database_url)
    alembic(directory, database_url, "upgrade", "c1")
    assert (flagged, relfilenode(database_url) != before) == (rewrites, rewrites)
    if "Computed" in column:
        assert ("STORED" in plan.stages[0].sql) == rewrites, plan.stages[0].sql


def test_an_identifier_over_63_bytes_is_what_postgresql_truncates(
    tmp_path: Path, database_url: str
) -> None:
    name = "ä" * 32  # 32 characters, 64 bytes: SQLAlchemy lets it through
    directory = seeded(tmp_path, database_url, Revision(
        "i1", "long name", f'op.add_column("users", sa.Column("{name}", sa.Integer))'))
    assert [f.rule for f in plan_for(directory, database_url).lint] == ["identifier-too-long"]
    alembic(directory, database_url, "upgrade", "i1")
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = 'users'::regclass "
                              "AND attnum = 5").fetchone()
    assert stored is not None and stored[0] != name and name.startswith(stored[0])


def test_an_override_allows_its_rule_through_the_cli_and_apply_runs(
    tmp_path: Path, database_url: str
) -> None:
    directory = seeded(tmp_path, database_url, Revision("o1", "drop note",
                                                        'op.drop_column("orders", "note")'))
    path = directory / "versions" / "0001_o1.py"
    assert run_apply(database_url, directory).exit_code == errors.EXIT_USAGE  # blocked by lint
    path.write_text(path.read_text() + '\nschemashift = {"allow": ["drop-column"]}\n')

    [finding] = plan_for(directory, database_url).lint
    run = run_apply(database_url, directory)

    assert (finding.rule, finding.severity) == ("drop-column", "notice")
    assert run.exit_code == 0, run
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM information_schema.columns "
                            "WHERE table_name = 'orders' AND column_name = 'note'"
                            ).fetchone() == (0,)


def test_an_unknown_rule_in_an_override_stops_apply_before_any_change(
    tmp_path: Path, database_url: str
) -> None:
    directory = seeded(tmp_path, database_url, Revision("o1", "drop note",
                                                        'op.drop_column("orders", "note")'))
    path = directory / "versions" / "0001_o1.py"
    path.write_text(path.read_text() + '\nschemashift = {"allow": ["drop-columns"]}\n')
    before = snapshot(database_url)

    run = run_apply(database_url, directory)

    assert run.exit_code == errors.EXIT_USAGE, run
    text = run.stdout + run.stderr
    assert "'drop-columns', which is not a lint rule (did you mean 'drop-column'?)" in text
    assert all(rule in text for rule in RULES)
    assert snapshot(database_url) == before


def test_plan_shows_each_step_and_its_lock(tmp_path: Path, database_url: str) -> None:
    directory = seeded(tmp_path, database_url, SAFE_FORMS["not-null"])
    [stage] = plan_for(directory, database_url).stages
    assert stage.steps == [
        "ADD CHECK ck_users_email_not_null ON users NOT VALID (ACCESS EXCLUSIVE, brief)",
        "ALTER TABLE users VALIDATE CONSTRAINT ck_users_email_not_null "
        "(SHARE UPDATE EXCLUSIVE, no writes blocked) [autocommit]",
        "SET NOT NULL users.email (ACCESS EXCLUSIVE, brief: validated check)",
        "DROP CONSTRAINT ck_users_email_not_null ON users (ACCESS EXCLUSIVE, brief)",
    ]
    shown = subprocess.run(
        [sys.executable, "-m", "schemashift.cli", "plan", "--database-url", database_url,
         "--migrations", str(directory)], capture_output=True, text=True, timeout=120,
        env=cli_env())
    assert shown.returncode == 0, shown.stderr
    assert "\n  1-s1: s1  [autocommit block: not one transaction]\n    ADD CHECK " in shown.stdout
    assert all(f"\n    {step}\n" in shown.stdout for step in stage.steps), shown.stdout


def test_a_step_on_a_table_without_rows_is_brief_whatever_its_kind(
    tmp_path: Path, database_url: str
) -> None:
    directory = write_history(tmp_path, [BASE, Revision("e1", "index", """
        op.create_index("ix_users_name", "users", ["name"])
        op.create_index("ix_orders_note", "orders", ["note"])
    """)])
    alembic(directory, database_url, "upgrade", "base0")
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO orders (id) VALUES (1)")
    [stage] = plan_for(directory, database_url).stages
    assert stage.steps == ["CREATE INDEX ix_users_name ON users (SHARE, brief: no rows)",
                           "CREATE INDEX ix_orders_note ON orders (SHARE, writes blocked while "
                           "it builds)"]
