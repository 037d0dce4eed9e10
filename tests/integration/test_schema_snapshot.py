"""The snapshot a rollback is checked against: every kind of object it covers, and a dump/restore
round trip that prints expressions differently but is the same schema."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from schemashift import db
from schemashift.runner import schema_reparse, schema_snapshot
from tests.fixtures.postgres import APP_PASSWORD, PgServer

SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'ok');
CREATE SEQUENCE ticket_no INCREMENT 1;
CREATE TABLE runs (
    id serial PRIMARY KEY,
    stage varchar(20) NOT NULL DEFAULT 'active'
        CONSTRAINT runs_stage CHECK (stage IN ('active', 'deleted')),
    tags varchar(20)[] DEFAULT ARRAY['a', 'b']::varchar(20)[],
    feeling mood
);
CREATE INDEX runs_stage_idx ON runs (stage) WHERE stage IN ('active', 'deleted');
CREATE VIEW active_runs AS SELECT id FROM runs WHERE stage IN ('active', 'deleted');
CREATE FUNCTION next_ticket() RETURNS bigint LANGUAGE sql AS $$ SELECT nextval('ticket_no') $$;
"""

CHANGES = [
    ("DROP VIEW active_runs", "view public.active_runs is missing"),
    ("CREATE OR REPLACE VIEW active_runs AS SELECT id FROM runs WHERE stage = 'active'",
     "view public.active_runs definition"),
    ("ALTER SEQUENCE ticket_no INCREMENT 5", "sequence public.ticket_no increment 5, was 1"),
    ("CREATE OR REPLACE FUNCTION next_ticket() RETURNS bigint LANGUAGE sql "
     "AS $$ SELECT 42::bigint $$", "function public.next_ticket() body"),
    ("ALTER TYPE mood ADD VALUE 'happy'",
     "enum type public.mood values sad, ok, happy, was sad, ok"),
    ("ALTER TABLE runs DROP CONSTRAINT runs_stage, ADD CONSTRAINT runs_stage "
     "CHECK (stage IN ('active'))", "constraint public.runs.runs_stage definition"),
    ("ALTER TABLE runs ALTER COLUMN stage SET DEFAULT 'deleted'",
     "column public.runs.stage default"),
    ("CREATE SEQUENCE leftover", "sequence public.leftover still exists"),
    ("DROP INDEX runs_stage_idx", "index public.runs_stage_idx is missing"),
    ("DROP INDEX runs_stage_idx; CREATE INDEX runs_stage_idx ON runs (stage) "
     "WHERE stage = 'active'", "index public.runs_stage_idx definition"),
]


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = db.make_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(SCHEMA)
    yield engine
    engine.dispose()


def snapshot(engine: sa.Engine) -> schema_snapshot.Snapshot:
    with engine.connect() as conn:
        return schema_snapshot.take(conn)


def differences(engine: sa.Engine, before: schema_snapshot.Snapshot) -> list[str]:
    with engine.connect() as conn:
        return schema_snapshot.differences(
            before, schema_snapshot.take(conn),
            lambda *texts: schema_reparse.equivalent(conn, *texts))


@pytest.mark.parametrize(("change", "reported"), CHANGES, ids=[c[1].split(" ")[0] + "-" + str(i)
                                                               for i, c in enumerate(CHANGES)])
def test_every_kind_of_change_is_reported(engine: sa.Engine, change: str, reported: str) -> None:
    before = snapshot(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(change)

    found = differences(engine, before)

    assert any(line.startswith(reported) for line in found), found


def test_a_dump_and_restore_of_the_same_schema_compares_equal(
    engine: sa.Engine, pg_server: PgServer,
) -> None:
    before = snapshot(engine)
    source = engine.url.database
    assert source is not None
    copy = pg_server.create_database()
    try:
        dump = subprocess.run(
            [str(pg_server.bin_dir / "pg_dump"), "-Fc", "--no-owner", "-d",
             pg_server.admin_url(source)], capture_output=True, check=True).stdout
        subprocess.run([str(pg_server.bin_dir / "pg_restore"), "--no-owner", "--role", "app",
                        "-d", pg_server.admin_url(copy)], input=dump, check=True)
        restored = db.make_engine(pg_server.app_url(copy, password=APP_PASSWORD))
        try:
            with restored.connect() as conn:
                printed_differently = schema_snapshot.differences(before,
                                                                  schema_snapshot.take(conn))
            found = differences(restored, before)
        finally:
            restored.dispose()
    finally:
        pg_server.drop_database(copy)

    # PostgreSQL prints the restored CHECK/default/view texts differently (it parsed them again);
    # the server, asked to parse both texts, finds them the same.
    assert printed_differently, "the round trip printed everything identically: test shows nothing"
    assert found == []


def test_a_real_change_is_still_reported_after_reparsing(engine: sa.Engine) -> None:
    before = snapshot(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE runs DROP CONSTRAINT runs_stage, ADD CONSTRAINT "
                             "runs_stage CHECK (stage IN ('active', 'archived'))")
        conn.exec_driver_sql("ALTER TABLE runs ALTER COLUMN tags SET DEFAULT "
                             "ARRAY['a', 'c']::varchar(20)[]")

    found = differences(engine, before)

    assert [line.split(" definition ")[0].split(" default ")[0] for line in found] == [
        "column public.runs.tags", "constraint public.runs.runs_stage"], found
