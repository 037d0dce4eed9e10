"""`backup.method: restorePoint`: a named restore point in the archived WAL, in seconds at any size.

Instead of copying the database, the run writes a restore point into the WAL
(`pg_create_restore_point`), ends that WAL segment (`pg_switch_wal`) and waits until the archiver
has archived it. A recovery of the cluster's base backup with `recovery_target_name` set to the
point's name (CloudNativePG `recoveryTarget.targetName`, pgBackRest `--type=name`) then gives the
database exactly as it was before the run's first change (docs/backups.md).

It is worth only as much as the archive: before anything changes, the run checks that archiving
is on (`archive_mode`), has somewhere to go (`archive_command` / `archive_library`) and works
(`pg_stat_archiver`: no failure newer than the last success; completed segments do not wait
longer than STALE_AFTER), and that the role may create the point. Any of these missing is a
refusal that changes nothing. A restore point can only be recovered into a new data directory,
so `rollback.policy: restore` (an in-place restore) is refused with this method.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from schemashift import db, errors, events, progress, reasons
from schemashift.runner import options_table as table

METHOD = "restorePoint"
# PostgreSQL's MAXFNAMELEN (64) counts the terminating NUL: a longer name is an error.
NAME_LIMIT = 63
# Completed segments waiting this long with nothing archived: the archiver is stuck.
STALE_AFTER = timedelta(minutes=10)
POLL_SECONDS = (0.05, 0.1, 0.2, 0.5, 1.0)
FUNCTIONS = ("pg_create_restore_point(text)", "pg_switch_wal()")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")
_SEGMENT = re.compile(r"^[0-9A-F]{24}")
DOCS = "docs/backups.md"

_STATE_SQL = """
SELECT current_setting('archive_mode') AS archive_mode,
       (SELECT setting FROM pg_settings WHERE name = 'archive_command') AS archive_command,
       (SELECT setting FROM pg_settings WHERE name = 'archive_library') AS archive_library,
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size') AS segment_size,
       pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE pg_walfile_name(pg_current_wal_lsn()) END AS current_wal,
       a.last_archived_wal, a.last_archived_time, a.last_failed_wal, a.last_failed_time,
       now() AS now, current_user AS role, current_database() AS database,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
       has_function_privilege('pg_create_restore_point(text)', 'EXECUTE') AS may_create,
       has_function_privilege('pg_switch_wal()', 'EXECUTE') AS may_switch
  FROM pg_stat_archiver a
"""


def uses_restore_point(method: str) -> bool:
    return method == METHOD


def check_options(*, method: str, rollback_policy: str, dry_run: bool) -> None:
    """The option combinations a restore point changes (before anything connects)."""
    if not uses_restore_point(method) or dry_run:
        return
    if rollback_policy == "restore":
        raise errors.PolicyRefused(
            "rollback policy 'restore' restores a pg_dump in place, but a restore point can "
            "only be recovered into a new data directory (a new cluster)",
            hint="with --backup-method restorePoint use --rollback-policy downgrade (the "
                 f"default) or none; recover to the restore point by hand if needed ({DOCS})",
            reason=reasons.RESTORE_POINT_NOT_RESTORABLE)


@dataclass(frozen=True)
class ArchiverState:
    """What the server says about its WAL archiving and the role's rights, read at once."""

    archive_mode: str
    archive_command: str | None  # None: not visible to this role
    archive_library: str | None
    segment_size: int
    in_recovery: bool
    current_wal: str | None
    last_archived_wal: str | None
    last_archived_time: datetime | None
    last_failed_wal: str | None
    last_failed_time: datetime | None
    now: datetime
    role: str
    database: str
    superuser: bool
    may_create: bool
    may_switch: bool

    @classmethod
    def read(cls, conn: Connection) -> ArchiverState:
        row = conn.execute(sa.text(_STATE_SQL)).mappings().one()
        conn.rollback()  # statistics are cached per transaction: the next read must be fresh
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    def archiving_problem(self) -> tuple[str, bool] | None:
        """(what is wrong, whether it is the archiver failing rather than its settings)."""
        if self.in_recovery:
            return ("the server is a standby (in recovery): a restore point can only be "
                    "created on the primary", False)
        if self.archive_mode == "off":
            return "WAL archiving is off (archive_mode = off)", False
        if self.archive_command == "" and self.archive_library == "":
            return ("archive_mode is on but neither archive_command nor archive_library is "
                    "set: WAL is kept, never archived", False)
        failing = self._failing()
        return (failing, True) if failing else None

    def _failing(self) -> str | None:
        last = (f"{self.last_archived_wal} at {_when(self.last_archived_time)}"
                if self.last_archived_wal else "none since the statistics were reset")
        failed, succeeded = self.last_failed_time, self.last_archived_time
        if failed is not None and (succeeded is None or failed >= succeeded):
            return (f"the WAL archiver is failing: archiving {self.last_failed_wal} failed at "
                    f"{_when(self.last_failed_time)}, and nothing was archived since (last "
                    f"success: {last}; pg_stat_archiver)")
        waiting = self.segments_waiting()
        if waiting > 0 and self.last_archived_time is not None \
                and self.now - self.last_archived_time > STALE_AFTER:
            return (f"the WAL archiver is stuck: {waiting} completed segment(s) wait to be "
                    f"archived and the last success was {_when(self.last_archived_time)} "
                    f"({last}; pg_stat_archiver)")
        return None

    def segments_waiting(self) -> int:
        """Completed segments not archived yet (the one being written does not count)."""
        if not self.current_wal or not self.last_archived_wal \
                or not _SEGMENT.match(self.last_archived_wal):
            return 0
        return max(0, segment_number(self.current_wal, self.segment_size)
                   - segment_number(self.last_archived_wal, self.segment_size) - 1)

    def privilege_problem(self) -> str | None:
        if self.superuser:
            return None
        missing = [name for name, allowed in zip(FUNCTIONS, (self.may_create, self.may_switch),
                                                 strict=True) if not allowed]
        if not missing:
            return None
        return ", ".join(missing)


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "never"


