"""Refusing a pg_dump that cannot finish before the run's deadline, before anything changes.

A Job has `deadlineSeconds`; a dump of a big database can need more than that, and the run
would then be killed half-way with nothing migrated after a long wait. So while pg_dump runs,
this watches its COPY commands (`pg_stat_progress_copy` of the sessions carrying this run's
application_name): the share of the table data already copied (rows copied against the table's
row estimate, weighted by the table's size on disk) over the time since the first COPY began
is this run's measured throughput. After SAMPLE_SECONDS of copying it projects the rest of the
dump, plus VERIFY_SHARE for reading the backup back, against the time left before the deadline.
When it cannot fit, pg_dump is stopped and the run refused (BackupWouldOverrunDeadline), naming
the method whose cost does not grow with the database: restorePoint. The size counted is the
table data pg_dump reads (`pg_table_size`: heap and TOAST); the message also gives
`pg_database_size`, which includes indexes (a dump does not copy them).

Without a deadline (a local run without --deadline-seconds) nothing is watched.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from schemashift import db, errors, events, progress, reasons
from schemashift.runner import options_table as table

SAMPLE_SECONDS = 5.0
POLL_SECONDS = 0.25
VERIFY_SHARE = 0.25  # reading the backup back, on top of the dump (conservative)
APPLICATION_PREFIX = "schemashift-backup-"

_SIZES_SQL = """
SELECT coalesce(sum(pg_table_size(c.oid)), 0)::bigint AS tables,
       pg_database_size(current_database()) AS database
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\\_toast%'
"""
_COPIES_SQL = """
SELECT p.relid::bigint AS relid, p.tuples_processed, p.bytes_processed,
       c.reltuples, pg_table_size(p.relid) AS size
  FROM pg_stat_progress_copy p
  JOIN pg_stat_activity a ON a.pid = p.pid
  JOIN pg_class c ON c.oid = p.relid
 WHERE a.application_name = :application AND p.datname = current_database()
"""


@dataclass(frozen=True)
class Estimate:
    copied: float  # bytes of table data
    total: int
    database: int
    seconds: float  # copying so far
    remaining: float  # seconds before the deadline

    @property
    def rate(self) -> float:
        return self.copied / self.seconds if self.seconds > 0 else 0.0

    @property
    def projected(self) -> float:
        """Seconds the rest of the dump and its verification need at the measured rate."""
        if self.rate <= 0:
            return float("inf")
        return (self.total - self.copied) / self.rate * (1 + VERIFY_SHARE)

    def fits(self) -> bool:
        return self.projected <= self.remaining


class SizeGuard:
    """Watches one pg_dump run (see the module's text); `raise_refusal` after it stopped."""

    def __init__(self, database_url: str, deadline_at: float | None,
                 reporter: progress.Reporter):
        self.database_url = database_url
        self.deadline_at = deadline_at
        self.reporter = reporter
        self.application = APPLICATION_PREFIX + secrets.token_hex(6)
        self.refusal: errors.PolicyRefused | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def tagged(self, env: dict[str, str]) -> dict[str, str]:
        """pg_dump's environment, naming its sessions so that they can be told apart."""
        return {**env, "PGAPPNAME": self.application}

    def watch(self, stop_dump: Callable[[], None]) -> None:
        if self.deadline_at is None:
            return
        self._thread = threading.Thread(target=self._run, args=(stop_dump,), daemon=True,
                                        name="size-guard")
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(30)

    def raise_refusal(self) -> None:
        if self.refusal is not None:
            raise self.refusal

    def _run(self, stop_dump: Callable[[], None]) -> None:
        try:
            estimate = self._sample()
        except Exception as exc:  # the guard only ever refuses on evidence
            self.reporter.emit(events.EstimateUnavailable(
                message=f"no estimate of the dump's duration: {type(exc).__name__}"))
            return
        if estimate is None:
            return
        self.reporter.emit(events.BackupEstimate(
            copiedBytes=round(estimate.copied), tableBytes=estimate.total,
            databaseBytes=estimate.database, mbps=round(estimate.rate / 1e6, 1),
            projectedSeconds=round(min(estimate.projected, 1e9)),
            remainingSeconds=round(estimate.remaining), fits=estimate.fits()))
        if not estimate.fits():
            self.refusal = _refusal(estimate)
            stop_dump()

    def _sample(self) -> Estimate | None:
        engine = db.make_engine(self.database_url).execution_options(
            isolation_level="AUTOCOMMIT")
        with db.connect(engine) as conn:
            sizes = conn.execute(sa.text(_SIZES_SQL)).one()
            seen: dict[int, tuple[int, float]] = {}  # relid → (size, share copied)
            first_copy: float | None = None
            while not self._stopped.wait(POLL_SECONDS):
                now = time.monotonic()
                copying = self._copies(conn)
                for relid in set(seen) - set(copying):
                    seen[relid] = (seen[relid][0], 1.0)  # its COPY ended: copied
                seen.update(copying)
                if copying and first_copy is None:
                    first_copy = now
                if first_copy is None or now - first_copy < SAMPLE_SECONDS:
                    continue
                assert self.deadline_at is not None
                estimate = Estimate(sum(size * share for size, share in seen.values()),
                                    int(sizes.tables), int(sizes.database), now - first_copy,
                                    self.deadline_at - now)
                if estimate.rate > 0:  # nothing copied yet is no evidence: keep watching
                    return estimate
        return None

    def _copies(self, conn: Connection) -> dict[int, tuple[int, float]]:
        found = {}
        for row in conn.execute(sa.text(_COPIES_SQL), {"application": self.application}):
            size = int(row.size or 0)
            if row.reltuples and row.reltuples > 0:
                share = row.tuples_processed / row.reltuples
            else:  # never analyzed: the COPY's text bytes against the size on disk
                share = row.bytes_processed / size if size else 1.0
            found[int(row.relid)] = (size, min(1.0, float(share)))
        return found


def _refusal(estimate: Estimate) -> errors.PolicyRefused:
    return errors.PolicyRefused(
        f"a pgDump backup of this database would overrun the deadline: "
        f"{estimate.total / 1e9:.2f} GB of table data ({estimate.database / 1e9:.2f} GB on disk "
        f"with indexes) at the {estimate.rate / 1e6:.1f} MB/s this run's pg_dump reached in its "
        f"first {estimate.seconds:.0f}s needs about {_duration(estimate.projected)} more, but "
        f"only {_duration(estimate.remaining)} are left of {table.DEADLINE_SECONDS.cr_name}; "
        "pg_dump was stopped before any change",
        hint="use backup method restorePoint (--backup-method restorePoint, "
             "spec.backup.method: restorePoint; needs WAL archiving), whose cost does not grow "
             f"with the database, or raise {table.DEADLINE_SECONDS.cr_name}",
        reason=reasons.BACKUP_WOULD_OVERRUN_DEADLINE)


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "an unbounded time"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{rest:02d}s" if minutes \
        else f"{rest}s"
