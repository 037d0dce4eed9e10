"""Safe by default: the changes to tables that already exist, rewritten into lock-safe steps.

A table the database holds before the revision may have rows and running queries; one created
(or dropped) by the revision has neither, and keeps Alembic's plain operations. On existing
tables, in both directions (the downgrade is the same change reversed, in the same safe form):

- an index is built and dropped CONCURRENTLY;
- a unique constraint is a unique index built CONCURRENTLY, then ADD CONSTRAINT … USING INDEX;
- a foreign key or CHECK constraint is added NOT VALID, then validated in its own statement;
- NOT NULL is a CHECK (col IS NOT NULL) NOT VALID, validated, then SET NOT NULL (PostgreSQL 12+
  trusts the valid check and skips the scan), then the helper check is dropped;
- a new NOT NULL column without a server default is refused on a table with rows, unless
  `--backfill T.C=SQL_EXPR` says what to fill it with: then it is added nullable, filled in
  bounded batches and made NOT NULL as above.

The steps go into one autocommit block at the start of the direction (see safe_ops); the other
operations follow, in the transaction that also stamps the revision, so what a rerun repeats
outside the block is all or nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic.operations import ops
from sqlalchemy.engine import Connection

from schemashift import errors, identifiers, reasons
from schemashift.generate import safe_ops
from schemashift.generate.safe_ops import (
    Guarded,
    Statement,
    Within,
    catalog_call,
    execute,
    qualified,
)

TableKey = tuple[str | None, str]

# The order of the steps inside the block: columns exist before anything uses them, old names
# are gone before new objects take them, unique indexes exist before foreign keys refer to them.
ADD_COLUMN, DROP_CONSTRAINT, DROP_INDEX, CREATE_INDEX, UNIQUE, NOT_NULL, CHECK, FOREIGN_KEY = \
    range(8)


@dataclass(frozen=True)
class Backfill:
    table: str  # as in MetaData.tables: "schema.table" or "table"
    column: str
    expression: str


def parse_backfills(values: Iterable[str]) -> list[Backfill]:
    parsed = []
    for value in values:
        target, sep, expression = value.partition("=")
        table, dot, column = target.strip().rpartition(".")
        if not sep or not dot or not table or not column or not expression.strip():
            raise errors.UsageError(
                f"--backfill {value!r} is not TABLE.COLUMN=SQL_EXPR",
                hint="e.g. --backfill \"patients.status='admitted'\" (the SQL expression is "
                     "evaluated per row, and may use the row's other columns)",
                reason=reasons.INVALID_INPUT)
        parsed.append(Backfill(table, column.strip(), expression.strip()))
    return parsed


def make_safe(conn: Connection, migration: ops.MigrationScript,
              backfills: list[Backfill]) -> None:
    upgrade, downgrade = migration.upgrade_ops, migration.downgrade_ops
    assert upgrade is not None and downgrade is not None
    live = _live_tables(conn, upgrade)
    rewriter = _Rewriter(conn, live, {(b.table, b.column): b for b in backfills})
    rewriter.container(upgrade, "upgrade")
    rewriter.container(downgrade, "downgrade")
    refuse_unused_backfills(rewriter.backfills)


def refuse_unused_backfills(unused: Iterable[tuple[str, str]]) -> None:
    """A --backfill naming no column the change adds NOT NULL to an existing table."""
    names = sorted(f"{table}.{column}" for table, column in unused)
    if names:
        raise errors.UsageError(
            f"--backfill {', '.join(names)}: no such new NOT NULL column (without a server "
            "default) in the changes, on a table that already exists",
            hint="name a column the models add as nullable=False to an existing table, as "
                 "TABLE.COLUMN (schema.table.column outside the default schema)",
            reason=reasons.INVALID_INPUT)


def _full(schema: str | None, name: str) -> str:
    return f"{schema}.{name}" if schema else name


def _live_tables(conn: Connection, upgrade: ops.UpgradeOps) -> set[TableKey]:
    """Tables the database holds that the revision neither creates nor drops."""
    inspector = sa.inspect(conn)
    touched = {(op.schema, op.table_name) for op in upgrade.ops
               if isinstance(op, (ops.CreateTableOp, ops.DropTableOp))}
    schemas = {op.schema for op in upgrade.ops if isinstance(op, ops.ModifyTableOps)}
    existing = {(schema, name) for schema in sorted(schemas, key=lambda s: s or "")
                for name in inspector.get_table_names(schema=schema)}
    return existing - touched


class _Rewriter:
    def __init__(self, conn: Connection, live: set[TableKey],
                 backfills: dict[tuple[str, str], Backfill]) -> None:
        self.conn = conn
        self.live = live
        self.backfills = backfills

    def container(self, container: ops.OpContainer, direction: str) -> None:
        steps: list[tuple[int, ops.MigrateOperation]] = []
        for table_ops in container.ops:
            if (isinstance(table_ops, ops.ModifyTableOps)
                    and (table_ops.schema, table_ops.table_name) in self.live):
                steps += self._table(table_ops, direction)
        if not steps:
            return
        container.ops[:] = [op for op in container.ops
                            if not (isinstance(op, ops.ModifyTableOps) and op.is_empty())]
        steps.sort(key=lambda step: step[0])  # stable: Alembic's order within a kind
        leading = _leading_enum_statements(container)
        container.ops[:] = ([_guard_create_type(op) for op in container.ops[:leading]]
                            + [safe_ops.AutocommitSteps([op for _, op in steps])]
                            + container.ops[leading:])

    def _table(self, table_ops: ops.ModifyTableOps,
               direction: str) -> list[tuple[int, ops.MigrateOperation]]:
        """The table's safe steps, taken out of `table_ops`. A new column joins them when a
        step may use it (or it is backfilled); else it stays in the revision's transaction."""
        steps: list[tuple[int, ops.MigrateOperation]] = []
        kept: list[ops.MigrateOperation] = []
        for op in table_ops.ops:
            found = None if isinstance(op, ops.AddColumnOp) else self._steps(op)
            if found is None:
                kept.append(op)
            else:
                steps += found
                kept += self._rest(op)
        columns: list[tuple[int, ops.MigrateOperation]] = []
        for op in [op for op in kept if isinstance(op, ops.AddColumnOp)]:
            found = self._add_column(op, direction, joins=bool(steps))
            if found is not None:
                columns += found
                kept.remove(op)
        table_ops.ops = kept
        return columns + steps

    def _steps(self, op: ops.MigrateOperation) -> list[tuple[int, ops.MigrateOperation]] | None:
        """The safe steps replacing `op`, or None when it stays as Alembic wrote it."""
        if isinstance(op, ops.CreateIndexOp):
            return [(CREATE_INDEX, step) for step in create_index(op)]
        if isinstance(op, ops.DropIndexOp):
            return [(DROP_INDEX, drop_index(op))]
        if isinstance(op, ops.CreateUniqueConstraintOp):
            return [(UNIQUE, step) for step in add_unique(op)]
        if isinstance(op, ops.CreateForeignKeyOp) and self._refers_to_live(op):
            return [(FOREIGN_KEY, step) for step in add_foreign_key(op)]
        if isinstance(op, ops.CreateCheckConstraintOp):
            return [(CHECK, step) for step in add_check(op)]
        if isinstance(op, ops.DropConstraintOp) and op.constraint_name is not None:
            return [(DROP_CONSTRAINT, drop_constraint(op))]
        if isinstance(op, ops.AlterColumnOp) and _sets_not_null(op):
            return [(NOT_NULL, step) for step in set_not_null(
                op.table_name, op.schema, op.column_name, op.existing_type)]
        return None

    @staticmethod
    def _rest(op: ops.MigrateOperation) -> list[ops.MigrateOperation]:
        """What stays a plain operation of a rewritten one (an ALTER COLUMN's other changes)."""
        if not isinstance(op, ops.AlterColumnOp) or not (
                op.modify_type is not None or op.modify_name is not None
                or op.modify_server_default is not False or op.modify_comment is not False):
            return []
        op.modify_nullable = None
        op.existing_nullable = False  # the safe steps, which run first, made it NOT NULL
        return [op]

    def _refers_to_live(self, op: ops.CreateForeignKeyOp) -> bool:
        """A foreign key onto a table the revision creates keeps Alembic's form: the table only
        exists once the revision's transaction runs, after the safe steps."""
        return (op.kw.get("referent_schema"), op.referent_table) in self.live

    def _add_column(self, op: ops.AddColumnOp, direction: str,
                    joins: bool) -> list[tuple[int, ops.MigrateOperation]] | None:
        column = op.column
        guard = catalog_call("_COLUMN", table=qualified(op.schema, op.table_name),
                             column=column.name)
        needs_value = (not column.nullable and column.server_default is None
                       and column.computed is None and column.identity is None)
        backfill = self.backfills.pop((_full(op.schema, op.table_name), column.name), None)
        if direction != "upgrade" or not needs_value or (
                backfill is None and not self._has_rows(op.schema, op.table_name)):
            return [(ADD_COLUMN, Guarded(guard, [op]))] if joins else None
        if backfill is None:
            raise _refused_not_null(op)
        nullable = column._copy()
        nullable.nullable = True
        return [(ADD_COLUMN, Guarded(guard, [ops.AddColumnOp(op.table_name, nullable,
                                                            schema=op.schema)])),
                (NOT_NULL, fill(op.table_name, op.schema, column.name, backfill.expression)),
                *((NOT_NULL, step) for step in set_not_null(
                    op.table_name, op.schema, column.name, column.type))]

    def _has_rows(self, schema: str | None, table: str) -> bool:
        found = self.conn.execute(sa.select(sa.exists().select_from(sa.table(table,
                                                                              schema=schema))))
        return bool(found.scalar())


