"""The change report: a list of `Change` records between the comparison and its rendering."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

HEADER = "Detected schema changes:"
CLEAN = "No schema changes detected"
DATA_LOSS = " (data loss if applied)"

# Report order: tables, then columns, then everything attached to them.
KIND_ORDER = (
    "table_added",
    "table_removed",
    "column_added",
    "column_removed",
    "type_changed",
    "nullable_changed",
    "server_default_changed",
    "comment_changed",
    "table_comment_changed",
    "index_added",
    "index_removed",
    "unique_added",
    "unique_removed",
    "foreign_key_added",
    "foreign_key_removed",
    "enum_added",
    "enum_values_added",
    "enum_values_removed",
    "enum_removed",
)


@dataclass(frozen=True)
class Change:
    """One difference between the models and the database, as the models would have it applied."""

    kind: str
    table: str | None = None
    column: str | None = None
    name: str | None = None
    schema: str | None = None
    old: str | None = None
    new: str | None = None
    data_loss: bool = False

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else str(self.table)

    @property
    def target(self) -> str:
        return f"{self.qualified_table}.{self.column}" if self.column else self.qualified_table

    def to_text(self) -> str:
        line = _LINES[self.kind](self)
        return f"- {line}{DATA_LOSS if self.data_loss else ''}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "description": self.to_text()[2:]}

    def sort_key(self) -> tuple[int, str, str, str]:
        return (KIND_ORDER.index(self.kind), self.qualified_table, self.column or "",
                self.name or "")


def _on(change: Change) -> str:
    return f"{change.name or '(unnamed)'} on {change.qualified_table}"


_LINES = {
    "table_added": lambda c: f"New table: {c.qualified_table}",
    "table_removed": lambda c: f"Removed table: {c.qualified_table}",
    "column_added": lambda c: f"New column: {c.target}",
    "column_removed": lambda c: f"Removed column: {c.target}",
    "type_changed": lambda c: f"Type changed: {c.target} {c.old} -> {c.new}",
    "nullable_changed": lambda c: f"Nullable changed: {c.target} {c.old} -> {c.new}",
    "server_default_changed": lambda c: f"Server default changed: {c.target} {c.old} -> {c.new}",
    "comment_changed": lambda c: f"Comment changed: {c.target} {c.old} -> {c.new}",
    "table_comment_changed": lambda c: f"Table comment changed: {c.target} {c.old} -> {c.new}",
    "index_added": lambda c: f"New index: {_on(c)} {c.new}",
    "index_removed": lambda c: f"Removed index: {_on(c)} {c.old}",
    "unique_added": lambda c: f"New unique constraint: {_on(c)} {c.new}",
    "unique_removed": lambda c: f"Removed unique constraint: {_on(c)} {c.old}",
    "foreign_key_added": lambda c: f"New foreign key: {_on(c)} {c.new}",
    "foreign_key_removed": lambda c: f"Removed foreign key: {_on(c)} {c.old}",
    "enum_added": lambda c: f"New enum: {c.name} {c.new}",
    "enum_values_added": lambda c: f"Enum values added: {c.name} {c.new}",
    "enum_values_removed": lambda c: f"Enum values removed: {c.name} {c.old}",
    "enum_removed": lambda c: f"Removed enum: {c.name} {c.old}",
}


@dataclass
class ChangeReport:
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def sorted(self) -> ChangeReport:
        return ChangeReport(sorted(self.changes, key=Change.sort_key), self.warnings,
                            self.suggestions)

    def to_text(self) -> str:
        lines = [HEADER, *(c.to_text() for c in self.changes)] if self.changes else [CLEAN]
        if self.suggestions:
            lines += ["Suggestions:", *(f"- {s}" for s in self.suggestions)]
        if self.warnings:
            lines += ["Warnings:", *(f"- {w}" for w in self.warnings)]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "has_changes": self.has_changes,
            "changes": [c.to_dict() for c in self.changes],
            "warnings": list(self.warnings),
            "suggestions": list(self.suggestions),
        }
