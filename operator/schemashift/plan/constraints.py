"""Constraints through a plan: which were added NOT VALID, in which transaction, which validated.

The lock-safe forms are sequences, not single operations: `ADD … NOT VALID` then `VALIDATE
CONSTRAINT` in another transaction (in the same one, the ADD's lock is held for the whole scan);
`CHECK (col IS NOT NULL) NOT VALID` → VALIDATE → `SET NOT NULL` (PostgreSQL 12+ skips its scan
when such a validated check exists) → drop the helper check. The ledger follows typed operations
and raw SQL alike as events, in plan order, so lint judges each step by what came before it —
including checks the live database already holds (a rerun after an interruption).

Transactions: each revision is one (`transaction_per_migration`), cut by its autocommit blocks;
inside an autocommit block every operation commits on its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa
from alembic.operations import ops as alembic_ops
from sqlalchemy.dialects import postgresql

from schemashift.plan.live import table_key
from schemashift.plan.live_constraints import LiveConstraints, not_null_column
from schemashift.plan.render import sql_text
from schemashift.plan.walk import Step, statements, table_of

CHECK = "check"
FOREIGN_KEY = "foreign-key"
OTHER = "other"


@dataclass(frozen=True)
class Add:
    table: str  # table_key
    name: str
    kind: str
    not_valid: bool
    not_null_column: str | None = None


@dataclass(frozen=True)
class Validate:
    table: str
    name: str


@dataclass(frozen=True)
class SetNotNull:
    table: str
    column: str
    already: bool = False  # the revision states the column is NOT NULL already


@dataclass(frozen=True)
class Drop:
    table: str
    name: str
    if_exists: bool = False


Event = Add | Validate | SetNotNull | Drop


@dataclass
class Ledger:
    live: LiveConstraints = field(default_factory=LiveConstraints)
    added: dict[tuple[str, str], tuple[Add, int]] = field(default_factory=dict)
    validated: set[tuple[str, str]] = field(default_factory=set)
    set_not_null: set[tuple[str, str]] = field(default_factory=set)
    new_indexes: set[str] = field(default_factory=set)  # created by the plan (lower-cased)
    # (table, name, transaction) of every constraint the plan adds, also those still to come
    re_added: set[tuple[str, str, int]] = field(default_factory=set)
    transaction: int = 0  # the current step's
    _last: tuple[str, bool] | None = None

    def look_ahead(self, steps: Iterable[Step]) -> None:
        """Note every constraint the plan adds (a DROP followed, in the same transaction, by an
        ADD of the same name replaces it: nothing is lost). Call before walking the plan."""
        scout = Ledger()
        for step in steps:
            scout.begin(step)
            self.re_added |= {(e.table, e.name, scout.transaction) for e in events(step.op)
                              if isinstance(e, Add)}

    def begin(self, step: Step) -> None:
        """Enter `step`: a new transaction unless it shares the previous step's."""
        here = (step.revision, step.recorded.autocommit)
        if here != self._last or step.recorded.autocommit:
            self.transaction += 1
        self._last = here

    def added_in_this_transaction(self, event: Validate) -> Add | None:
        found = self.added.get((event.table, event.name))
        if found is None or found[1] != self.transaction or not found[0].not_valid:
            return None
        return found[0]

    def has_validated_not_null_check(self, table: str, column: str) -> bool:
        for (key, name), (add, _) in self.added.items():
            if key == table and add.not_null_column == column and (
                    not add.not_valid or (key, name) in self.validated):
                return True
        return any(key == table and held.not_null_column == column
                   and (held.validated or (key, name) in self.validated)
                   for (key, name), held in self.live.held.items())

    def drop_loses_nothing(self, event: Drop) -> bool:
        """Added by the plan itself, or re-added in the same transaction (a replacement); a `col
        IS NOT NULL` check on a column the plan has set NOT NULL (the helper of the safe SET NOT
        NULL); or IF EXISTS of one the database lacks."""
        key = (event.table, event.name)
        if key in self.added or (*key, self.transaction) in self.re_added:
            return True
        held = self.live.held.get(key)
        if held is None:
            return event.if_exists and self.live.read
        return (held.not_null_column is not None
                and (event.table, held.not_null_column) in self.set_not_null)

    def note_index(self, op: alembic_ops.MigrateOperation) -> None:
        if isinstance(op, alembic_ops.CreateIndexOp) and isinstance(op.index_name, str):
            self.new_indexes.add(op.index_name.lower())
        elif isinstance(op, alembic_ops.ExecuteSQLOp):
            for statement in statements(sql_text(op.sqltext)):
                match = _CREATE_INDEX.search(statement)
                if match:
                    self.new_indexes.add(identifier(match.group(1)))

    def note(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Add):
                self.added[(event.table, event.name)] = (event, self.transaction)
            elif isinstance(event, Validate):
                self.validated.add((event.table, event.name))
            elif isinstance(event, SetNotNull):
                self.set_not_null.add((event.table, event.column))
            else:
                self.added.pop((event.table, event.name), None)
                self.validated.discard((event.table, event.name))


