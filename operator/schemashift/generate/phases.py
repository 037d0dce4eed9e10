"""create-model-migration's expand/contract split: one model change, two revisions.

The **expand** revision is what the release still running can live with, applied before the new
release rolls out: new tables, nullable or defaulted columns, indexes, constraints (NOT VALID,
then validated), widened types, dropped NOT NULLs, new enum types and labels, comments, and the
first half of a rename (the new column, a trigger that keeps both names in step, and a batched
copy). The **contract** revision is what only the new release can live with, applied after the
rollout: dropped tables, columns, indexes and constraints, the old column of a rename (and its
trigger), SET NOT NULL, narrowed types, enum labels removed, table renames.

Two details make each half safe on its own:
- a dropped column that is NOT NULL without a default is made nullable in the expand, so the new
  release's INSERTs, which leave it out, work during the rollout; the contract's downgrade adds
  it back nullable, and its values come back from the targeted copy the run took before the drop
  (generate/preserve.py);
- a new NOT NULL column without a default is added nullable (and backfilled with `--backfill`) in
  the expand; the contract backfills what the old release inserted meanwhile, then sets NOT NULL.

Each half is written as its own revision, one after the other in the one linear history (a plain
`alembic upgrade head` applies both), with its phase recorded in the file as
`schemashift = {"phase": "expand"}` (schemashift's plan and runner read it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic.operations import ops
from sqlalchemy.engine import Connection

from schemashift import errors, reasons, release_phases
from schemashift.diff import EnumDelta
from schemashift.generate import enum_ops, rewrite, safe, safe_ops
from schemashift.generate.safe_ops import Guarded, Statement, catalog_call, qualified, quote
from schemashift.release_phases import CONTRACT, EXPAND, KEY
from schemashift.type_widening import type_text, widens

TableKey = tuple[str | None, str]


@dataclass
class Part:
    """One half of the change, before it becomes a MigrationScript."""

    phase: str
    tables: dict[TableKey, list[ops.MigrateOperation]] = field(default_factory=dict)
    top: list[ops.MigrateOperation] = field(default_factory=list)  # CreateTable, DropTable…
    enums: list[EnumDelta] = field(default_factory=list)
    # Steps that add or drop whole columns (a rename's two names, a backfilled column), in an
    # autocommit block of their own: where they add columns, before the lock-safe steps (an index
    # or constraint of the models may be on such a column); where they drop them, after.
    late_upgrade: list[ops.MigrateOperation] = field(default_factory=list)
    late_downgrade: list[ops.MigrateOperation] = field(default_factory=list)
    # Steps put first in the lock-safe block (a backfill that must precede its SET NOT NULL).
    first_steps: list[ops.MigrateOperation] = field(default_factory=list)
    readd_nullable: set[tuple[TableKey, str]] = field(default_factory=set)

    def add(self, table: TableKey, op: ops.MigrateOperation) -> None:
        self.tables.setdefault(table, []).append(op)

    @property
    def is_empty(self) -> bool:
        return not (self.top or any(self.tables.values()) or self.enums or self.late_upgrade)

    def script(self, conn: Connection) -> ops.MigrationScript:
        upgrade = ops.UpgradeOps(ops=[*self.top, *(
            ops.ModifyTableOps(table, list(items), schema=schema)
            for (schema, table), items in self.tables.items() if items)])
        downgrade = upgrade.reverse()
        _nullable_readds(downgrade, self.readd_nullable)
        migration = ops.MigrationScript(rev_id=None, upgrade_ops=upgrade, downgrade_ops=downgrade)
        enum_ops.wrap(migration, enum_ops.plan(conn, self.enums))
        return migration

    def finish(self, migration: ops.MigrationScript) -> None:
        """After the lock-safe rewrite: this half's own steps, and its phase marker."""
        assert migration.upgrade_ops is not None and migration.downgrade_ops is not None
        if self.first_steps:
            block = next((op for op in migration.upgrade_ops.ops
                          if isinstance(op, safe_ops.AutocommitSteps)), None)
            assert block is not None, "a SET NOT NULL step is rewritten into a lock-safe block"
            block.ops[:0] = self.first_steps
        adds_in_upgrade = self.phase == EXPAND
        for container, steps, adds in ((migration.upgrade_ops, self.late_upgrade, adds_in_upgrade),
                                       (migration.downgrade_ops, self.late_downgrade,
                                        not adds_in_upgrade)):
            if not steps:
                continue
            block = safe_ops.AutocommitSteps(list(steps))
            lock_safe = [i for i, op in enumerate(container.ops)
                         if isinstance(op, safe_ops.AutocommitSteps)]
            container.ops.insert(lock_safe[0] if adds and lock_safe else len(container.ops), block)


