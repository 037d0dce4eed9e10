"""A generated revision that drops or retypes data puts it back in its downgrade.

When the upgrade drops a column or a table, or changes a column's type, the downgrade ends with
a call to `schemashift.runner.copy_restore.put_back(op, revision)`: once the downgrade's own
operations have re-created the column or table (or the old type), the values the runner copied
before the upgrade ran (runner/targeted_copy.py) go back, found through the database's catalog
of copies. Without a recorded copy the call does nothing, so the revision works the same on a
database that schemashift never migrated.

A dropped column that was NOT NULL without a server default is re-added nullable, and made NOT
NULL again after the values are back: re-adding it NOT NULL would fail on a table with rows.
"""

from __future__ import annotations

from collections.abc import Iterator

from alembic.operations import ops

from schemashift.generate.safe_ops import Statement

CALL = ("# schemashift: the values the upgrade dropped or rewrote go back from its copy "
        "(docs/targeted-copy.md)",
        "from schemashift.runner.copy_restore import put_back",
        "put_back(op, revision)")


def add_put_back(migration: ops.MigrationScript) -> None:
    upgrade, downgrade = migration.upgrade_ops, migration.downgrade_ops
    if upgrade is None or downgrade is None:
        return
    destroying = [op for op in _walk(upgrade) if isinstance(op, ops.DropColumnOp | ops.DropTableOp)
                  or (isinstance(op, ops.AlterColumnOp) and op.modify_type is not None)]
    if not destroying:
        return
    dropped = {(op.schema, op.table_name, op.column_name) for op in destroying
               if isinstance(op, ops.DropColumnOp)}
    not_null = []
    for op in _walk(downgrade):
        if isinstance(op, ops.AddColumnOp) and (op.schema, op.table_name,
                                                op.column.name) in dropped \
                and _needs_value(op):
            op.column = op.column._copy()
            op.column.nullable = True
            not_null.append(ops.AlterColumnOp(
                op.table_name, op.column.name, schema=op.schema, existing_type=op.column.type,
                existing_nullable=True, modify_nullable=False))
    downgrade.ops.extend([Statement(line) for line in CALL])
    downgrade.ops.extend(not_null)


def _needs_value(op: ops.AddColumnOp) -> bool:
    column = op.column
    return (not column.nullable and column.server_default is None and column.computed is None
            and column.identity is None)


def _walk(container: ops.OpContainer) -> Iterator[ops.MigrateOperation]:
    for op in container.ops:
        yield op
        if isinstance(op, ops.OpContainer):
            yield from _walk(op)