def segment_number(wal_file: str, segment_size: int) -> int:
    """The position of a WAL segment file (TTTTTTTTLLLLLLLLSSSSSSSS) within its timeline."""
    per_log = 0x1_0000_0000 // segment_size
    return int(wal_file[8:16], 16) * per_log + int(wal_file[16:24], 16)


def archived(last_archived_wal: str | None, segment: str) -> bool:
    """Whether the archiver's last file is `segment` or a later one (same or later timeline;
    the archiver works through completed segments in order)."""
    if not last_archived_wal or not _SEGMENT.match(last_archived_wal):
        return False  # e.g. a timeline history file: keep waiting for a segment
    return last_archived_wal[:24] >= segment


def check(conn: Connection) -> ArchiverState:
    """Preflight: archiving is on and healthy and the role may create restore points; a
    refusal otherwise (nothing is changed)."""
    state = ArchiverState.read(conn)
    problem = state.archiving_problem()
    if problem is not None:
        text, failing = problem
        hint = ("fix the archiver (its log says why; check the archive's storage), or use "
                "--backup-method pgDump" if failing else
                "turn WAL archiving on (archive_mode = on with an archive_command or "
                "archive_library; CloudNativePG, pgBackRest and WAL-G set this up), or use "
                "--backup-method pgDump")
        error = errors.InfrastructureError if failing else errors.PolicyRefused
        raise error(f"backup method restorePoint needs working WAL archiving: {text}",
                    hint=hint, reason=reasons.WAL_ARCHIVING_UNAVAILABLE)
    missing = state.privilege_problem()
    if missing is not None:
        raise errors.PolicyRefused(
            f"role {state.role!r} may not create a restore point: {missing} need(s) superuser "
            "or EXECUTE granted explicitly (PostgreSQL revokes it from PUBLIC)",
            hint=f"as a superuser, connected to database {state.database!r} (function rights "
                 f"are per database): GRANT EXECUTE ON FUNCTION {missing} TO "
                 f"\"{state.role}\"; or use --backup-method pgDump",
            reason=reasons.RESTORE_POINT_NOT_PERMITTED)
    return state


def restore_point_name(database: str, from_revision: str | None, when: datetime) -> str:
    """`<database>-<from-revision>-<UTC time to the ms>`, at most NAME_LIMIT bytes: when the
    names are too long they are cut and a digest of both keeps the name unique."""
    stamp = when.astimezone(UTC).strftime("%Y%m%dT%H%M%S.") + f"{when.microsecond // 1000:03d}Z"
    name = _NAME_CHARS.sub("_", database) or "db"
    revision = _NAME_CHARS.sub("_", from_revision or "base")
    whole = f"{name}-{revision}-{stamp}"
    if len(whole) <= NAME_LIMIT:
        return whole
    digest = hashlib.sha256(f"{database}\0{from_revision}".encode()).hexdigest()[:8]
    revision = revision[:12]
    room = NAME_LIMIT - len(stamp) - len(revision) - len(digest) - 3
    return f"{name[:room]}-{digest}-{revision}-{stamp}"