def marker(phase: str) -> str:
    """What the revision file ends with (module level: Alembic ignores it)."""
    when = ("before the new release rolls out\n# (schemashift apply --phase expand)"
            if phase == EXPAND else
            "after the new release has rolled out\n# (schemashift apply --phase contract)")
    return (f"\n\n# expand/contract: this revision runs {when}; plain `alembic upgrade head`\n"
            "# applies both halves in order.\n"
            f'schemashift = {{"{KEY}": "{phase}"}}\n')


def split(conn: Connection, migration: ops.MigrationScript, enums: list[EnumDelta],
          renames: list[tuple[str, str]], backfills: list[safe.Backfill]) -> list[Part]:
    """The expand and the contract half of the change (an empty half is left out)."""
    upgrade = migration.upgrade_ops
    assert upgrade is not None
    splitter = _Splitter(conn, {(b.table, b.column): b for b in backfills})
    splitter.renames(upgrade, renames)
    for op in upgrade.ops:
        splitter.top(op)
    for delta in enums:
        (splitter.expand if _additive(delta) else splitter.contract).enums.append(delta)
    safe.refuse_unused_backfills(splitter.backfills)
    return [part for part in (splitter.expand, splitter.contract) if not part.is_empty]


def _additive(delta: EnumDelta) -> bool:
    """A new type, or labels only added (in an order the old labels keep)."""
    if delta.database is None:
        return True
    if delta.models is None:
        return False
    kept = [label for label in delta.models if label in delta.database]
    return not set(delta.database) - set(delta.models) and kept == list(delta.database)


