"""Lint rules over raw SQL (`op.execute(...)`): patterns per statement, with the same exemptions
as the typed operations (tables without rows, tables the plan created). The constraint
sequences (NOT VALID → VALIDATE, SET NOT NULL, DROP CONSTRAINT) are judged in `lint` from the
events `constraints` reads out of the same statements."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from alembic.operations import ops as alembic_ops

from schemashift.column_types import REWRITING_COLUMN, rewrites_table
from schemashift.identifiers import raw_too_long
from schemashift.plan.constraints import identifier
from schemashift.plan.render import sql_text
from schemashift.plan.rules import READER_RULES, ROW_RULES
from schemashift.plan.walk import Step, statements, table_of

Hits = Iterator[tuple[str, str]]


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE | re.DOTALL)


CONCURRENTLY = _rx(r"^\s*(CREATE\s+(UNIQUE\s+)?INDEX|DROP\s+INDEX|REINDEX\s+\w+)\s+CONCURRENTLY\b")
_NOT_VALID = _rx(r"\bNOT\s+VALID\b")
_USING_INDEX = _rx(r"\bUSING\s+INDEX\b")
_DROP_INDEX_NAME = _rx(r"^\s*DROP\s+INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+EXISTS\s+)?"
                       r"(?:[\w$]+\.)?(\"(?:[^\"]|\"\")+\"|[\w$]+)")

RAW_SQL_RULES: list[tuple[str, re.Pattern[str], re.Pattern[str] | None]] = [
    ("create-index-not-concurrently",
     _rx(r"^\s*CREATE\s+(UNIQUE\s+)?INDEX\s+(?!CONCURRENTLY\b)"), None),
    ("drop-index-not-concurrently", _rx(r"^\s*DROP\s+INDEX\s+(?!CONCURRENTLY\b)"), None),
    ("add-foreign-key-validated",
     _rx(r"\bADD\s+(CONSTRAINT\s+\S+\s+)?FOREIGN\s+KEY\b"), _NOT_VALID),
    ("add-unique-constraint", _rx(r"\bADD\s+(CONSTRAINT\s+\S+\s+)?UNIQUE\b"), _USING_INDEX),
    ("add-primary-key", _rx(r"\bADD\s+(CONSTRAINT\s+\S+\s+)?PRIMARY\s+KEY\b"), _USING_INDEX),
    ("add-check-constraint", _rx(r"\bADD\s+(CONSTRAINT\s+\S+\s+)?CHECK\b"), _NOT_VALID),
    ("add-exclusion-constraint", _rx(r"\bADD\s+(CONSTRAINT\s+\S+\s+)?EXCLUDE\b"), None),
    ("drop-table", _rx(r"^\s*DROP\s+TABLE\b"), None),
    ("drop-column", _rx(r"\bDROP\s+(COLUMN\s+)?(?!CONSTRAINT\b|DEFAULT\b|NOT\b|EXPRESSION\b"
                        r"|IDENTITY\b)\S+"), _rx(r"^\s*(?!ALTER\s+TABLE)")),
    ("rename-table", _rx(r"^\s*ALTER\s+TABLE\s+.*\bRENAME\s+TO\b"), None),
    ("rename-column",
     _rx(r"\bRENAME\s+(COLUMN\s+)?(?!TO\b|CONSTRAINT\b)\S+\s+TO\b"), None),
    ("change-column-type", _rx(r"\bALTER\s+(COLUMN\s+)?\S+\s+(SET\s+DATA\s+)?TYPE\b"), None),
    ("add-column-volatile-default",
     _rx(r"\bADD\s+(COLUMN\s+)?.*\bDEFAULT\s+.*\b(random|clock_timestamp|gen_random_uuid"
         r"|uuid_generate_v\w+|uuidv[47]|nextval|timeofday)\s*\("), None),
    ("add-column-rewrites-table",
     _rx(r"\bADD\s+(COLUMN\s+)?(?!CONSTRAINT\b|GENERATED\b)\S+\s+.*("
         + REWRITING_COLUMN.pattern + ")"), None),
]
RAW_SQL_WHAT = {
    "create-index-not-concurrently": "builds an index while blocking writes to the table",
    "drop-index-not-concurrently": (
        "takes an ACCESS EXCLUSIVE lock on the index's table, blocking its reads and writes "
        "(and queueing behind every running query on it)"),
    "add-foreign-key-validated": "validates every row while blocking writes to both tables",
    "add-unique-constraint": "builds a unique index under an ACCESS EXCLUSIVE lock",
    "add-primary-key": (
        "builds a unique index (and sets its columns NOT NULL, scanning) under an ACCESS "
        "EXCLUSIVE lock"),
    "add-check-constraint": "scans the table under an ACCESS EXCLUSIVE lock",
    "add-exclusion-constraint": "builds its index and checks every row under an ACCESS "
                                "EXCLUSIVE lock",
    "drop-table": "deletes all rows of the table",
    "drop-column": "deletes the column's data and breaks code that selects it",
    "rename-table": "breaks running queries that use the old name",
    "rename-column": "breaks running queries that use the old name",
    "change-column-type": "rewrites the table under an ACCESS EXCLUSIVE lock",
    "add-column-volatile-default": "rewrites the table under an ACCESS EXCLUSIVE lock",
    "add-column-rewrites-table": (
        "fills every existing row (identity, serial or stored generated column): the whole "
        "table is rewritten under an ACCESS EXCLUSIVE lock"),
}

# Whether a rule does not apply to this table at this step (see `lint`): (step, rule, table).
Exempt = Callable[[Step, str, str], bool]


def execute_sql(step: Step, exempt: Exempt, new_indexes: set[str]) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.ExecuteSQLOp)
    for statement in statements(sql_text(op.sqltext)):
        yield from _statement(step, statement, exempt, new_indexes)


def _statement(step: Step, statement: str, exempt: Exempt, new_indexes: set[str]) -> Hits:
    table = table_of(statement)
    shown = f"raw SQL `{shorten(statement)}`"
    for rule, pattern, unless in RAW_SQL_RULES:
        if not pattern.search(statement) or (unless and unless.search(statement)):
            continue
        if table is None and rule == "create-index-not-concurrently":
            continue
        if rule == "drop-index-not-concurrently" and dropped_index(statement) in new_indexes:
            continue
        if table is not None and rule in ROW_RULES | READER_RULES and exempt(step, rule, table):
            continue
        yield rule, f"{shown}: {RAW_SQL_WHAT[rule]}"
    if CONCURRENTLY.search(statement) and not step.recorded.autocommit:
        yield "concurrently-outside-autocommit-block", f"{shown} cannot run inside a transaction"
    for name in raw_too_long(statement):
        yield "identifier-too-long", f"{shown}: the name {shorten(name, 40)!r} is longer than " \
                                     "63 bytes and PostgreSQL truncates it"


def dropped_index(statement: str) -> str | None:
    match = _DROP_INDEX_NAME.search(statement)
    return identifier(match.group(1)) if match else None


def shorten(statement: str, limit: int = 80) -> str:
    flat = " ".join(statement.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


__all__ = ["CONCURRENTLY", "RAW_SQL_RULES", "RAW_SQL_WHAT", "REWRITING_COLUMN", "dropped_index",
           "execute_sql", "rewrites_table", "shorten"]
