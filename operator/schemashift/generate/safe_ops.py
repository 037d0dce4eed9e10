"""The lock-safe steps of a generated revision as Alembic operations, and how each is written.

Every step runs inside one `autocommit_block()`, so each statement is its own short transaction
(the migration session's `lock_timeout` bounds every lock it queues for) and nothing holds a lock
from one statement to the next. Each step first reads the catalog through the helpers written at
the top of the revision (`HELPERS`): a rerun after an interruption skips what is done, drops
the INVALID index a killed or failed concurrent build left behind, and redoes the rest. Offline
(`alembic upgrade --sql`, `schemashift plan`) there is nothing to read: every step is written.
"""

from __future__ import annotations

import hashlib
from typing import Any

from alembic.autogenerate import render, renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import conv

MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1
BACKFILL_BATCH_ROWS = 10_000

HELPERS_MARKER = "def _catalog("
HELPERS = '''
import contextlib
import sys
from collections.abc import Iterator

# Lock-safe steps (schemashift create-model-migration): each reads the catalog first, so a rerun
# after an interruption redoes only what is missing. Offline (alembic upgrade --sql, schemashift
# plan) nothing can be read: _catalog() is None and every step is written out.
_INDEX = "SELECT to_regclass(:index) IS NOT NULL"
_TYPE = "SELECT to_regtype(:type) IS NOT NULL"
_INVALID_INDEX = ("SELECT EXISTS (SELECT 1 FROM pg_index "
                  "WHERE indexrelid = to_regclass(:index) AND NOT indisvalid)")
_CONSTRAINT = ("SELECT EXISTS (SELECT 1 FROM pg_constraint "
               "WHERE conrelid = to_regclass(:table) AND conname = :name)")
_COLUMN = ("SELECT EXISTS (SELECT 1 FROM pg_attribute "
           "WHERE attrelid = to_regclass(:table) AND attname = :column AND NOT attisdropped)")
_NULLABLE = ("SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(:table) "
             "AND attname = :column AND NOT attisdropped AND NOT attnotnull)")


def _catalog(sql: str, **names: str) -> bool | None:
    if op.get_context().as_sql:
        return None
    return bool(op.get_bind().execute(sa.text(sql), names).scalar())


def _missing(sql: str, **names: str) -> bool:
    return _catalog(sql, **names) is not True


def _present(sql: str, **names: str) -> bool:
    return _catalog(sql, **names) is not False


_VIOLATED = {"23502", "23503", "23514"}  # not_null, foreign_key and check_violation


def _validate(table: str, constraint: str) -> None:
    """VALIDATE CONSTRAINT scans without blocking writes. Rows that violate the constraint: it
    was added NOT VALID by this revision, and is dropped again before the error is raised."""
    try:
        op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {constraint}")
    except Exception as exc:
        if getattr(getattr(exc, "orig", None), "sqlstate", None) not in _VIOLATED:
            raise
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {constraint}")
        raise RuntimeError(
            f"rows of {table} violate {constraint}, so VALIDATE CONSTRAINT failed; the "
            "constraint this revision added NOT VALID was dropped again. Fix those rows, "
            "then run the revision again") from exc


@contextlib.contextmanager
def _no_invalid_index(index: str) -> Iterator[None]:
    """A CREATE INDEX CONCURRENTLY that fails or is killed leaves an INVALID index behind: the
    one a killed run left is dropped before the build, the one a failed build left after it."""
    _drop_if_invalid(index)
    try:
        yield
    except Exception:
        with contextlib.suppress(Exception):  # the build's own error is the one to report
            _drop_if_invalid(index)
        raise


def _drop_if_invalid(index: str) -> None:
    if _catalog(_INVALID_INDEX, index=index):
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {index}")


def _backfill(batch: str, table: str, column: str) -> None:
    """Run the one-batch UPDATE until it changes no row; each batch commits on its own."""
    statement = sa.text(batch.replace(":", "\\\\:"))  # the SQL has no bind parameters
    if op.get_context().as_sql:
        op.execute(statement)
        return
    total = 0
    while True:
        changed, still_null = op.get_bind().execute(statement).one()
        if still_null:
            raise RuntimeError(f"backfilling {table}.{column}: the expression gave NULL for "
                               f"{still_null} row(s); fix --backfill and generate again")
        if not changed:
            return
        total += changed
        print(f"backfilled {total} row(s) of {table}.{column}", file=sys.stderr, flush=True)
'''


def quote(name: str) -> str:
    return str(_PREPARER.quote(name))


def qualified(schema: str | None, name: str) -> str:
    """`schema.name` as SQL (quoted where needed): what `to_regclass` and ALTER TABLE read."""
    return f"{quote(schema)}.{quote(name)}" if schema else quote(name)


