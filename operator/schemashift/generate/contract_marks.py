"""Changes no lock-safe form makes in one step, marked as such in the generated revision.

Dropping a table or a column, renaming one, and a type change that rewrites a table with rows:
no sequence of short steps inside one revision keeps the running release working through them.
They need an expand/contract release (first the additive part and code that no longer needs the
old shape, then this change in a later release). They are still written as Alembic writes them
and keep their lint errors, so `plan` and `apply` under `lint: block` stop on them until they are
allowed; the comment above each says why, and which rule to allow once the release is split.
"""

from __future__ import annotations

import textwrap

import sqlalchemy as sa
from alembic.autogenerate import render, renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from sqlalchemy.engine import Connection

from schemashift import column_types

MARK = "schemashift: NEEDS EXPAND/CONTRACT"
NO_SAFE_FORM = "schemashift: NO LOCK-SAFE FORM GENERATED"
_WIDTH = 92


class Marked(ops.OpContainer):
    """An operation with the comment lines that say why it needs expand/contract (or, for a
    column that fills every row, why no safe form was generated)."""

    def __init__(self, rule: str, why: str, inner: ops.MigrateOperation,
                 mark: str = MARK) -> None:
        super().__init__([inner])
        self.rule = rule
        self.why = why
        self.mark = mark


def mark(conn: Connection, migration: ops.MigrationScript) -> list[str]:
    """Wrap the upgrade's operations on existing tables that no lock-safe form makes in one
    step; returns their rules."""
    upgrade = migration.upgrade_ops
    assert upgrade is not None
    created = {(op.schema, op.table_name) for op in upgrade.ops
               if isinstance(op, ops.CreateTableOp)}
    rules: list[str] = []
    for index, op in enumerate(upgrade.ops):
        if isinstance(op, ops.ModifyTableOps) and (op.schema, op.table_name) not in created:
            for inner, table_op in enumerate(op.ops):
                marked = _marked(conn, table_op)
                if marked is not None:
                    op.ops[inner] = marked
                    rules.append(marked.rule)
        else:
            marked = _marked(conn, op)
            if marked is not None:
                upgrade.ops[index] = marked
                rules.append(marked.rule)
    return rules


def note(path: object, rules: list[str]) -> str:
    """What the user is told after the file is written."""
    return (f"note: {len(rules)} change(s) in {path} have no lock-safe form in one step "
            f"({', '.join(sorted(set(rules)))}): each is marked `schemashift: …` in the file "
            "with what to do instead; lint stops them until the revision allows the rule")


def _marked(conn: Connection, op: ops.MigrateOperation) -> Marked | None:
    if isinstance(op, ops.DropTableOp):
        return Marked("drop-table", f"dropping {_full(op.schema, op.table_name)} deletes its "
                      "rows while the running release may still use it: release code that no "
                      "longer does first, take a backup, and drop it in a later release", op)
    if isinstance(op, ops.DropColumnOp):
        where = f"{_full(op.schema, op.table_name)}.{op.column_name}"
        return Marked("drop-column", f"dropping {where} deletes its data, and the running "
                      "release's queries that select it fail: release code that no longer uses "
                      "it first (expand), and drop it in a later release (contract)", op)
    if isinstance(op, ops.RenameTableOp):
        return Marked("rename-table", f"renaming {_full(op.schema, op.table_name)} to "
                      f"{op.new_table_name} breaks the running release's queries: create the "
                      "new name and keep the old one working (expand), drop the old one in a "
                      "later release (contract)", op)
    if isinstance(op, ops.AlterColumnOp):
        return _altered(conn, op)
    if isinstance(op, ops.AddColumnOp):
        return _added(conn, op)
    return None


def _added(conn: Connection, op: ops.AddColumnOp) -> Marked | None:
    """Identity, serial, stored generated or volatile-default columns fill every existing row;
    their safe form (a plain column, a batched backfill, then the default or identity) is
    several steps the models do not spell out."""
    where = f"{_full(op.schema, op.table_name)}.{op.column.name}"
    if column_types.rewrites_table(op.column, column_types.writes_virtual_columns(
            conn.dialect)):
        rule, what = "add-column-rewrites-table", "an identity, serial or stored generated"
    elif column_types.volatile_default(op.column):
        rule, what = "add-column-volatile-default", "a volatile default's"
    else:
        return None
    if not _has_rows(conn, op.schema, op.table_name):
        return None
    return Marked(rule, f"{where} gets {what} value in every existing row, rewriting the table "
                  "under an ACCESS EXCLUSIVE lock: add it as a plain nullable column, backfill "
                  "it in batches (--backfill), then attach the default, sequence or identity; "
                  "for a computed value on PostgreSQL 18 a virtual generated column (no "
                  "persisted=True) needs no rewrite", op, NO_SAFE_FORM)


def _altered(conn: Connection, op: ops.AlterColumnOp) -> Marked | None:
    where = f"{_full(op.schema, op.table_name)}.{op.column_name}"
    if op.modify_name is not None:
        return Marked("rename-column", f"renaming {where} to {op.modify_name} breaks the "
                      "running release's queries: add the new column and backfill it (expand), "
                      "drop the old one in a later release (contract)", op)
    if (op.modify_type is not None and column_types.rewrites(op.existing_type, op.modify_type)
            and _has_rows(conn, op.schema, op.table_name)):
        old = column_types.type_sql(op.existing_type) if op.existing_type is not None else "?"
        return Marked("change-column-type", f"changing {where} from {old} to "
                      f"{column_types.type_sql(op.modify_type)} rewrites the table under an "
                      "ACCESS EXCLUSIVE lock: add a column of the new type, write both and "
                      "backfill it (expand), switch readers, drop the old column later "
                      "(contract)", op)
    return None


def _has_rows(conn: Connection, schema: str | None, table: str) -> bool:
    found = conn.execute(sa.select(sa.exists().select_from(sa.table(table, schema=schema))))
    return bool(found.scalar())


def _full(schema: str | None, name: str) -> str:
    return f"{schema}.{name}" if schema else name


@renderers.dispatch_for(Marked)
def _render_marked(autogen_context: AutogenContext, op: Marked) -> list[str]:
    step = "in one step" if op.mark == MARK else "by the generator"
    text = (f"{op.mark} (lint rule {op.rule}, kept). No lock-safe form makes this change "
            f"{step}: {op.why}.")
    comment = [f"# {line}" for line in textwrap.wrap(text, _WIDTH - 6)]
    return [*comment, *(line for inner in op.ops
                        for line in render.render_op(autogen_context, inner))]
