"""Each step of a plan and the table lock it takes, for `schemashift plan`.

LOCKS is the one table from statement kind to the lock PostgreSQL takes on the table (the lock
levels of the PostgreSQL documentation: "Explicit Locking" and the ALTER TABLE, CREATE INDEX and
DROP INDEX pages) and to what that means for the application. A step on a table that holds no
row at that point (see `walk`) says so: its lock is brief whatever the kind. SET NOT NULL is
brief when a validated `CHECK (col IS NOT NULL)` precedes it (PostgreSQL 12+ skips the scan),
judged by the same `constraints` ledger lint uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from alembic.ddl.postgresql import CreateExcludeConstraintOp
from alembic.operations import ops as alembic_ops

from schemashift import identifiers
from schemashift.plan import constraints
from schemashift.plan.constraints import Ledger
from schemashift.plan.lint_sql import REWRITING_COLUMN, rewrites_table, shorten
from schemashift.plan.live import NO_FACTS, LiveFacts
from schemashift.plan.live_constraints import NO_CONSTRAINTS, LiveConstraints
from schemashift.plan.render import RenderedRevision, sql_text
from schemashift.plan.walk import Step, statements, table_of, walk

_AX = "ACCESS EXCLUSIVE"
_BRIEF = "brief"
LOCKS: dict[str, tuple[str, str]] = {
    "CREATE TABLE": (_AX, "new table: nothing waits"),
    "DROP TABLE": (_AX, _BRIEF),
    "RENAME TABLE": (_AX, _BRIEF),
    "ADD COLUMN": (_AX, _BRIEF),
    "ADD COLUMN (rewrite)": (_AX, "held while the whole table is rewritten"),
    "DROP COLUMN": (_AX, _BRIEF),
    "RENAME COLUMN": (_AX, _BRIEF),
    "ALTER COLUMN TYPE": (_AX, "held while the table is rewritten, unless binary-compatible"),
    "ALTER COLUMN": (_AX, _BRIEF),
    "SET NOT NULL": (_AX, "held for a full scan"),
    "SET NOT NULL (checked)": (_AX, "brief: validated check"),
    "CREATE INDEX": ("SHARE", "writes blocked while it builds"),
    "CREATE INDEX CONCURRENTLY": ("SHARE UPDATE EXCLUSIVE", "no writes blocked"),
    "DROP INDEX": (_AX, "brief, reads and writes wait behind it"),
    "DROP INDEX CONCURRENTLY": ("SHARE UPDATE EXCLUSIVE", "no reads or writes blocked"),
    "ADD FOREIGN KEY": ("SHARE ROW EXCLUSIVE",
                        "on both tables: writes blocked while every row is checked"),
    "ADD FOREIGN KEY NOT VALID": ("SHARE ROW EXCLUSIVE", "on both tables, brief"),
    "ADD CHECK": (_AX, "held for a full scan"),
    "ADD CHECK NOT VALID": (_AX, _BRIEF),
    "VALIDATE CONSTRAINT": ("SHARE UPDATE EXCLUSIVE", "no writes blocked"),
    "ADD UNIQUE": (_AX, "held while its index builds"),
    "ADD PRIMARY KEY": (_AX, "held while its index builds and its columns are scanned"),
    "ADD CONSTRAINT USING INDEX": (_AX, "brief: the index exists"),
    "ADD EXCLUDE": (_AX, "held while its index builds"),
    "DROP CONSTRAINT": (_AX, _BRIEF),
    "INSERT/UPDATE/DELETE": ("ROW EXCLUSIVE", "row locks on the rows it changes"),
    "SQL": ("not classified", "read the statement"),
}
UNCLASSIFIED = "SQL"
_EMPTY = "brief: no rows"


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE | re.DOTALL)


# Raw SQL statement → kind: the first pattern that matches wins.
_RAW_KINDS: list[tuple[re.Pattern[str], str]] = [
    (_rx(r"^\s*CREATE\s+(UNIQUE\s+)?INDEX\s+CONCURRENTLY\b"), "CREATE INDEX CONCURRENTLY"),
    (_rx(r"^\s*CREATE\s+(UNIQUE\s+)?INDEX\b"), "CREATE INDEX"),
    (_rx(r"^\s*DROP\s+INDEX\s+CONCURRENTLY\b"), "DROP INDEX CONCURRENTLY"),
    (_rx(r"^\s*DROP\s+INDEX\b"), "DROP INDEX"),
    (_rx(r"^\s*CREATE\s+.*\bTABLE\b"), "CREATE TABLE"),
    (_rx(r"^\s*DROP\s+TABLE\b"), "DROP TABLE"),
    (_rx(r"^\s*(INSERT|UPDATE|DELETE|WITH)\b"), "INSERT/UPDATE/DELETE"),
    (_rx(r"\bVALIDATE\s+CONSTRAINT\b"), "VALIDATE CONSTRAINT"),
    (_rx(r"\bUSING\s+INDEX\b"), "ADD CONSTRAINT USING INDEX"),
    (_rx(r"\bFOREIGN\s+KEY\b.*\bNOT\s+VALID\b"), "ADD FOREIGN KEY NOT VALID"),
    (_rx(r"\bADD\s+.*\bFOREIGN\s+KEY\b"), "ADD FOREIGN KEY"),
    (_rx(r"\bADD\s+.*\bCHECK\b.*\bNOT\s+VALID\b"), "ADD CHECK NOT VALID"),
    (_rx(r"\bADD\s+.*\bCHECK\b"), "ADD CHECK"),
    (_rx(r"\bADD\s+(CONSTRAINT\s+\S+\s+)?UNIQUE\b"), "ADD UNIQUE"),
    (_rx(r"\bADD\s+(CONSTRAINT\s+\S+\s+)?PRIMARY\s+KEY\b"), "ADD PRIMARY KEY"),
    (_rx(r"\bADD\s+(CONSTRAINT\s+\S+\s+)?EXCLUDE\b"), "ADD EXCLUDE"),
    (_rx(r"\bDROP\s+CONSTRAINT\b"), "DROP CONSTRAINT"),
    (_rx(r"\bSET\s+NOT\s+NULL\b"), "SET NOT NULL"),
    (_rx(r"\bALTER\s+(COLUMN\s+)?\S+\s+(SET\s+DATA\s+)?TYPE\b"), "ALTER COLUMN TYPE"),
    (_rx(r"\bRENAME\s+TO\b"), "RENAME TABLE"),
    (_rx(r"\bRENAME\b"), "RENAME COLUMN"),
    (_rx(r"\bADD\s+(COLUMN\s+)?\S+\s+.*(" + REWRITING_COLUMN.pattern + ")"),
     "ADD COLUMN (rewrite)"),
    (_rx(r"\bADD\b"), "ADD COLUMN"),
    (_rx(r"\bDROP\b"), "DROP COLUMN"),
    (_rx(r"^\s*ALTER\s+TABLE\b"), "ALTER COLUMN"),
]


def raw_kind(statement: str) -> str:
    """The LOCKS kind of one raw SQL statement."""
    return next((kind for pattern, kind in _RAW_KINDS if pattern.search(statement)),
                UNCLASSIFIED)


def describe(kind: str, what: str, empty: bool = False) -> str:
    """`CREATE INDEX CONCURRENTLY ix_a ON users (SHARE UPDATE EXCLUSIVE, no writes blocked)`."""
    lock, effect = LOCKS[kind]
    return f"{what} ({lock}, {_EMPTY if empty and _BRIEF not in effect else effect})"


def steps_by_revision(rendered: Sequence[RenderedRevision], facts: LiveFacts = NO_FACTS,
                      live: LiveConstraints = NO_CONSTRAINTS) -> dict[str, list[str]]:
    """Each revision's steps, described with their locks; `[autocommit]` marks a step that
    commits on its own (an autocommit block)."""
    found: dict[str, list[str]] = {r.revision: [] for r in rendered}
    ledger = Ledger(live)
    for step in walk(rendered, facts):
        ledger.begin(step)
        events = constraints.events(step.op)
        mark = " [autocommit]" if step.recorded.autocommit else ""
        found[step.revision] += [line + mark for line in _describe_step(step, ledger)]
        ledger.note(events)
    return found


def _describe_step(step: Step, ledger: Ledger) -> Iterator[str]:
    op = step.op
    if isinstance(op, alembic_ops.ExecuteSQLOp):
        for statement in statements(sql_text(op.sqltext)):
            kind = raw_kind(statement)
            table = table_of(statement)
            if kind == "SET NOT NULL":
                kind = _set_not_null_kind(ledger, constraints.statement_events(statement))
            empty = table is not None and step.seen.holds_no_rows(table)
            yield describe(kind, shorten(statement), empty)
        return
    typed = _typed_kind(op, ledger, step.seen.facts.virtual_generated_columns)
    if typed is None:
        return
    kind, what = typed
    table = getattr(op, "table_name", None) or getattr(op, "source_table", None)
    empty = isinstance(table, str) and step.seen.holds_no_rows(table, getattr(op, "schema", None))
    yield describe(kind, what, empty and kind != "CREATE TABLE")


def _set_not_null_kind(ledger: Ledger, events: list[constraints.Event]) -> str:
    columns = [e for e in events if isinstance(e, constraints.SetNotNull)]
    checked = bool(columns) and all(
        ledger.has_validated_not_null_check(e.table, e.column) for e in columns)
    return "SET NOT NULL (checked)" if checked else "SET NOT NULL"


def _typed_kind(op: alembic_ops.MigrateOperation, ledger: Ledger,
                virtual_generated: bool) -> tuple[str, str] | None:
    if isinstance(op, alembic_ops.CreateIndexOp):
        concurrently = " CONCURRENTLY" if op.kw.get("postgresql_concurrently") else ""
        unique = "UNIQUE " if op.unique else ""
        return (f"CREATE INDEX{concurrently}",
                f"CREATE {unique}INDEX{concurrently} {identifiers.final_name(op.index_name)} "
                f"ON {op.table_name}")
    if isinstance(op, alembic_ops.DropIndexOp):
        concurrently = " CONCURRENTLY" if op.kw.get("postgresql_concurrently") else ""
        return f"DROP INDEX{concurrently}", f"DROP INDEX{concurrently} {op.index_name}"
    if isinstance(op, alembic_ops.AlterColumnOp):
        return _alter_kind(op, ledger)
    if isinstance(op, alembic_ops.AddColumnOp):
        rewrites = rewrites_table(op.column, virtual_generated)
        return ("ADD COLUMN (rewrite)" if rewrites else "ADD COLUMN",
                f"ADD COLUMN {op.table_name}.{op.column.name}")
    return _constraint_kind(op) or _table_kind(op)


def _alter_kind(op: alembic_ops.AlterColumnOp, ledger: Ledger) -> tuple[str, str]:
    where = f"{op.table_name}.{op.column_name}"
    if op.modify_type is not None:
        return "ALTER COLUMN TYPE", f"ALTER COLUMN {where} TYPE"
    if op.modify_nullable is False:
        return (_set_not_null_kind(ledger, constraints.events(op)), f"SET NOT NULL {where}")
    if op.modify_name:
        return "RENAME COLUMN", f"RENAME COLUMN {where} TO {op.modify_name}"
    return "ALTER COLUMN", f"ALTER COLUMN {where}"


def _constraint_kind(op: alembic_ops.MigrateOperation) -> tuple[str, str] | None:
    name = identifiers.final_name(getattr(op, "constraint_name", None))
    on = f"{name} ON {getattr(op, 'table_name', None) or getattr(op, 'source_table', '')}"
    not_valid = bool(getattr(op, "kw", {}).get("postgresql_not_valid"))
    suffix = " NOT VALID" if not_valid else ""
    if isinstance(op, alembic_ops.CreateForeignKeyOp):
        return f"ADD FOREIGN KEY{suffix}", f"ADD FOREIGN KEY {on}{suffix}"
    if isinstance(op, alembic_ops.CreateCheckConstraintOp):
        return f"ADD CHECK{suffix}", f"ADD CHECK {on}{suffix}"
    if isinstance(op, alembic_ops.CreateUniqueConstraintOp):
        return "ADD UNIQUE", f"ADD UNIQUE {on}"
    if isinstance(op, alembic_ops.CreatePrimaryKeyOp):
        return "ADD PRIMARY KEY", f"ADD PRIMARY KEY {on}"
    if isinstance(op, CreateExcludeConstraintOp):
        return "ADD EXCLUDE", f"ADD EXCLUDE {on}"
    if isinstance(op, alembic_ops.DropConstraintOp):
        return "DROP CONSTRAINT", f"DROP CONSTRAINT {on}"
    return None


def _table_kind(op: alembic_ops.MigrateOperation) -> tuple[str, str] | None:
    if isinstance(op, alembic_ops.CreateTableOp):
        return "CREATE TABLE", f"CREATE TABLE {op.table_name}"
    if isinstance(op, alembic_ops.DropTableOp):
        return "DROP TABLE", f"DROP TABLE {op.table_name}"
    if isinstance(op, alembic_ops.RenameTableOp):
        return "RENAME TABLE", f"RENAME TABLE {op.table_name} TO {op.new_table_name}"
    if isinstance(op, alembic_ops.DropColumnOp):
        return "DROP COLUMN", f"DROP COLUMN {op.table_name}.{op.column_name}"
    if isinstance(op, alembic_ops.BulkInsertOp):
        return "INSERT/UPDATE/DELETE", f"INSERT INTO {getattr(op.table, 'name', op.table)}"
    return None


__all__ = ["LOCKS", "UNCLASSIFIED", "describe", "raw_kind", "steps_by_revision"]