class _Splitter:
    def __init__(self, conn: Connection, backfills: dict[tuple[str, str], safe.Backfill]):
        self.conn = conn
        self.backfills = backfills
        self.expand = Part(EXPAND)
        self.contract = Part(CONTRACT)

    def top(self, op: ops.MigrateOperation) -> None:
        if isinstance(op, ops.ModifyTableOps):
            for inner in op.ops:
                self.table_op((op.schema, op.table_name), inner)
        elif isinstance(op, (ops.DropTableOp, ops.RenameTableOp)):
            self.contract.top.append(op)
        else:
            self.expand.top.append(op)

    def table_op(self, table: TableKey, op: ops.MigrateOperation) -> None:
        if isinstance(op, ops.AddColumnOp):
            self.add_column(table, op)
        elif isinstance(op, ops.DropColumnOp):
            self.drop_column(table, op)
        elif isinstance(op, ops.AlterColumnOp):
            for phase, piece in _alter_pieces(op):
                (self.expand if phase == EXPAND else self.contract).add(table, piece)
        elif isinstance(op, (ops.DropIndexOp, ops.DropConstraintOp)):
            self.contract.add(table, op)
        else:  # new indexes, constraints, comments
            self.expand.add(table, op)

    def add_column(self, table: TableKey, op: ops.AddColumnOp) -> None:
        column = op.column
        if (column.nullable or column.server_default is not None or column.computed is not None
                or column.identity is not None):
            self.expand.add(table, op)
            return
        backfill = self.backfills.pop((_full(*table), column.name), None)
        if backfill is None and self._has_rows(table):
            raise _refused_not_null(table, column.name)
        nullable = column._copy()
        nullable.nullable = True
        added = ops.AddColumnOp(op.table_name, nullable, schema=op.schema)
        if backfill is None:
            self.expand.add(table, added)
        else:  # the expand fills the rows there are; the contract the old release added since
            guard = catalog_call("_COLUMN", table=qualified(*table), column=column.name)
            fill = safe.fill(op.table_name, op.schema, column.name, backfill.expression)
            self.expand.late_upgrade += [Guarded(guard, [added]), fill]
            self.expand.late_downgrade.append(Guarded(
                catalog_call("_COLUMN", "_present", table=qualified(*table), column=column.name),
                [ops.DropColumnOp(op.table_name, column.name, schema=op.schema)]))
            self.contract.first_steps.append(
                safe.fill(op.table_name, op.schema, column.name, backfill.expression))
        self.contract.add(table, ops.AlterColumnOp(
            op.table_name, column.name, schema=op.schema, existing_type=column.type,
            existing_nullable=True, modify_nullable=False))

    def drop_column(self, table: TableKey, op: ops.DropColumnOp) -> None:
        self.contract.add(table, op)
        column = op.to_column()
        self.contract.readd_nullable.add((table, op.column_name))
        if not column.nullable and column.server_default is None and column.computed is None \
                and column.identity is None:
            self.expand.add(table, ops.AlterColumnOp(
                op.table_name, op.column_name, schema=op.schema, existing_type=column.type,
                existing_nullable=False, modify_nullable=True))

    def _has_rows(self, table: TableKey) -> bool:
        schema, name = table
        exists = sa.inspect(self.conn).has_table(name, schema=schema)
        return exists and bool(self.conn.execute(
            sa.select(sa.exists().select_from(sa.table(name, schema=schema)))).scalar())

    def renames(self, upgrade: ops.UpgradeOps, renames: list[tuple[str, str]]) -> None:
        """A column rename: the new column and its trigger in the expand, the old one dropped in
        the contract. A table rename is Alembic's RENAME, in the contract."""
        tables = [(old, new) for old, new in renames if "." not in old]
        rewrite.apply_renames(upgrade, tables)
        for old, new in renames:
            if "." in old:
                _ColumnRename(self, upgrade, old, new).split()


def _full(schema: str | None, table: str) -> str:
    return f"{schema}.{table}" if schema else table


def _refused_not_null(table: TableKey, column: str) -> errors.UsageError:
    where = _full(*table)
    return errors.UsageError(
        f"the models add {where}.{column} as NOT NULL without a server default, and {where} "
        "already has rows: PostgreSQL would have no value to put in them, so no revision was "
        "written",
        hint=f"give the column a server_default in the models, or say how to fill the rows: "
             f"--backfill \"{where}.{column}=SQL_EXPR\" (the expand adds it nullable and fills "
             "it; the contract fills what the old release inserted meanwhile, then sets NOT NULL)",
        reason=reasons.NOT_NULL_WITHOUT_DEFAULT)


def _nullable_readds(downgrade: ops.DowngradeOps, columns: set[tuple[TableKey, str]]) -> None:
    """The contract's downgrade adds a dropped column back nullable: its values are gone, and
    NOT NULL without them would fail on a table with rows."""
    for container in downgrade.ops:
        if not isinstance(container, ops.ModifyTableOps):
            continue
        table = (container.schema, container.table_name)
        for index, op in enumerate(container.ops):
            if isinstance(op, ops.AddColumnOp) and (table, op.column.name) in columns \
                    and not op.column.nullable:
                column = op.column._copy()
                column.nullable = True
                container.ops[index] = ops.AddColumnOp(op.table_name, column, schema=op.schema)


_MODIFIED = ("modify_type", "modify_nullable", "modify_server_default", "modify_comment")
_UNSET: dict[str, Any] = {"modify_type": None, "modify_nullable": None,
                          "modify_server_default": False, "modify_comment": False}


