"""Generated columns whose expression PostgreSQL stores respelled are not said to have changed.

Alembic's own check compares normalised text: `qty IN (1, 2)` comes back as
`(qty = ANY (ARRAY[1, 2]))`, `price * qty` as `(price * (qty)::numeric)` (Alembic 1.13 keeps
the casts). Both legs of tools/matrix.py run these; each model matches its database, and a
changed expression is still said."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.models import execute, invoke, write_models

pytestmark = pytest.mark.integration

SQL = (
    "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)",
    "CREATE SCHEMA billing",
    'CREATE TABLE billing."Line Items" (id int PRIMARY KEY, price numeric(10, 2) NOT NULL, '
    "qty int NOT NULL, "
    "small boolean GENERATED ALWAYS AS (qty IN (1, 2)) STORED, "
    "total numeric GENERATED ALWAYS AS (price * qty) STORED)",
)


def models(small: str = "qty IN (1, 2)") -> str:
    return f"""
lines = sa.Table(
    "Line Items", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("price", sa.Numeric(10, 2), nullable=False),
    sa.Column("qty", sa.Integer, nullable=False),
    sa.Column("small", sa.Boolean, sa.Computed({small!r}, persisted=True)),
    sa.Column("total", sa.Numeric, sa.Computed("price * qty", persisted=True)),
    schema="billing",
)
"""


def warnings_of(database_url: str, ref: str) -> list[str]:
    result = invoke("detect", "--json", "--database-url", database_url, "--metadata", ref)
    assert result.code == 0, result
    data = json.loads(result.out)
    assert data["changes"] == [], data
    return list(data["warnings"])


def test_respelled_generated_expressions_are_not_warned_about(
    tmp_path: Path, database_url: str
) -> None:
    execute(database_url, *SQL)
    assert warnings_of(database_url, write_models(tmp_path, models())) == []


def test_changed_generated_expression_is_still_warned_about(
    tmp_path: Path, database_url: str
) -> None:
    execute(database_url, *SQL)
    found = warnings_of(database_url, write_models(tmp_path, models(small="qty IN (1, 2, 3)")))
    assert [w for w in found if "cannot be modified" in w] == [
        "autogenerate: Computed default on Line Items.small cannot be modified"], found
