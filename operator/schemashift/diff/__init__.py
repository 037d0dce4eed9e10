"""Model ↔ database comparison and the change report (wraps Alembic autogenerate)."""

from schemashift.diff.comparison import Comparison, compare, detect, migration_context
from schemashift.diff.enums import EnumDelta
from schemashift.diff.renames import Rename
from schemashift.diff.report import Change, ChangeReport

__all__ = [
    "Change",
    "ChangeReport",
    "Comparison",
    "EnumDelta",
    "Rename",
    "compare",
    "detect",
    "migration_context",
]
