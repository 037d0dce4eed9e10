"""Alembic sees a rename as drop + add (which loses the data): suggest the rename instead.

Pairing is greedy, most similar names first (ties in name order). Candidates come from buckets
so the pairs that cannot match are never looked at: columns only meet columns of the same table
and type; tables only meet tables sharing a column in the prefix of their column sets (prefix
filtering, exact for a Jaccard threshold). Within a bucket the name similarity is refined lazily,
cheap upper bounds first, so difflib only runs on pairs that may still be chosen. A bucket too big
to compare every pair (hundreds of same-shaped tables: partitions, shards) pairs each old name
with its nearest new names in sorted and in reversed-sorted order (the sorted-neighbourhood
method): renames that add, drop or change a prefix or a suffix stay neighbours in one of the two
orders, and the work grows as n·log n instead of n².
"""

from __future__ import annotations

import bisect
import difflib
import heapq
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

SIMILAR_NAME = 0.5
SIMILAR_COLUMNS = 0.5

EXHAUSTIVE_PAIRS = 64 * 64  # a bucket up to this many pairs compares every pair
NEIGHBOURS = 3  # else: per old name, this many nearest new names on each side, in each order

Pair = tuple[str, str]
_EXACT = 2  # refinement levels: 0 length bound, 1 character-count bound, 2 difflib ratio


@dataclass(frozen=True)
class Rename:
    old: str  # "table.column" or "table"
    new: str

    def suggestion(self, what: str) -> str:
        return (f"{what} {self.new} looks like a rename of {self.old}; "
                f"use --rename {self.old}:{self.new}")


class _Similarity:
    """difflib's ratio of (old, new) and its upper bounds, one matcher per new name."""

    def __init__(self) -> None:
        self._matchers: dict[str, difflib.SequenceMatcher[str]] = {}

    def at(self, level: int, old: str, new: str) -> float:
        if level == 0:
            # difflib's real_quick_ratio, without building a matcher for every pair.
            return 2.0 * min(len(old), len(new)) / (len(old) + len(new))
        matcher = self._matchers.get(new)
        if matcher is None:
            matcher = self._matchers[new] = difflib.SequenceMatcher(None, b=new)
        matcher.set_seq1(old)
        return matcher.quick_ratio() if level == 1 else matcher.ratio()


def _pairs(candidates: Iterable[Pair], lone: bool) -> list[Pair]:
    """Best-matching (old, new) pairs; a lone candidate pair counts even when names differ.

    A heap ordered by (-similarity, old, new) where an entry's similarity may still be an upper
    bound: an exact entry on top is the best remaining pair, as in sorting every pair by ratio."""
    if lone:
        return list(candidates)
    similarity = _Similarity()
    first = sorted(entry for entry in ((-similarity.at(0, old, new), old, new, 0)
                                       for old, new in candidates)
                   if -entry[0] >= SIMILAR_NAME)
    refined: list[tuple[float, str, str, int]] = []
    chosen: list[Pair] = []
    used_old: set[str] = set()
    used_new: set[str] = set()
    position = 0
    while position < len(first) or refined:
        if refined and (position == len(first) or refined[0] < first[position]):
            _, old, new, level = heapq.heappop(refined)
        else:
            _, old, new, level = first[position]
            position += 1
        if old in used_old or new in used_new:
            continue
        if level == _EXACT:
            chosen.append((old, new))
            used_old.add(old)
            used_new.add(new)
            continue
        value = similarity.at(level + 1, old, new)
        if value >= SIMILAR_NAME:
            heapq.heappush(refined, (-value, old, new, level + 1))
    return chosen


