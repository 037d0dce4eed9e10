"""CHECK constraints the models add to tables the database already has.

Alembic's autogenerate never compares CHECK constraints; `detect` names the missing ones
(diff/blindspots), and here they join the revision: `create_check_constraint` in upgrade (which
`safe` turns into NOT VALID, then VALIDATE, on a live table); the downgrade, the reversed
upgrade, drops them.
Only named constraints: an unnamed one could not be dropped again, and cannot be told from the
database's. A CHECK the database holds and the models lack is left to the user (detect warns):
it may come from somewhere the models do not describe.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic.operations import ops
from sqlalchemy.engine import Connection

from schemashift.diff import blindspots
from schemashift.generate import safe_ops

TableKey = tuple[str | None, str]


def add_missing(conn: Connection, metadata: sa.MetaData, upgrade: ops.UpgradeOps) -> int:
    """Adds the operations to `upgrade`; returns how many constraints were added."""
    inspector = sa.inspect(conn)
    created = {(op.schema, op.table_name) for op in upgrade.ops
               if isinstance(op, ops.CreateTableOp)}
    added = 0
    for table in sorted(metadata.tables.values(), key=lambda t: t.fullname):
        key = (table.schema, table.name)
        if key in created or not inspector.has_table(table.name, schema=table.schema):
            continue
        reflected = inspector.get_check_constraints(table.name, schema=table.schema)
        for check in blindspots.missing_checks(table, reflected, conn.dialect):
            _table_ops(upgrade, key).ops.append(safe_ops.WrittenCheck(
                check.name, table.name, check.sqltext, table.schema))
            added += 1
    return added


def _table_ops(container: ops.OpContainer, key: TableKey) -> ops.ModifyTableOps:
    for op in container.ops:
        if isinstance(op, ops.ModifyTableOps) and (op.schema, op.table_name) == key:
            return op
    table_ops = ops.ModifyTableOps(key[1], [], schema=key[0])
    container.ops.append(table_ops)
    return table_ops
