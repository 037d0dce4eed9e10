"""`schemashift wait-for-schema`: an application's initContainer waits until its database has
reached at least the revision its image carries.

"At least": the database's revision is that one or a descendant of it in the image's history.
Only `alembic_version` is read (SELECT), in a read-only session; no Kubernetes API is used, so the
pod needs no ServiceAccount token. A database revision the image's history does not contain is an
error at once: the image cannot tell whether its schema is there (a newer release migrated the
database, or the image carries another history).

Exit codes: 0 reached; 1 timed out (still behind); 2 bad input (unknown revision, branched
history without --revision, a role that may not read alembic_version); 3 timed out while the
database was unreachable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from schemashift import db, durations, errors, reasons, scripts
from schemashift.runner import options_table as table

Echo = Callable[[str], Any]


@dataclass(frozen=True)
class Reading:
    """One look at the database: its revisions, or why it could not be read."""

    revisions: tuple[str, ...] = ()
    unreachable: str | None = None

    def shown(self) -> str:
        if self.unreachable is not None:
            return f"unreachable ({self.unreachable})"
        return ", ".join(self.revisions) if self.revisions else "no revision (never migrated)"


def wanted_revision(script: ScriptDirectory, revision: str | None) -> str | None:
    """The revision to wait for: the given one, else the history's single head."""
    return scripts.resolve_target(script, revision or "head")


def reached(script: ScriptDirectory, reading: Reading, wanted: str) -> bool:
    """Whether a database revision is `wanted` or a descendant; unknown ones are refused."""
    unknown = [r for r in reading.revisions if _lookup(script, r) is None]
    if unknown:
        raise errors.UsageError(
            f"the database is at revision {', '.join(unknown)}, which this image's migrations "
            f"({script.dir}) do not contain: a newer release migrated it, or the image carries "
            "another history, so whether revision "
            f"{wanted} is applied cannot be told",
            hint="deploy the image that matches the database (or newer); when rolling the "
                 "application back on purpose, give it --revision of a revision both know, or "
                 "leave wait-for-schema out for that rollback",
            reason=reasons.UNKNOWN_REVISION)
    return any(wanted in _ancestry(script, r) for r in reading.revisions)


def _lookup(script: ScriptDirectory, revision: str) -> object | None:
    try:
        return script.get_revision(revision)
    except Exception:  # Alembic raises several kinds for an unknown or ambiguous id
        return None


def _ancestry(script: ScriptDirectory, revision: str) -> set[str]:
    return {r.revision for r in script.iterate_revisions(revision, "base")}


def read(engine: sa.Engine) -> Reading:
    """The database's revisions, in a read-only transaction; unreachable is not an error yet."""
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            return Reading(scripts.current_revisions(conn))
    except ProgrammingError as exc:  # e.g. permission denied for table alembic_version
        raise errors.UsageError(
            f"cannot read the database's revision: {db.describe_db_error(exc, _password(engine))}",
            hint="the role needs CONNECT on the database, USAGE on the schema and SELECT on "
                 "alembic_version (nothing more)") from None
    except (OperationalError, DBAPIError) as exc:
        return Reading(unreachable=db.describe_db_error(exc, _password(engine)))


def _password(engine: sa.Engine) -> str | None:
    password = engine.url.password
    return password if isinstance(password, str) else None


def wait_for_schema(database_url: str, migrations: Path, revision: str | None = None,
                    timeout: str = table.SCHEMA_WAIT_TIMEOUT.default,
                    interval: str = table.SCHEMA_WAIT_INTERVAL.default,
                    echo: Echo = print) -> int:
    """Poll until the database reaches `revision` (default: the image's head); the exit code."""
    timeout_s = table.SCHEMA_WAIT_TIMEOUT.seconds(timeout)
    interval_s = table.SCHEMA_WAIT_INTERVAL.seconds(interval)
    script = scripts.script_directory(scripts.alembic_config(migrations))
    wanted = wanted_revision(script, revision)
    if wanted is None:
        echo("the image's history is empty: nothing to wait for")
        return errors.EXIT_OK
    engine = db.make_engine(database_url)
    try:
        return _poll(engine, script, wanted, timeout_s, interval_s, echo)
    finally:
        engine.dispose()


def _poll(engine: sa.Engine, script: ScriptDirectory, wanted: str, timeout_s: float,
          interval_s: float, echo: Echo) -> int:
    where = db.safe_url(engine.url)
    echo(f"waiting for {where} to reach revision {wanted} "
         f"(timeout {durations.text(timeout_s)})")
    started = time.monotonic()
    last: Reading | None = None
    while True:
        reading = read(engine)
        if reading.unreachable is None and reached(script, reading, wanted):
            echo(f"schema ready: the database is at {reading.shown()}, at or after {wanted}")
            return errors.EXIT_OK
        elapsed = time.monotonic() - started
        if reading != last:
            echo(f"[{durations.text(int(elapsed))}] the database is at {reading.shown()}; "
                 f"waiting for {wanted}")
            last = reading
        if elapsed + interval_s > timeout_s:
            echo(f"error: timed out after {durations.text(timeout_s)}: the database is at "
                 f"{reading.shown()}, not yet at {wanted} or after it; its migration has not "
                 "run (or failed): kubectl get smig")
            return errors.EXIT_INFRA if reading.unreachable is not None else errors.EXIT_FAILED
        time.sleep(interval_s)