def column_renames(
    removed: dict[str, dict[str, str]], added: dict[str, dict[str, str]]
) -> list[Rename]:
    """`removed`/`added`: table → column → compiled type."""
    renames = []
    for table in sorted(set(removed) & set(added)):
        old_cols, new_cols = removed[table], added[table]
        new_by_type: dict[str, list[str]] = defaultdict(list)
        for name, type_ in new_cols.items():
            new_by_type[type_].append(name)
        old_by_type: dict[str, list[str]] = defaultdict(list)
        for name, type_ in old_cols.items():
            old_by_type[type_].append(name)
        candidates = [pair for type_, olds in old_by_type.items()
                      for pair in _bucket_pairs(olds, new_by_type.get(type_, []))]
        lone = len(old_cols) == 1 and len(new_cols) == 1
        renames += [Rename(f"{table}.{old}", f"{table}.{new}")
                    for old, new in _pairs(candidates, lone)]
    return renames


def table_renames(removed: dict[str, sa.Table], added: dict[str, sa.Table]) -> list[Rename]:
    old_shapes, new_shapes = _by_columns(removed), _by_columns(added)
    candidates = [
        pair
        for old_shape, new_shape in _sharing_a_prefix_column(old_shapes, new_shapes)
        if _similar_columns(old_shape, new_shape)
        for pair in _bucket_pairs(old_shapes[old_shape], new_shapes[new_shape])
    ]
    lone = len(removed) == 1 and len(added) == 1
    return [Rename(old, new) for old, new in _pairs(candidates, lone)]


def _bucket_pairs(olds: Sequence[str], news: Sequence[str]) -> Iterator[Pair]:
    """Every pair of a small bucket; the sorted neighbourhoods of a big one."""
    if len(olds) * len(news) <= EXHAUSTIVE_PAIRS:
        yield from ((old, new) for old in olds for new in news)
        return
    seen: set[Pair] = set()
    for key in (_forward, _reversed):
        for pair in _neighbours(olds, news, key):
            if pair not in seen:
                seen.add(pair)
                yield pair


def _forward(name: str) -> str:
    return name


def _reversed(name: str) -> str:
    return name[::-1]


def _neighbours(olds: Sequence[str], news: Sequence[str],
                key: Callable[[str], str]) -> Iterator[Pair]:
    ordered_news = sorted(news, key=key)
    keys = [key(new) for new in ordered_news]
    for old in olds:
        at = bisect.bisect_left(keys, key(old))
        for new in ordered_news[max(0, at - NEIGHBOURS):at + NEIGHBOURS]:
            yield old, new


def _by_columns(tables: dict[str, sa.Table]) -> dict[frozenset[str], list[str]]:
    """Tables by their set of column names: same-shaped tables are compared once."""
    shapes: dict[frozenset[str], list[str]] = defaultdict(list)
    for name, table in tables.items():
        shapes[frozenset(c.name for c in table.columns)].append(name)
    return shapes


def _similar_columns(old: frozenset[str], new: frozenset[str]) -> bool:
    union = old | new
    return bool(union) and len(old & new) / len(union) >= SIMILAR_COLUMNS


def _sharing_a_prefix_column(
    old_shapes: Iterable[frozenset[str]], new_shapes: Iterable[frozenset[str]]
) -> set[tuple[frozenset[str], frozenset[str]]]:
    """Every pair of column sets whose Jaccard similarity may reach t = SIMILAR_COLUMNS (> 0):
    with the columns ordered rarest first, two sets x, y sharing at least t·|x or y| columns
    share one of the first |x| - ceil(t·|x|) + 1 columns of each (prefix filtering), so only
    those are indexed and looked up."""
    old_shapes, new_shapes = list(old_shapes), list(new_shapes)
    frequency = Counter(c for cols in (*old_shapes, *new_shapes) for c in cols)

    def prefix(cols: frozenset[str]) -> list[str]:
        ordered = sorted(cols, key=lambda c: (frequency[c], c))
        return ordered[:len(cols) - math.ceil(SIMILAR_COLUMNS * len(cols)) + 1]

    index: dict[str, list[frozenset[str]]] = defaultdict(list)
    for cols in new_shapes:
        for column in prefix(cols):
            index[column].append(cols)
    return {(cols, new) for cols in old_shapes
            for column in prefix(cols) for new in index.get(column, ())}
