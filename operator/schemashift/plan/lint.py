"""Lint rules over the typed operations of a plan (and simple patterns in raw SQL).

Severities, exemptions and safe alternatives are declared in `rules`. Planned against a server,
lint knows what the database held (see `live`): rules about locks, rewrites and scans
(ROW_RULES) skip tables created earlier in the plan (by an op or a raw CREATE TABLE) and tables
that held no row; rules about lost data and broken readers (drops, renames) skip tables created
in the plan, and empty tables when the whole database held no row (a fresh database: no data to
lose, no deployed code of this history reading it). A type change is compared with the type the
server reports, so an unchanged type is no finding. A revision whose upgrade() cannot run
offline is reported as a `notice`, which never blocks, when the database held no row at all:
whatever it reads can only be rows earlier revisions of the same plan wrote, and its locks wait
for no one; on any other database it stays a blocking warning.

The lock-safe sequences (NOT VALID then VALIDATE in another transaction; SET NOT NULL after a
validated `CHECK (col IS NOT NULL)`; dropping that helper check) are judged step by step from
the `constraints` ledger, for typed operations and raw SQL alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic.ddl.postgresql import CreateExcludeConstraintOp
from alembic.operations import ops as alembic_ops
from sqlalchemy.dialects import postgresql

from schemashift import identifiers
from schemashift.column_types import VOLATILE_FUNCTIONS
from schemashift.column_types import binary_compatible as _binary_compatible
from schemashift.column_types import same_type as _same_type
from schemashift.column_types import type_sql as _type_sql
from schemashift.plan import constraints, lint_sql
from schemashift.plan.constraints import Ledger
from schemashift.plan.live import NO_FACTS, LiveFacts
from schemashift.plan.live_constraints import NO_CONSTRAINTS, LiveConstraints
from schemashift.plan.model import NOTICE, LintFinding
from schemashift.plan.render import RenderedRevision
from schemashift.plan.rules import (
    ERROR,
    INTEGRITY_CHECK_INCOMPLETE,
    READER_RULES,
    ROW_RULES,
    RULES,
    SAFE,
    UNRENDERABLE,
    WARNING,
)
from schemashift.plan.walk import Step, op_source_schema, walk


def lint(rendered: Sequence[RenderedRevision], facts: LiveFacts = NO_FACTS,
         live_constraints: LiveConstraints = NO_CONSTRAINTS) -> list[LintFinding]:
    findings = [_unrenderable(revision.revision, str(revision.error), facts.all_empty)
                for revision in rendered if revision.error is not None]
    ledger = Ledger(live_constraints)
    ledger.look_ahead(walk(rendered, facts))
    for step in walk(rendered, facts):
        ledger.begin(step)
        found = constraints.events(step.op)
        hits = list(_constraint_hits(step, ledger, found))
        checker = _CHECKERS.get(type(step.op))
        if checker is not None:
            hits += checker(step, ledger)
        hits += [("identifier-too-long", f"the name {name!r} is longer than 63 bytes and "
                  "PostgreSQL truncates it") for name in identifiers.op_too_long(step.op)]
        findings += [_finding(step.revision, rule, what + _why_not_empty(step, rule))
                     for rule, what in hits]
        ledger.note(found)
        ledger.note_index(step.op)
    return findings


def op_hits(step: Step, ledger: Ledger | None = None) -> list[tuple[str, str]]:
    """(rule, what) for one typed operation, as `lint` reports it (plan/destroys.py reads the
    data-losing ones)."""
    checker = _CHECKERS.get(type(step.op))
    if checker is None:
        return []
    return list(checker(step, ledger if ledger is not None else Ledger(NO_CONSTRAINTS)))


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


def _exempt(step: Step, rule: str, table: str) -> bool:
    if rule in READER_RULES:
        return _no_readers(step, table)
    return rule in ROW_RULES and _no_rows(step, table)


Hits = Iterator[tuple[str, str]]
_VALIDATED_RULE = {constraints.CHECK: "add-check-constraint",
                   constraints.FOREIGN_KEY: "add-foreign-key-validated"}


def _constraint_hits(step: Step, ledger: Ledger, events: list[constraints.Event]) -> Hits:
    for event in events:
        if isinstance(event, constraints.Validate):
            added = ledger.added_in_this_transaction(event)
            if added is not None and not _no_rows(step, event.table):
                yield (_VALIDATED_RULE.get(added.kind, "add-check-constraint"),
                       f"VALIDATE CONSTRAINT {event.name} runs in the transaction that added it "
                       f"NOT VALID, so the ADD's lock on {event.table} is held for the whole "
                       "scan")
        elif isinstance(event, constraints.SetNotNull):
            if not (event.already or _no_rows(step, event.table)
                    or step.seen.is_new_column(event.table, event.column)
                    or ledger.has_validated_not_null_check(event.table, event.column)):
                yield ("set-not-null",
                       f"SET NOT NULL on {event.table}.{event.column} scans the whole table "
                       "under an ACCESS EXCLUSIVE lock (no validated CHECK "
                       f"({event.column} IS NOT NULL) precedes it)")
        elif isinstance(event, constraints.Drop) and not (
                _no_readers(step, event.table) or ledger.drop_loses_nothing(event)):
            yield ("drop-constraint",
                   f"dropping the constraint {event.name} on {event.table} removes what it "
                   "guaranteed while running code may rely on it (ACCESS EXCLUSIVE lock, brief)")


def _add_column(step: Step, ledger: Ledger) -> Hits:
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
    elif lint_sql.rewrites_table(column, step.seen.facts.virtual_generated_columns):
        yield ("add-column-rewrites-table",
               f"adding the identity/serial/stored generated column {where} fills every "
               f"existing row: {op.table_name} is rewritten under an ACCESS EXCLUSIVE lock")
    elif (not column.nullable and default is None and column.computed is None
          and column.identity is None):
        yield ("add-not-null-column-without-default",
               f"adding {where} as NOT NULL without a server default fails as soon as "
               f"{op.table_name} has a row")
    for foreign_key in column.foreign_keys:
        yield ("add-foreign-key-validated",
               f"adding {where} with an inline foreign key to {foreign_key.target_fullname} "
               f"validates every row while blocking writes to {op.table_name}")


def _alter_column(step: Step, ledger: Ledger) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.AlterColumnOp)
    seen, where = step.seen, f"{op.table_name}.{op.column_name}"
    if op.modify_type is not None and not _no_rows(step, op.table_name, op.schema):
        old = seen.old_type(op.table_name, op.column_name, op.schema, op.existing_type)
        if not _same_type(old, op.modify_type) and not _binary_compatible(old, op.modify_type):
            shown = _type_sql(old) if old is not None else "?"
            yield ("change-column-type",
                   f"changing {where} from {shown} to {_type_sql(op.modify_type)} rewrites the "
                   "table and its indexes under an ACCESS EXCLUSIVE lock")
    if (op.modify_name and not seen.is_new_column(op.table_name, op.column_name, op.schema)
            and not _no_readers(step, op.table_name, op.schema)):
        yield ("rename-column",
               f"renaming {where} to {op.modify_name} breaks every running query that uses "
               "the old name")


def _create_index(step: Step, ledger: Ledger) -> Hits:
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


def _drop_index(step: Step, ledger: Ledger) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.DropIndexOp)
    concurrently = bool(op.kw.get("postgresql_concurrently"))
    if concurrently and not step.recorded.autocommit:
        yield ("concurrently-outside-autocommit-block",
               f"DROP INDEX CONCURRENTLY {op.index_name} outside an autocommit block fails: "
               "it cannot run inside a transaction")
    if concurrently or str(op.index_name).lower() in ledger.new_indexes:
        return
    if op.table_name is not None and _no_rows(step, op.table_name, op.schema):
        return
    on = f"the table {op.table_name}" if op.table_name else "its table"
    yield ("drop-index-not-concurrently",
           f"DROP INDEX {op.index_name} takes an ACCESS EXCLUSIVE lock on {on}, blocking its "
           "reads and writes (and queueing behind every running query on it)")


def _create_foreign_key(step: Step, ledger: Ledger) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.CreateForeignKeyOp)
    if _no_rows(step, op.source_table, op.kw.get("source_schema")):
        return
    if not op.kw.get("postgresql_not_valid"):
        yield ("add-foreign-key-validated",
               f"adding the foreign key {op.constraint_name} on {op.source_table} validates "
               f"every row while blocking writes to {op.source_table} and {op.referent_table}")


def _create_unique(step: Step, ledger: Ledger) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.CreateUniqueConstraintOp)
    if not _no_rows(step, op.table_name, op.schema):
        yield ("add-unique-constraint",
               f"adding the unique constraint {op.constraint_name} builds its index on "
               f"{op.table_name} under an ACCESS EXCLUSIVE lock")


def _create_primary_key(step: Step, ledger: Ledger) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.CreatePrimaryKeyOp)
    if not _no_rows(step, op.table_name, op.schema):
        yield ("add-primary-key",
               f"adding the primary key {op.constraint_name} to the existing table "
               f"{op.table_name} builds its unique index (and sets its columns NOT NULL, "
               "scanning) under an ACCESS EXCLUSIVE lock")


def _create_check(step: Step, ledger: Ledger) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.CreateCheckConstraintOp)
    if not _no_rows(step, op.table_name, op.schema) and not op.kw.get("postgresql_not_valid"):
        yield ("add-check-constraint",
               f"adding the check constraint {op.constraint_name} scans {op.table_name} under "
               "an ACCESS EXCLUSIVE lock")


def _create_exclude(step: Step, ledger: Ledger) -> Hits:
    op = step.op
    assert isinstance(op, CreateExcludeConstraintOp)
    if not _no_rows(step, op.table_name, op.schema):
        yield ("add-exclusion-constraint",
               f"adding the exclusion constraint {op.constraint_name} builds its index and "
               f"checks every row of {op.table_name} under an ACCESS EXCLUSIVE lock")


def _drop_table(step: Step, ledger: Ledger) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.DropTableOp)
    if not _no_readers(step, op.table_name, op.schema):
        yield ("drop-table", f"dropping {op.table_name} deletes all of its rows")


def _drop_column(step: Step, ledger: Ledger) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.DropColumnOp)
    if not (step.seen.is_new_column(op.table_name, op.column_name, op.schema)
            or _no_readers(step, op.table_name, op.schema)):
        yield ("drop-column",
               f"dropping {op.table_name}.{op.column_name} deletes its data, and running code "
               "that selects it fails")


def _rename_table(step: Step, ledger: Ledger) -> Hits:
    op = step.op
    assert isinstance(op, alembic_ops.RenameTableOp)
    if not _no_readers(step, op.table_name, op.schema):
        yield ("rename-table",
               f"renaming {op.table_name} to {op.new_table_name} breaks every running query "
               "that uses the old name")


def _execute_sql(step: Step, ledger: Ledger) -> Hits:
    return lint_sql.execute_sql(step, _exempt, ledger.new_indexes)


def _server_default_sql(default: Any) -> str | None:
    if not isinstance(default, sa.DefaultClause):  # None, Identity, Computed
        return None
    arg = default.arg
    if isinstance(arg, str):
        return repr(arg)
    if isinstance(arg, sa.TextClause):
        return arg.text
    return str(arg.compile(dialect=_DIALECT))


_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]

_CHECKERS: dict[type, Callable[[Step, Ledger], Hits]] = {
    alembic_ops.AddColumnOp: _add_column,
    alembic_ops.AlterColumnOp: _alter_column,
    alembic_ops.CreateIndexOp: _create_index,
    alembic_ops.DropIndexOp: _drop_index,
    alembic_ops.CreateForeignKeyOp: _create_foreign_key,
    alembic_ops.CreateUniqueConstraintOp: _create_unique,
    alembic_ops.CreatePrimaryKeyOp: _create_primary_key,
    alembic_ops.CreateCheckConstraintOp: _create_check,
    CreateExcludeConstraintOp: _create_exclude,
    alembic_ops.DropTableOp: _drop_table,
    alembic_ops.DropColumnOp: _drop_column,
    alembic_ops.RenameTableOp: _rename_table,
    alembic_ops.ExecuteSQLOp: _execute_sql,
}

__all__ = ["ERROR", "INTEGRITY_CHECK_INCOMPLETE", "RULES", "SAFE", "UNRENDERABLE", "WARNING",
           "lint", "op_hits"]
