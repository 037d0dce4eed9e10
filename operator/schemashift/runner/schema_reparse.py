"""Whether two catalog texts of one expression are the same expression, as the server decides.

PostgreSQL stores CHECK constraints, column defaults, index expressions and views as parse
trees and prints them back (`pg_get_constraintdef`, `pg_get_expr`, `pg_get_indexdef`,
`pg_get_viewdef`); printing and parsing again is not always the identity: after a dump and
restore, `(ARRAY['a'::varchar, 'b'::varchar])::text[]` comes back as
`ARRAY[('a'::varchar)::text, ('b'::varchar)::text]`. So a text that differs is parsed again by
the server, on a temporary copy of the table, and the two printed forms are compared: equal
means the restore (or downgrade) put the same expression back. Everything happens in a
transaction that is rolled back; the copy (`CREATE TEMP TABLE … (LIKE …)`) only reads the real
table's definition.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

_PROBE = "schemashift_reparse_probe"
_NOT_VALID = " NOT VALID"

Reparser = Callable[[Connection, str, str, str], str | None]


def equivalent(connection: Connection, kind: str, name: str, parent: str, attribute: str,
               was: str, now: str) -> bool:
    """`was` and `now` print the same expression of the object (kind, name) of table `parent`."""
    reparse = _REPARSERS.get((kind, attribute))
    if reparse is None or "none" in (was, now):
        return False
    try:
        with connection.begin_nested() if connection.in_transaction() else connection.begin():
            old = reparse(connection, name, parent, was)
            new = reparse(connection, name, parent, now)
            raise _Undo(old is not None and old == new)
    except _Undo as undo:
        return undo.same
    except DBAPIError:
        return False


class _Undo(Exception):
    """Leaves the probe's transaction by rolling it back, carrying the answer out."""

    def __init__(self, same: bool) -> None:
        super().__init__()
        self.same = same


def _quoted(connection: Connection, qualified: str) -> str:
    quote = connection.dialect.identifier_preparer.quote
    return ".".join(quote(part) for part in qualified.split(".", 1))


def _copy_of(connection: Connection, parent: str, probe: str) -> None:
    connection.execute(sa.text(f"DROP TABLE IF EXISTS pg_temp.{probe}"))
    connection.execute(sa.text(
        f"CREATE TEMP TABLE {probe} (LIKE {_quoted(connection, parent)})"))


def _check(connection: Connection, name: str, parent: str, definition: str) -> str | None:
    if not definition.startswith("CHECK "):
        return None
    expression = definition.removesuffix(_NOT_VALID)
    suffix = definition[len(expression):]
    _copy_of(connection, parent, _PROBE)
    connection.execute(sa.text(
        f"ALTER TABLE {_PROBE} ADD CONSTRAINT {_PROBE} {expression}{_NOT_VALID}"))
    printed = connection.execute(sa.text(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = CAST(:t AS regclass) AND conname = :c"),
        {"t": f"pg_temp.{_PROBE}", "c": _PROBE}).scalar_one()
    return str(printed).removesuffix(_NOT_VALID) + suffix


def _default(connection: Connection, name: str, parent: str, expression: str) -> str | None:
    column = name[len(parent) + 1:]
    quoted = connection.dialect.identifier_preparer.quote(column)
    _copy_of(connection, parent, _PROBE)
    connection.execute(sa.text(
        f"ALTER TABLE {_PROBE} ALTER COLUMN {quoted} SET DEFAULT {expression}"))
    printed = connection.execute(sa.text(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a "
        "ON a.attrelid = d.adrelid AND a.attnum = d.adnum "
        "WHERE d.adrelid = CAST(:t AS regclass) AND a.attname = :c"),
        {"t": f"pg_temp.{_PROBE}", "c": column}).scalar_one_or_none()
    return None if printed is None else str(printed)


def _view(connection: Connection, name: str, parent: str, definition: str) -> str | None:
    connection.execute(sa.text(f"DROP VIEW IF EXISTS pg_temp.{_PROBE}"))
    connection.execute(sa.text(
        f"CREATE TEMP VIEW {_PROBE} AS {definition.rstrip().removesuffix(';')}"))
    printed = connection.execute(sa.text("SELECT pg_get_viewdef(CAST(:v AS regclass))"),
                                 {"v": f"pg_temp.{_PROBE}"}).scalar_one()
    return str(printed)


_INDEX = re.compile(r"^(CREATE (?:UNIQUE )?INDEX) \S+ ON (?:ONLY )?\S+ (USING .*)$", re.DOTALL)


def _index(connection: Connection, name: str, parent: str, definition: str) -> str | None:
    found = _INDEX.match(definition)
    if found is None:
        return None
    _copy_of(connection, parent, _PROBE)
    connection.execute(sa.text(f"{found[1]} {_PROBE}_index ON {_PROBE} {found[2]}"))
    printed = connection.execute(sa.text("SELECT pg_get_indexdef(CAST(:i AS regclass))"),
                                 {"i": f"pg_temp.{_PROBE}_index"}).scalar_one()
    return str(printed)


_REPARSERS: dict[tuple[str, str], Reparser] = {
    ("constraint", "definition"): _check,
    ("column", "default"): _default,
    ("index", "definition"): _index,
    ("view", "definition"): _view,
    ("materialized view", "definition"): _view,
}


__all__ = ["equivalent"]
