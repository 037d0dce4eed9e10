"""Alembic sees a rename as drop + add (which loses the data): suggest the rename instead."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

SIMILAR_NAME = 0.5
SIMILAR_COLUMNS = 0.5


@dataclass(frozen=True)
class Rename:
    old: str  # "table.column" or "table"
    new: str

    def suggestion(self, what: str) -> str:
        return (f"{what} {self.new} looks like a rename of {self.old}; "
                f"use --rename {self.old}:{self.new}")


def _similar(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def _pairs(
    removed: list[str], added: list[str], alike: Callable[[str, str], bool]
) -> list[tuple[str, str]]:
    """Best-matching (old, new) pairs; a lone candidate pair counts even when names differ."""
    candidates = [(old, new) for old in removed for new in added if alike(old, new)]
    lone = len(removed) == 1 and len(added) == 1
    chosen: list[tuple[str, str]] = []
    for old, new in sorted(candidates, key=lambda p: -_similar(*p)):
        if any(old == o or new == n for o, n in chosen):
            continue
        if lone or _similar(old, new) >= SIMILAR_NAME:
            chosen.append((old, new))
    return chosen


def column_renames(
    removed: dict[str, dict[str, str]], added: dict[str, dict[str, str]]
) -> list[Rename]:
    """`removed`/`added`: table → column → compiled type."""
    renames = []
    for table in sorted(set(removed) & set(added)):
        old_cols, new_cols = removed[table], added[table]
        for old, new in _pairs(sorted(old_cols), sorted(new_cols),
                               lambda o, n: old_cols[o] == new_cols[n]):  # noqa: B023
            renames.append(Rename(f"{table}.{old}", f"{table}.{new}"))
    return renames


def table_renames(removed: dict[str, sa.Table], added: dict[str, sa.Table]) -> list[Rename]:
    def alike(old: str, new: str) -> bool:
        old_cols = {c.name for c in removed[old].columns}
        new_cols = {c.name for c in added[new].columns}
        union = old_cols | new_cols
        return bool(union) and len(old_cols & new_cols) / len(union) >= SIMILAR_COLUMNS

    return [Rename(old, new) for old, new in _pairs(sorted(removed), sorted(added), alike)]
