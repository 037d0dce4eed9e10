"""Type widening as expand/contract judges it, on SQLAlchemy's spelling and the catalog's."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from schemashift.type_widening import type_text, widens


@pytest.mark.parametrize(("before", "after"), [
    ("character varying(50)", "VARCHAR(80)"), ("VARCHAR(20)", "TEXT"),
    ("character varying", "text"), ("smallint", "INTEGER"), ("integer", "BIGINT"),
    ("integer", "NUMERIC"), ("numeric(10,2)", "NUMERIC(12, 2)"), ("numeric(10,2)", "numeric"),
    ("real", "double precision"), ("DOUBLE PRECISION", "FLOAT(53)"), ("FLOAT(10)", "real"),
    ("timestamp without time zone", "TIMESTAMP"), ("integer[]", "BIGINT[]"),
    ("status", "status"),
])
def test_widenings_keep_old_writers_working(before: str, after: str) -> None:
    assert widens(before, after)


@pytest.mark.parametrize(("before", "after"), [
    ("VARCHAR(20)", "character varying(9)"), ("text", "VARCHAR(10)"), ("bigint", "integer"),
    ("numeric(10,2)", "numeric(10,3)"), ("numeric", "numeric(10,2)"), ("double precision", "real"),
    ("timestamp", "timestamptz"), ("integer", "text"), ("integer[]", "integer"),
    (None, "text"), ("text", None),
])
def test_narrowings_and_other_changes_are_not_widenings(before: str | None,
                                                        after: str | None) -> None:
    assert not widens(before, after)


def test_sqlalchemy_types_compile_to_the_spelling_judged() -> None:
    assert widens(type_text(sa.String(20)), type_text(sa.Text()))
    assert not widens(type_text(sa.BigInteger), type_text(sa.Integer))
    assert type_text(None) is None
