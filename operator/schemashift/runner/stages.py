"""Running Alembic upgrades and downgrades stage by stage, with lock timeouts and lock retries.

The migration connection carries SESSION-level `lock_timeout` / `statement_timeout`: a
`SET LOCAL` would vanish when `autocommit_block()` commits the transaction it is in. A cookbook
env.py receives that connection through `config.attributes["connection"]`; an env.py that opens
its own from `sqlalchemy.url` gets the same settings through libpq's `options` (in the URL and in
`PGOPTIONS`, for an env.py that builds its URL some other way).

On `lock_not_available` a stage is retried with growing waits between attempts (GitLab's
`with_lock_retries`): each attempt queues for at most `lock_timeout`, so application queries that
line up behind the migration's lock request wait no longer than that, and the long transaction
in the way gets the pauses in between to finish.

An upgrade is ONE Alembic command with a transaction per revision (`transaction_per_migration`,
forced), as plain `alembic upgrade head` runs a history: per-command state such as SQLAlchemy's
memo of the ENUM types it created carries from one revision to the next, exactly as there. Between
two revisions (after one's commit, before the next one's transaction) the command calls back:
`Checkpoints.committed` with the revision another session (the witness connection) now reads
from the version table, and `Checkpoints.starting` with the next one. A lock retry reruns the
command, which resumes after the last committed revision; the retry budget is per revision.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext, MigrationInfo, RevisionStep
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from schemashift import db, errors, reasons, redact, scripts
from schemashift.runner.options import RunOptions, postgres_ms

MIGRATION_APPLICATION_NAME = "schemashift-migration"
LOCK_NOT_AVAILABLE = "55P03"
FIRST_RETRY_WAIT_SECONDS = 0.25
MAX_RETRY_WAIT_SECONDS = 10.0


def retry_wait(retry: int) -> float:
    """Pause before retry n (1-based): 0.25s, 0.5s, 1s, … up to 10s."""
    return float(min(FIRST_RETRY_WAIT_SECONDS * 2 ** (retry - 1), MAX_RETRY_WAIT_SECONDS))


def is_lock_timeout(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for candidate in (current, getattr(current, "orig", None)):
            if getattr(candidate, "sqlstate", None) == LOCK_NOT_AVAILABLE:
                return True
        current = current.__cause__ or current.__context__
    return False


def describe(exc: BaseException, *secrets: str | None) -> str:
    if isinstance(exc, DBAPIError):
        return db.describe_db_error(exc, *secrets)
    if isinstance(exc, errors.SchemashiftError):
        return redact.redact(exc.args[0] if exc.args else str(exc), *secrets)
    text = str(exc).strip().splitlines()
    detail = f": {text[0]}" if text else ""
    return redact.redact(f"{type(exc).__name__}{detail}", *secrets)


class LockRetriesExhausted(errors.MigrationFailed):
    reason = reasons.LOCK_RETRIES_EXHAUSTED

    def __init__(self, attempts: int, message: str, *, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.attempts = attempts


class Checkpoints(Protocol):
    """What the runner does between two revisions of one upgrade command."""

    def committed(self, revision: str | None) -> None:
        """`revision` is now what another session reads from the version table."""

    def starting(self, revision: str) -> None:
        """`revision`'s transaction is about to begin (raise to stop the command here)."""


@dataclass
class Attempts:
    """How often the last command ran, and the lock timeouts it met (for status and tests)."""

    count: int = 0
    lock_timeouts: list[str] = field(default_factory=list)


