"""Whether a column's new type accepts every value of its old one (a widening), judged on
PostgreSQL's spelling of both, so SQLAlchemy types (compiled) and the catalog's `format_type()`
text are judged alike. Old writers keep working across a widening: varchar(n) to varchar(m >= n)
or text, a larger integer, a numeric with room for as many digits, real to double precision.
Used by the generator's expand/contract split, the plan's compatibility check and the runner's
catalog check after an expand.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.dialects import postgresql

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]
_SPELLINGS = [
    ("character varying", "varchar"), ("timestamp without time zone", "timestamp"),
    ("timestamp with time zone", "timestamptz"), ("time without time zone", "time"),
    ("double precision", "float8"), ("real", "float4"), ("int8", "bigint"),
    ("int4", "integer"), ("int2", "smallint"), ("int", "integer"), ("decimal", "numeric"),
]
_TYPE = re.compile(r"^([a-z_][a-z0-9_ ]*?)\s*(?:\((\d+)(?:\s*,\s*(\d+))?\))?\s*((?:\[\])*)$")
_INTEGERS = ["smallint", "integer", "bigint"]


def type_text(type_: Any) -> str | None:
    if type_ is None:
        return None
    type_ = type_() if isinstance(type_, type) else type_
    try:
        return str(type_.compile(dialect=_DIALECT))
    except Exception:  # a type only its own dialect can compile: unknown here
        return None


def _parse(text: str) -> tuple[str, int | None, int | None, str] | None:
    spelled = " ".join(text.lower().split())
    for long, short in _SPELLINGS:
        if spelled == long or spelled.startswith(long + "(") or spelled.startswith(long + " ") \
                or spelled.startswith(long + "["):
            spelled = short + spelled[len(long):]
            break
    match = _TYPE.match(spelled)
    if match is None:
        return None
    name, first, second, array = match.groups()
    name = name.strip()
    if name == "float":  # float(p): real up to 24 bits of precision, double precision above
        return ("float4" if first and int(first) <= 24 else "float8", None, None, array)
    return (name, int(first) if first else None, int(second) if second else None, array)


def widens(before: str | None, after: str | None) -> bool:
    """Whether every value of `before` is a value of `after` (so old writers keep working)."""
    if before is None or after is None:
        return False
    old, new = _parse(before), _parse(after)
    if old is None or new is None:
        return " ".join(before.lower().split()) == " ".join(after.lower().split())
    if old == new:
        return True
    (old_name, old_a, old_b, old_array), (new_name, new_a, new_b, new_array) = old, new
    if old_array != new_array:
        return False
    if old_name == "varchar":
        return new_name == "text" or (new_name == "varchar" and (
            new_a is None or (old_a is not None and new_a >= old_a)))
    if old_name in _INTEGERS:
        if new_name in _INTEGERS:
            return _INTEGERS.index(new_name) >= _INTEGERS.index(old_name)
        return new_name == "numeric" and new_a is None
    if old_name == "numeric" and new_name == "numeric":
        if new_a is None:
            return True
        if old_a is None:
            return False
        old_scale, new_scale = old_b or 0, new_b or 0
        return new_scale >= old_scale and new_a - new_scale >= old_a - old_scale
    return old_name == "float4" and new_name == "float8"



__all__ = ["type_text", "widens"]
