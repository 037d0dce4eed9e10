"""The operations Alembic does not write for PostgreSQL enum types, in both directions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic.operations import ops
from sqlalchemy.engine import Connection

from schemashift.diff import EnumDelta
from schemashift.generate import rewrite

_COLUMNS_OF_TYPE = sa.text(
    """
    SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS table_name,
           a.attname AS column_name
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_type t ON t.oid = a.atttypid
    JOIN pg_namespace tn ON tn.oid = t.typnamespace
    WHERE t.typname = :name AND tn.nspname = :schema
      AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY 1, 2
    """
)


@dataclass
class EnumOps:
    upgrade_before: list[Any] = field(default_factory=list)
    upgrade_after: list[Any] = field(default_factory=list)
    downgrade_before: list[Any] = field(default_factory=list)
    downgrade_after: list[Any] = field(default_factory=list)


def plan(conn: Connection, deltas: list[EnumDelta]) -> EnumOps:
    result = EnumOps()
    for delta in deltas:
        if delta.database is None:
            result.upgrade_before.append(rewrite.create_type(delta, delta.models or ()))
            result.downgrade_after.append(rewrite.drop_type(delta))
        elif delta.models is None:
            result.upgrade_after.append(rewrite.drop_type(delta))
            result.downgrade_before.append(rewrite.create_type(delta, delta.database))
        else:
            columns = _columns_using(conn, delta)
            result.upgrade_before += _retarget(delta, delta.models, delta.database, columns)
            result.downgrade_after += _retarget(delta, delta.database, delta.models, columns)
    return result


def _retarget(
    delta: EnumDelta, target: tuple[str, ...], present: tuple[str, ...],
    columns: list[tuple[str, str]],
) -> list[Any]:
    in_order = [label for label in present if label in target]
    if set(present) - set(target) or in_order != [label for label in target if label in present]:
        # Labels can only be appended or inserted, never dropped or reordered.
        return rewrite.recreate(delta, target, columns)
    return rewrite.add_values(delta, target, present)


def _columns_using(conn: Connection, delta: EnumDelta) -> list[tuple[str, str]]:
    schema = delta.schema or conn.dialect.default_schema_name
    rows = conn.execute(_COLUMNS_OF_TYPE, {"name": delta.name, "schema": schema})
    return [(row.table_name, row.column_name) for row in rows]


def wrap(script: ops.MigrationScript, enum_ops: EnumOps) -> None:
    """Put the enum statements around Alembic's operations; enum columns never create types."""
    upgrade, downgrade = script.upgrade_ops, script.downgrade_ops
    assert upgrade is not None and downgrade is not None
    upgrade.ops[:] = enum_ops.upgrade_before + list(upgrade.ops) + enum_ops.upgrade_after
    downgrade.ops[:] = enum_ops.downgrade_before + list(downgrade.ops) + enum_ops.downgrade_after
    for container in (upgrade, downgrade):
        rewrite.enum_columns_without_create(container)
