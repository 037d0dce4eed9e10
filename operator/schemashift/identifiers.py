"""Names longer than PostgreSQL keeps: NAMEDATALEN - 1 = 63 bytes, counted in the server's
encoding (UTF-8). A longer name is truncated with only a NOTICE, so the database holds a name the
models and revisions do not (drift forever, a downgrade that drops by name fails), and two long
names sharing their first 63 bytes collide. SQLAlchemy refuses some of these itself, counting
characters: a name of 32 two-byte characters passes it and is still truncated."""

from __future__ import annotations

import re
from collections.abc import Iterator

import sqlalchemy as sa
from alembic.operations import ops as alembic_ops
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import conv

MAX_IDENTIFIER_BYTES = 63


def final_name(name: object) -> object:
    """The name SQLAlchemy sends to the server: one a naming convention made (`conv`, written
    `op.f(...)`) that is longer than 63 characters is cut by SQLAlchemy itself, to 63 with a
    hash suffix, the same way on every run; any other name is sent as written."""
    if isinstance(name, conv) and len(name) > MAX_IDENTIFIER_BYTES:
        return _PREPARER.truncate_and_render_constraint_name(name, _alembic_quote=False)
    return name


def too_long(name: object) -> bool:
    name = final_name(name)
    return isinstance(name, str) and len(name.encode()) > MAX_IDENTIFIER_BYTES


def op_too_long(op: alembic_ops.MigrateOperation) -> list[str]:
    """The names an operation gives to something that PostgreSQL would truncate."""
    return list(dict.fromkeys(str(final_name(name)) for name in _names(op)
                              if isinstance(name, str) and too_long(name)))


def _names(op: alembic_ops.MigrateOperation) -> Iterator[object]:
    if isinstance(op, alembic_ops.CreateTableOp):
        yield op.table_name
        for item in op.columns:
            yield getattr(item, "name", None)
    elif isinstance(op, alembic_ops.AddColumnOp):
        yield op.column.name
        yield from (c.name for c in op.column.constraints if isinstance(c, sa.Constraint))
    elif isinstance(op, alembic_ops.AlterColumnOp):
        yield op.modify_name
    elif isinstance(op, alembic_ops.RenameTableOp):
        yield op.new_table_name
    elif isinstance(op, alembic_ops.CreateIndexOp):
        yield op.index_name
    elif isinstance(op, alembic_ops.AddConstraintOp):
        yield getattr(op, "constraint_name", None)


_SKIPPED = re.compile(r"'(?:[^']|'')*'|\$(\w*)\$.*?\$\1\$|--[^\n]*", re.DOTALL)
_IDENTIFIER = re.compile(r'"((?:[^"]|"")+)"|\b([^\W\d][\w$]*)')


def raw_too_long(statement: str) -> list[str]:
    """Identifiers (quoted or bare) of a raw SQL statement, outside string literals and
    dollar-quoted bodies, that PostgreSQL would truncate."""
    text = _SKIPPED.sub(" ", statement)
    found = (m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2)
             for m in _IDENTIFIER.finditer(text))
    return list(dict.fromkeys(name for name in found if too_long(name)))


_PREPARER = postgresql.dialect().identifier_preparer  # type: ignore[no-untyped-call]

__all__ = ["MAX_IDENTIFIER_BYTES", "final_name", "op_too_long", "raw_too_long", "too_long"]
