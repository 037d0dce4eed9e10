"""Walk a plan's recorded operations in order, knowing what the plan itself did before each one
(and, when planned against a server, what the live database held before the plan)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic.operations import ops as alembic_ops

from schemashift.plan.live import NO_FACTS, LiveFacts, table_key
from schemashift.plan.render import RecordedOp, RenderedRevision, sql_text

# An UPDATE or DELETE changes only rows that exist: on an empty table it adds none (a
# data-modifying CTE that inserts names INSERT, and stays suspect).
_ROW_NEUTRAL = re.compile(r"^\s*(UPDATE|DELETE)\b(?!.*\b(INSERT|COPY|MERGE)\b)",
                          re.IGNORECASE | re.DOTALL)
# Catalog-only statements the lock-safe forms execute: they read rows but never change one.
_ROWLESS = re.compile(
    r"^\s*(?:ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?[\w.\"]+\s+"
    r"(?:VALIDATE\s+CONSTRAINT\s+[\w\"]+"
    r"|ADD\s+CONSTRAINT\s+[\w\"]+\s+(?:UNIQUE|PRIMARY\s+KEY)\s+USING\s+INDEX\s+[\w\"]+)"
    r"|(?:CREATE\s+(?:UNIQUE\s+)?INDEX|DROP\s+INDEX)\b[^;]*)\s*$",
    re.IGNORECASE | re.DOTALL)


@dataclass
class Seen:
    """What earlier operations of the same plan did (tables created there hold no old rows)."""

    new_tables: set[str] = field(default_factory=set)
    new_columns: set[tuple[str, str]] = field(default_factory=set)
    raw_sql: list[str] = field(default_factory=list)  # executed statements (data migrations)
    opaque: str | None = None  # a revision not rendered: after it anything may have happened
    column_types: dict[tuple[str, str], Any] = field(default_factory=dict)  # set by the plan
    facts: LiveFacts = field(default_factory=LiveFacts)
    renamed: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # new → old name

    def is_new_table(self, table: str, schema: str | None = None) -> bool:
        key = table_key(table, schema)
        if key in self.renamed:
            return self.is_new_table(*self.renamed[key])
        return key in self.new_tables or self.facts.did_not_exist(table, schema)

    def is_new_column(self, table: str, column: str, schema: str | None = None) -> bool:
        key = table_key(table, schema)
        return self.is_new_table(table, schema) or (key, column.lower()) in self.new_columns

    def may_have_written(self, table: str) -> bool:
        """Whether earlier SQL of the plan may have changed the table's rows (e.g. a backfill)."""
        if self.opaque is not None:
            return True
        return any(self._mentions(table, statement) for statement in self._writes())

    def may_have_added_rows(self, table: str) -> bool:
        return self.opaque is not None or any(
            self._mentions(table, statement) and not _ROW_NEUTRAL.match(statement)
            for statement in self._writes())

    def _writes(self) -> Iterator[str]:
        return (statement for text in self.raw_sql for statement in statements(text)
                if not _ROWLESS.match(statement))

    @staticmethod
    def _mentions(table: str, statement: str) -> bool:
        word = re.compile(rf"\b{re.escape(table.split('.')[-1])}\b", re.IGNORECASE)
        return word.search(statement) is not None

    def holds_no_rows(self, table: str, schema: str | None = None) -> bool:
        """Created by the plan, or empty before it and not written by it since (on a database
        where no table held a row, the plan's own writes are its seed data: still empty)."""
        if self.is_new_table(table, schema):
            return True
        key = table_key(table, schema)
        if key in self.renamed:
            return self.holds_no_rows(*self.renamed[key])
        facts = self.facts
        return facts.holds_no_rows(table, schema) and (
            facts.all_empty or not self.may_have_added_rows(table))

    def why_not_empty(self, table: str, schema: str | None = None) -> str:
        """Why a table that held no row before the plan is not treated as empty here ('' when
        it held rows, or nothing is known)."""
        if not self.facts.holds_no_rows(table, schema) or self.holds_no_rows(table, schema):
            return ""
        if self.opaque is not None:
            return (f" (it held no row before the plan, but revision {self.opaque} could not be "
                    "previewed and may have written to it)")
        return " (it held no row before the plan, but earlier SQL of the plan writes to it)"

    @property
    def fresh(self) -> bool:
        """No table of the database held a row before the plan: nothing to lose or to lock."""
        return self.facts.all_empty

    def old_type(self, table: str, column: str, schema: str | None,
                 stated: Any) -> Any:
        """The column's type before this step: set earlier in the plan, else as the server
        reports it, else what the revision states (`existing_type`)."""
        key = (table_key(table, schema), column.lower())
        if key in self.column_types:
            return self.column_types[key]
        live = self.facts.column_type(table, column, schema)
        return live if live is not None else stated


@dataclass
class Step:
    revision: str
    recorded: RecordedOp
    seen: Seen  # the state before this operation (valid while the walk is at this step)

    @property
    def op(self) -> alembic_ops.MigrateOperation:
        return self.recorded.op


