"""Whether changing a column's type rewrites the table: what lint flags and what the generator
marks as needing expand/contract, judged once for both."""

from __future__ import annotations

import re
import warnings
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# A column whose existing rows PostgreSQL must fill: the whole table is rewritten.
REWRITING_COLUMN = re.compile(r"\b(SMALL|BIG)?SERIAL\b|\bGENERATED\b.*\bAS\s+IDENTITY\b"
                              r"|\bGENERATED\s+ALWAYS\s+AS\s*\(.*\)\s*STORED\b",
                              re.IGNORECASE | re.DOTALL)
VOLATILE_FUNCTIONS = re.compile(
    r"\b(random|clock_timestamp|timeofday|gen_random_uuid|uuid_generate_v1|uuid_generate_v1mc"
    r"|uuid_generate_v4|uuidv4|uuidv7|nextval|txid_current|pg_current_xact_id)\s*\(",
    re.IGNORECASE,
)


def type_sql(type_: Any) -> str:
    type_ = type_() if isinstance(type_, type) else type_
    return str(type_.compile(dialect=_DIALECT))


def same_type(old: Any, new: Any) -> bool:
    """Both compile to the same PostgreSQL type (VARCHAR(9) → VARCHAR(9) changes nothing)."""
    return old is not None and type_sql(old) == type_sql(new)


def binary_compatible(old: Any, new: Any) -> bool:
    """varchar(n) → varchar(m ≥ n) / text: PostgreSQL changes only the catalog, no rewrite."""
    old = old() if isinstance(old, type) else old
    new = new() if isinstance(new, type) else new
    if not (isinstance(old, sa.String) and isinstance(new, sa.String)):
        return False
    if isinstance(old, sa.Enum) or isinstance(new, sa.Enum):
        return False
    return new.length is None or (old.length is not None and new.length >= old.length)


def rewrites(old: Any, new: Any) -> bool:
    """Changing a column of type `old` (None: unknown) to `new` rewrites the table."""
    return not same_type(old, new) and not binary_compatible(old, new)


def column_ddl(column: sa.Column[Any], virtual_generated: bool = True) -> str:
    """The column as ADD COLUMN writes it. `virtual_generated`: the server has virtual generated
    columns (PostgreSQL 18+) and SQLAlchemy writes them (2.0.4x+); else a `Computed` without
    `persisted` is written STORED."""
    dialect = _DIALECT if virtual_generated else _STORED_ONLY
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sa.exc.SAWarning)  # "created as 'STORED' since …"
        return str(sa.schema.CreateColumn(column).compile(dialect=dialect))


def rewrites_table(column: sa.Column[Any], virtual_generated: bool = True) -> bool:
    """Adding this column fills every existing row (identity, serial, stored generated)."""
    return REWRITING_COLUMN.search(column_ddl(column, virtual_generated)) is not None


def volatile_default(column: sa.Column[Any]) -> bool:
    """Adding this column evaluates its default once per existing row (a rewrite)."""
    return column.server_default is not None and VOLATILE_FUNCTIONS.search(
        column_ddl(column)) is not None


def writes_virtual_columns(dialect: sa.engine.Dialect) -> bool:
    """What SQLAlchemy writes for `Computed(...)` on this connection's server: VIRTUAL (no
    keyword) on PostgreSQL 18+ from SQLAlchemy 2.0.4x; STORED on older servers or versions."""
    return bool(getattr(dialect, "supports_virtual_generated_columns", False))


_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]
_STORED_ONLY = postgresql.dialect()  # type: ignore[no-untyped-call]
_STORED_ONLY.supports_virtual_generated_columns = False

__all__ = ["REWRITING_COLUMN", "VOLATILE_FUNCTIONS", "binary_compatible", "column_ddl",
           "rewrites", "rewrites_table", "same_type", "type_sql", "volatile_default",
           "writes_virtual_columns"]