def _sets_not_null(op: ops.AlterColumnOp) -> bool:
    return op.modify_nullable is False and op.existing_nullable is not False


def _refused_not_null(op: ops.AddColumnOp) -> errors.UsageError:
    where = _full(op.schema, op.table_name)
    return errors.UsageError(
        f"the models add {where}.{op.column.name} as NOT NULL without a server default, and "
        f"{where} already has rows: PostgreSQL would have no value to put in them, so the "
        "revision was not written",
        hint=f"give the column a server_default in the models, or say how to fill the existing "
             f"rows: --backfill \"{where}.{op.column.name}=SQL_EXPR\" (added nullable, filled "
             "in batches, then set NOT NULL without a long lock)",
        reason=reasons.NOT_NULL_WITHOUT_DEFAULT)


# -- the steps -----------------------------------------------------------------------------------

def _sent(name: object) -> str:
    """The name as the server gets it (a long naming-convention name cut by SQLAlchemy): what
    the catalog guards and the raw SQL must use."""
    return str(identifiers.final_name(name))


def create_index(op: ops.CreateIndexOp) -> list[ops.MigrateOperation]:
    index = qualified(op.schema, _sent(op.index_name))
    concurrent = ops.CreateIndexOp(op.index_name, op.table_name, op.columns, schema=op.schema,
                                   unique=op.unique,
                                   **{**op.kw, "postgresql_concurrently": True})
    return [Within(f"_no_invalid_index({index!r})",
                   [Guarded(catalog_call("_INDEX", index=index), [concurrent])])]