def _alter_pieces(op: ops.AlterColumnOp) -> list[tuple[str, ops.AlterColumnOp]]:
    """An ALTER COLUMN split by phase: SET NOT NULL, a narrowing and dropping the default of a
    NOT NULL column are contract, the rest (DROP NOT NULL, a widening, other defaults,
    comments) expand."""
    contract = []
    if op.modify_nullable is False:
        contract.append("modify_nullable")
    if release_phases.drops_default_of_not_null(op):
        contract.append("modify_server_default")
    if op.modify_type is not None and not _widens(op.existing_type, op.modify_type):
        contract.append("modify_type")
    changed = [name for name in _MODIFIED if getattr(op, name) != _UNSET[name]]
    if not contract:
        return [(EXPAND, op)]
    if set(changed) <= set(contract):
        return [(CONTRACT, op)]
    expand_piece, contract_piece = copy.copy(op), copy.copy(op)
    for name in contract:
        setattr(expand_piece, name, _UNSET[name])
    for name in set(changed) - set(contract):
        setattr(contract_piece, name, _UNSET[name])
    # The contract runs after the expand's changes: they are its "existing" state.
    if expand_piece.modify_server_default is not False:
        contract_piece.existing_server_default = expand_piece.modify_server_default
    if expand_piece.modify_comment is not False:
        contract_piece.existing_comment = expand_piece.modify_comment
    if expand_piece.modify_type is not None:
        contract_piece.existing_type = expand_piece.modify_type
    return [(EXPAND, expand_piece), (CONTRACT, contract_piece)]


def _widens(old: Any, new: Any) -> bool:
    return widens(type_text(old), type_text(new))


