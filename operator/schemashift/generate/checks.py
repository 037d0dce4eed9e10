"""Ops in a generated revision that PostgreSQL would reject, found before the file is written.

Each finding is certain to fail when the revision runs (not a style concern), so the revision is
refused with the op, the reason and the model change that avoids it; nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa
from alembic.operations import ops

from schemashift import errors, reasons

NAMING_HELP = "https://alembic.sqlalchemy.org/en/latest/naming.html"


@dataclass(frozen=True)
class Rejected:
    direction: str  # "upgrade" or "downgrade"
    op: str
    why: str
    fix: str

    def line(self) -> str:
        return f"  - {self.direction}: {self.op}: {self.why}\n    fix: {self.fix}"


def refuse_rejected(metadata: sa.MetaData, migration: ops.MigrationScript) -> None:
    found = rejected(metadata, migration)
    if not found:
        return
    raise errors.UsageError(
        f"the generated revision holds {len(found)} operation(s) that would fail when it runs "
        "(PostgreSQL or Alembic rejects them), so it was not written:\n"
        + "\n".join(item.line() for item in found),
        hint="change the models as each fix says, then run create-model-migration again",
        reason=reasons.REVISION_WOULD_FAIL,
    )


def rejected(metadata: sa.MetaData, migration: ops.MigrationScript) -> list[Rejected]:
    keys = _UniqueKeys(metadata)
    found: list[Rejected] = []
    for direction, container in (("upgrade", migration.upgrade_ops),
                                 ("downgrade", migration.downgrade_ops)):
        for op in _walk(container):
            found += _empty_index(direction, op) + _unnamed_drop(direction, op)
            if direction == "upgrade":  # a downgrade only restores foreign keys that existed
                found += [_not_unique(direction, fk) for fk in _foreign_keys(op)
                          if not keys.covers(fk)]
    return found


def _walk(container: ops.OpContainer | None) -> Iterator[ops.MigrateOperation]:
    for op in container.ops if container is not None else []:
        if isinstance(op, ops.OpContainer):
            yield from _walk(op)
        else:
            yield op


def _table(schema: str | None, name: str) -> str:
    return f"{schema}.{name}" if schema else name


def _empty_index(direction: str, op: ops.MigrateOperation) -> list[Rejected]:
    if not isinstance(op, ops.CreateIndexOp) or list(op.columns):
        return []
    return [Rejected(
        direction, f"create_index({op.index_name!r}, {_table(op.schema, op.table_name)!r}, [])",
        "an index needs at least one column or expression; PostgreSQL rejects "
        "CREATE INDEX … ON table () as a syntax error",
        f"give the model's Index({op.index_name!r}) its columns (sa.Index(name, table.c.col)) "
        "or remove it",
    )]


def _unnamed_drop(direction: str, op: ops.MigrateOperation) -> list[Rejected]:
    if not isinstance(op, ops.DropConstraintOp) or op.constraint_name is not None:
        return []
    table = _table(op.schema, op.table_name)
    kind = op.constraint_type or "constraint"
    return [Rejected(
        direction, f"drop_constraint(None, {table!r}, type_={op.constraint_type!r})",
        f"the {kind} constraint on {table}{_columns_of(op)} has no name in the models, and a "
        "constraint can only be dropped by name: PostgreSQL picks its own name when it is "
        "created, which the revision cannot know",
        f"give the constraint a name (name=...) or set a naming_convention on the MetaData "
        f"({NAMING_HELP})",
    )]


def _columns_of(op: ops.DropConstraintOp) -> str:
    try:
        constraint = op.to_constraint()
    except ValueError:  # no reverse op to say what the constraint was
        return ""
    columns = getattr(constraint, "columns", None)
    names = [column.name for column in columns] if columns is not None else []
    return f" ({', '.join(names)})" if names else ""


@dataclass(frozen=True)
class ForeignKey:
    source: str
    referred: str  # schema-qualified like MetaData.tables keys
    columns: frozenset[str]


def _foreign_keys(op: ops.MigrateOperation) -> list[ForeignKey]:
    if isinstance(op, ops.CreateForeignKeyOp):
        return [ForeignKey(_table(op.kw.get("source_schema"), op.source_table),
                           _table(op.kw.get("referent_schema"), op.referent_table),
                           frozenset(op.remote_cols))]
    if isinstance(op, ops.CreateTableOp):
        table = op.to_table()
        return [_from_elements(_table(op.schema, op.table_name), list(fk.elements))
                for fk in table.foreign_key_constraints]
    if isinstance(op, ops.AddColumnOp):
        return [_from_elements(_table(op.schema, op.table_name), [fk])
                for fk in op.column.foreign_keys]
    return []


def _from_elements(source: str, elements: list[sa.ForeignKey]) -> ForeignKey:
    targets = [element.target_fullname.rsplit(".", 1) for element in elements]
    return ForeignKey(source, targets[0][0], frozenset(column for _, column in targets))


class _UniqueKeys:
    """Column sets a foreign key may reference: the primary key, unique constraints and unique
    non-partial indexes of the models' table (the state after the revision). A table the models
    lack cannot be referenced at all: SQLAlchemy refuses that before anything is generated."""

    def __init__(self, metadata: sa.MetaData) -> None:
        self._metadata = metadata

    def covers(self, fk: ForeignKey) -> bool:
        table = self._metadata.tables.get(fk.referred)
        return table is None or fk.columns in _model_keys(table)


def _model_keys(table: sa.Table) -> list[frozenset[str]]:
    keys = [frozenset(c.name for c in table.primary_key.columns)]
    keys += [frozenset(c.name for c in constraint.columns) for constraint in table.constraints
             if isinstance(constraint, sa.UniqueConstraint)]
    keys += [frozenset(c.name for c in index.columns) for index in table.indexes
             if index.unique and not index.dialect_options["postgresql"].get("where")
             and len(index.columns) == len(index.expressions)]
    return [key for key in keys if key]


def _not_unique(direction: str, fk: ForeignKey) -> Rejected:
    columns = ", ".join(sorted(fk.columns))
    return Rejected(
        direction, f"foreign key {fk.source} → {fk.referred} ({columns})",
        f"{fk.referred} ({columns}) is neither its primary key nor covered by a unique "
        "constraint or unique index in the models; PostgreSQL rejects it "
        "(there is no unique constraint matching given keys for referenced table)",
        f"add sa.UniqueConstraint({', '.join(repr(c) for c in sorted(fk.columns))}) to "
        f"{fk.referred} in the models, or point the foreign key at its primary key",
    )
