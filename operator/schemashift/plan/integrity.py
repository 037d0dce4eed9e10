"""Integrity pre-checks: would the live data make a NOT NULL, unique or foreign key change fail?

Read-only queries built with SQLAlchemy Core (identifiers quoted by the dialect), each in its own
savepoint with `statement_timeout` and `lock_timeout`, all rolled back afterwards: a check never
hangs, never writes, and leaves the caller's session settings as they were. A check runs only on
tables and columns that exist before the plan, and is skipped when earlier SQL in the same plan
may have changed those rows (a backfill before SET NOT NULL is the usual safe pattern).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic.operations import ops as alembic_ops
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from schemashift import db
from schemashift.plan import lint
from schemashift.plan.live import read_only
from schemashift.plan.model import IntegrityFinding, LintFinding
from schemashift.plan.render import RenderedRevision
from schemashift.plan.walk import Step, walk

DEFAULT_TIMEOUT = "60s"
INCOMPLETE = lint.INTEGRITY_CHECK_INCOMPLETE


@dataclass
class Query:
    """One check to run: the SELECT returns the number of offending rows."""

    check: str
    revision: str
    table: str
    schema: str | None
    columns: list[str]
    needs: list[tuple[str | None, str, list[str]]]  # (schema, table, columns) that must exist
    select: sa.Select[Any]
    what: str  # "hold NULL in" etc., completed into the message


@dataclass
class Outcome:
    findings: list[IntegrityFinding]
    incomplete: list[LintFinding]


def run_checks(
    conn: Connection, rendered: Sequence[RenderedRevision], timeout: str = DEFAULT_TIMEOUT
) -> Outcome:
    queries = [q for step in walk(rendered) for q in _queries(step)]
    outcome = Outcome([], [])
    if not queries:
        return outcome
    with read_only(conn, timeout):
        for query in queries:
            _run(conn, query, outcome)
    return outcome


def _run(conn: Connection, query: Query, outcome: Outcome) -> None:
    savepoint = conn.begin_nested()
    try:
        if not all(_exists(conn, *need) for need in query.needs):
            return
        count = int(conn.execute(query.select).scalar_one() or 0)
    except DBAPIError as exc:
        outcome.incomplete.append(LintFinding(
            INCOMPLETE, lint.WARNING, query.revision,
            f"the {query.check} check on {_name(query)} could not run "
            f"({db.describe_db_error(exc)}); safe alternative: {lint.SAFE[INCOMPLETE]}",
        ))
        return
    finally:
        savepoint.rollback()
    if count:
        outcome.findings.append(IntegrityFinding(
            query.check, query.revision, _qualified(query.table, query.schema),
            query.columns, count, f"{count} row(s) {query.what}",
        ))


def _exists(conn: Connection, schema: str | None, table: str, columns: list[str]) -> bool:
    preparer = conn.dialect.identifier_preparer
    name = preparer.quote(table) if schema is None else preparer.quote_schema(schema) + "." + (
        preparer.quote(table))
    found = conn.execute(
        sa.text(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(:name) "
            "AND attnum > 0 AND NOT attisdropped"
        ),
        {"name": name},
    ).scalars()
    existing = set(found)
    if not existing:
        return False
    return all(column in existing for column in columns)


def _queries(step: Step) -> Iterator[Query]:
    op = step.op
    if isinstance(op, alembic_ops.AlterColumnOp):
        yield from _not_null_on_existing(step, op)
    elif isinstance(op, alembic_ops.AddColumnOp):
        yield from _not_null_added(step, op)
    elif isinstance(op, alembic_ops.CreateUniqueConstraintOp):
        name = str(op.constraint_name) if op.constraint_name else None
        yield from _unique(step, op.table_name, op.schema, list(op.columns), name)
    elif isinstance(op, alembic_ops.CreateIndexOp) and op.unique:
        if all(isinstance(c, str) for c in op.columns) and not op.kw.get("postgresql_where"):
            columns = [str(c) for c in op.columns]
            yield from _unique(step, op.table_name, op.schema, columns, op.index_name)
    elif isinstance(op, alembic_ops.CreateForeignKeyOp):
        yield from _foreign_key(step, op)


def _untouched(step: Step, table: str, schema: str | None, columns: Sequence[str] = ()) -> bool:
    seen = step.seen
    return not (
        seen.is_new_table(table, schema)
        or any(seen.is_new_column(table, c, schema) for c in columns)
        or seen.may_have_written(table)
    )


def _not_null_on_existing(step: Step, op: alembic_ops.AlterColumnOp) -> Iterator[Query]:
    if op.modify_nullable is not False or not _untouched(
        step, op.table_name, op.schema, [op.column_name]
    ):
        return
    table = sa.table(op.table_name, sa.column(op.column_name), schema=op.schema)
    yield Query(
        "not-null", step.revision, op.table_name, op.schema, [op.column_name],
        [(op.schema, op.table_name, [op.column_name])],
        sa.select(sa.func.count()).select_from(table).where(table.c[op.column_name].is_(None)),
        f"hold NULL in {op.table_name}.{op.column_name}: SET NOT NULL would fail; backfill "
        "them first",
    )


def _not_null_added(step: Step, op: alembic_ops.AddColumnOp) -> Iterator[Query]:
    column = op.column
    if (column.nullable or column.server_default is not None or column.computed is not None
            or column.identity is not None or not _untouched(step, op.table_name, op.schema)):
        return
    table = sa.table(op.table_name, schema=op.schema)
    yield Query(
        "not-null", step.revision, op.table_name, op.schema, [column.name],
        [(op.schema, op.table_name, [])],
        sa.select(sa.func.count()).select_from(table),
        f"in {op.table_name} would hold NULL in the new NOT NULL column {column.name} (it has "
        "no server default): ADD COLUMN would fail",
    )


def _unique(
    step: Step, table_name: str, schema: str | None, columns: list[str], name: str | None
) -> Iterator[Query]:
    if not columns or not _untouched(step, table_name, schema, columns):
        return
    table = sa.table(table_name, *(sa.column(c) for c in columns), schema=schema)
    keys = [table.c[c] for c in columns]
    groups = (
        sa.select(sa.func.count().label("n"))
        .select_from(table)
        .where(*(k.is_not(None) for k in keys))
        .group_by(*keys)
        .having(sa.func.count() > 1)
        .subquery()
    )
    yield Query(
        "unique", step.revision, table_name, schema, columns, [(schema, table_name, columns)],
        sa.select(sa.func.coalesce(sa.func.sum(groups.c.n), 0)),
        f"of {table_name} share their ({', '.join(columns)}) value with another row: "
        f"{name or 'the unique constraint'} would fail; deduplicate them first",
    )


def _foreign_key(step: Step, op: alembic_ops.CreateForeignKeyOp) -> Iterator[Query]:
    source_schema, referent_schema = op.kw.get("source_schema"), op.kw.get("referent_schema")
    local, remote = list(op.local_cols), list(op.remote_cols)
    if not _untouched(step, op.source_table, source_schema, local):
        return
    if step.seen.may_have_written(op.referent_table):
        return
    source = sa.table(op.source_table, *(sa.column(c) for c in local), schema=source_schema)
    src = source.alias("src")
    present = [src.c[c].is_not(None) for c in local]
    needs: list[tuple[str | None, str, list[str]]] = [(source_schema, op.source_table, local)]
    select = sa.select(sa.func.count()).select_from(src).where(*present)
    if not step.seen.is_new_table(op.referent_table, referent_schema):
        referent = sa.table(op.referent_table, *(sa.column(c) for c in remote),
                            schema=referent_schema).alias("ref")
        match = sa.and_(*(referent.c[r] == src.c[s] for s, r in zip(local, remote, strict=True)))
        select = select.where(~sa.exists().where(match))
        needs.append((referent_schema, op.referent_table, remote))
    yield Query(
        "foreign-key", step.revision, op.source_table, source_schema, local, needs, select,
        f"of {op.source_table} reference no row of {op.referent_table}: the foreign key "
        f"{op.constraint_name or ''} would fail; fix or delete the orphans first".replace(
            "  ", " "),
    )


def _qualified(table: str, schema: str | None) -> str:
    return f"{schema}.{table}" if schema else table


def _name(query: Query) -> str:
    return f"{_qualified(query.table, query.schema)}({', '.join(query.columns)})"
