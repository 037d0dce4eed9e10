"""Walk a plan's recorded operations in order, knowing what the plan itself did before each one."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from alembic.operations import ops as alembic_ops

from schemashift.plan.render import RecordedOp, RenderedRevision, sql_text


def table_key(table: str, schema: str | None = None) -> str:
    return f"{schema}.{table}".lower() if schema else table.lower()


@dataclass
class Seen:
    """What earlier operations of the same plan did (tables created there hold no old rows)."""

    new_tables: set[str] = field(default_factory=set)
    new_columns: set[tuple[str, str]] = field(default_factory=set)
    raw_sql: list[str] = field(default_factory=list)  # executed statements (data migrations)
    opaque: bool = False  # an earlier revision could not be rendered: anything may have happened

    def is_new_table(self, table: str, schema: str | None = None) -> bool:
        return table_key(table, schema) in self.new_tables

    def is_new_column(self, table: str, column: str, schema: str | None = None) -> bool:
        key = table_key(table, schema)
        return key in self.new_tables or (key, column.lower()) in self.new_columns

    def may_have_written(self, table: str) -> bool:
        """Whether earlier SQL of the plan may have changed the table's rows (e.g. a backfill)."""
        if self.opaque:
            return True
        word = re.compile(rf"\b{re.escape(table.split('.')[-1])}\b", re.IGNORECASE)
        return any(word.search(statement) for statement in self.raw_sql)


@dataclass
class Step:
    revision: str
    recorded: RecordedOp
    seen: Seen  # the state before this operation (valid while the walk is at this step)

    @property
    def op(self) -> alembic_ops.MigrateOperation:
        return self.recorded.op


def walk(rendered: Sequence[RenderedRevision]) -> Iterator[Step]:
    seen = Seen()
    for revision in rendered:
        for recorded in revision.ops:
            yield Step(revision.revision, recorded, seen)
            _note(seen, recorded.op)
        if revision.error is not None:
            seen.opaque = True


def _note(seen: Seen, op: alembic_ops.MigrateOperation) -> None:
    if isinstance(op, alembic_ops.CreateTableOp):
        seen.new_tables.add(table_key(op.table_name, op.schema))
    elif isinstance(op, alembic_ops.AddColumnOp):
        seen.new_columns.add((table_key(op.table_name, op.schema), op.column.name.lower()))
    elif isinstance(op, alembic_ops.RenameTableOp):
        if seen.is_new_table(op.table_name, op.schema):
            seen.new_tables.add(table_key(op.new_table_name, op.schema))
    elif isinstance(op, alembic_ops.AlterColumnOp) and op.modify_name:
        if seen.is_new_column(op.table_name, op.column_name, op.schema):
            seen.new_columns.add((table_key(op.table_name, op.schema), op.modify_name.lower()))
    elif isinstance(op, alembic_ops.ExecuteSQLOp):
        seen.raw_sql.append(sql_text(op.sqltext))
    elif isinstance(op, alembic_ops.BulkInsertOp):
        seen.raw_sql.append(f"INSERT INTO {op.table.name}")  # type: ignore[union-attr]
