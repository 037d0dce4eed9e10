"""What a plan destroys: the columns, tables and rewritten column types whose data its steps lose.

Found by lint's own rules (drop-column, drop-table, change-column-type) on the same walk, with
the same exemptions (a table created by the plan, a table without rows on a fresh database, a
column the plan added): the targeted copy (runner/targeted_copy.py) copies exactly what lint
reports, never a second opinion. Raw SQL (`op.execute`) is linted by pattern only and names no
column reliably, so it gets no targeted copy (the full backup, when taken, still holds it).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic.operations import ops as alembic_ops

from schemashift.plan import lint
from schemashift.plan.live import NO_FACTS, LiveFacts
from schemashift.plan.model import Destroyed
from schemashift.plan.render import RenderedRevision
from schemashift.plan.walk import walk

DROP_COLUMN, DROP_TABLE, CHANGE_TYPE = "drop-column", "drop-table", "change-column-type"
RULES = (DROP_COLUMN, DROP_TABLE, CHANGE_TYPE)


def find(rendered: Sequence[RenderedRevision], facts: LiveFacts = NO_FACTS) -> list[Destroyed]:
    found: list[Destroyed] = []
    for step in walk(rendered, facts):
        op = step.op
        if not isinstance(op, alembic_ops.DropColumnOp | alembic_ops.DropTableOp
                          | alembic_ops.AlterColumnOp):
            continue
        for rule in sorted({rule for rule, _ in lint.op_hits(step)} & set(RULES)):
            column = None if isinstance(op, alembic_ops.DropTableOp) else op.column_name
            found.append(Destroyed(step.revision, rule, op.schema, op.table_name, column))
    return found


__all__ = ["CHANGE_TYPE", "DROP_COLUMN", "DROP_TABLE", "RULES", "find"]
