"""The expand gate's check after the fact: the catalog, read back, before and after an expand.

Before any change the plan's operations are checked (plan/compat.py, refusal
`IncompatibleExpand`). What the plan cannot see — SQL built at run time, a revision that could
not be previewed, a function or a DO block — is caught here: after an expand, every table,
column and enum type the database held before must still exist and accept what it accepted:

- the table and the column still exist (not dropped, not renamed away);
- the column's type is the same or a widening (type_widening.widens);
- a column that was nullable still is;
- a NOT NULL column that had a default keeps one (the old code's INSERTs may leave it out);
- a new column of an old table is nullable or has a default (identity and generated columns
  fill themselves), so the old code's INSERTs, which leave it out, still work;
- an enum type keeps all of its labels.

A violation fails the run, which is rolled back per the rollback policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from schemashift.plan.compat import OLD_CODE
from schemashift.release_phases import EXPAND
from schemashift.type_widening import widens

MAX_LISTED = 10

_COLUMNS = sa.text("""
    SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
           a.attnotnull, a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped
      AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
      AND c.relname <> 'alembic_version'
""")
_ENUMS = sa.text("""
    SELECT n.nspname, t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
    FROM pg_type t
    JOIN pg_enum e ON e.enumtypid = t.oid
    JOIN pg_namespace n ON n.oid = t.typnamespace
    GROUP BY n.nspname, t.typname
""")

Column = tuple[str, bool, bool]  # type, NOT NULL, has a default (or fills itself)


@dataclass(frozen=True)
class Shape:
    """What the old code relies on: each relation's columns, and each enum's labels."""

    columns: dict[tuple[str, str], dict[str, Column]] = field(default_factory=dict)
    enums: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)


def read_shape(conn: Connection) -> Shape:
    shape = Shape()
    for schema, table, column, type_, not_null, filled in conn.execute(_COLUMNS):
        shape.columns.setdefault((schema, table), {})[column] = (type_, not_null, filled)
    for schema, name, labels in conn.execute(_ENUMS):
        shape.enums[(schema, name)] = tuple(labels)
    return shape


def broken(before: Shape, after: Shape) -> list[str]:
    """How `after` breaks code written against `before` (empty: it does not)."""
    problems: list[str] = []
    for (schema, table), columns in sorted(before.columns.items()):
        name = f"{schema}.{table}"
        now = after.columns.get((schema, table))
        if now is None:
            problems.append(f"table {name} is gone (dropped or renamed): {OLD_CODE} uses it")
            continue
        problems += _columns(name, columns, now)
    for (schema, type_name), labels in sorted(before.enums.items()):
        kept = after.enums.get((schema, type_name))
        if kept is None:
            problems.append(f"type {schema}.{type_name} is gone: {OLD_CODE} uses it")
        elif set(labels) - set(kept):
            lost = ", ".join(sorted(set(labels) - set(kept)))
            problems.append(f"type {schema}.{type_name} lost the label(s) {lost}: {OLD_CODE} "
                            "may write them")
    return problems


def _columns(table: str, before: dict[str, Column], after: dict[str, Column]) -> list[str]:
    problems = []
    for column, (type_, not_null, filled) in sorted(before.items()):
        now = after.get(column)
        if now is None:
            problems.append(f"column {table}.{column} is gone (dropped or renamed): {OLD_CODE} "
                            "selects or writes it")
            continue
        if not widens(type_, now[0]):
            problems.append(f"column {table}.{column} changed type from {type_} to {now[0]}: "
                            f"{OLD_CODE} may write values it rejects")
        if now[1] and not not_null:
            problems.append(f"column {table}.{column} became NOT NULL: {OLD_CODE} may leave "
                            "it empty")
        elif now[1] and filled and not now[2]:
            problems.append(f"column {table}.{column} lost its default but is NOT NULL: "
                            f"{OLD_CODE}'s INSERTs may leave it out")
    for column, (_, not_null, filled) in sorted(after.items()):
        if column not in before and not_null and not filled:
            problems.append(f"column {table}.{column} was added NOT NULL without a default: "
                            f"{OLD_CODE}'s INSERTs leave it out")
    return problems


class ExpandGate:
    """Reads the shape before an expand and says, after it, what the expand broke."""

    def __init__(self, conn: Connection) -> None:
        self.before = read_shape(conn)

    @classmethod
    def start(cls, phase: str, conn: Connection) -> ExpandGate | None:
        return cls(conn) if phase == EXPAND else None

    def violations(self, conn: Connection) -> str | None:
        problems = broken(self.before, read_shape(conn))
        if not problems:
            return None
        shown = "; ".join(problems[:MAX_LISTED])
        more = f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        return (f"the expand broke what the running release relies on, as the catalog reads "
                f"after it: {shown}{more}")


__all__ = ["ExpandGate", "Shape", "broken", "read_shape"]
