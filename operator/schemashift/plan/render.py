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
from alembic.runtime.migration import HeadMaintainer, MigrationContext, RevisionStep
from alembic.script import Script, ScriptDirectory
from sqlalchemy import inspection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import CompileError
from sqlalchemy.sql.elements import TextClause

from schemashift import redact
from schemashift.plan.override import NO_OVERRIDE, Override, read_override


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
    override: Override = NO_OVERRIDE  # the revision file's own `schemashift = {...}`


class _Recorder:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
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


# Called when a revision inspects its bind: the operations recorded so far, and whether an
# earlier revision could not be rendered; returns an Inspector or raises why it cannot answer.
InspectorFactory = Callable[[Sequence[RecordedOp], bool], Any]


class OfflineConnection:
    """What `op.get_bind()` returns while planning: statements are rendered, never executed.

    Data migrations that only write (`bind.execute(text("UPDATE …"))`) render like `op.execute`;
    those that read rows get `None` back and fail, which the plan reports. `sa.inspect(bind)`
    is answered by the planner's inspector when it has one (planning against a server).
    """

    def __init__(self, operations: Operations,
                 inspector: Callable[[], Any] | None = None) -> None:
        self._operations = operations
        self._inspector = inspector
        self.dialect = operations.migration_context.dialect

    def inspector(self) -> Any:
        if self._inspector is None:
            raise NotImplementedError("planning without a server: the offline connection cannot "
                                      "inspect the database")
        return self._inspector()

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


@inspection._inspects(OfflineConnection)
def _inspect_offline(subject: OfflineConnection) -> Any:
    return subject.inspector()


def _parameter_sets(parameters: Any) -> Sequence[Mapping[str, Any] | None]:
    if parameters is None:
        return [None]
    if isinstance(parameters, Mapping):
        return [parameters]
    return list(parameters) or [None]


def render_revisions(
    config: Config, script: ScriptDirectory, revisions: Sequence[Script], from_revision: str | None,
    inspector: InspectorFactory | None = None, server: Dialect | None = None,
) -> list[RenderedRevision]:
    """Render the revisions in order (oldest first), each as its own transaction.

    One offline context for the whole run, as `alembic upgrade --sql` has: per-command state
    carries from one revision to the next, and each stamp is the revision's own step (Alembic's
    `stamp()` searches the history for a path each time, which is quadratic over a long one).
    """
    buffer = io.StringIO()
    recorder = _Recorder()
    rendered: list[RenderedRevision] = []
    with EnvironmentContext(config, script) as env:  # binds `alembic.context` for the module
        env.configure(
            dialect_name="postgresql",
            as_sql=True,
            output_buffer=buffer,
            literal_binds=True,
            transaction_per_migration=True,
            starting_rev=from_revision,
        )
        context = env.get_context()
        if server is not None:
            _like_server(context.dialect, server)
        _watch_autocommit(context, recorder)
        _placeholders_where_literals_fail(context)

        def inspect_so_far() -> Any:
            assert inspector is not None
            earlier = [op for r in rendered for op in r.ops]
            return inspector([*earlier, *recorder.ops], any(r.error for r in rendered))

        operations = _recording_operations(context, recorder,
                                           inspect_so_far if inspector else None)
        heads = HeadMaintainer(context, (from_revision,) if from_revision else ())
        operations._install_proxy()
        try:
            for revision in revisions:
                rendered.append(_render_one(context, script, revision, heads, recorder))
        finally:
            operations._remove_proxy()
    return rendered


def _like_server(offline: Dialect, server: Dialect) -> None:
    """The offline dialect writes what the live one will: SQLAlchemy picks some DDL by server
    version (a `Computed` without `persisted` is STORED before PostgreSQL 18, VIRTUAL after)."""
    offline.server_version_info = server.server_version_info
    virtual = "supports_virtual_generated_columns"  # SQLAlchemy 2.0.4x+
    if hasattr(server, virtual):
        setattr(offline, virtual, getattr(server, virtual))


def _render_one(context: MigrationContext, script: ScriptDirectory, revision: Script,
                heads: HeadMaintainer, recorder: _Recorder) -> RenderedRevision:
    override = read_override(revision.module, str(revision.path))
    buffer = io.StringIO()
    # Each revision's SQL on its own: the context writes wherever these point.
    context.output_buffer = context.impl.output_buffer = buffer  # type: ignore[assignment]
    recorder.reset()
    error = None
    if not heads.heads:
        context._ensure_version_table()  # as Alembic's own offline run does first
    with context.begin_transaction(_per_migration=True):
        try:
            revision.module.upgrade()
        except Exception as exc:  # any failure: report, keep what was rendered
            error = redact.redact(f"{type(exc).__name__}: {exc}".strip())
            buffer.write(f"-- schemashift: upgrade() stopped rendering offline: {error}\n")
        heads.update_to_step(RevisionStep(script.revision_map, revision, True))
    return RenderedRevision(
        revision=revision.revision,
        sql=_tidy(buffer.getvalue()),
        ops=recorder.ops,
        autocommit=recorder.used_autocommit,
        error=error,
        override=override,
    )


def _recording_operations(context: MigrationContext, recorder: _Recorder,
                          inspector: Callable[[], Any] | None) -> Operations:
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

    offline = OfflineConnection(operations, inspector)
    operations.batch_alter_table = batch_alter_table  # type: ignore[method-assign]
    operations.get_bind = lambda: offline  # type: ignore[assignment,method-assign,return-value]
    return operations


def _placeholders_where_literals_fail(context: MigrationContext) -> None:
    """A value SQLAlchemy cannot render as a literal (a column of `sa.table()` without a type)
    is shown as a bind placeholder, as Alembic's offline mode does without `literal_binds`."""
    impl = context.impl
    base = impl._exec

    def execute(construct: Any, *args: Any, **kw: Any) -> Any:
        try:
            return base(construct, *args, **kw)
        except CompileError:
            if not impl.literal_binds:
                raise
            impl.literal_binds = False
            try:
                return base(construct, *args, **kw)
            finally:
                impl.literal_binds = True

    impl._exec = execute  # type: ignore[method-assign]


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


__all__ = ["InspectorFactory", "OfflineConnection", "RecordedOp", "RenderedRevision",
           "render_revisions", "sql_text"]
