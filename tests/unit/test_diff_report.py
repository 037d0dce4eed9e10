"""The change report's text and JSON forms, and the rename heuristics (no database needed)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from schemashift.diff import Change, ChangeReport, renames
from schemashift.diff.renames import column_renames, table_renames


def test_seed_lines_are_kept_exactly() -> None:
    report = ChangeReport([Change("column_added", table="patients", column="preferences"),
                           Change("table_added", table="hospital_settings")]).sorted()
    assert report.to_text() == (
        "Detected schema changes:\n- New table: hospital_settings\n"
        "- New column: patients.preferences"
    )
    assert ChangeReport().to_text() == "No schema changes detected"
    assert not ChangeReport().has_changes and report.has_changes


def test_data_loss_is_marked_in_text_and_json() -> None:
    change = Change("column_removed", table="patients", column="fax", data_loss=True)
    assert change.to_text() == "- Removed column: patients.fax (data loss if applied)"
    assert change.to_dict()["data_loss"] is True


def test_schema_qualified_targets() -> None:
    change = Change("type_changed", table="t", column="c", schema="clinic", old="INTEGER",
                    new="BIGINT")
    assert change.to_text() == "- Type changed: clinic.t.c INTEGER -> BIGINT"


def test_json_is_stable_and_serialisable() -> None:
    report = ChangeReport([Change("index_added", table="t", name="ix_t_a", new="(a)")],
                          warnings=["w"], suggestions=["s"])
    assert json.loads(json.dumps(report.to_dict())) == {
        "has_changes": True,
        "changes": [{"kind": "index_added", "table": "t", "column": None, "name": "ix_t_a",
                     "schema": None, "old": None, "new": "(a)", "data_loss": False,
                     "description": "New index: ix_t_a on t (a)"}],
        "warnings": ["w"],
        "suggestions": ["s"],
    }


def test_warnings_and_suggestions_follow_the_changes() -> None:
    text = ChangeReport([], warnings=["careful"], suggestions=["rename?"]).to_text()
    assert text.splitlines() == ["No schema changes detected", "Suggestions:", "- rename?",
                                 "Warnings:", "- careful"]


def test_sorting_puts_tables_before_columns_before_details() -> None:
    report = ChangeReport([
        Change("index_added", table="a", name="ix", new="(x)"),
        Change("column_added", table="b", column="c"),
        Change("table_removed", table="z", data_loss=True),
        Change("table_added", table="y"),
    ]).sorted()
    assert [c.kind for c in report.changes] == ["table_added", "table_removed", "column_added",
                                                "index_added"]


def test_column_rename_needs_the_same_type() -> None:
    removed = {"patients": {"fullname": "TEXT", "age": "INTEGER"}}
    added = {"patients": {"full_name": "TEXT", "age_years": "TEXT"}}
    renames = column_renames(removed, added)
    assert [(r.old, r.new) for r in renames] == [("patients.fullname", "patients.full_name")]
    assert renames[0].suggestion("column") == (
        "column patients.full_name looks like a rename of patients.fullname; "
        "use --rename patients.fullname:patients.full_name")


def test_lone_pair_of_the_same_type_is_suggested_even_with_different_names() -> None:
    renames = column_renames({"p": {"dob": "DATE"}}, {"p": {"date_of_birth": "DATE"}})
    assert [(r.old, r.new) for r in renames] == [("p.dob", "p.date_of_birth")]


def test_dissimilar_names_among_several_candidates_are_not_paired() -> None:
    removed = {"p": {"dob": "TEXT", "x": "TEXT"}}
    added = {"p": {"nickname": "TEXT", "zzz": "TEXT"}}
    assert column_renames(removed, added) == []


def test_table_rename_needs_similar_columns() -> None:
    metadata = sa.MetaData()
    old = sa.Table("room", metadata, sa.Column("id", sa.Integer), sa.Column("label", sa.Text))
    new = sa.Table("rooms", metadata, sa.Column("id", sa.Integer), sa.Column("label", sa.Text))
    other = sa.Table("invoices", metadata, sa.Column("total", sa.Integer))
    assert [(r.old, r.new) for r in table_renames({"room": old}, {"rooms": new})] == [
        ("room", "rooms")]
    assert table_renames({"room": old}, {"invoices": other}) == []


def _same_shaped(names: list[str]) -> dict[str, sa.Table]:
    metadata = sa.MetaData()
    return {name: sa.Table(name, metadata, sa.Column("id", sa.Integer),
                           sa.Column("payload", sa.Text)) for name in names}


@pytest.mark.parametrize("rename", [
    lambda name: f"{name}_archive",            # a suffix added
    lambda name: name.removeprefix("legacy_"),  # a prefix dropped
    lambda name: name.replace("_p", "_part"),  # a word in the middle changed
])
def test_a_bucket_too_big_to_pair_exhaustively_finds_the_same_renames(
    monkeypatch: pytest.MonkeyPatch, rename: Callable[[str], str]
) -> None:
    """Hundreds of same-shaped tables (partitions) pair by sorted neighbourhoods, and find what
    comparing every pair finds for renames that change a prefix, a suffix or a middle word."""
    olds = [f"legacy_events_p{month:03d}" for month in range(300)]
    removed, added = _same_shaped(olds), _same_shaped([rename(name) for name in olds])
    assert len(removed) * len(added) > renames.EXHAUSTIVE_PAIRS
    by_neighbourhood = [(r.old, r.new) for r in table_renames(removed, added)]
    monkeypatch.setattr(renames, "EXHAUSTIVE_PAIRS", len(removed) * len(added))
    exhaustive = [(r.old, r.new) for r in table_renames(removed, added)]
    assert by_neighbourhood == exhaustive
    assert sorted(by_neighbourhood) == sorted(zip(olds, map(rename, olds), strict=True))