def drop_index(op: ops.DropIndexOp) -> ops.MigrateOperation:
    concurrent = ops.DropIndexOp(op.index_name, table_name=op.table_name, schema=op.schema,
                                 **{**op.kw, "postgresql_concurrently": True})
    concurrent._reverse = op._reverse
    index = qualified(op.schema, _sent(op.index_name))
    return Guarded(catalog_call("_INDEX", "_present", index=index), [concurrent])


def add_unique(op: ops.CreateUniqueConstraintOp) -> list[ops.MigrateOperation]:
    name = _sent(op.constraint_name)
    table = qualified(op.schema, op.table_name)
    build = create_index(ops.CreateIndexOp(name, op.table_name, list(op.columns),
                                           schema=op.schema, unique=True))
    options = "".join(f" {word}" for word, on in (
        ("DEFERRABLE", op.kw.get("deferrable")),
        (f"INITIALLY {op.kw.get('initially')}", op.kw.get("initially"))) if on)
    attach = execute(f"ALTER TABLE {table} ADD CONSTRAINT {safe_ops.quote(name)} "
                     f"UNIQUE USING INDEX {safe_ops.quote(name)}{options}")
    return [*build, Guarded(catalog_call("_CONSTRAINT", table=table, name=name), [attach])]


def add_foreign_key(op: ops.CreateForeignKeyOp) -> list[ops.MigrateOperation]:
    table = qualified(op.kw.get("source_schema"), op.source_table)
    not_valid = safe_ops.NotValidForeignKey(op)
    return _not_valid_then_validate(table, _sent(op.constraint_name), not_valid)


