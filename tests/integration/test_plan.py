"""`plan` against a real PostgreSQL: revisions, stages, SQL preview, lint, integrity, hash, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from schemashift import db, errors, reasons, scripts
from schemashift.plan import Plan, build_plan, build_plan_for
from schemashift.project import Project
from tests.fixtures.histories import URL_ONLY_ENV, Revision, add_revision, write_history
from tests.fixtures.lint_cases import BASE, CASES, CONCURRENT_INDEX, Case

pytestmark = pytest.mark.integration

SEED = """
INSERT INTO users (id, email, name) VALUES
  (1, 'a@x', 'Ann'), (2, 'a@x', 'Ann B'), (3, 'a@x', 'Ann C'), (4, 'b@x', 'Bob'),
  (5, NULL, 'Nul'), (6, NULL, 'Nul 2'), (7, 'c@x', 'Cy');
INSERT INTO orders (id, user_id) VALUES (1, 1), (2, 4), (3, 99), (4, 98), (5, NULL);
INSERT INTO visits (id, user_id) VALUES (1, 1), (2, 4);
"""


def config_for(directory: Path, database_url: str) -> Config:
    return scripts.alembic_config(directory, str(db.parse_url(database_url).render_as_string(
        hide_password=False)))


def upgrade(directory: Path, database_url: str, revision: str) -> None:
    config = config_for(directory, database_url)
    engine = db.make_engine(database_url)
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    finally:
        engine.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = db.make_engine(database_url)
    yield engine
    engine.dispose()


def plan_for(engine: sa.Engine, directory: Path, database_url: str, target: str = "head",
             **kwargs: str) -> Plan:
    with engine.connect() as conn:
        plan = build_plan_for(conn, config_for(directory, database_url), target, **kwargs)
        assert not conn.in_transaction()  # the caller's connection is left as it was
        return plan


def seeded(tmp_path: Path, database_url: str, *revisions: Revision) -> Path:
    """A history of BASE + revisions, the database at BASE with SEED's rows."""
    directory = write_history(tmp_path, [BASE, *revisions])
    upgrade(directory, database_url, "base0")
    with psycopg.connect(database_url) as conn:
        conn.execute(SEED)
    return directory


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.rule}:{c.risky[:30]}")
def test_each_lint_rule_on_a_real_database(
    tmp_path: Path, database_url: str, engine: sa.Engine, case: Case
) -> None:
    directory = seeded(tmp_path, database_url, Revision("r1", "risky", case.risky))
    plan = plan_for(engine, directory, database_url)
    assert [r.revision for r in plan.revisions] == ["r1"]
    assert case.rule in {f.rule for f in plan.lint}
    assert plan.blocking("block", []) != []
    assert plan.blocking("block", {f.rule for f in plan.lint}) == []
    assert plan.blocking("warn", []) == plan.blocking("off", []) == []


@pytest.mark.parametrize("case", [c for c in CASES if c.safe], ids=lambda c: c.rule)
def test_the_recommended_alternatives_run_on_postgresql(
    tmp_path: Path, database_url: str, engine: sa.Engine, case: Case
) -> None:
    assert case.safe is not None
    directory = write_history(tmp_path, [BASE, Revision("r1", "safe", case.safe)])
    assert plan_for(engine, directory, database_url, "r1").lint == []
    with engine.connect() as conn:  # as the runner does: its connection, the cookbook env.py
        config = config_for(directory, database_url)
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        conn.commit()
    assert plan_for(engine, directory, database_url).from_revision == "r1"


def upgrade_rewrites_users(directory: Path, database_url: str) -> bool:
    """Upgrade to r1; True when PostgreSQL rewrote `users` (its relfilenode changed)."""
    relfilenode = "SELECT relfilenode FROM pg_class WHERE relname = 'users'"
    with psycopg.connect(database_url) as conn:
        before = conn.execute(relfilenode).fetchone()
    upgrade(directory, database_url, "r1")
    with psycopg.connect(database_url) as conn:
        return conn.execute(relfilenode).fetchone() != before


