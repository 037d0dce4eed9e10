"""Staging keeps the history's semantics: `apply` runs ONE Alembic command with a transaction
per revision, so a history that passes plain `alembic upgrade head` passes `apply` too, and each
revision is reported committed only once another session can see it."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.exc import ProgrammingError

from schemashift import scripts
from tests.fixtures.histories import URL_ONLY_ENV, Revision, write_history
from tests.fixtures.postgres import PgServer
from tests.fixtures.runner_cli import revision, run_apply, scalar, tables

pytestmark = pytest.mark.integration

# SQLAlchemy remembers the named ENUM it created for as long as one Alembic command runs, so the
# second `sa.Enum(..., name="color")` (create_type left at its default) is not created again.
# Revision by revision, that memo is gone and CREATE TYPE color fails: "already exists".
PAINTS = Revision(
    "e1", "paints",
    """
    op.create_table("paints", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("color", sa.Enum("a", "b", name="color")))
    """,
    'op.drop_table("paints")',
)
INKS = Revision(
    "e2", "inks, same enum",
    """
    op.create_table("inks", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("color", sa.Enum("a", "b", name="color")))
    """,
    'op.drop_table("inks")',
)
ENUM_TWICE = [PAINTS, INKS]


def _upgrade(database_url: str, migrations: Path, target: str) -> None:
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            config = scripts.alembic_config(migrations)
            config.attributes["connection"] = conn
            command.upgrade(config, target)
            conn.commit()
    finally:
        engine.dispose()


def test_the_repro_passes_plain_alembic_and_fails_revision_by_revision(
    database_url: str, pg_server: PgServer, tmp_path: Path
) -> None:
    """Guards the reproduction below: if this stops holding, that test proves nothing."""
    whole = write_history(tmp_path, ENUM_TWICE, name="whole")
    _upgrade(database_url, whole, "head")
    assert revision(database_url) == "e2"

    name = pg_server.create_database()
    try:
        _upgrade(pg_server.app_url(name), whole, "e1")
        with pytest.raises(ProgrammingError, match='type "color" already exists'):
            _upgrade(pg_server.app_url(name), whole, "e2")
    finally:
        pg_server.drop_database(name)


@pytest.mark.parametrize("env", ["connection", "url-only"])
def test_a_history_that_passes_alembic_upgrade_head_passes_apply(
    database_url: str, tmp_path: Path, env: str
) -> None:
    migrations = write_history(tmp_path, ENUM_TWICE,
                               **({"env": URL_ONLY_ENV} if env == "url-only" else {}))

    run = run_apply(database_url, migrations)

    assert run.exit_code == 0, run
    assert [(s["revision"], s["state"], s["attempts"]) for s in run.result["stages"]] == [
        ("e1", "Succeeded", 1), ("e2", "Succeeded", 1)]
    assert [(e["revision"], e["state"]) for e in run.of("stage")] == [
        ("e1", "Running"), ("e1", "Succeeded"), ("e2", "Running"), ("e2", "Succeeded")]
    assert revision(database_url) == "e2"
    assert {"paints", "inks"} <= tables(database_url)
    assert scalar(database_url, "SELECT count(*) FROM pg_type WHERE typname = 'color'") == 1
