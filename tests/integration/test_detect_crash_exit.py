"""An unexpected exception is exit 70 (EX_SOFTWARE), never 1: CI must tell a crash from drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemashift import errors
from tests.fixtures.models import execute, run, write_models

pytestmark = pytest.mark.integration

# A models module whose custom type cannot render its DDL: a bug in the user's code (or ours)
# surfaces as an exception nobody anticipated while comparing.
BROKEN_TYPE = """
class Broken(sa.types.UserDefinedType):
    cache_ok = True

    def get_col_spec(self, **kw):
        raise LookupError("column spec table is empty")


gauges = sa.Table(
    "gauges", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("reading", Broken()),
)
"""


@pytest.mark.parametrize("command", ["check", "detect-schema-changes"])
def test_a_crash_while_comparing_exits_70_with_a_message_and_no_traceback(
    tmp_path: Path, database_url: str, command: str
) -> None:
    execute(database_url, "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)",
            "CREATE TABLE gauges (id int CONSTRAINT pk_gauges PRIMARY KEY, reading text)")
    ref = write_models(tmp_path, BROKEN_TYPE)
    done = run(command, "--database-url", database_url, "--metadata", ref, pythonpath=tmp_path)
    assert done.code == errors.EXIT_INTERNAL == 70, done
    assert (f"error: unexpected LookupError in {command}: column spec table is empty"
            in done.err), done
    assert "report it" in done.err and "Traceback" not in done.err, done
    assert done.out == ""