@dataclass
class _Waiter:
    """Polls pg_stat_archiver until `segment` is archived, reporting while it waits."""

    conn: Connection
    segment: str
    limit: float
    on_wait: Callable[[ArchiverState, float], None]

    def wait(self) -> ArchiverState:
        started = time.monotonic()
        for attempt in range(1_000_000):
            state = ArchiverState.read(self.conn)
            if archived(state.last_archived_wal, self.segment):
                return state
            waited = time.monotonic() - started
            if waited >= self.limit:
                raise errors.InfrastructureError(
                    f"the WAL segment {self.segment} holding the restore point was not archived "
                    f"within {table.ARCHIVE_WAIT.title} {self.limit:g}s (last archived: "
                    f"{state.last_archived_wal or 'none'} at {_when(state.last_archived_time)};"
                    f" last failure: {state.last_failed_wal or 'none'} at "
                    f"{_when(state.last_failed_time)}): the run stopped before any change",
                    hint=f"check the archiver (server log, pg_stat_archiver) and the archive's "
                         f"storage, or raise {table.ARCHIVE_WAIT.flag} "
                         f"({table.ARCHIVE_WAIT.cr_name})",
                    reason=reasons.WAL_ARCHIVING_UNAVAILABLE)
            self.on_wait(state, waited)
            time.sleep(min(POLL_SECONDS[min(attempt, len(POLL_SECONDS) - 1)],
                           self.limit - waited))
        raise AssertionError("unreachable")


def take(database_url: str, *, from_revision: str | None, wait_seconds: float,
         reporter: progress.Reporter) -> progress.BackupStatus:
    """Create the restore point, end its WAL segment and wait until the archive holds it."""
    database = db.parse_url(database_url).database or ""
    started = datetime.now(UTC)
    engine = db.make_engine(database_url).execution_options(isolation_level="AUTOCOMMIT")
    with db.connect(engine) as conn:
        check(conn)  # again: the plan may have taken minutes since the preflight
        name = restore_point_name(
            str(conn.exec_driver_sql("SELECT current_database()").scalar_one()) or database,
            from_revision, started)
        lsn = str(conn.execute(sa.text("SELECT pg_create_restore_point(:name)::text"),
                               {"name": name}).scalar_one())
        segment = str(conn.execute(sa.text("SELECT pg_walfile_name(CAST(:lsn AS pg_lsn))"),
                                   {"lsn": lsn}).scalar_one())
        conn.exec_driver_sql("SELECT pg_switch_wal()")
        point = functools.partial(events.RestorePointProgress, method=METHOD,
                                  restorePoint=name, lsn=lsn, segment=segment)
        reporter.emit(point(state="InProgress", message=f"restore point {name} at {lsn}: "
                            f"waiting until WAL segment {segment} is archived"))
        last_notice = [0.0]

        def waiting(state: ArchiverState, waited: float) -> None:
            if waited - last_notice[0] >= 2.0:
                last_notice[0] = waited
                reporter.emit(point(
                    state="InProgress", waitingSeconds=round(waited),
                    lastArchivedWal=state.last_archived_wal,
                    message=f"waiting {waited:.0f}s for WAL segment {segment} to be "
                            f"archived (last archived: {state.last_archived_wal})"))

        _Waiter(conn, segment, wait_seconds, waiting).wait()
    status = progress.BackupStatus(url="", verified=True, completedAt=progress.now(),
                                   method=METHOD, restorePoint=name, lsn=lsn)
    reporter.emit(point(state="Verified", message=f"restore point {name} at {lsn} is "
                        f"archived (WAL segment {segment})"))
    return status


def restorable(status: progress.BackupStatus | None) -> progress.BackupStatus | None:
    """The backup a rollback may restore in place: a dump, never a restore point."""
    return None if status is None or status.method == METHOD else status


def note(status: progress.BackupStatus) -> str:
    """How a run's message names the restore point."""
    return (f"restore point {status.restorePoint} at LSN {status.lsn} (archived; recover a new "
            f"cluster to it with recovery_target_name, {DOCS})")
