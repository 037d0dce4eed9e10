"""PostgreSQL enum types: Alembic does not compare their values, so we do."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Inspector

from schemashift.diff.report import Change

EnumKey = tuple[str | None, str]


@dataclass(frozen=True)
class EnumDelta:
    """One enum type whose labels differ; None on a side means the type does not exist there."""

    schema: str | None
    name: str
    database: tuple[str, ...] | None
    models: tuple[str, ...] | None

    @property
    def added(self) -> tuple[str, ...]:
        return tuple(v for v in self.models or () if v not in (self.database or ()))

    @property
    def removed(self) -> tuple[str, ...]:
        return tuple(v for v in self.database or () if v not in (self.models or ()))

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name

    def changes(self) -> list[Change]:
        name, schema = self.qualified_name, self.schema
        if self.database is None:
            return [Change("enum_added", name=name, schema=schema,
                           new=_labels(self.models or ()))]
        if self.models is None:
            return [Change("enum_removed", name=name, schema=schema, old=_labels(self.database))]
        changes = []
        if self.added:
            changes.append(Change("enum_values_added", name=name, schema=schema,
                                  new=_labels(self.added)))
        if self.removed:
            changes.append(Change("enum_values_removed", name=name, schema=schema,
                                  old=_labels(self.removed), data_loss=True))
        return changes


def _labels(labels: tuple[str, ...]) -> str:
    return "(" + ", ".join(repr(label) for label in labels) + ")"


def model_enums(metadata: sa.MetaData, default_schema: str | None) -> dict[EnumKey, sa.Enum]:
    found: dict[EnumKey, sa.Enum] = {}
    for table in metadata.tables.values():
        for column in table.columns:
            enum = column.type
            if isinstance(enum, sa.Enum) and enum.native_enum and enum.name:
                schema = enum.schema or table.schema
                found.setdefault((_normal(schema, default_schema), enum.name), enum)
    return found


def database_enums(
    inspector: Inspector, schemas: set[str | None], default_schema: str | None
) -> dict[EnumKey, tuple[str, ...]]:
    wanted = {_normal(schema, default_schema) for schema in schemas}
    found: dict[EnumKey, tuple[str, ...]] = {}
    for enum in inspector.get_enums(schema="*"):  # type: ignore[attr-defined]
        key = (_normal(enum["schema"], default_schema), enum["name"])
        if key[0] in wanted:
            found[key] = tuple(enum["labels"])
    return found


def compare(
    inspector: Inspector, metadata: sa.MetaData, schemas: set[str | None]
) -> list[EnumDelta]:
    default_schema = inspector.default_schema_name
    models = model_enums(metadata, default_schema)
    database = database_enums(inspector, schemas, default_schema)
    deltas = []
    for key in sorted(set(models) | set(database), key=lambda k: (k[0] or "", k[1])):
        model_labels = tuple(models[key].enums) if key in models else None
        db_labels = database.get(key)
        # Order alone is not drift we can act on: PostgreSQL cannot reorder enum labels.
        if model_labels is None or db_labels is None or set(model_labels) != set(db_labels):
            deltas.append(EnumDelta(key[0], key[1], db_labels, model_labels))
    return deltas


def _normal(schema: str | None, default_schema: str | None) -> str | None:
    return None if schema == default_schema else schema
