"""Lint rules over the typed operations of a plan (and simple patterns in raw SQL).

Severity: `error` when the operation loses data, rewrites the table under an ACCESS EXCLUSIVE
lock, or fails outright on a table with rows; `warning` when it takes a long-held lock that an
alternative avoids, or breaks the running application.

Planned against a server, lint knows what the database held (see `live`): rules about locks,
rewrites and scans (ROW_RULES) skip tables created earlier in the plan (by an op or a raw CREATE
TABLE) and tables that held no row; rules about lost data and broken readers (drops, renames)
skip tables created in the plan, and empty tables when the whole database held no row (a fresh
database: no data to lose, no deployed code of this history reading it). A type change is
compared with the type the server reports, so an unchanged type is no finding. A revision whose
upgrade() cannot run offline is reported as a `notice`, which never blocks, when the database
held no row at all: whatever it reads can only be rows earlier revisions of the same plan wrote,
and its locks wait for no one; on any other database it stays a blocking warning.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic.operations import ops as alembic_ops
from sqlalchemy.dialects import postgresql

from schemashift.plan.live import NO_FACTS, LiveFacts
from schemashift.plan.model import NOTICE, LintFinding
from schemashift.plan.render import RenderedRevision, sql_text
from schemashift.plan.walk import Step, op_source_schema, statements, table_of, walk

ERROR = "error"
WARNING = "warning"

RULES: dict[str, str] = {
    "add-not-null-column-without-default": ERROR,
    "add-column-volatile-default": ERROR,
    "change-column-type": ERROR,
    "drop-table": ERROR,
    "drop-column": ERROR,
    "concurrently-outside-autocommit-block": ERROR,
    "create-index-not-concurrently": WARNING,
    "add-foreign-key-validated": WARNING,
    "add-unique-constraint": WARNING,
    "add-check-constraint": WARNING,
    "set-not-null": WARNING,
    "rename-table": WARNING,
    "rename-column": WARNING,
    "unrenderable-revision": WARNING,
    "integrity-check-incomplete": WARNING,
}
INTEGRITY_CHECK_INCOMPLETE = "integrity-check-incomplete"
UNRENDERABLE = "unrenderable-revision"
# Harmless on a table without rows: the lock is brief, the rewrite or scan instant.
ROW_RULES = frozenset({
    "add-not-null-column-without-default", "add-column-volatile-default", "change-column-type",
    "create-index-not-concurrently", "add-foreign-key-validated", "add-unique-constraint",
    "add-check-constraint", "set-not-null",
})
# Lose data or break running readers: harmless only where nothing holds data or reads it yet.
READER_RULES = frozenset({"drop-table", "drop-column", "rename-table", "rename-column"})

SAFE = {
    "add-not-null-column-without-default": (
        "add it nullable (or with a constant server_default, which PostgreSQL 11+ stores "
        "without a rewrite), backfill in batches, then set NOT NULL (see set-not-null)"),
    "add-column-volatile-default": (
        "add the column without a default (or with a constant one), set the default for new "
        "rows with ALTER COLUMN SET DEFAULT, and backfill existing rows in batches"),
    "change-column-type": (
        "add a new column of the new type, write both, backfill in batches, switch readers, "
        "then drop the old column (growing a varchar or varchar→text needs no rewrite)"),
    "drop-table": (
        "first deploy code that no longer uses it, take a backup, and drop it in a later "
        "release (or rename it aside and drop after a grace period)"),
    "drop-column": (
        "first deploy code that no longer reads or writes it (SQLAlchemy: remove it from the "
        "model, or mark it deferred), then drop it in a later release"),
    "concurrently-outside-autocommit-block": (
        "wrap it in `with op.get_context().autocommit_block():` — CONCURRENTLY cannot run "
        "inside a transaction"),
    "create-index-not-concurrently": (
        "use op.create_index(..., postgresql_concurrently=True) inside "
        "`with op.get_context().autocommit_block():`"),
    "add-foreign-key-validated": (
        "add it with postgresql_not_valid=True (NOT VALID), then in a later step run "
        "ALTER TABLE … VALIDATE CONSTRAINT, which does not block writes"),
    "add-unique-constraint": (
        "CREATE UNIQUE INDEX CONCURRENTLY (in an autocommit block), then ALTER TABLE … ADD "
        "CONSTRAINT … UNIQUE USING INDEX"),
    "add-check-constraint": (
        "add it with postgresql_not_valid=True (NOT VALID), then ALTER TABLE … VALIDATE "
        "CONSTRAINT in a later step"),
    "set-not-null": (
        "add CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT, then SET NOT NULL "
        "(PostgreSQL 12+ uses the valid check and skips the scan), then drop the check"),
    "rename-table": (
        "create the new name, keep the old one working (e.g. a view with the old name) until "
        "all running code uses the new name, then drop the old one"),
    "rename-column": (
        "add the new column, write both and backfill, switch readers, then drop the old "
        "column; or deploy code that tolerates both names first"),
    "unrenderable-revision": (
        "review this revision's SQL by hand (it reads rows or needs a live connection); allow "
        "this rule once reviewed"),
    "integrity-check-incomplete": "check the data by hand, then allow this rule",
}

VOLATILE_FUNCTIONS = re.compile(
    r"\b(random|clock_timestamp|timeofday|gen_random_uuid|uuid_generate_v1|uuid_generate_v1mc"
    r"|uuid_generate_v4|uuidv4|uuidv7|nextval|txid_current|pg_current_xact_id)\s*\(",
    re.IGNORECASE,
)


def lint(rendered: Sequence[RenderedRevision], facts: LiveFacts = NO_FACTS) -> list[LintFinding]:
    findings = [_unrenderable(revision.revision, str(revision.error), facts.all_empty)
                for revision in rendered if revision.error is not None]
    for step in walk(rendered, facts):
        checker = _CHECKERS.get(type(step.op))
        if checker is not None:
            findings += [_finding(step.revision, rule, what + _why_not_empty(step, rule))
                         for rule, what in checker(step)]
    return findings


def _why_not_empty(step: Step, rule: str) -> str:
    table = getattr(step.op, "table_name", None) or getattr(step.op, "source_table", None)
    if rule not in ROW_RULES or not isinstance(table, str):
        return ""
    schema = getattr(step.op, "schema", None) or op_source_schema(step.op)
    return step.seen.why_not_empty(table, schema)


def _unrenderable(revision: str, error: str, fresh: bool) -> LintFinding:
    what = f"upgrade() could not run offline ({error}): its SQL preview and lint stop there"
    if not fresh:
        return _finding(revision, UNRENDERABLE, what)
    return LintFinding(UNRENDERABLE, NOTICE, revision, (
        f"{what}; not blocking: no table of the database held a row when planned, so it can "
        "only see rows earlier revisions of this plan wrote, and its locks wait for no one"))


def _finding(revision: str, rule: str, what: str) -> LintFinding:
    return LintFinding(rule, RULES[rule], revision, f"{what}; safe alternative: {SAFE[rule]}")


def _no_rows(step: Step, table: str, schema: str | None = None) -> bool:
    """ROW_RULES do not apply: the table holds no row at this step."""
    return step.seen.holds_no_rows(table, schema)


def _no_readers(step: Step, table: str, schema: str | None = None) -> bool:
    """READER_RULES do not apply: created by the plan, or empty on a fresh database."""
    seen = step.seen
    return seen.is_new_table(table, schema) or (seen.fresh and seen.holds_no_rows(table, schema))


Hits = Iterator[tuple[str, str]]


def _add_column(step: Step) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.AddColumnOp)
    if _no_rows(step, op.table_name, op.schema):
        return
    column, where = op.column, f"{op.table_name}.{op.column.name}"
    default = _server_default_sql(column.server_default)
    if default is not None and VOLATILE_FUNCTIONS.search(default):
        yield ("add-column-volatile-default",
               f"adding {where} with the volatile default {default} rewrites the whole table "
               "under an ACCESS EXCLUSIVE lock")
    elif column.identity is not None or (column.computed is not None
                                         and column.computed.persisted is not False):
        yield ("add-column-volatile-default",
               f"adding the identity/generated column {where} rewrites the whole table under an "
               "ACCESS EXCLUSIVE lock")
    elif (not column.nullable and default is None and column.computed is None
          and column.identity is None):
        yield ("add-not-null-column-without-default",
               f"adding {where} as NOT NULL without a server default fails as soon as "
               f"{op.table_name} has a row")
    for foreign_key in column.foreign_keys:
        yield ("add-foreign-key-validated",
               f"adding {where} with an inline foreign key to {foreign_key.target_fullname} "
               f"validates every row while blocking writes to {op.table_name}")


def _alter_column(step: Step) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.AlterColumnOp)
    seen, where = step.seen, f"{op.table_name}.{op.column_name}"
    empty = _no_rows(step, op.table_name, op.schema)
    if op.modify_type is not None and not empty:
        old = seen.old_type(op.table_name, op.column_name, op.schema, op.existing_type)
        if not _same_type(old, op.modify_type) and not _binary_compatible(old, op.modify_type):
            shown = _type_sql(old) if old is not None else "?"
            yield ("change-column-type",
                   f"changing {where} from {shown} to {_type_sql(op.modify_type)} rewrites the "
                   "table and its indexes under an ACCESS EXCLUSIVE lock")
    if (op.modify_nullable is False and op.existing_nullable is not False and not empty
            and not seen.is_new_column(op.table_name, op.column_name, op.schema)):
        yield ("set-not-null",
               f"SET NOT NULL on {where} scans the whole table under an ACCESS EXCLUSIVE lock")
    if (op.modify_name and not seen.is_new_column(op.table_name, op.column_name, op.schema)
            and not _no_readers(step, op.table_name, op.schema)):
        yield ("rename-column",
               f"renaming {where} to {op.modify_name} breaks every running query that uses "
               "the old name")


def _create_index(step: Step) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.CreateIndexOp)
    concurrently = bool(op.kw.get("postgresql_concurrently"))
    if concurrently and not step.recorded.autocommit:
        yield ("concurrently-outside-autocommit-block",
               f"CREATE INDEX CONCURRENTLY {op.index_name} outside an autocommit block fails: "
               "it cannot run inside a transaction")
    if not concurrently and not _no_rows(step, op.table_name, op.schema):
        kind = "UNIQUE INDEX" if op.unique else "INDEX"
        yield ("create-index-not-concurrently",
               f"CREATE {kind} {op.index_name} on the existing table {op.table_name} blocks all "
               "writes to it while the index builds")


def _create_foreign_key(step: Step) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.CreateForeignKeyOp)
    if _no_rows(step, op.source_table, op.kw.get("source_schema")):
        return
    if not op.kw.get("postgresql_not_valid"):
        yield ("add-foreign-key-validated",
               f"adding the foreign key {op.constraint_name} on {op.source_table} validates "
               f"every row while blocking writes to {op.source_table} and {op.referent_table}")


def _create_unique(step: Step) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.CreateUniqueConstraintOp)
    if not _no_rows(step, op.table_name, op.schema):
        yield ("add-unique-constraint",
               f"adding the unique constraint {op.constraint_name} builds its index on "
               f"{op.table_name} under an ACCESS EXCLUSIVE lock")


def _create_check(step: Step) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.CreateCheckConstraintOp)
    if not _no_rows(step, op.table_name, op.schema) and not op.kw.get("postgresql_not_valid"):
        yield ("add-check-constraint",
               f"adding the check constraint {op.constraint_name} scans {op.table_name} under "
               "an ACCESS EXCLUSIVE lock")


def _drop_table(step: Step) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.DropTableOp)
    if not _no_readers(step, op.table_name, op.schema):
        yield ("drop-table", f"dropping {op.table_name} deletes all of its rows")


def _drop_column(step: Step) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.DropColumnOp)
    if not (step.seen.is_new_column(op.table_name, op.column_name, op.schema)
            or _no_readers(step, op.table_name, op.schema)):
        yield ("drop-column",
               f"dropping {op.table_name}.{op.column_name} deletes its data, and running code "
               "that selects it fails")


def _rename_table(step: Step) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.RenameTableOp)
    if not _no_readers(step, op.table_name, op.schema):
        yield ("rename-table",
               f"renaming {op.table_name} to {op.new_table_name} breaks every running query "
               "that uses the old name")


def _execute_sql(step: Step) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.ExecuteSQLOp)
    for statement in statements(sql_text(op.sqltext)):
        table = table_of(statement)
        for rule, pattern, unless in RAW_SQL_RULES:
            if not pattern.search(statement) or (unless and unless.search(statement)):
                continue
            if table is None and rule == "create-index-not-concurrently":
                continue
            if table is not None and _raw_exempt(step, rule, table):
                continue
            yield rule, f"raw SQL `{_shorten(statement)}`: {RAW_SQL_WHAT[rule]}"
        if _CONCURRENT_INDEX.search(statement) and not step.recorded.autocommit:
            yield ("concurrently-outside-autocommit-block",
                   f"raw SQL `{_shorten(statement)}` cannot run inside a transaction")


def _raw_exempt(step: Step, rule: str, table: str) -> bool:
    if rule in READER_RULES:
        return _no_readers(step, table)
    return rule in ROW_RULES and _no_rows(step, table)


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE | re.DOTALL)


_CONCURRENT_INDEX = _rx(r"^\s*CREATE\s+(UNIQUE\s+)?INDEX\s+CONCURRENTLY\b")
_NOT_VALID = _rx(r"\bNOT\s+VALID\b")
RAW_SQL_RULES: list[tuple[str, re.Pattern[str], re.Pattern[str] | None]] = [
    ("create-index-not-concurrently",
     _rx(r"^\s*CREATE\s+(UNIQUE\s+)?INDEX\s+(?!CONCURRENTLY\b)"), None),
    ("add-foreign-key-validated",
     _rx(r"\bADD\s+(CONSTRAINT\s+\S+\s+)?FOREIGN\s+KEY\b"), _NOT_VALID),
    ("add-unique-constraint",
     _rx(r"\bADD\s+(CONSTRAINT\s+\S+\s+)?UNIQUE\b"), _rx(r"\bUSING\s+INDEX\b")),
    ("add-check-constraint", _rx(r"\bADD\s+(CONSTRAINT\s+\S+\s+)?CHECK\b"), _NOT_VALID),
    ("drop-table", _rx(r"^\s*DROP\s+TABLE\b"), None),
    ("drop-column", _rx(r"\bDROP\s+(COLUMN\s+)?(?!CONSTRAINT\b|DEFAULT\b|NOT\b|EXPRESSION\b"
                        r"|IDENTITY\b)\S+"), _rx(r"^\s*(?!ALTER\s+TABLE)")),
    ("rename-table", _rx(r"^\s*ALTER\s+TABLE\s+.*\bRENAME\s+TO\b"), None),
    ("rename-column",
     _rx(r"\bRENAME\s+(COLUMN\s+)?(?!TO\b|CONSTRAINT\b)\S+\s+TO\b"), None),
    ("change-column-type", _rx(r"\bALTER\s+(COLUMN\s+)?\S+\s+(SET\s+DATA\s+)?TYPE\b"), None),
    ("set-not-null", _rx(r"\bSET\s+NOT\s+NULL\b"), None),
    ("add-column-volatile-default",
     _rx(r"\bADD\s+(COLUMN\s+)?.*\bDEFAULT\s+.*\b(random|clock_timestamp|gen_random_uuid"
         r"|uuid_generate_v\w+|uuidv[47]|nextval|timeofday)\s*\("), None),
]
RAW_SQL_WHAT = {
    "create-index-not-concurrently": "builds an index while blocking writes to the table",
    "add-foreign-key-validated": "validates every row while blocking writes to both tables",
    "add-unique-constraint": "builds a unique index under an ACCESS EXCLUSIVE lock",
    "add-check-constraint": "scans the table under an ACCESS EXCLUSIVE lock",
    "drop-table": "deletes all rows of the table",
    "drop-column": "deletes the column's data and breaks code that selects it",
    "rename-table": "breaks running queries that use the old name",
    "rename-column": "breaks running queries that use the old name",
    "change-column-type": "rewrites the table under an ACCESS EXCLUSIVE lock",
    "set-not-null": "scans the table under an ACCESS EXCLUSIVE lock",
    "add-column-volatile-default": "rewrites the table under an ACCESS EXCLUSIVE lock",
}
def _shorten(statement: str, limit: int = 80) -> str:
    flat = " ".join(statement.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _server_default_sql(default: Any) -> str | None:
    if not isinstance(default, sa.DefaultClause):  # None, Identity, Computed
        return None
    arg = default.arg
    if isinstance(arg, str):
        return repr(arg)
    if isinstance(arg, sa.TextClause):
        return arg.text
    return str(arg.compile(dialect=_DIALECT))


def _type_sql(type_: Any) -> str:
    type_ = type_() if isinstance(type_, type) else type_
    return str(type_.compile(dialect=_DIALECT))


def _same_type(old: Any, new: Any) -> bool:
    """Both compile to the same PostgreSQL type (VARCHAR(9) → VARCHAR(9) changes nothing)."""
    return old is not None and _type_sql(old) == _type_sql(new)


def _binary_compatible(old: Any, new: Any) -> bool:
    """varchar(n) → varchar(m ≥ n) / text: PostgreSQL changes only the catalog, no rewrite."""
    old = old() if isinstance(old, type) else old
    new = new() if isinstance(new, type) else new
    if not (isinstance(old, sa.String) and isinstance(new, sa.String)):
        return False
    if isinstance(old, sa.Enum) or isinstance(new, sa.Enum):
        return False
    return new.length is None or (old.length is not None and new.length >= old.length)


_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]

_CHECKERS: dict[type, Callable[[Step], Hits]] = {
    alembic_ops.AddColumnOp: _add_column,
    alembic_ops.AlterColumnOp: _alter_column,
    alembic_ops.CreateIndexOp: _create_index,
    alembic_ops.CreateForeignKeyOp: _create_foreign_key,
    alembic_ops.CreateUniqueConstraintOp: _create_unique,
    alembic_ops.CreateCheckConstraintOp: _create_check,
    alembic_ops.DropTableOp: _drop_table,
    alembic_ops.DropColumnOp: _drop_column,
    alembic_ops.RenameTableOp: _rename_table,
    alembic_ops.ExecuteSQLOp: _execute_sql,
}