def events(op: alembic_ops.MigrateOperation) -> list[Event]:
    if isinstance(op, alembic_ops.ExecuteSQLOp):
        return [event for statement in statements(sql_text(op.sqltext))
                for event in statement_events(statement)]
    return _typed_events(op)


def _typed_events(op: alembic_ops.MigrateOperation) -> list[Event]:
    schema = getattr(op, "schema", None)
    if isinstance(op, alembic_ops.CreateCheckConstraintOp) and op.constraint_name:
        return [Add(table_key(op.table_name, schema), str(op.constraint_name).lower(), CHECK,
                    bool(op.kw.get("postgresql_not_valid")),
                    not_null_column(_condition_sql(op.condition)))]
    if isinstance(op, alembic_ops.CreateForeignKeyOp) and op.constraint_name:
        return [Add(table_key(op.source_table, op.kw.get("source_schema")),
                    str(op.constraint_name).lower(), FOREIGN_KEY,
                    bool(op.kw.get("postgresql_not_valid")))]
    if isinstance(op, alembic_ops.AddConstraintOp) and getattr(op, "constraint_name", None):
        return [Add(table_key(getattr(op, "table_name", ""), schema),
                    str(getattr(op, "constraint_name", "")).lower(), OTHER, False)]
    if isinstance(op, alembic_ops.AlterColumnOp) and op.modify_nullable is False:
        return [SetNotNull(table_key(op.table_name, schema), op.column_name.lower(),
                           op.existing_nullable is False)]
    if isinstance(op, alembic_ops.DropConstraintOp) and op.constraint_name:
        return [Drop(table_key(op.table_name, schema), str(op.constraint_name).lower(),
                     bool(getattr(op, "if_exists", None)))]
    return []


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE | re.DOTALL)


_NAME = r'("(?:[^"]|"")+"|[\w$]+)'
_ADD_CHECK = _rx(rf"\bADD\s+CONSTRAINT\s+{_NAME}\s+CHECK\s*(\(.*\))")
_ADD_FOREIGN_KEY = _rx(rf"\bADD\s+CONSTRAINT\s+{_NAME}\s+FOREIGN\s+KEY\b")
_ADD_OTHER = _rx(rf"\bADD\s+CONSTRAINT\s+{_NAME}\s+(UNIQUE|PRIMARY\s+KEY|EXCLUDE)\b")
_NOT_VALID = _rx(r"\bNOT\s+VALID\b")
_VALIDATE = _rx(rf"\bVALIDATE\s+CONSTRAINT\s+{_NAME}")
_SET_NOT_NULL = _rx(rf"\bALTER\s+(?:COLUMN\s+)?{_NAME}\s+SET\s+NOT\s+NULL\b")
_CREATE_INDEX = _rx(rf"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?"
                    rf"(?:IF\s+NOT\s+EXISTS\s+)?(?:[\w$]+\.)?{_NAME}")
_DROP = _rx(rf"\bDROP\s+CONSTRAINT\s+(IF\s+EXISTS\s+)?{_NAME}")


def statement_events(statement: str) -> list[Event]:
    table = table_of(statement)
    if table is None or not re.match(r"\s*ALTER\s+TABLE\b", statement, re.IGNORECASE):
        return []
    key = table_key(table)
    not_valid = _NOT_VALID.search(statement) is not None
    found: list[Event] = []
    for match in _ADD_CHECK.finditer(statement):
        found.append(Add(key, identifier(match.group(1)), CHECK, not_valid,
                         not_null_column(_NOT_VALID.sub("", match.group(2)).strip())))
    found += [Add(key, identifier(m.group(1)), FOREIGN_KEY, not_valid)
              for m in _ADD_FOREIGN_KEY.finditer(statement)]
    found += [Add(key, identifier(m.group(1)), OTHER, False)
              for m in _ADD_OTHER.finditer(statement)]
    found += [Validate(key, identifier(m.group(1))) for m in _VALIDATE.finditer(statement)]
    found += [SetNotNull(key, identifier(m.group(1))) for m in _SET_NOT_NULL.finditer(statement)]
    found += [Drop(key, identifier(m.group(2)), m.group(1) is not None)
              for m in _DROP.finditer(statement)]
    return found


def identifier(token: str) -> str:
    """A name as written, unquoted and lower-cased (names are compared case-insensitively)."""
    if token.startswith('"'):
        return token[1:-1].replace('""', '"').lower()
    return token.lower()


def _condition_sql(condition: object) -> str:
    if isinstance(condition, str):
        return condition
    if isinstance(condition, sa.ClauseElement):
        return str(condition.compile(dialect=_DIALECT, compile_kwargs={"literal_binds": True}))
    return str(condition)


_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]

__all__ = ["CHECK", "FOREIGN_KEY", "Add", "Drop", "Event", "Ledger", "SetNotNull", "Validate",
           "events", "identifier", "statement_events"]