@pytest.mark.parametrize(("default", "rewrites"), [
    ("now()", False), ("CURRENT_TIMESTAMP", False), ("'2024-01-01'", False),
    ("clock_timestamp()", True), ("timeofday()::timestamptz", True),
])
def test_volatile_default_rule_matches_what_postgresql_rewrites(
    tmp_path: Path, database_url: str, engine: sa.Engine, default: str, rewrites: bool
) -> None:
    directory = seeded(tmp_path, database_url, Revision("r1", "add seen", f"""
        op.add_column("users", sa.Column("seen", sa.DateTime(timezone=True),
                                         server_default=sa.text({default!r})))
    """))
    flagged = "add-column-volatile-default" in {
        f.rule for f in plan_for(engine, directory, database_url).lint}
    assert (flagged, upgrade_rewrites_users(directory, database_url)) == (rewrites, rewrites)


@pytest.mark.parametrize(("change", "rewrites"), [
    ('"email", type_=sa.String(100), existing_type=sa.String(50)', False),
    ('"email", type_=sa.Text, existing_type=sa.String(50)', False),
    ('"email", type_=sa.String(20), existing_type=sa.String(50)', True),
    ('"age", type_=sa.BigInteger, existing_type=sa.Integer', True),
])
def test_type_change_rule_matches_what_postgresql_rewrites(
    tmp_path: Path, database_url: str, engine: sa.Engine, change: str, rewrites: bool
) -> None:
    directory = seeded(tmp_path, database_url,
                       Revision("r1", "retype", f'op.alter_column("users", {change})'))
    flagged = "change-column-type" in {
        f.rule for f in plan_for(engine, directory, database_url).lint}
    assert (flagged, upgrade_rewrites_users(directory, database_url)) == (rewrites, rewrites)


