"""Which operations of a plan break the code of the release that runs before it (expand/contract).

The previous release's code keeps working while every table, column and type it knows still
exists and accepts what it accepted. An operation breaks it when it drops or renames a table,
column or type the database held before the plan, narrows a column's type, makes an existing
column NOT NULL, adds a NOT NULL column without a default to an existing table, or drops the
default of a NOT NULL column (the old code's INSERTs leave such a column out). Objects the plan
itself created are not known to the old code, so changing them breaks nothing. Adding indexes or
constraints (NOT VALID or not), new tables, nullable or defaulted columns, other defaults,
comments and enum labels is compatible; so is dropping an index or a constraint, which accepts
more.

Used twice: to classify a revision without a `phase` marker (plan/phases.py), and as the expand
gate's check before any change (the runner checks the catalog again after the expand:
runner/compat_gate.py); both judge a type change by schemashift/type_widening.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from alembic.operations import ops as alembic_ops

from schemashift import release_phases
from schemashift.plan import lint_sql
from schemashift.plan.live import NO_FACTS, LiveFacts, table_key
from schemashift.plan.render import RenderedRevision, sql_text
from schemashift.plan.walk import Step, statements, table_of, walk
from schemashift.type_widening import type_text, widens

OLD_CODE = "the previous release's code"


@dataclass(frozen=True)
class Break:
    """One change the previous release's code cannot survive."""

    revision: str
    what: str  # "drops column patients.fax"
    why: str  # "… that selects or writes it fails"

    @property
    def text(self) -> str:
        return f"{self.what}: {self.why}"


def breaking_changes(rendered: Sequence[RenderedRevision],
                     facts: LiveFacts = NO_FACTS) -> list[Break]:
    found: list[Break] = []
    made = _Made()
    for step in walk(rendered, facts):
        checker = _CHECKERS.get(type(step.op))
        if checker is None:
            checker = next((c for kind, c in _CHECKERS.items() if isinstance(step.op, kind)),
                           None)
        if checker is not None:
            found += [Break(step.revision, what, why) for what, why in checker(step, made)]
    return found


@dataclass
class _Made:
    """What earlier operations of the plan gave that the walk does not track."""

    defaulted: set[tuple[str, str]] = field(default_factory=set)  # columns with a default
    types: set[str] = field(default_factory=set)  # types created by the plan (bare names)


Hits = Iterator[tuple[str, str]]


def _drop_table(step: Step, made: _Made) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.DropTableOp)
    if not step.seen.is_new_table(op.table_name, op.schema):
        yield (f"drops table {_name(op.schema, op.table_name)}",
               f"{OLD_CODE} that reads or writes it fails")


def _drop_column(step: Step, made: _Made) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.DropColumnOp)
    if not step.seen.is_new_column(op.table_name, op.column_name, op.schema):
        yield (f"drops column {_name(op.schema, op.table_name)}.{op.column_name}",
               f"{OLD_CODE} that selects or writes it fails")


def _rename_table(step: Step, made: _Made) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.RenameTableOp)
    if not step.seen.is_new_table(op.table_name, op.schema):
        yield (f"renames table {_name(op.schema, op.table_name)} to {op.new_table_name}",
               f"{OLD_CODE} uses the old name")


def _add_column(step: Step, made: _Made) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.AddColumnOp)
    column = op.column
    has_value = (column.server_default is not None or column.computed is not None
                 or column.identity is not None)
    if has_value:
        made.defaulted.add((table_key(op.table_name, op.schema), column.name.lower()))
    if column.nullable or has_value or step.seen.is_new_table(op.table_name, op.schema):
        return
    yield (f"adds {_name(op.schema, op.table_name)}.{column.name} as NOT NULL without a "
           "default", f"{OLD_CODE} does not write it, so its INSERTs fail")


