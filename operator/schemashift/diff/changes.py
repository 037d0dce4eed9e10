"""Alembic's diff tuples (from `UpgradeOps.as_diffs()`) turned into `Change` records."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from schemashift.diff.report import Change


def from_diffs(diffs: Iterable[Any], dialect: Dialect) -> list[Change]:
    flat = list(_flatten(diffs))
    whole_tables = {
        _table_key(diff[1]) for diff in flat if diff[0] in ("add_table", "remove_table")
    }
    changes: list[Change] = []
    for diff in flat:
        change = _convert(diff, dialect)
        # A new or dropped table's indexes and constraints are part of that table's line.
        if change.kind not in ("table_added", "table_removed") and (
            (change.schema, change.table) in whole_tables
        ):
            continue
        changes.append(change)
    return changes


def _flatten(diffs: Iterable[Any]) -> Iterator[tuple[Any, ...]]:
    for diff in diffs:
        if isinstance(diff, list):
            yield from diff
        else:
            yield diff


def _table_key(table: sa.Table) -> tuple[str | None, str]:
    return (table.schema, table.name)


def _convert(diff: tuple[Any, ...], dialect: Dialect) -> Change:
    kind = diff[0]
    if kind in ("add_table", "remove_table"):
        table = diff[1]
        return Change("table_added" if kind == "add_table" else "table_removed",
                      table=table.name, schema=table.schema, data_loss=kind == "remove_table")
    if kind in ("add_column", "remove_column"):
        _, schema, table, column = diff
        return Change("column_added" if kind == "add_column" else "column_removed",
                      table=table, column=column.name, schema=schema,
                      data_loss=kind == "remove_column")
    if kind.startswith("modify_"):
        return _modify(diff, dialect)
    if kind in ("add_table_comment", "remove_table_comment"):
        table = diff[1]
        old = diff[2] if kind == "add_table_comment" and len(diff) > 2 else table.comment
        new = table.comment if kind == "add_table_comment" else None
        return Change("table_comment_changed", table=table.name, schema=table.schema,
                      old=_show(old), new=_show(new))
    return _constraint(diff, dialect)


_MODIFY_KINDS = {
    "modify_type": "type_changed",
    "modify_nullable": "nullable_changed",
    "modify_default": "server_default_changed",
    "modify_comment": "comment_changed",
}


def _modify(diff: tuple[Any, ...], dialect: Dialect) -> Change:
    kind, schema, table, column, _existing, old, new = diff
    if kind == "modify_type":
        old_text, new_text = type_text(old, dialect), type_text(new, dialect)
    elif kind == "modify_nullable":
        old_text, new_text = _nullability(old), _nullability(new)
    elif kind == "modify_default":
        old_text, new_text = _default(old, dialect), _default(new, dialect)
    else:
        old_text, new_text = _show(old), _show(new)
    return Change(_MODIFY_KINDS[kind], table=table, column=column, schema=schema,
                  old=old_text, new=new_text)


def _constraint(diff: tuple[Any, ...], dialect: Dialect) -> Change:
    kind, item = diff[0], diff[1]
    added = kind.startswith("add_")
    table = item.table
    if kind in ("add_index", "remove_index"):
        change_kind = "index_added" if added else "index_removed"
        shape = ("UNIQUE " if item.unique else "") + _columns(item.expressions, dialect)
    elif kind in ("add_fk", "remove_fk"):
        change_kind = "foreign_key_added" if added else "foreign_key_removed"
        target = item.elements[0].target_fullname.rsplit(".", 1)[0] if item.elements else "?"
        remote = ", ".join(element.target_fullname.rsplit(".", 1)[1] for element in item.elements)
        shape = f"({', '.join(item.column_keys)}) -> {target} ({remote})"
    else:
        change_kind = "unique_added" if added else "unique_removed"
        shape = f"({', '.join(c.name for c in item.columns)})"
    return Change(change_kind, table=table.name, schema=table.schema, name=_name(item.name),
                  old=None if added else shape, new=shape if added else None)


def _columns(expressions: Iterable[Any], dialect: Dialect) -> str:
    parts = []
    for expression in expressions:
        if isinstance(expression, sa.Column):
            parts.append(expression.name)
        elif isinstance(expression, str):
            parts.append(expression)
        else:
            parts.append(str(expression.compile(dialect=dialect)))
    return f"({', '.join(parts)})"


def _name(name: Any) -> str | None:
    if name is None or type(name).__name__ == "_NoneName":
        return None
    return str(name)


def type_text(type_: Any, dialect: Dialect) -> str:
    try:
        return str(type_.compile(dialect=dialect))
    except Exception:  # a type the dialect cannot compile is still worth naming
        return repr(type_)


def _nullability(nullable: Any) -> str:
    return "NULL" if nullable else "NOT NULL"


def _default(default: Any, dialect: Dialect) -> str:
    if default is None or default is False:
        return "none"
    arg = getattr(default, "arg", default)
    if isinstance(arg, str):
        return "'" + arg.replace("'", "''") + "'"
    if hasattr(arg, "compile"):
        return str(arg.compile(dialect=dialect))
    return str(arg)


def _show(value: Any) -> str:
    return "none" if value is None else repr(value)