def add_check(op: ops.CreateCheckConstraintOp) -> list[ops.MigrateOperation]:
    table = qualified(op.schema, op.table_name)
    not_valid = safe_ops.NotValidCheck(op.constraint_name, op.table_name, op.condition,
                                       op.schema)
    return _not_valid_then_validate(table, _sent(op.constraint_name), not_valid)


def _not_valid_then_validate(table: str, name: str,
                             not_valid: ops.MigrateOperation) -> list[ops.MigrateOperation]:
    return [Guarded(catalog_call("_CONSTRAINT", table=table, name=name), [not_valid]),
            safe_ops.validate(table, name)]


def drop_constraint(op: ops.DropConstraintOp) -> ops.MigrateOperation:
    table = qualified(op.schema, op.table_name)
    return Guarded(catalog_call("_CONSTRAINT", "_present", table=table,
                                name=_sent(op.constraint_name)), [op])


def set_not_null(table_name: str, schema: str | None, column: str,
                 existing_type: Any) -> list[ops.MigrateOperation]:
    table = qualified(schema, table_name)
    # Not PostgreSQL 18's own `<table>_<column>_not_null`: SET NOT NULL names its catalog
    # constraint so, and would pick `…_not_null1` while the helper holds the name.
    check = safe_ops.helper_name(table_name, column, suffix="not_null_check")
    add = safe_ops.NotValidCheck(check, table_name, f"{safe_ops.quote(column)} IS NOT NULL",
                                 schema)
    alter = ops.AlterColumnOp(table_name, column, schema=schema, existing_type=existing_type,
                              existing_nullable=True, modify_nullable=False)
    return [Guarded(catalog_call("_NULLABLE", "_present", table=table, column=column), [
                Guarded(catalog_call("_CONSTRAINT", table=table, name=check), [add]),
                safe_ops.validate(table, check),
                alter]),
            Guarded(catalog_call("_CONSTRAINT", "_present", table=table, name=check),
                    [ops.DropConstraintOp(check, table_name, type_="check", schema=schema)])]


def fill(table_name: str, schema: str | None, column: str, expression: str) -> Statement:
    table, name = qualified(schema, table_name), safe_ops.quote(column)
    batch = (f"WITH batch AS (UPDATE {table} SET {name} = ({expression}) WHERE ctid = ANY "
             f"(ARRAY(SELECT ctid FROM {table} WHERE {name} IS NULL "
             f"LIMIT {safe_ops.BACKFILL_BATCH_ROWS})) RETURNING {name}) "
             f"SELECT count(*), count(*) - count({name}) FROM batch")
    return Statement(f"_backfill({batch!r}, {_full(schema, table_name)!r}, {column!r})")


def _leading_enum_statements(container: ops.OpContainer) -> int:
    """How many of the first operations are the enum statements (enum_ops puts them first:
    the types exist before any column uses them)."""
    count = 0
    for op in container.ops:
        if not isinstance(op, ops.ExecuteSQLOp):
            break
        count += 1
    return count


_CREATE_TYPE = re.compile(r"^CREATE TYPE (\S+) AS ENUM\b")


def _guard_create_type(op: ops.MigrateOperation) -> ops.MigrateOperation:
    """Committed before the safe steps: a rerun must not create the type twice."""
    match = _CREATE_TYPE.match(str(op.sqltext)) if isinstance(op, ops.ExecuteSQLOp) else None
    if match is None:
        return op
    return Guarded(catalog_call("_TYPE", type=match.group(1)), [op])
