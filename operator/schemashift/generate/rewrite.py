"""Changes to Alembic's operations before rendering: renames and PostgreSQL enum types."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import sqlalchemy as sa
from alembic.autogenerate import render, renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from sqlalchemy.dialects import postgresql

from schemashift import errors
from schemashift.diff import EnumDelta


class RenameColumn(ops.AlterColumnOp):
    """`alter_column(new_column_name=…)` whose reverse renames back (Alembic's drops the name)."""

    def reverse(self) -> RenameColumn:
        return RenameColumn(self.table_name, str(self.modify_name), schema=self.schema,
                            modify_name=self.column_name, existing_type=self.existing_type)


@renderers.dispatch_for(RenameColumn)
def _render_rename_column(autogen_context: AutogenContext, op: RenameColumn) -> str:
    """Alembic 1.13's alter_column renderer leaves `new_column_name` out (1.20 writes it)."""
    existing = (f", existing_type={render._repr_type(op.existing_type, autogen_context)}"
                if op.existing_type is not None else "")
    schema = f", schema={op.schema!r}" if op.schema else ""
    return (f"op.alter_column({op.table_name!r}, {op.column_name!r}, "
            f"new_column_name={op.modify_name!r}{existing}{schema})")


class RenameTable(ops.RenameTableOp):
    def reverse(self) -> RenameTable:
        return RenameTable(self.new_table_name, self.table_name, schema=self.schema)


@renderers.dispatch_for(RenameTable)
def _render_rename_table(autogen_context: AutogenContext, op: RenameTable) -> str:
    schema = f", schema={op.schema!r}" if op.schema else ""
    return f"op.rename_table({op.table_name!r}, {op.new_table_name!r}{schema})"


def parse_renames(renames: Iterable[str]) -> list[tuple[str, str]]:
    parsed = []
    for rename in renames:
        old, sep, new = rename.partition(":")
        if not sep or not old or not new or old.count(".") != new.count("."):
            raise errors.UsageError(
                f"--rename {rename!r} is not OLD:NEW",
                hint="use --rename table.old_column:table.new_column, or old_table:new_table",
            )
        parsed.append((old, new))
    return parsed


def apply_renames(upgrade: ops.UpgradeOps, renames: list[tuple[str, str]]) -> None:
    for old, new in renames:
        if "." in old:
            _rename_column(upgrade, old, new)
        else:
            _rename_table(upgrade, old, new)


def _table_ops(upgrade: ops.UpgradeOps, table: str) -> ops.ModifyTableOps | None:
    for op in upgrade.ops:
        if isinstance(op, ops.ModifyTableOps) and _full(op.schema, op.table_name) == table:
            return op
    return None


def _full(schema: str | None, name: str) -> str:
    return f"{schema}.{name}" if schema else name


def _rename_column(upgrade: ops.UpgradeOps, old: str, new: str) -> None:
    table, old_column = old.rsplit(".", 1)
    new_table, new_column = new.rsplit(".", 1)
    container = _table_ops(upgrade, table)
    found: dict[str, ops.AlterTableOp] = {}
    for op in container.ops if container and table == new_table else []:
        if isinstance(op, ops.DropColumnOp) and op.column_name == old_column:
            found["drop"] = op
        elif isinstance(op, ops.AddColumnOp) and op.column.name == new_column:
            found["add"] = op
    if container is None or len(found) != 2:
        raise errors.UsageError(
            f"--rename {old}:{new} does not match a removed column {old} and an added column "
            f"{new} in the same table",
            hint="run detect-schema-changes: the rename suggestions name the pairs it can use",
        )
    add = found["add"]
    assert isinstance(add, ops.AddColumnOp)
    position = container.ops.index(add)
    container.ops[position] = RenameColumn(
        add.table_name, old_column, schema=add.schema, modify_name=new_column,
        existing_type=add.column.type,
    )
    container.ops.remove(found["drop"])


def _rename_table(upgrade: ops.UpgradeOps, old: str, new: str) -> None:
    create = drop = None
    for op in upgrade.ops:
        if isinstance(op, ops.CreateTableOp) and _full(op.schema, op.table_name) == new:
            create = op
        elif isinstance(op, ops.DropTableOp) and _full(op.schema, op.table_name) == old:
            drop = op
    if create is None or drop is None or create.schema != drop.schema:
        raise errors.UsageError(
            f"--rename {old}:{new} does not match a removed table {old} and an added table {new}",
            hint="run detect-schema-changes: the rename suggestions name the pairs it can use",
        )
    # The renamed table keeps its indexes and constraints: drop their drop/create ops too.
    upgrade.ops[:] = [
        RenameTable(drop.table_name, create.table_name, schema=create.schema) if op is create
        else op
        for op in upgrade.ops
        if op is not drop and not (
            isinstance(op, ops.ModifyTableOps) and _full(op.schema, op.table_name) in (old, new)
        )
    ]


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _type_name(delta: EnumDelta) -> str:
    ident = postgresql.dialect().identifier_preparer.quote  # type: ignore[no-untyped-call]
    return f"{ident(delta.schema)}.{ident(delta.name)}" if delta.schema else ident(delta.name)


def create_type(delta: EnumDelta, labels: tuple[str, ...]) -> ops.ExecuteSQLOp:
    values = ", ".join(_literal(label) for label in labels)
    return ops.ExecuteSQLOp(f"CREATE TYPE {_type_name(delta)} AS ENUM ({values})")


def drop_type(delta: EnumDelta) -> ops.ExecuteSQLOp:
    return ops.ExecuteSQLOp(f"DROP TYPE IF EXISTS {_type_name(delta)}")


def add_values(delta: EnumDelta, target: tuple[str, ...], present: tuple[str, ...]) -> list[Any]:
    """ALTER TYPE … ADD VALUE for each label of `target` missing from `present`, in place."""
    result: list[Any] = []
    have = list(present)
    for index, label in enumerate(target):
        if label in have:
            continue
        after = next((t for t in reversed(target[:index]) if t in have), None)
        position = f" AFTER {_literal(after)}" if after else (
            f" BEFORE {_literal(have[0])}" if have else "")
        result.append(ops.ExecuteSQLOp(
            f"ALTER TYPE {_type_name(delta)} ADD VALUE IF NOT EXISTS {_literal(label)}{position}"
        ))
        have.insert(have.index(after) + 1 if after else 0, label)
    return result


def recreate(
    delta: EnumDelta, labels: tuple[str, ...], columns: list[tuple[str, str]]
) -> list[Any]:
    """PostgreSQL cannot drop enum labels: build the type anew and cast the columns over."""
    name = _type_name(delta)
    temporary = _type_name(EnumDelta(delta.schema, f"{delta.name}__new", None, None))
    values = ", ".join(_literal(label) for label in labels)
    statements = [f"CREATE TYPE {temporary} AS ENUM ({values})"]
    for table, column in columns:
        statements.append(
            f'ALTER TABLE {table} ALTER COLUMN "{column}" TYPE {temporary} '
            f'USING "{column}"::text::{temporary}'
        )
    statements += [f"DROP TYPE {name}", f'ALTER TYPE {temporary} RENAME TO "{delta.name}"']
    return [ops.ExecuteSQLOp(statement) for statement in statements]


def enum_columns_without_create(container: ops.OpContainer) -> None:
    """Enum columns in create_table/add_column must not create their type: we emit CREATE TYPE
    ourselves (and DROP TYPE in the downgrade, which drop_table would leave behind)."""
    for op in list(container.ops):
        if isinstance(op, ops.OpContainer):
            enum_columns_without_create(op)
        elif isinstance(op, ops.CreateTableOp):
            op.columns = [_no_create(c) if isinstance(c, sa.Column) else c for c in op.columns]
        elif isinstance(op, ops.AddColumnOp):
            op.column = _no_create(op.column)


class ExistingEnum(postgresql.ENUM):
    """An enum column type whose CREATE TYPE the revision emits itself. `create_type=False`
    must survive `copy()`, which Alembic makes of every column it renders: SQLAlchemy 2.0.0's
    `ENUM.copy()` drops it (2.1 keeps it), and the revision then created the type twice.
    """

    def __init__(self, *enums: Any, **kw: Any) -> None:
        kw["create_type"] = False
        super().__init__(*enums, **kw)


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Alembic's `render_item` hook: `ExistingEnum` is written as the plain ENUM it stands for."""
    if type_ != "type" or not isinstance(obj, ExistingEnum):
        return False
    if autogen_context.imports is not None:
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
    schema = [f"schema={obj.schema!r}"] if obj.schema else []
    arguments = [*map(repr, obj.enums), f"name={obj.name!r}", "create_type=False", *schema]
    return f"postgresql.ENUM({', '.join(arguments)})"


def _no_create(column: sa.Column[Any]) -> sa.Column[Any]:
    enum = column.type
    if not (isinstance(enum, sa.Enum) and enum.native_enum and enum.name):
        return column
    copy = column._copy()
    copy.type = ExistingEnum(*enum.enums, name=enum.name, schema=enum.schema)
    return copy