def _alter_column(step: Step, made: _Made) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.AlterColumnOp)
    seen, where = step.seen, f"{_name(op.schema, op.table_name)}.{op.column_name}"
    key = (table_key(op.table_name, op.schema), op.column_name.lower())
    if op.modify_server_default not in (False, None):
        made.defaulted.add(key)
    if seen.is_new_table(op.table_name, op.schema):
        return
    if seen.is_new_column(op.table_name, op.column_name, op.schema):
        if op.modify_nullable is False and key not in made.defaulted:
            yield (f"sets {where} NOT NULL without a default",
                   f"{OLD_CODE} does not write this new column, so its INSERTs fail")
        return
    if op.modify_name:
        yield f"renames column {where} to {op.modify_name}", f"{OLD_CODE} uses the old name"
    if op.modify_type is not None:
        old = seen.old_type(op.table_name, op.column_name, op.schema, op.existing_type)
        before, after = type_text(old), type_text(op.modify_type)
        if not widens(before, after):
            yield (f"changes the type of {where} from {before or 'an unknown type'} to {after}",
                   f"{OLD_CODE} may write values the new type rejects (only a widening, such "
                   "as a longer varchar, text or a larger integer, is compatible)")
    if op.modify_nullable is False:
        yield (f"sets {where} NOT NULL",
               f"{OLD_CODE} may leave it empty, and its INSERTs and UPDATEs then fail")
    elif release_phases.drops_default_of_not_null(op):
        yield (f"drops the default of {where}, which is NOT NULL",
               f"{OLD_CODE}'s INSERTs may leave it out, and then fail")



_SET_NOT_NULL = re.compile(r"\bALTER\s+(?:COLUMN\s+)?(\S+)\s+SET\s+NOT\s+NULL\b",
                           re.IGNORECASE)
_DROP_TYPE = re.compile(r"^\s*DROP\s+TYPE\s+(?:IF\s+EXISTS\s+)?([\w.\"]+)", re.IGNORECASE)
_CREATE_TYPE = re.compile(r"^\s*CREATE\s+TYPE\s+([\w.\"]+)", re.IGNORECASE)
_RAW_BREAKS = {
    "drop-table": ("drops a table", f"{OLD_CODE} that reads or writes it fails"),
    "drop-column": ("drops a column", f"{OLD_CODE} that selects or writes it fails"),
    "rename-table": ("renames a table", f"{OLD_CODE} uses the old name"),
    "rename-column": ("renames a column", f"{OLD_CODE} uses the old name"),
    "change-column-type": ("changes a column's type",
                           f"{OLD_CODE} may write values the new type rejects"),
}
_RAW_PATTERNS = [(rule, pattern, unless) for rule, pattern, unless in lint_sql.RAW_SQL_RULES
                 if rule in _RAW_BREAKS]


def _execute_sql(step: Step, made: _Made) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.ExecuteSQLOp)
    for statement in statements(sql_text(op.sqltext)):
        created = _CREATE_TYPE.match(statement)
        if created:
            made.types.add(_bare(created.group(1)))
        yield from _raw_statement(step, statement, made)


def _raw_statement(step: Step, statement: str, made: _Made) -> Hits:
    shown = f"(raw SQL `{lint_sql.shorten(statement)}`)"
    dropped_type = _DROP_TYPE.match(statement)
    if dropped_type:
        if _bare(dropped_type.group(1)) not in made.types:
            yield (f"drops type {dropped_type.group(1)} {shown}",
                   f"{OLD_CODE}'s columns and casts of that type fail")
        return
    table = table_of(statement)
    if table is not None and step.seen.is_new_table(table):
        return
    for rule, pattern, unless in _RAW_PATTERNS:
        if pattern.search(statement) and not (unless and unless.search(statement)):
            what, why = _RAW_BREAKS[rule]
            yield f"{what} {shown}", why
    if _SET_NOT_NULL.search(statement):
        yield f"sets a column NOT NULL {shown}", f"{OLD_CODE} may leave it empty"


def _bare(name: str) -> str:
    return name.replace('"', "").split(".")[-1].lower()


_CHECKERS: dict[type, Callable[[Step, _Made], Hits]] = {
    alembic_ops.DropTableOp: _drop_table,
    alembic_ops.DropColumnOp: _drop_column,
    alembic_ops.RenameTableOp: _rename_table,
    alembic_ops.AddColumnOp: _add_column,
    alembic_ops.AlterColumnOp: _alter_column,
    alembic_ops.ExecuteSQLOp: _execute_sql,
}


def _name(schema: str | None, table: str) -> str:
    return f"{schema}.{table}" if schema else table


__all__ = ["OLD_CODE", "Break", "breaking_changes"]