def walk(rendered: Sequence[RenderedRevision], facts: LiveFacts = NO_FACTS) -> Iterator[Step]:
    seen = Seen(facts=facts)
    for revision in rendered:
        for recorded in revision.ops:
            yield Step(revision.revision, recorded, seen)
            _note(seen, recorded.op)
        if revision.error is not None:
            seen.opaque = seen.opaque or revision.revision


def touched_tables(rendered: Sequence[RenderedRevision]) -> tuple[
        set[tuple[str | None, str]], set[tuple[str | None, str]]]:
    """(schema, table) every operation names, and those whose column types change."""
    touched: set[tuple[str | None, str]] = set()
    typed: set[tuple[str | None, str]] = set()
    for revision in rendered:
        for recorded in revision.ops:
            op = recorded.op
            if isinstance(op, alembic_ops.ExecuteSQLOp):
                touched |= {(None, t) for t in raw_sql_tables(sql_text(op.sqltext))}
                continue
            table = getattr(op, "table_name", None) or getattr(op, "source_table", None)
            if isinstance(table, str):
                schema = getattr(op, "schema", None) or op_source_schema(op)
                touched.add((schema, table))
                if isinstance(op, alembic_ops.AlterColumnOp) and op.modify_type is not None:
                    typed.add((schema, table))
    return touched, typed


def op_source_schema(op: alembic_ops.MigrateOperation) -> str | None:
    kw = getattr(op, "kw", None)
    value = kw.get("source_schema") if isinstance(kw, dict) else None
    return value if isinstance(value, str) else None


_COMMENT = re.compile(r"--[^\n]*")
_FLAGS = re.IGNORECASE | re.DOTALL
_CREATE_TABLE = re.compile(
    r"^\s*CREATE\s+(?:(?:GLOBAL\s+|LOCAL\s+)?(?:TEMPORARY|TEMP)\s+|UNLOGGED\s+)?TABLE\s+"
    r"(?:IF\s+NOT\s+EXISTS\s+)?([\w.\"]+)", _FLAGS)
_TABLE = re.compile(r"^\s*(?:ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?"
                    r"|CREATE\s+(?:UNIQUE\s+)?INDEX\s+.*?\bON\s+(?:ONLY\s+)?"
                    r"|DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?)([\w.\"]+)", _FLAGS)


def statements(sql: str) -> list[str]:
    return [s.strip() for s in _COMMENT.sub("", sql).split(";") if s.strip()]


def table_of(statement: str) -> str | None:
    """The table an ALTER TABLE / CREATE INDEX / DROP TABLE statement acts on."""
    match = _TABLE.search(statement)
    return match.group(1).replace('"', "") if match else None


def created_table(statement: str) -> str | None:
    match = _CREATE_TABLE.search(statement)
    return match.group(1).replace('"', "") if match else None


def raw_sql_tables(sql: str) -> set[str]:
    found = {table_of(s) for s in statements(sql)}
    return {t for t in found if t is not None}


def _note(seen: Seen, op: alembic_ops.MigrateOperation) -> None:
    if isinstance(op, alembic_ops.CreateTableOp):
        key = table_key(op.table_name, op.schema)
        seen.new_tables.add(key)
        for column in op.columns:
            if isinstance(column, sa.Column):
                seen.column_types[(key, column.name.lower())] = column.type
    elif isinstance(op, alembic_ops.AddColumnOp):
        key = table_key(op.table_name, op.schema)
        seen.new_columns.add((key, op.column.name.lower()))
        seen.column_types[(key, op.column.name.lower())] = op.column.type
    elif isinstance(op, alembic_ops.RenameTableOp):
        if seen.is_new_table(op.table_name, op.schema):
            seen.new_tables.add(table_key(op.new_table_name, op.schema))
        else:
            seen.renamed[table_key(op.new_table_name, op.schema)] = (op.table_name, op.schema)
    elif isinstance(op, alembic_ops.AlterColumnOp):
        _note_alter(seen, op)
    elif isinstance(op, alembic_ops.ExecuteSQLOp):
        text = sql_text(op.sqltext)
        seen.raw_sql.append(text)
        for statement in statements(text):
            created = created_table(statement)
            if created is not None:
                seen.new_tables.add(table_key(created))
    elif isinstance(op, alembic_ops.BulkInsertOp):
        seen.raw_sql.append(f"INSERT INTO {op.table.name}")  # type: ignore[union-attr]


def _note_alter(seen: Seen, op: alembic_ops.AlterColumnOp) -> None:
    key = table_key(op.table_name, op.schema)
    column = op.column_name.lower()
    if op.modify_name:
        if seen.is_new_column(op.table_name, op.column_name, op.schema):
            seen.new_columns.add((key, op.modify_name.lower()))
        old = seen.old_type(op.table_name, op.column_name, op.schema, op.existing_type)
        if old is not None:
            seen.column_types[(key, op.modify_name.lower())] = old
    if op.modify_type is not None:
        seen.column_types[(key, (op.modify_name or column).lower())] = op.modify_type