def test_planning_inside_the_callers_transaction_leaves_it_and_its_settings_alone(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    directory = seeded(tmp_path, database_url, Revision("r1", "not null", """
        op.alter_column("users", "email", nullable=False, existing_type=sa.String(50))
    """))
    with engine.connect() as conn:
        conn.execute(sa.text("SET statement_timeout = '7s'"))
        conn.commit()
        conn.execute(sa.text("CREATE TEMP TABLE marker (x int)"))  # autobegins a transaction
        plan = build_plan_for(conn, config_for(directory, database_url))
        assert conn.in_transaction()
        assert conn.execute(sa.text("SELECT count(*) FROM marker")).scalar_one() == 0
        assert conn.execute(sa.text("SHOW statement_timeout")).scalar_one() == "7s"
        assert conn.execute(sa.text("SHOW lock_timeout")).scalar_one() == "0"
        conn.rollback()
    assert [(f.check, f.count) for f in plan.integrity] == [("not-null", 2)]


def test_integrity_checks_count_offending_rows(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    directory = seeded(tmp_path, database_url, Revision("r1", "constraints", """
        op.alter_column("users", "email", nullable=False, existing_type=sa.String(50))
        op.create_unique_constraint("uq_users_email", "users", ["email"])
        op.create_foreign_key("fk_orders_user", "orders", "users", ["user_id"], ["id"],
                              postgresql_not_valid=True)
    """), Revision("r2", "more", """
        op.add_column("users", sa.Column("plan", sa.String(10), nullable=False))
        op.create_index("ix_users_name", "users", ["name"], unique=True)
        op.create_index("ix_users_email_age", "users", ["email", "age"], unique=True)
    """))
    plan = plan_for(engine, directory, database_url)
    found = {(f.check, f.revision, f.table, tuple(f.columns)): f.count for f in plan.integrity}
    assert found == {
        ("not-null", "r1", "users", ("email",)): 2,       # ids 5 and 6
        ("unique", "r1", "users", ("email",)): 3,         # three rows share 'a@x'
        ("foreign-key", "r1", "orders", ("user_id",)): 2,  # user_id 99 and 98; NULL is fine
        ("not-null", "r2", "users", ("plan",)): 7,        # every existing row
    }  # name is unique, and (email, age) has NULLs in age everywhere: no finding for those
    assert all(str(f.count) in f.message for f in plan.integrity)
    with psycopg.connect(database_url) as conn:  # nothing changed
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("base0",)]
        assert conn.execute("SELECT count(*) FROM users WHERE email IS NULL").fetchone() == (2,)


def test_integrity_checks_skip_what_the_plan_itself_creates_or_backfills(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    directory = seeded(tmp_path, database_url, Revision("r1", "backfill", """
        op.execute("UPDATE users SET email = 'x' || id WHERE email IS NULL OR email = 'a@x'")
    """), Revision("r2", "constraints", """
        op.alter_column("users", "email", nullable=False, existing_type=sa.String(50))
        op.create_table("teams", sa.Column("id", sa.Integer, primary_key=True),
                        sa.Column("name", sa.String(10)))
        op.create_unique_constraint("uq_teams_name", "teams", ["name"])
        op.add_column("orders", sa.Column("team_id", sa.Integer))
        op.alter_column("orders", "team_id", nullable=False)
    """))
    assert plan_for(engine, directory, database_url).integrity == []


def test_integrity_foreign_key_to_a_table_the_plan_creates_counts_every_reference(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    directory = seeded(tmp_path, database_url, Revision("r1", "accounts", """
        op.create_table("accounts", sa.Column("id", sa.Integer, primary_key=True))
        op.create_foreign_key("fk_orders_account", "orders", "accounts", ["user_id"], ["id"])
    """))
    [finding] = plan_for(engine, directory, database_url).integrity
    assert (finding.check, finding.table, finding.count) == ("foreign-key", "orders", 4)


def test_integrity_check_that_cannot_finish_is_reported_not_hung(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    directory = seeded(tmp_path, database_url, Revision("r1", "not null", """
        op.alter_column("users", "email", nullable=False, existing_type=sa.String(50))
    """))
    with psycopg.connect(database_url) as blocker:
        blocker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        plan = plan_for(engine, directory, database_url, check_timeout="200ms")
    assert plan.integrity == []
    [incomplete] = [f for f in plan.lint if f.rule == "integrity-check-incomplete"]
    assert "users(email)" in incomplete.message and "timeout" in incomplete.message


def test_quoted_identifiers_are_checked_safely(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    directory = write_history(tmp_path, [
        Revision("a1", "odd names", '''
            op.create_table('Odd "Table"', sa.Column("Select", sa.Integer))
            op.execute('INSERT INTO "Odd ""Table""" ("Select") VALUES (1), (1), (NULL)')
        '''),
        Revision("a2", "constrain", """
            op.create_unique_constraint("uq_odd", 'Odd "Table"', ["Select"])
            op.alter_column('Odd "Table"', "Select", nullable=False)
        """),
    ])
    upgrade(directory, database_url, "a1")
    plan = plan_for(engine, directory, database_url)
    assert {(f.check, f.table, f.count) for f in plan.integrity} == {
        ("unique", 'Odd "Table"', 2), ("not-null", 'Odd "Table"', 1)}


def test_sql_preview_stages_and_autocommit(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    directory = write_history(tmp_path, [BASE, Revision("r1", "add plan", """
        op.add_column("users", sa.Column("plan", sa.String(10), server_default="free"))
    """), Revision("r2", "index", CONCURRENT_INDEX)])
    plan = plan_for(engine, directory, database_url)
    assert plan.from_revision is None and plan.target_revision == "r2"
    assert [(s.name, s.revisions, s.target, s.autocommit) for s in plan.stages] == [
        ("1-base0", ["base0"], "base0", False),
        ("2-r1", ["r1"], "r1", False),
        ("3-r2", ["r2"], "r2", True),
    ]
    first, second, third = (s.sql for s in plan.stages)
    assert "CREATE TABLE alembic_version" in first and "CREATE TABLE users" in first
    assert second.startswith("BEGIN;") and second.rstrip().endswith("COMMIT;")
    assert "ALTER TABLE users ADD COLUMN plan VARCHAR(10) DEFAULT 'free';" in second
    assert "UPDATE alembic_version SET version_num='r1' WHERE" in second
    assert "CREATE INDEX CONCURRENTLY ix_users_email ON users (email);" in third
    text = plan.to_text()
    for expected in ("base0  users and orders", "3-r2: r2  [autocommit block", second.strip()):
        assert expected in text
    assert [r.message for r in plan.revisions] == ["users and orders", "add plan", "index"]
    assert plan.revisions[1].down_revision == "base0"
    assert plan.revisions[1].path.endswith("0001_r1.py")


def test_merged_branches_render_the_version_rows_alembic_writes(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    directory = write_history(tmp_path, [BASE, Revision("r1", "left")])
    add_revision(directory, Revision("r2", "right"), down_revision="base0", order=2)
    add_revision(directory, Revision("m3", "merge"), down_revision=("r1", "r2"), order=3)
    upgrade(directory, database_url, "base0")
    plan = plan_for(engine, directory, database_url)
    assert {r.revision for r in plan.revisions[:2]} == {"r1", "r2"}
    assert plan.revisions[2].down_revision == "r1,r2"
    merge = plan.stages[2].sql
    assert "DELETE FROM alembic_version" in merge and "UPDATE alembic_version" in merge
    upgrade(directory, database_url, "head")  # the preview matches what Alembic did
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("m3",)]


def test_partial_target_and_already_at_target(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    directory = seeded(tmp_path, database_url, Revision("r1", "one"), Revision("r2", "two"))
    assert [r.revision for r in plan_for(engine, directory, database_url, "r1").revisions] == [
        "r1"]
    upgrade(directory, database_url, "head")
    at_head = plan_for(engine, directory, database_url)
    behind = plan_for(engine, directory, database_url, "r1")
    for plan in (at_head, behind):
        assert plan.is_empty and plan.stages == [] and plan.from_revision == "r2"
    assert "already at the target" in at_head.to_text()
    assert "already at the target" not in behind.to_text()
    assert "past the target r1; plan and apply only upgrade" in behind.to_text()
    at_base = plan_for(engine, directory, database_url, "base")
    assert at_base.is_empty and at_base.target_revision is None
    assert "past the target base" in at_base.to_text()


def test_hash_is_stable_and_changes_when_the_database_moves(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    directory = seeded(tmp_path, database_url, Revision("r1", "one", "op.execute('SELECT 1')"),
                       Revision("r2", "two", "op.execute('SELECT 2')"))
    first = plan_for(engine, directory, database_url)
    assert plan_for(engine, directory, database_url).hash == first.hash
    assert plan_for(engine, directory, database_url, "r1").hash != first.hash
    upgrade(directory, database_url, "r1")
    moved = plan_for(engine, directory, database_url)
    assert moved.hash != first.hash and [s.target for s in moved.stages] == ["r2"]
    (directory / "versions" / "0002_r2.py").write_text(
        (directory / "versions" / "0002_r2.py").read_text().replace("SELECT 2", "SELECT 3"))
    assert plan_for(engine, directory, database_url).hash != moved.hash


def test_to_dict_is_the_status_plan_shape(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    directory = seeded(tmp_path, database_url, Revision("r1", "risky", """
        op.alter_column("users", "email", nullable=False, existing_type=sa.String(50))
    """))
    data = plan_for(engine, directory, database_url).to_dict()
    assert list(data) == ["fromRevision", "targetRevision", "revisions", "stages", "lint",
                          "integrity", "hash", "phase"]
    # SET NOT NULL on a column the old release may leave empty: a contract revision (issue 13)
    assert data["phase"] == {
        "requested": "all", "pendingContract": [], "breaking": [],
        "revisions": [{"revision": "r1", "phase": "contract", "marked": False,
                       "why": "sets users.email NOT NULL"}]}
    assert data["fromRevision"] == "base0" and data["targetRevision"] == "r1"
    assert data["revisions"] == [{"revision": "r1", "downRevision": "base0", "message": "risky"}]
    [stage] = data["stages"]
    assert set(stage) == {"name", "revisions", "target", "autocommit", "sqlSha256"}
    assert len(stage["sqlSha256"]) == 64
    assert [set(f) for f in data["lint"]] == [{"rule", "severity", "revision", "message"}]
    assert [(f["check"], f["count"]) for f in data["integrity"]] == [("not-null", 2)]
    assert set(data["integrity"][0]) == {"check", "revision", "table", "columns", "count",
                                         "message"}
    assert json.loads(json.dumps(data)) == data


def test_env_py_is_not_needed_to_plan(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    directory = write_history(tmp_path, [BASE, Revision("r1", "drop", 'op.drop_table("orders")')],
                              env=URL_ONLY_ENV)
    upgrade(directory, database_url, "base0")  # the URL-only env.py migrates from sqlalchemy.url
    with engine.begin() as conn:  # a table with rows: dropping it is a real danger
        conn.execute(sa.text("INSERT INTO orders (id) VALUES (1)"))
    (directory / "env.py").write_text("raise RuntimeError('env.py must not run while planning')\n")
    plan = plan_for(engine, directory, database_url)
    assert [f.rule for f in plan.lint] == ["drop-table"]


def run_cli(*args: str, database_url: str, directory: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SCHEMASHIFT_DATABASE_URL": database_url,
           "SCHEMASHIFT_MIGRATIONS": str(directory)}
    return subprocess.run([sys.executable, "-m", "schemashift.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_plan_json_and_text(tmp_path: Path, database_url: str, engine: sa.Engine) -> None:
    directory = seeded(tmp_path, database_url, Revision("r1", "drop", 'op.drop_table("orders")'))
    result = run_cli("plan", "--json", database_url=database_url, directory=directory)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data == build_plan(Project(database_url, migrations_dir=directory)).to_dict()
    assert [f["rule"] for f in data["lint"]] == ["drop-table"]
    text = run_cli("plan", database_url=database_url, directory=directory)
    assert "ERROR   drop-table [r1]" in text.stdout and "DROP TABLE orders;" in text.stdout
    assert "app-Secr3t-pw" not in text.stdout + text.stderr


def multiple_heads(tmp_path: Path) -> Path:
    directory = write_history(tmp_path, [BASE, Revision("r1", "one")])
    add_revision(directory, Revision("r2", "two"), down_revision="base0", order=2)
    return directory


def broken(tmp_path: Path) -> Path:
    directory = write_history(tmp_path, [BASE])
    (directory / "versions" / "0001_bad.py").write_text("revision = 'bad'\ndown_revision = (\n")
    return directory


@pytest.mark.parametrize(("make", "args", "message", "reason"), [
    (lambda p: write_history(p, [BASE]), ("--target", "nope"), "unknown target revision 'nope'",
     reasons.UNKNOWN_REVISION),
    (multiple_heads, (), "has 2 heads", reasons.MULTIPLE_HEADS),
    (lambda p: p / "missing", (), "does not exist", reasons.INVALID_INPUT),
    (broken, (), "not a usable Alembic script directory", reasons.INVALID_INPUT),
], ids=["unknown-target", "multiple-heads", "missing-dir", "broken-dir"])
def test_bad_input_exits_2_and_changes_nothing(
    tmp_path: Path, database_url: str, make: object, args: tuple[str, ...], message: str,
    reason: str,
) -> None:
    directory = make(tmp_path)  # type: ignore[operator]
    result = run_cli("plan", *args, database_url=database_url, directory=directory)
    assert result.returncode == errors.EXIT_USAGE, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(errors.UsageError) as caught:
        build_plan(Project(database_url, migrations_dir=directory), target=args[-1] if args
                   else "head")
    assert caught.value.reason == reason
    with psycopg.connect(database_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)


def test_database_at_a_revision_the_directory_lacks(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    directory = seeded(tmp_path, database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'fromthefuture'")
    with pytest.raises(errors.UsageError, match="fromthefuture, which the migrations") as caught:
        plan_for(engine, directory, database_url)
    assert caught.value.reason == reasons.UNKNOWN_REVISION


def test_unreachable_database_exits_3_without_the_password(tmp_path: Path) -> None:
    directory = write_history(tmp_path, [BASE])
    url = "postgresql://app:hunter2-secret@127.0.0.1:1/nowhere"
    result = run_cli("plan", database_url=url, directory=directory)
    assert result.returncode == errors.EXIT_INFRA
    assert "127.0.0.1:1" in result.stderr and "hunter2-secret" not in result.stderr


@pytest.mark.parametrize(("data_sql", "blocked"), [
    ("UPDATE orders SET note = 'x' WHERE user_id = 1", False),  # changes no row of an empty table
    ("DELETE FROM orders WHERE user_id = 1", False),
    ("INSERT INTO orders (id, user_id) SELECT id, id FROM users", True),  # rows now: it locks
    ("WITH moved AS (INSERT INTO orders (id) VALUES (9) RETURNING id) "
     "UPDATE orders SET note = 'y' WHERE id IN (SELECT id FROM moved)", True),
])
def test_an_empty_table_stays_exempt_unless_earlier_sql_may_add_rows(
    tmp_path: Path, database_url: str, engine: sa.Engine, data_sql: str, blocked: bool
) -> None:
    directory = write_history(tmp_path, [BASE, Revision("r1", "data and index", f"""
        op.execute({data_sql!r})
        op.create_index("ix_orders_user_id", "orders", ["user_id"])
    """)])
    upgrade(directory, database_url, "base0")
    with engine.begin() as conn:  # users holds a row, orders none: not a fresh database
        conn.execute(sa.text("INSERT INTO users (id, email) VALUES (1, 'a@x')"))
    plan = plan_for(engine, directory, database_url)
    rules = [f.rule for f in plan.lint]
    assert ("create-index-not-concurrently" in rules) is blocked, rules


ADD_IF_MISSING = """
existing = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("users")}
if "nickname" not in existing:
    op.add_column("users", sa.Column("nickname", sa.String(30)))
"""


def test_a_revision_that_inspects_the_database_is_previewed_from_the_live_schema(
    tmp_path: Path, database_url: str, engine: sa.Engine,
) -> None:
    directory = seeded(tmp_path, database_url, Revision("insp1", "add if missing", ADD_IF_MISSING))

    plan = plan_for(engine, directory, database_url)

    assert [f.rule for f in plan.lint if f.rule == "unrenderable-revision"] == [], plan.lint
    assert "ALTER TABLE users ADD COLUMN nickname VARCHAR(30)" in plan.stages[0].sql


def test_inspecting_a_table_the_plan_changed_before_is_not_answered_from_the_server(
    tmp_path: Path, database_url: str, engine: sa.Engine,
) -> None:
    directory = seeded(
        tmp_path, database_url,
        Revision("alter1", "widen", 'op.add_column("users", sa.Column("nickname", sa.Text))'),
        Revision("insp2", "add if missing", ADD_IF_MISSING))

    plan = plan_for(engine, directory, database_url)

    [finding] = [f for f in plan.lint if f.rule == "unrenderable-revision"]
    assert finding.revision == "insp2"
    assert "ChangedByThePlan" in finding.message and "users" in finding.message, finding


def test_a_value_without_a_literal_renderer_is_previewed_as_a_placeholder(
    tmp_path: Path, database_url: str, engine: sa.Engine,
) -> None:
    untyped = ('users = sa.table("users", sa.column("age"))\n'
               'op.execute(users.update().where(users.c.age.in_([1, 2])).values(age=5))')
    directory = seeded(tmp_path, database_url, Revision("upd1", "untyped update", untyped))

    plan = plan_for(engine, directory, database_url)

    assert [f.rule for f in plan.lint if f.rule == "unrenderable-revision"] == [], plan.lint
    assert "UPDATE users SET age=" in plan.stages[0].sql, plan.stages[0].sql
