"""`sa.inspect(op.get_bind())` while planning: the live database answers, where it is still true.

Real revisions inspect the database to decide what to do (mlflow adds only the columns a table
lacks). Offline, such a revision used to stop rendering, and everything after it was opaque to
lint. Planning against a server, the live database answers instead — but only about what the plan
has not changed before that point: a table named by an earlier operation of the plan (or the
revision itself) is not what the server shows now, and neither is the list of tables once the
plan has created or dropped one. Those questions, and any after DDL whose tables cannot be told,
stop the revision's rendering as before (the plan reports it unrenderable).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic.operations import ops as alembic_ops
from sqlalchemy.engine import Connection

from schemashift.plan import walk
from schemashift.plan.live import table_key
from schemashift.plan.render import InspectorFactory, RecordedOp, sql_text

# Inspector methods whose first argument is the one table they describe.
_ONE_TABLE = frozenset({
    "get_columns", "get_pk_constraint", "get_foreign_keys", "get_indexes",
    "get_unique_constraints", "get_check_constraints", "get_table_comment",
    "get_table_options", "has_table", "has_index", "get_view_definition",
})
_DATA_ONLY = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|COPY|WITH)\b", re.IGNORECASE)


class ChangedByThePlan(Exception):
    """The plan changes what is asked about before this point: the server's answer is stale."""


@dataclass(frozen=True)
class _Changes:
    tables: frozenset[str]  # table keys an earlier DDL operation names
    any_ddl: bool
    unknown: bool  # DDL whose tables cannot be told, or an earlier revision not rendered


def _changes(ops: Sequence[RecordedOp], opaque: bool) -> _Changes:
    tables: set[str] = set()
    any_ddl = unknown = False
    for recorded in ops:
        op = recorded.op
        if isinstance(op, alembic_ops.BulkInsertOp):
            continue
        if isinstance(op, alembic_ops.ExecuteSQLOp):
            for statement in walk.statements(sql_text(op.sqltext)):
                if _DATA_ONLY.match(statement):
                    continue
                any_ddl = True
                table = walk.created_table(statement) or walk.table_of(statement)
                unknown = unknown or table is None
                tables |= {table_key(table)} if table else set()
            continue
        any_ddl = True
        found = [name for a in ("table_name", "source_table", "new_table_name")
                 if isinstance(name := getattr(op, a, None), str)]
        unknown = unknown or not found
        schema = getattr(op, "schema", None) or walk.op_source_schema(op)
        tables |= {table_key(n, schema) for n in found} | {table_key(n) for n in found}
    return _Changes(frozenset(tables), any_ddl, unknown or opaque)


class PlannedInspector:
    """Delegates to the live Inspector after checking the question against the plan so far."""

    def __init__(self, live: Any, changes: _Changes) -> None:
        self._live = live
        self._changes = changes

    def __getattr__(self, name: str) -> Any:
        answer = getattr(self._live, name)
        if not callable(answer) or name.startswith("_"):
            return answer

        def checked(*args: Any, **kw: Any) -> Any:
            self._check(name, args, kw)
            return answer(*args, **kw)

        return checked

    def _check(self, name: str, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        changes = self._changes
        if changes.unknown:
            raise ChangedByThePlan(f"inspector.{name}(): an earlier step of the plan changed the "
                                   "database in a way the planner cannot follow")
        if name not in _ONE_TABLE:
            if changes.any_ddl:
                raise ChangedByThePlan(f"inspector.{name}(): the plan changes the schema before "
                                       "this point, so the server's answer is not what the "
                                       "revision will see")
            return
        table = kw.get("table_name", args[0] if args else None)
        schema = kw.get("schema", args[1] if len(args) > 1 else None)
        if isinstance(table, str) and table_key(table, schema) in changes.tables:
            raise ChangedByThePlan(f"inspector.{name}({table!r}): the plan changes {table} "
                                   "before this point, so the server's answer is not what the "
                                   "revision will see")


def live_inspector(conn: Connection) -> InspectorFactory:
    """Answers from `conn`'s database (one Inspector and its cache for the whole plan)."""
    live: list[Any] = []

    def factory(ops: Sequence[RecordedOp], opaque: bool) -> PlannedInspector:
        if not live:
            live.append(sa.inspect(conn))
        return PlannedInspector(live[0], _changes(ops, opaque))

    return factory


__all__ = ["ChangedByThePlan", "PlannedInspector", "live_inspector"]
