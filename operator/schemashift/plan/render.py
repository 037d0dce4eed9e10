"""Offline rendering of revisions: the SQL each one emits and the operation objects behind it.

Each revision's `upgrade()` runs in an Alembic offline context (`as_sql=True`, PostgreSQL
dialect) that we configure ourselves, with `alembic.op` bound to an `Operations` whose dispatcher
records every `MigrateOperation` before rendering it. The project's `env.py` is deliberately not
run: third-party env.py files differ (connection from `config.attributes`, `sqlalchemy.url` only,
async engines, logging set-up) and planning must not depend on them or open their connections.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from alembic.config import Config
from alembic.operations import Operations
from alembic.operations import ops as alembic_ops
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy.sql.elements import TextClause

from schemashift import redact


@dataclass
class RecordedOp:
    """One operation a revision's upgrade() invoked, and whether it ran in an autocommit block."""

    op: alembic_ops.MigrateOperation
    autocommit: bool


@dataclass
class RenderedRevision:
    revision: str
    sql: str
    ops: list[RecordedOp] = field(default_factory=list)
    autocommit: bool = False
    error: str | None = None  # upgrade() could not run offline (e.g. it reads rows)


class _Recorder:
    def __init__(self) -> None:
        self.ops: list[RecordedOp] = []
        self.in_autocommit = False
        self.used_autocommit = False


class _RecordingDispatcher:
    """Wraps Alembic's op → implementation dispatcher to note each op before it renders."""

    def __init__(self, inner: Any, recorder: _Recorder) -> None:
        self._inner = inner
        self._recorder = recorder

    def dispatch(self, obj: Any, qualifier: str = "default") -> Callable[..., Any]:
        implementation = self._inner.dispatch(obj, qualifier)
        recorder = self._recorder

        def record_then_render(operations: Any, operation: Any) -> Any:
            recorder.ops.append(RecordedOp(operation, recorder.in_autocommit))
            return implementation(operations, operation)

        return record_then_render


class OfflineConnection:
    """What `op.get_bind()` returns while planning: statements are rendered, never executed.

    Data migrations that only write (`bind.execute(text("UPDATE …"))`) render like `op.execute`;
    those that read rows get `None` back and fail, which the plan reports.
    """

    def __init__(self, operations: Operations) -> None:
        self._operations = operations
        self.dialect = operations.migration_context.dialect

    def execute(self, statement: Any, parameters: Any = None, **_: Any) -> None:
        for params in _parameter_sets(parameters):
            if params and isinstance(statement, TextClause):
                self._operations.execute(statement.bindparams(**params))
            elif params and hasattr(statement, "values"):
                self._operations.execute(statement.values(**params))
            else:
                self._operations.execute(statement)

    def exec_driver_sql(self, statement: str, parameters: Any = None, **_: Any) -> None:
        if parameters:
            raise NotImplementedError("driver-level parameters cannot be rendered offline")
        self._operations.execute(statement)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"the offline planning connection has no .{name}: it renders SQL "
                             "and cannot read rows")


def _parameter_sets(parameters: Any) -> Sequence[Mapping[str, Any] | None]:
    if parameters is None:
        return [None]
    if isinstance(parameters, Mapping):
        return [parameters]
    return list(parameters) or [None]


def render_revisions(
    config: Config, script: ScriptDirectory, revisions: Sequence[Script], from_revision: str | None
) -> list[RenderedRevision]:
    """Render the revisions in order (oldest first), each as its own transaction."""
    rendered = []
    heads = [from_revision] if from_revision else []
    for revision in revisions:
        rendered.append(_render_one(config, script, revision, heads))
        heads = [h for h in heads if h not in _down_revisions(revision)]
        heads.append(revision.revision)
    return rendered


def _down_revisions(revision: Script) -> tuple[str, ...]:
    down = revision.down_revision
    return (down,) if isinstance(down, str) else tuple(down or ())


def _render_one(
    config: Config, script: ScriptDirectory, revision: Script, heads: list[str]
) -> RenderedRevision:
    buffer = io.StringIO()
    recorder = _Recorder()
    error = None
    with EnvironmentContext(config, script) as env:  # binds `alembic.context` for the module
        env.configure(
            dialect_name="postgresql",
            as_sql=True,
            output_buffer=buffer,
            literal_binds=True,
            transaction_per_migration=True,
            # several heads while a merge is pending: get_current_heads() takes a list offline
            starting_rev=list(heads) or None,  # type: ignore[arg-type]
        )
        context = env.get_context()
        _watch_autocommit(context, recorder)
        operations = _recording_operations(context, recorder)
        operations._install_proxy()
        try:
            if not heads:
                context._ensure_version_table()  # as Alembic's own offline run does first
            with context.begin_transaction(_per_migration=True):
                try:
                    revision.module.upgrade()
                except Exception as exc:  # any failure: report, keep what was rendered
                    error = redact.redact(f"{type(exc).__name__}: {exc}".strip())
                    buffer.write(f"-- schemashift: upgrade() stopped rendering offline: {error}\n")
                context.stamp(script, revision.revision)
        finally:
            operations._remove_proxy()
    return RenderedRevision(
        revision=revision.revision,
        sql=_tidy(buffer.getvalue()),
        ops=recorder.ops,
        autocommit=recorder.used_autocommit,
        error=error,
    )


def _recording_operations(context: MigrationContext, recorder: _Recorder) -> Operations:
    # Instance attributes, not a subclass: Alembic's `op` proxy is registered per class.
    operations = Operations(context)
    dispatcher = _RecordingDispatcher(Operations._to_impl, recorder)
    operations._to_impl = dispatcher  # type: ignore[misc,assignment]
    base_batch = operations.batch_alter_table

    @contextmanager
    def batch_alter_table(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with base_batch(*args, **kwargs) as batch_operations:
            batch_operations._to_impl = _RecordingDispatcher(  # type: ignore[assignment]
                type(batch_operations)._to_impl, recorder)
            yield batch_operations

    offline = OfflineConnection(operations)
    operations.batch_alter_table = batch_alter_table  # type: ignore[method-assign]
    operations.get_bind = lambda: offline  # type: ignore[assignment,method-assign,return-value]
    return operations


def _watch_autocommit(context: MigrationContext, recorder: _Recorder) -> None:
    base_block = context.autocommit_block

    @contextmanager
    def autocommit_block() -> Iterator[None]:
        recorder.used_autocommit = True
        recorder.in_autocommit = True
        try:
            with base_block():
                yield
        finally:
            recorder.in_autocommit = False

    context.autocommit_block = autocommit_block  # type: ignore[method-assign,assignment]


_BLANK_LINES = re.compile(r"\n{3,}")


def _tidy(sql: str) -> str:
    return _BLANK_LINES.sub("\n\n", sql).strip() + "\n"


def sql_text(statement: Any) -> str:
    """The SQL text of an ExecuteSQLOp's statement (a string or a `text()` construct)."""
    if isinstance(statement, str):
        return statement
    if isinstance(statement, TextClause):
        return statement.text
    return str(statement)


__all__ = ["OfflineConnection", "RecordedOp", "RenderedRevision", "render_revisions", "sql_text"]
