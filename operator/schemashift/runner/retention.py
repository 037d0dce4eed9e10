"""Backup retention: which verified backups stay, `backups list` and `backups prune`.

Candidates are only objects that are verified schemashift backups (a `.dump` key of the layout
in runner/backup.py, or a directory backup's `.dumpdir` manifest of runner/dump_manifest.py,
whose metadata holds the verified-at time and sha256; deleting a manifest deletes its parts),
grouped by the
database named in their metadata. Per database, newest first:
- the newest verified backup is always kept, and so is the backup of the run applying it;
- `keep` N (> 0) keeps the newest N, `maxAge` (> 0) keeps those started within it; a backup
  outside either limit is deleted. 0 means no limit; with both 0 nothing is deleted.
Targeted copies (runner/targeted_copy.py) are not backups and are never candidates: a downgrade
may still need them.

`prune` also removes what interrupted runs left under the prefix: `.partial` objects and
incomplete multipart uploads of the backup and targeted-copy layouts, only when older than
`stale_after` (default: backup.ABANDONED_AFTER), so a backup or copy still being written is
never touched. `dry_run` deletes nothing and reports what it would delete.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

from schemashift import db, durations, errors, events, progress, reasons
from schemashift.runner import backup, dump_manifest
from schemashift.runner import options_table as table
from schemashift.runner.options import RunOptions
from schemashift.runner.targeted_copy import COPIES_FOLDER, COPY_SUFFIX
from schemashift.storage import s3

_STAMP = r"\d{8}T\d{6}\.\d{3}Z-[^/]+"
# A leftover of an interrupted run: `<database>/<stamp>-<rev>.dump.partial` or
# `<database>/copies/<stamp>-<…>.copy.partial` (and the same keys of incomplete uploads).
_LEFTOVER = re.compile(rf"(^|/)[^/]+/({re.escape(COPIES_FOLDER)})?{_STAMP}"
                       rf"({re.escape(backup.BACKUP_SUFFIX)}|{re.escape(COPY_SUFFIX)})"
                       rf"{re.escape(backup.PARTIAL_SUFFIX)}$")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class StoredBackup:
    """A backup (`.dump`, or `.dumpdir` manifest) under the prefix, as `backups list` shows it."""

    url: str
    database: str
    fromRevision: str
    time: str
    sizeBytes: int
    verified: bool

    def started(self) -> datetime:
        return datetime.strptime(self.time, _TIME_FORMAT).replace(tzinfo=UTC)


@dataclass
class Decision:
    url: str
    database: str
    action: str  # keep | delete | deleted | would delete
    why: str


@dataclass
class PruneReport:
    decisions: list[Decision] = field(default_factory=list)
    dry_run: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def deleted(self) -> list[str]:
        return [d.url for d in self.decisions if d.action in ("deleted", "would delete")]

    def to_dict(self) -> dict[str, Any]:
        return {"dryRun": self.dry_run, "decisions": [asdict(d) for d in self.decisions],
                "problems": list(self.problems)}


@dataclass(frozen=True)
class Limits:
    keep: int
    max_age_s: float

    @classmethod
    def checked(cls, keep: Any, max_age: Any) -> Limits:
        """Both validated by their option rows (the one declaration of their bounds)."""
        return cls(table.BACKUP_KEEP.check(keep),
                   table.BACKUP_MAX_AGE.seconds(table.BACKUP_MAX_AGE.check(max_age)))

    @property
    def active(self) -> bool:
        return self.keep > 0 or self.max_age_s > 0

    def describe(self) -> str:
        parts = [f"keep {self.keep}" if self.keep else "",
                 f"maxAge {durations.text(self.max_age_s)}" if self.max_age_s else ""]
        return ", ".join(p for p in parts if p) or "no limit"


def list_stored(backup_url: str, database: str | None = None) -> list[StoredBackup]:
    """Every backup under the prefix (of one database when given), newest first."""
    prefix = s3.parse_url(backup_url, prefix=True)
    store = backup.open_store()
    store.check_access(prefix)
    found = [_stored(store.head(o.url)) for o in store.list(prefix)
             if o.url.key.endswith((backup.BACKUP_SUFFIX, dump_manifest.SUFFIX))]
    chosen = [b for b in found if database is None or b.database == database]
    return sorted(chosen, key=lambda b: (b.time, b.url), reverse=True)


def _stored(info: s3.ObjectInfo) -> StoredBackup:
    meta = info.metadata
    verified = backup.META_VERIFIED_AT in meta and backup.META_SHA256 in meta
    name = info.url.key.rsplit("/", 1)[-1]
    folder = info.url.key.rsplit("/", 2)[-2] if info.url.key.count("/") else ""
    started = meta.get(backup.META_STARTED_AT) or _time_of_key(name) or \
        datetime.fromisoformat(info.last_modified).strftime(_TIME_FORMAT)
    return StoredBackup(
        url=str(info.url), database=unquote(meta.get(backup.META_DATABASE, folder)),
        fromRevision=unquote(meta.get(backup.META_FROM_REVISION, "?")), time=started,
        sizeBytes=info.size, verified=verified)


def _time_of_key(name: str) -> str | None:
    try:
        return datetime.strptime(name[:15], "%Y%m%dT%H%M%S").strftime(_TIME_FORMAT)
    except ValueError:
        return None


def choose(backups: Sequence[StoredBackup], limits: Limits, now: datetime,
           protect: Iterable[str] = ()) -> list[Decision]:
    """keep/delete for each backup (one database's or several), newest first per database."""
    protected = set(protect)
    decisions: list[Decision] = []
    by_database: dict[str, list[StoredBackup]] = {}
    for item in sorted(backups, key=lambda b: (b.time, b.url), reverse=True):
        by_database.setdefault(item.database, []).append(item)
    for database, items in by_database.items():
        verified = [b for b in items if b.verified]
        for index, item in enumerate(verified):
            decisions.append(Decision(item.url, database, *_verdict(index, item, limits, now,
                                                                    protected)))
        decisions += [Decision(b.url, database, "keep", "not verified: not a candidate")
                      for b in items if not b.verified]
    return decisions


def _verdict(index: int, item: StoredBackup, limits: Limits, now: datetime,
             protected: set[str]) -> tuple[str, str]:
    if index == 0:
        return "keep", "the newest verified backup"
    if item.url in protected:
        return "keep", "this run's backup"
    if limits.keep and index >= limits.keep:
        return "delete", f"beyond the newest {limits.keep}"
    age = (now - item.started()).total_seconds()
    if limits.max_age_s and age > limits.max_age_s:
        return "delete", (f"older than {durations.text(limits.max_age_s)} "
                          f"(started {item.time})")
    return "keep", f"within {limits.describe()}"


def prune(backup_url: str, limits: Limits, *, dry_run: bool, stale_after_s: float,
          database: str | None = None, protect: Iterable[str] = ()) -> PruneReport:
    """Apply `limits` under the prefix, then remove stale leftovers of interrupted runs."""
    prefix = s3.parse_url(backup_url, prefix=True)
    store = backup.open_store()
    store.check_access(prefix)
    now = datetime.now(UTC)
    report = PruneReport(dry_run=dry_run)
    decisions = choose(list_stored(backup_url, database), limits, now, protect)
    for decision in decisions:
        if decision.action == "delete":
            decision.action = "would delete" if dry_run else _delete(
                store, s3.parse_url(decision.url), report)
    report.decisions = decisions
    report.decisions += _leftovers(store, prefix, now - timedelta(seconds=stale_after_s),
                                   dry_run, report, database)
    return report


def _delete(store: s3.ObjectStore, url: s3.S3Url, report: PruneReport) -> str:
    """The backup first (a manifest gone, its parts are no backup), then a directory backup's
    parts; parts an interruption leaves are orphans that backup's cleanup removes."""
    try:
        store.delete(url)
        if url.key.endswith(dump_manifest.SUFFIX):
            for part in list(store.list(url.child(dump_manifest.PARTS))):
                store.delete(part.url)
    except errors.SchemashiftError as exc:
        if exc.reason == reasons.STORAGE_STALLED:
            raise
        report.problems.append(f"could not delete {url}: {exc.args[0]}")
        return "keep"
    return "deleted"


def _leftovers(store: s3.ObjectStore, prefix: s3.S3Url, before: datetime, dry_run: bool,
               report: PruneReport, database: str | None) -> list[Decision]:
    def ours(url: s3.S3Url) -> bool:
        rest = url.key.removeprefix(prefix.key)
        in_database = database is None or rest.split("/", 1)[0] == quote(database, safe="")
        return url.key.startswith(prefix.key) and in_database and bool(_LEFTOVER.search(rest))

    found: list[tuple[str, str, str, Callable[[], None]]] = [
        (str(u.url), f"incomplete upload started {u.initiated}", u.initiated,
         functools.partial(store.abort_upload, u))
        for u in store.pending_uploads(prefix) if ours(u.url)]
    found += [(str(o.url), f"unfinished object written {o.last_modified}", o.last_modified,
               functools.partial(store.delete, o.url))
              for o in store.list(prefix) if ours(o.url)]
    decisions = []
    for url, what, when, remove in found:
        name = unquote(url.removeprefix(str(prefix)).split("/", 1)[0])
        if datetime.fromisoformat(when) >= before:
            decisions.append(Decision(url, name, "keep", f"{what}: may still be running"))
            continue
        action = "would delete" if dry_run else "deleted"
        if not dry_run:
            try:
                remove()
            except errors.SchemashiftError as exc:
                if exc.reason == reasons.STORAGE_STALLED:
                    raise
                report.problems.append(f"could not remove {url}: {exc.args[0]}")
                action = "keep"
        decisions.append(Decision(url, name, action, f"{what}: left by an interrupted run"))
    return decisions


def after_backup(options: RunOptions, status: progress.BackupStatus | None,
                 reporter: progress.Reporter, database_url: str) -> None:
    """The run's retention, once its backup is verified: never fails the run (a problem is
    reported in the `backup_retention` event); nothing happens without a limit."""
    limits = Limits.checked(options.backup_keep, options.backup_max_age)
    if not limits.active or options.backup_url is None:
        return
    database = _database_name(database_url)
    protect = [status.url] if status is not None and status.url else []
    try:
        report = prune(options.backup_url, limits, dry_run=False,
                       stale_after_s=backup.ABANDONED_AFTER.total_seconds(), database=database,
                       protect=protect)
    except errors.SchemashiftError as exc:
        reporter.emit(events.BackupRetention(limits=limits.describe(), deleted=[], kept=[],
                                             message=f"retention not applied: {exc.args[0]}"))
        return
    kept = [d.url for d in report.decisions if d.action == "keep"]
    reporter.emit(events.BackupRetention(
        limits=limits.describe(), deleted=report.deleted, kept=kept, problems=report.problems,
        message=f"retention ({limits.describe()}): deleted {len(report.deleted)}, "
                f"kept {len(kept)}"))


def _database_name(database_url: str) -> str:
    return db.parse_url(database_url).database or ""


def prune_command(backup_url: str, keep: Any, max_age: Any, *, dry_run: bool,
                  stale_after: str, database: str | None) -> PruneReport:
    """`schemashift backups prune`: every input checked before anything connects."""
    limits = Limits.checked(keep, max_age)
    stale_after_s = table.STALE_AFTER.seconds(table.STALE_AFTER.check(stale_after))
    s3.parse_url(backup_url, prefix=True)
    backup.open_store()
    return prune(backup_url, limits, dry_run=dry_run, stale_after_s=stale_after_s,
                 database=database)


def format_table(rows: Sequence[StoredBackup]) -> str:
    header = ("URL", "DATABASE", "FROM-REVISION", "TIME", "SIZE", "VERIFIED")
    lines = [(r.url, r.database, r.fromRevision, r.time, str(r.sizeBytes),
              "yes" if r.verified else "no") for r in rows]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in [header, *lines])


def format_report(report: PruneReport) -> str:
    verb = "would delete" if report.dry_run else "deleted"
    lines = [f"{d.action:12}  {d.url}  ({d.why})" for d in report.decisions]
    lines.append(f"{len(report.deleted)} object(s) {verb}"
                 + (" (dry run: nothing was deleted)" if report.dry_run else ""))
    lines += [f"problem: {p}" for p in report.problems]
    return "\n".join(lines)