class _ColumnRename:
    """table.old → table.new as expand (add new, sync trigger, batched copy) and contract (drop
    the trigger and the old column; NOT NULL on the new one when the models ask for it)."""

    def __init__(self, splitter: _Splitter, upgrade: ops.UpgradeOps, old: str, new: str):
        self.splitter = splitter
        self.upgrade = upgrade
        self.table_name, self.old = old.rsplit(".", 1)
        new_table, self.new = new.rsplit(".", 1)
        self.ops = self._container() if new_table == self.table_name else None
        found = {type(op): op for op in (self.ops.ops if self.ops else [])
                 if (isinstance(op, ops.DropColumnOp) and op.column_name == self.old)
                 or (isinstance(op, ops.AddColumnOp) and op.column.name == self.new)}
        if self.ops is None or len(found) != 2:
            raise errors.UsageError(
                f"--rename {old}:{new} does not match a removed column {old} and an added "
                f"column {new} in the same table",
                hint="run detect-schema-changes: the rename suggestions name the pairs it can use")
        self.drop = found[ops.DropColumnOp]
        self.add = found[ops.AddColumnOp]
        assert isinstance(self.drop, ops.DropColumnOp) and isinstance(self.add, ops.AddColumnOp)

    def _container(self) -> ops.ModifyTableOps | None:
        for op in self.upgrade.ops:
            if isinstance(op, ops.ModifyTableOps) and _full(op.schema, op.table_name) \
                    == self.table_name:
                return op
        return None

    def split(self) -> None:
        assert self.ops is not None and isinstance(self.add, ops.AddColumnOp)
        assert isinstance(self.drop, ops.DropColumnOp)
        self.ops.ops = [op for op in self.ops.ops if op is not self.add and op is not self.drop]
        schema, table = self.ops.schema, self.ops.table_name
        key = (schema, table)
        new_column = self.add.column._copy()
        not_null = not new_column.nullable
        new_column.nullable = True
        old_column = self.drop.to_column()._copy()
        old_column.nullable = True
        expand, contract = self.splitter.expand, self.splitter.contract
        expand.late_upgrade += [
            self._guarded_add(new_column), *self._trigger(), self._copy(self.old, self.new)]
        expand.late_downgrade += [*self._no_trigger(), self._guarded_drop(self.new)]
        contract.late_upgrade += [*self._no_trigger(), self._guarded_drop(self.old)]
        contract.late_downgrade += [
            self._guarded_add(old_column), *self._trigger(), self._copy(self.new, self.old)]
        if not_null:
            contract.add(key, ops.AlterColumnOp(
                table, self.new, schema=schema, existing_type=new_column.type,
                existing_nullable=True, modify_nullable=False))

    @property
    def _table(self) -> str:
        assert self.ops is not None
        return qualified(self.ops.schema, self.ops.table_name)

    @property
    def _function(self) -> str:
        assert self.ops is not None
        name = safe_ops.helper_name(self.ops.table_name, self.old, self.new, suffix="sync")
        return qualified(self.ops.schema, name)

    def _guarded_add(self, column: sa.Column[Any]) -> ops.MigrateOperation:
        assert self.ops is not None
        return Guarded(catalog_call("_COLUMN", table=self._table, column=column.name),
                       [ops.AddColumnOp(self.ops.table_name, column, schema=self.ops.schema)])

    def _guarded_drop(self, column: str) -> ops.MigrateOperation:
        assert self.ops is not None
        return Guarded(catalog_call("_COLUMN", "_present", table=self._table, column=column),
                       [ops.DropColumnOp(self.ops.table_name, column, schema=self.ops.schema)])

    def _trigger(self) -> list[ops.MigrateOperation]:
        """Old code writes only the old name, new code only the new one: each write is copied
        to the other column, so both releases read what either wrote."""
        old, new = quote(self.old), quote(self.new)
        body = (
            "BEGIN "
            "IF TG_OP = 'INSERT' THEN "
            f"IF NEW.{new} IS NULL THEN NEW.{new} := NEW.{old}; "
            f"ELSIF NEW.{old} IS NULL THEN NEW.{old} := NEW.{new}; END IF; "
            f"ELSIF NEW.{old} IS DISTINCT FROM OLD.{old} "
            f"AND NEW.{new} IS NOT DISTINCT FROM OLD.{new} THEN NEW.{new} := NEW.{old}; "
            f"ELSIF NEW.{new} IS DISTINCT FROM OLD.{new} "
            f"AND NEW.{old} IS NOT DISTINCT FROM OLD.{old} THEN NEW.{old} := NEW.{new}; "
            "END IF; RETURN NEW; END")
        return [
            safe_ops.execute(f"CREATE OR REPLACE FUNCTION {self._function}() RETURNS trigger "
                             f"LANGUAGE plpgsql AS $sync$ {body} $sync$"),
            safe_ops.execute(f"CREATE OR REPLACE TRIGGER {quote(self._trigger_name)} BEFORE "
                             f"INSERT OR UPDATE ON {self._table} FOR EACH ROW EXECUTE FUNCTION "
                             f"{self._function}()"),
        ]

    @property
    def _trigger_name(self) -> str:
        assert self.ops is not None
        return safe_ops.helper_name(self.ops.table_name, self.old, self.new, suffix="sync")

    def _no_trigger(self) -> list[ops.MigrateOperation]:
        return [safe_ops.execute(f"DROP TRIGGER IF EXISTS {quote(self._trigger_name)} ON "
                                 f"{self._table}"),
                safe_ops.execute(f"DROP FUNCTION IF EXISTS {self._function}()")]

    def _copy(self, source: str, target: str) -> Statement:
        """Batched like a backfill; NULLs are copied too (the helper then counts none left)."""
        table, source_sql, target_sql = self._table, quote(source), quote(target)
        batch = (f"WITH batch AS (UPDATE {table} SET {target_sql} = {source_sql} WHERE ctid = "
                 f"ANY (ARRAY(SELECT ctid FROM {table} WHERE {target_sql} IS DISTINCT FROM "
                 f"{source_sql} LIMIT {safe_ops.BACKFILL_BATCH_ROWS})) RETURNING 1) "
                 "SELECT count(*), 0 FROM batch")
        assert self.ops is not None
        return Statement(f"_backfill({batch!r}, "
                         f"{_full(self.ops.schema, self.ops.table_name)!r}, {target!r})")


__all__ = ["Part", "marker", "split"]
