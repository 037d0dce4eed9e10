"""Server defaults compared as PostgreSQL renders them (one batch per run), and the switch that
turns the comparison off."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from schemashift import db, project
from schemashift.diff import comparison
from tests.fixtures.models import execute, invoke, write_models

pytestmark = pytest.mark.integration

VERSION_TABLE = "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)"
# Each pair: the database's DEFAULT, the model's server_default: the server stores them alike.
SAME = [
    ("uuid", "gen_random_uuid()", 'sa.text("(GEN_RANDOM_UUID())")'),
    ("varchar(20)", "'x'", 'sa.text("\'x\'")'),
    ("varchar(20)", "'it''s'", '"it\'s"'),
    ("timestamptz", "now()", "sa.func.now()"),
    ("timestamptz", "CURRENT_TIMESTAMP", 'sa.text("current_timestamp")'),
    ("numeric(8, 2)", "0", 'sa.text("0")'),
    ("boolean", "false", "sa.false()"),
    ("int[]", "'{}'", 'sa.text("\'{}\'::integer[]")'),
    ("text", "lower('ABC')", 'sa.text("LOWER(\'ABC\')")'),
]
DIFFERENT = [
    ("varchar(20)", "'a'", '"b"'),
    ("timestamptz", "now()", 'sa.text("clock_timestamp()")'),
    ("numeric(8, 2)", "0", 'sa.text("1")'),
]


def setup(tmp_path: Path, database_url: str, pairs: list[tuple[str, str, str]],
          tables: int = 1) -> str:
    """`tables` copies of a table with one column per pair; returns the models reference."""
    sql, body = [VERSION_TABLE], ""
    for t in range(tables):
        columns = ", ".join(f"c{i} {type_} DEFAULT {default}"
                            for i, (type_, default, _) in enumerate(pairs))
        sql.append(f"CREATE TABLE t{t} (id int CONSTRAINT pk_t{t} PRIMARY KEY, {columns})")
        model_columns = "".join(
            f"    sa.Column('c{i}', {_model_type(type_)}, server_default={model}),\n"
            for i, (type_, _, model) in enumerate(pairs))
        body += (f"t{t} = sa.Table('t{t}', metadata,\n"
                 f"    sa.Column('id', sa.Integer, primary_key=True, autoincrement=False),\n"
                 f"{model_columns})\n")
    execute(database_url, *sql)
    return write_models(tmp_path, body)


def _model_type(type_: str) -> str:
    return {"uuid": "sa.Uuid", "varchar(20)": "sa.String(20)", "timestamptz":
            "sa.DateTime(timezone=True)", "numeric(8, 2)": "sa.Numeric(8, 2)",
            "boolean": "sa.Boolean", "int[]": "postgresql.ARRAY(sa.Integer)",
            "text": "sa.Text"}[type_]


def detect(database_url: str, ref: str, *extra: str) -> dict[str, Any]:
    result = invoke("detect", "--json", "--database-url", database_url, "--metadata", ref, *extra)
    assert result.code == 0, result
    data: dict[str, Any] = json.loads(result.out)
    return data


def test_defaults_the_server_stores_alike_are_not_drift(tmp_path: Path, database_url: str) -> None:
    ref = setup(tmp_path, database_url, SAME)
    result = invoke("check", "--database-url", database_url, "--metadata", ref)
    assert (result.code, result.out) == (0, "No schema changes detected\n"), result


def test_different_defaults_are_drift(tmp_path: Path, database_url: str) -> None:
    ref = setup(tmp_path, database_url, SAME + DIFFERENT)
    data = detect(database_url, ref)
    changed = sorted((c["kind"], c["column"]) for c in data["changes"])
    first = len(SAME)
    assert changed == sorted(("server_default_changed", f"c{i}")
                             for i in range(first, first + len(DIFFERENT))), data
    assert data["warnings"] == []
    result = invoke("check", "--database-url", database_url, "--metadata", ref)
    assert result.code == 1, result
    assert "- Server default changed: t0.c9 'a'::character varying -> 'b'" in result.out


def test_the_server_renders_every_default_of_a_run_in_one_batch(
    tmp_path: Path, database_url: str
) -> None:
    ref = setup(tmp_path, database_url, SAME + DIFFERENT, tables=5)
    statements: list[str] = []
    engine = db.make_engine(database_url)
    sa.event.listen(engine, "before_cursor_execute",
                    lambda *args: statements.append(args[2]))
    with engine.connect() as conn:
        report = comparison.compare(conn, project.load_metadata(ref)).report
    engine.dispose()
    assert len(report.changes) == 5 * len(DIFFERENT)
    assert sum("CREATE TEMPORARY TABLE" in s for s in statements) == 1, statements
    assert not any("SELECT" in s and " = " in s and "clock_timestamp" in s for s in statements)


def test_a_default_the_server_cannot_render_is_compared_as_text_and_said(
    tmp_path: Path, database_url: str
) -> None:
    ref = setup(tmp_path, database_url,
                [*SAME, ("text", "'x'", 'sa.text("no_such_function()")')])
    data = detect(database_url, ref)
    assert [c["column"] for c in data["changes"]] == [f"c{len(SAME)}"], data
    assert len(data["warnings"]) == 1, data
    assert "1 server default(s) could not be rendered by PostgreSQL" in data["warnings"][0]
    assert "t0.c9" in data["warnings"][0] and "no_such_function" in data["warnings"][0]


def test_read_only_database_falls_back_to_text_and_says_so(
    tmp_path: Path, database_url: str
) -> None:
    ref = setup(tmp_path, database_url, SAME[:1])
    name = database_url.rsplit("/", 1)[1]
    execute(database_url, f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    data = detect(database_url, ref)
    assert [c["column"] for c in data["changes"]] == ["c0"], data
    assert "read-only transaction" in data["warnings"][0], data
    assert "--no-compare-server-defaults" in data["warnings"][0]
    clean = detect(database_url, ref, "--no-compare-server-defaults")
    assert (clean["changes"], clean["warnings"]) == ([], []), clean


def test_comparison_can_be_turned_off_by_option_and_environment(
    tmp_path: Path, database_url: str
) -> None:
    ref = setup(tmp_path, database_url, DIFFERENT)
    args = ("--database-url", database_url, "--metadata", ref)
    off = invoke("check", *args, "--no-compare-server-defaults")
    assert (off.code, off.out) == (0, "No schema changes detected\n"), off
    os.environ["SCHEMASHIFT_COMPARE_SERVER_DEFAULTS"] = "false"
    try:
        by_env = invoke("check", *args)
        assert (by_env.code, by_env.out) == (0, "No schema changes detected\n"), by_env
    finally:
        del os.environ["SCHEMASHIFT_COMPARE_SERVER_DEFAULTS"]
    on = invoke("check", *args, "--compare-server-defaults")
    assert on.code == 1, on
    # Off means plain defaults only: real drift elsewhere is still drift.
    execute(database_url, "ALTER TABLE t0 DROP COLUMN c0")
    assert "- New column: t0.c0" in invoke("check", *args, "--no-compare-server-defaults").out