class Migrator:
    """Runs Alembic commands on the migration connection, one transaction-bounded step at a time."""

    def __init__(
        self,
        config: Config,
        database_url: str,
        options: RunOptions,
        on_retry: Callable[[int, float, str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.config = config
        self.database_url = database_url
        self.options = options
        self.on_retry = on_retry
        self.sleep = sleep
        self._password = db.parse_url(database_url).password
        self._libpq_options = (
            f"-c lock_timeout={postgres_ms(options.lock_timeout_s)} "
            f"-c statement_timeout={postgres_ms(options.statement_timeout_s)}"
        )
        session_url = self._session_url()
        config.set_main_option("sqlalchemy.url", session_url.replace("%", "%%"))
        # The settings travel with every (re)connection, also after an invalidation.
        self.engine = sa.create_engine(
            db.parse_url(session_url), poolclass=NullPool,
            connect_args={"connect_timeout": db.CONNECT_TIMEOUT_SECONDS},
        )
        try:
            self.connection = self.engine.connect()
            # Another session: what it reads is committed (and it is idle while Alembic works).
            self.witness = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except OperationalError as exc:
            raise db.unreachable(self.engine.url, exc) from None
        self._script: ScriptDirectory | None = None

    def close(self) -> None:
        for connection in (self.connection, self.witness):
            with suppress(DBAPIError):
                connection.close()
        self.engine.dispose()

    @property
    def script(self) -> ScriptDirectory:
        """Loaded once per run: every command reuses it (loading compiles every revision file)."""
        if self._script is None:
            self._script = ScriptDirectory.from_config(self.config)
        return self._script

    def _session_url(self) -> str:
        url = db.parse_url(self.database_url)
        existing = url.query.get("options")
        prior = existing if isinstance(existing, str) else " ".join(existing or ())
        return url.update_query_dict(
            {
                "options": f"{prior} {self._libpq_options}".strip(),
                "application_name": MIGRATION_APPLICATION_NAME,
            }
        ).render_as_string(hide_password=False)

    def current(self) -> str | None:
        try:
            return scripts.current_revision(self.connection)
        finally:
            self.connection.rollback()

    def upgrade(self, target: str, checkpoints: Checkpoints | None = None) -> Attempts:
        """Upgrade to `target` in one command, a transaction per revision; `checkpoints` hears
        of every revision committed and started, the last commit read back after the command."""
        staging = _Staging(checkpoints, self.witness)

        def attempt() -> None:
            self._command(target, lambda rev: self.script._upgrade_revs(target, rev), staging)

        attempts = self.with_lock_retries(attempt, position=lambda: staging.in_flight)
        staging.checkpoint(final=True)
        return attempts

    def downgrade(self, target: str | None, checkpoints: Checkpoints | None = None) -> Attempts:
        """Downgrade to `target` in one command, a transaction per revision, as upgrades run."""
        destination = target or "base"
        staging = _Staging(checkpoints, self.witness)
        attempts = self.with_lock_retries(
            lambda: self._command(
                destination, lambda rev: self.script._downgrade_revs(destination, rev), staging),
            position=lambda: staging.in_flight)
        staging.checkpoint(final=True)
        return attempts

    def _command(self, destination: str, steps: Callable[[Any], list[RevisionStep]],
                 staging: _Staging | None) -> None:
        """What `alembic.command.upgrade`/`downgrade` do, on the run's loaded script directory."""

        def fn(rev: Any, context: MigrationContext) -> Iterable[RevisionStep]:
            found = steps(rev)
            return found if staging is None else staging.steps(found, context)

        environment = EnvironmentContext(self.config, self.script, fn=fn, as_sql=False,
                                         starting_rev=None, destination_rev=destination,
                                         tag=None)
        if staging is not None:
            staging.install(environment)
        with environment:
            self.script.run_env()

    def with_lock_retries(self, step: Callable[[], None],
                          position: Callable[[], object] | None = None) -> Attempts:
        """Rerun `step` after a lock timeout. With `position` (where the step got stuck), the
        retry budget restarts whenever a retry got further than the attempt before it."""
        attempts = Attempts()
        stuck_at: object = _NOWHERE
        while True:
            attempts.count += 1
            try:
                self._run(step)
                return attempts
            except Exception as exc:
                if not is_lock_timeout(exc):
                    raise
                where = position() if position is not None else None
                if stuck_at is not _NOWHERE and where != stuck_at:
                    attempts = Attempts(count=1)
                stuck_at = where
                attempts.lock_timeouts.append(describe(exc, self._password))
                if attempts.count > self.options.lock_retries:
                    raise self._exhausted(attempts) from exc
                wait = retry_wait(attempts.count)
                if self.on_retry is not None:
                    self.on_retry(attempts.count, wait, attempts.lock_timeouts[-1])
                self.sleep(wait)

    def _run(self, step: Callable[[], None]) -> None:
        """One attempt: hand Alembic an idle connection (so it owns the transactions) and
        commit whatever a non-cookbook env.py may have left open only when it succeeded."""
        self.connection.rollback()
        self.config.attributes["connection"] = self.connection
        try:
            with _pgoptions(self._libpq_options):
                step()
        except BaseException:
            _quietly_rollback(self.connection)
            raise
        if self.connection.in_transaction():
            self.connection.commit()

    def _exhausted(self, attempts: Attempts) -> LockRetriesExhausted:
        return LockRetriesExhausted(
            attempts.count,
            f"could not get the locks it needs within lock timeout "
            f"{self.options.lock_timeout} in {attempts.count} attempts "
            f"({self.options.lock_retries} retries): {attempts.lock_timeouts[-1]}",
            hint="a long transaction holds a conflicting lock on the table (see pg_locks / "
            "pg_stat_activity); rerun when it is done, or raise --lock-retries",
        )


_NOWHERE = object()


@dataclass
class _Staging:
    """One upgrade's checkpoints, kept across its lock retries."""

    checkpoints: Checkpoints | None
    witness: Connection
    in_flight: str | None = None  # started, its commit not yet seen
    stamped: bool = False  # a revision was stamped since the last read-back
    reported: str | None = None
    _version_table: sa.Table | None = None

    def install(self, environment: EnvironmentContext) -> None:
        """The user's env.py calls `configure` itself: force a transaction per revision and add
        our callback to whatever it passes. (`alembic.context` looks the method up per call.)"""
        configure = environment.configure

        def forced(*args: Any, **kw: Any) -> None:
            theirs = kw.get("on_version_apply") or ()
            kw["on_version_apply"] = (*(theirs if isinstance(theirs, (tuple, list))
                                        else (theirs,)), self._stamp)
            kw["transaction_per_migration"] = True
            configure(*args, **kw)

        setattr(environment, "configure", forced)  # noqa: B010 (an instance attribute on purpose)

    def steps(self, steps: list[RevisionStep],
              context: MigrationContext) -> Iterator[RevisionStep]:
        """Alembic asks for the next step after committing the one before."""
        self._version_table = sa.Table(
            context.version_table, sa.MetaData(), sa.Column("version_num", sa.String),
            schema=context.version_table_schema)
        for step in steps:
            self.checkpoint()
            revision = step.revision.revision
            if self.checkpoints is not None:
                self.checkpoints.starting(revision)
            self.in_flight = revision
            yield step
        self.checkpoint()

    def _stamp(self, *, ctx: MigrationContext, step: MigrationInfo, heads: set[str],
               run_args: dict[str, Any]) -> None:
        self.stamped = True  # inside the revision's transaction: not committed yet

    def checkpoint(self, *, final: bool = False) -> None:
        if self.checkpoints is None or not (self.stamped or final) or self._version_table is None:
            return
        heads = self._committed_heads()
        self.stamped = False
        committed = heads[0] if len(heads) == 1 else None
        if committed == self.in_flight:
            self.in_flight = None
        if committed != self.reported:
            self.reported = committed
            self.checkpoints.committed(committed)

    def _committed_heads(self) -> list[str]:
        """The version table as another session reads it: one query per revision, where
        Alembic's `get_current_heads()` first asks the catalog whether the table exists."""
        assert self._version_table is not None
        try:
            return list(self.witness.execute(sa.select(self._version_table.c.version_num))
                        .scalars())
        except sa.exc.ProgrammingError:  # no revision ever committed: no version table yet
            return []


def invalid_indexes(connection: Connection) -> set[tuple[str, str, str]]:
    """Indexes an interrupted CREATE INDEX CONCURRENTLY left behind: they slow every write and
    serve no read, and a retried `IF NOT EXISTS` skips them silently."""
    try:
        rows = connection.execute(sa.text(
            "SELECT n.nspname, c.relname, c.relkind::text FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT i.indisvalid"
        )).all()
    finally:
        connection.rollback()
    return {(str(r[0]), str(r[1]), str(r[2])) for r in rows}


def _quietly_rollback(connection: Connection) -> None:
    with suppress(DBAPIError):
        connection.rollback()


@contextmanager
def _pgoptions(extra: str) -> Iterator[None]:
    before = os.environ.get("PGOPTIONS")
    os.environ["PGOPTIONS"] = f"{before} {extra}" if before else extra
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PGOPTIONS", None)
        else:
            os.environ["PGOPTIONS"] = before
