"""The constraints the live database already holds on the tables a plan touches.

A revision interrupted after `ADD CONSTRAINT … CHECK (col IS NOT NULL) NOT VALID` (or after its
VALIDATE) reruns with the check already there: its `SET NOT NULL` is then as cheap as in one
uninterrupted run, and dropping that helper check loses nothing; nor does `DROP CONSTRAINT IF
EXISTS` of a constraint the database does not hold. Read like `live`: read-only, in a transaction
(or savepoint) that is rolled back; a query that cannot run leaves nothing known.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from schemashift.plan.live import read_only, table_key

_CONSTRAINTS = sa.text(
    "SELECT n.nspname, c.relname, pg_table_is_visible(c.oid), k.conname, k.convalidated, "
    "k.contype = 'c', pg_get_constraintdef(k.oid) FROM pg_constraint k "
    "JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relname = ANY(:tables)"
)
_NOT_NULL = re.compile(r'^"?([^"\s()]+)"?\s+IS\s+NOT\s+NULL$', re.IGNORECASE)
_CHECK_WORD = re.compile(r"^\s*CHECK\s*", re.IGNORECASE)
_NOT_VALID_SUFFIX = re.compile(r"\s+NOT\s+VALID\s*$", re.IGNORECASE)


def not_null_column(expression: str) -> str | None:
    """The column of a `col IS NOT NULL` check expression (any outer parentheses), else None."""
    text = _NOT_VALID_SUFFIX.sub("", _CHECK_WORD.sub("", expression.strip()))
    while text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
        text = text[1:-1].strip()
    match = _NOT_NULL.match(text)
    return match.group(1).lower() if match else None


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


@dataclass(frozen=True)
class LiveConstraint:
    validated: bool
    not_null_column: str | None  # the column of a `CHECK (col IS NOT NULL)`


@dataclass
class LiveConstraints:
    """Constraints keyed by (`table_key`, lower-cased name)."""

    read: bool = False  # the server answered (else an absent constraint may still exist)
    held: dict[tuple[str, str], LiveConstraint] = field(default_factory=dict)


NO_CONSTRAINTS = LiveConstraints()


def read_constraints(conn: Connection, touched: Iterable[tuple[str | None, str]],
                     timeout: str) -> LiveConstraints:
    tables = sorted({table for _, table in touched})
    found = LiveConstraints(read=True)
    if not tables:
        return found
    with read_only(conn, timeout):
        savepoint = conn.begin_nested()
        try:
            rows = conn.execute(_CONSTRAINTS, {"tables": tables}).all()
        except DBAPIError:  # timeout, no privilege: nothing known, nothing exempt
            return LiveConstraints()
        finally:
            savepoint.rollback()
    for schema, table, visible, name, validated, is_check, definition in rows:
        held = LiveConstraint(bool(validated),
                              not_null_column(str(definition)) if is_check else None)
        found.held[(table_key(str(table), str(schema)), str(name).lower())] = held
        if visible:
            found.held[(table_key(str(table)), str(name).lower())] = held
    return found


__all__ = ["NO_CONSTRAINTS", "LiveConstraint", "LiveConstraints", "not_null_column",
           "read_constraints"]