def helper_name(*parts: str, suffix: str) -> str:
    """A name of at most 63 bytes, derived from `parts` alone (the output is deterministic)."""
    name = "_".join((*parts, suffix))
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    keep = MAX_IDENTIFIER_BYTES - len(suffix) - len(digest) - 2
    return f"{name.encode()[:keep].decode(errors='ignore')}_{digest}_{suffix}"


class Guarded(ops.OpContainer):
    """`if <predicate>:` around operations: the catalog says the step is still to do."""

    keyword = "if"

    def __init__(self, predicate: str, inner: list[ops.MigrateOperation]) -> None:
        super().__init__(inner)
        self.predicate = predicate


class Within(Guarded):
    """`with <context>:` around operations."""

    keyword = "with"


class Statement(ops.MigrateOperation):
    """One line of Python in the revision (a VALIDATE, a backfill call)."""

    def __init__(self, code: str) -> None:
        self.code = code


class AutocommitSteps(ops.OpContainer):
    """The lock-safe steps, each statement committed on its own."""


class WrittenCheck(ops.CreateCheckConstraintOp):
    """`op.create_check_constraint(…)` written by us: Alembic before 1.14 has no renderer for a
    check constraint (it raises NotImplementedError)."""

    def __init__(self, name: Any, table_name: str, condition: Any, schema: str | None,
                 **kw: Any) -> None:
        super().__init__(name, table_name, _sql_text(condition), schema=schema, **kw)


class NotValidCheck(WrittenCheck):
    """`ADD CONSTRAINT … CHECK (…) NOT VALID`."""

    def __init__(self, name: Any, table_name: str, condition: Any, schema: str | None) -> None:
        super().__init__(name, table_name, condition, schema, postgresql_not_valid=True)


def catalog_call(query: str, helper: str = "_missing", **names: str) -> str:
    arguments = ", ".join(f"{key}={value!r}" for key, value in names.items())
    return f"{helper}({query}, {arguments})"


def execute(sql: str) -> Statement:
    return Statement(f"op.execute({sql!r})")


def validate(table: str, constraint: str) -> Statement:
    return Statement(f"_validate({table!r}, {quote(constraint)!r})")


@renderers.dispatch_for(Guarded)
def _render_guarded(autogen_context: AutogenContext, op: Guarded) -> list[str]:
    # The blank line ends the block: Alembic's printer (mako's PythonPrinter) dedents on it.
    return [f"{op.keyword} {op.predicate}:", *_lines(autogen_context, op.ops), ""]


@renderers.dispatch_for(Within)
def _render_within(autogen_context: AutogenContext, op: Within) -> list[str]:
    return _render_guarded(autogen_context, op)


@renderers.dispatch_for(Statement)
def _render_statement(autogen_context: AutogenContext, op: Statement) -> str:
    return op.code


class NotValidForeignKey(ops.CreateForeignKeyOp):
    """`ADD CONSTRAINT … FOREIGN KEY … NOT VALID`: Alembic before 1.14 renders a foreign key
    without its dialect options, which would validate it under the table's lock."""

    def __init__(self, op: ops.CreateForeignKeyOp) -> None:
        super().__init__(op.constraint_name, op.source_table, op.referent_table, op.local_cols,
                         op.remote_cols, **{**op.kw, "postgresql_not_valid": True})


@renderers.dispatch_for(NotValidForeignKey)
def _render_not_valid_foreign_key(autogen_context: AutogenContext,
                                  op: NotValidForeignKey) -> str:
    written = str(renderers.dispatch(ops.CreateForeignKeyOp)(autogen_context, op))
    if _NOT_VALID in written:
        return written
    return f"{written.removesuffix(')')}, {_NOT_VALID})"


_NOT_VALID = "postgresql_not_valid=True"


@renderers.dispatch_for(WrittenCheck)
def _render_written_check(autogen_context: AutogenContext, op: WrittenCheck) -> str:
    name = op.constraint_name
    written = f"op.f({str(name)!r})" if isinstance(name, conv) else repr(str(name))
    schema = f", schema={op.schema!r}" if op.schema else ""
    not_valid = f", {_NOT_VALID}" if op.kw.get("postgresql_not_valid") else ""
    return (f"op.create_check_constraint({written}, {op.table_name!r}, {op.condition!r}"
            f"{schema}{not_valid})")


def _sql_text(condition: Any) -> str:
    if isinstance(condition, str):
        return condition
    return str(condition.compile(dialect=postgresql.dialect(),  # type: ignore[no-untyped-call]
                                 compile_kwargs={"literal_binds": True}))


@renderers.dispatch_for(AutocommitSteps)
def _render_autocommit(autogen_context: AutogenContext, op: AutocommitSteps) -> list[str]:
    return ["with op.get_context().autocommit_block():", *_lines(autogen_context, op.ops), ""]


def _lines(autogen_context: AutogenContext, inner: list[Any]) -> list[str]:
    return [line for op in inner for line in render.render_op(autogen_context, op)]


_PREPARER = postgresql.dialect().identifier_preparer  # type: ignore[no-untyped-call]
