"""Verified backups: pg_dump streamed into object storage, read back and checked; restore.

With one CPU the dump is one `pg_dump -Fc` stream; with more, `pg_dump -Fd -j N` whose files
stream into storage as they are written (runner/parallel_backup.py, runner/dump_manifest.py:
`<stamp>-<rev>.dumpdir` is then the backup, a manifest of its parts). Both use gzip level 1
(DUMP_COMPRESSION): measured here ~3x faster than pg_dump's default level for ~5% more bytes,
and compression is what bounds a dump's speed on few CPUs.

Key layout under the backup URL's prefix (decided here; the issue left it open):

    <prefix><database>/<YYYYmmddTHHMMSS.fffZ>-<from-revision|base>.dump           verified backup
    <prefix><database>/<YYYYmmddTHHMMSS.fffZ>-<from-revision|base>.dump.partial   in progress
    <prefix><database>/<YYYYmmddTHHMMSS.fffZ>-<from-revision|base>.dumpdir        verified backup
    <prefix><database>/<…>.dumpdir.parts/<file>                                     its parts

The dump is uploaded (multipart) to the `.partial` key, read back (size + sha256, and
`pg_restore --list` parses it), then copied server-side to the `.dump` key with the full metadata
(sha256, size, verified-at, …) and the `.partial` is deleted. So a `.dump` key exists only for a
verified backup; a killed run leaves at most an incomplete multipart upload or a `.partial`, which
listing and restore ignore. Object metadata (x-amz-meta-*) names are the META_* constants below.

Leftovers of interrupted runs (killed, or stalled storage) are removed by the next backup of the
same database to the same prefix: only keys of this layout ending in `.partial`, and only those
started more than ABANDONED_AFTER before it, since a backup of the same database may be running
concurrently (a `schemashift backup` holds no migration lock) and a large one takes hours. Each
removal, and each younger leftover kept, is reported in a `backup_cleanup` event.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Unpack
from urllib.parse import quote

from schemashift import db, errors, events, progress, reasons, scripts
from schemashift.project import Project
from schemashift.runner import dump_dir, dump_manifest, pgrestore, pgtools, restore_dir
from schemashift.runner.options import parse_duration
from schemashift.runner.pgtools import check_pg_dump_version, find_pg_tool
from schemashift.runner.size_guard import SizeGuard
from schemashift.storage import s3
from schemashift.storage.upload import MultipartUpload, UploadedStream

__all__ = [
    "backup", "check_pg_dump_version", "find_pg_tool", "list_backups", "restore",
    "restore_backup", "take_backup",
]

BACKUP_SUFFIX = ".dump"
PARTIAL_SUFFIX = ".partial"
META_DATABASE = "schemashift-database"
META_FROM_REVISION = "schemashift-from-revision"
META_PG_DUMP_VERSION = "schemashift-pg-dump-version"
META_SERVER_VERSION = "schemashift-server-version"
META_STARTED_AT = "schemashift-started-at"
META_SHA256 = "schemashift-sha256"
META_SIZE = "schemashift-size"
META_VERIFIED_AT = "schemashift-verified-at"
META_TOC_ENTRIES = "schemashift-toc-entries"
META_FORMAT = "schemashift-format"  # "directory" for a .dumpdir manifest; absent: -Fc archive
DUMP_COMPRESSION = "1"  # pg_dump --compress: gzip level 1 (see above)
PROGRESS_INTERVAL_SECONDS = 2.0
ABANDONED_AFTER = timedelta(hours=6)
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")
_PARTIAL_NAME = re.compile(r"^\d{8}T\d{6}\.\d{3}Z-[A-Za-z0-9_.\-]+" + re.escape(BACKUP_SUFFIX)
                           + re.escape(PARTIAL_SUFFIX) + "$")


class Progress:
    """Progress events for a transfer: at start, every PROGRESS_INTERVAL_SECONDS, at the end."""

    def __init__(self, reporter: progress.Reporter, kind: events.TransferKind, url: str):
        self.reporter = reporter
        self.kind = kind
        self.url = url
        self.started = time.monotonic()
        self.last = self.started
        self.done = 0

    def __call__(self, done: int) -> None:
        self.done = done
        if time.monotonic() - self.last >= PROGRESS_INTERVAL_SECONDS:
            self.emit("InProgress", done)

    def waiting_on(self, store: s3.ObjectStore) -> None:
        """While `store` moves no data, say so every PROGRESS_INTERVAL_SECONDS."""
        def waiting(idle: float) -> None:
            if time.monotonic() - self.last >= PROGRESS_INTERVAL_SECONDS:
                self.emit("InProgress", self.done, waitingSeconds=round(idle),
                          message=f"object storage at {store.endpoint} has moved no data for "
                                  f"{idle:.0f}s (the run gives up at {store.stall_seconds:g}s)")

        store.on_wait = waiting

    def emit(self, state: events.TransferState, done: int,
             **detail: Unpack[events.TransferDetail]) -> None:
        self.last = time.monotonic()
        elapsed = max(self.last - self.started, 1e-6)
        self.reporter.emit(events.Transfer(kind=self.kind, state=state, url=self.url, bytes=done,
                                           mbps=round(done / elapsed / 1e6, 1), detail=detail))


def backup_key(database: str, from_revision: str | None, when: datetime | None = None,
               suffix: str = BACKUP_SUFFIX) -> str:
    when = when or datetime.now(UTC)
    stamp = when.strftime("%Y%m%dT%H%M%S.") + f"{when.microsecond // 1000:03d}Z"
    revision = _UNSAFE_KEY_CHARS.sub("_", from_revision or "base")
    return f"{quote(database, safe='')}/{stamp}-{revision}{suffix}"


def open_store() -> s3.ObjectStore:
    """The object store boto3's configuration names, with our stall limit; bad settings are
    usage errors raised before anything connects."""
    value = os.environ.get(s3.STALL_TIMEOUT_ENV, "").strip()
    seconds = parse_duration(value, name=s3.STALL_TIMEOUT_ENV) if value else \
        s3.DEFAULT_STALL_SECONDS
    if seconds <= 0:
        raise errors.UsageError(f"{s3.STALL_TIMEOUT_ENV} must be greater than zero, not "
                                f"{value!r}", hint="e.g. 30s or 2m")
    return s3.ObjectStore.from_environment(stall_seconds=seconds)


def check_destination(backup_url: str) -> None:
    """Preflight: the backup URL and the storage settings are usable (nothing connects)."""
    s3.parse_url(backup_url, prefix=True)
    open_store()


def take_backup(database_url: str, backup_url: str, *, from_revision: str | None,
                reporter: progress.Reporter, pg_bin_dir: Path | None = None,
                deadline_at: float | None = None, jobs: int | None = None
                ) -> progress.BackupStatus:
    """Dump the database into object storage; returns only a verified backup. `deadline_at`
    (time.monotonic()) lets the size guard refuse a dump that cannot finish before it."""
    jobs = dump_dir.dump_jobs() if jobs is None else jobs
    destination = s3.parse_url(backup_url, prefix=True)
    store = open_store()
    database = db.parse_url(database_url).database or ""
    started = datetime.now(UTC)
    suffix = dump_manifest.SUFFIX if jobs > 1 else BACKUP_SUFFIX
    final = destination.child(backup_key(database, from_revision, started, suffix))
    partial = s3.S3Url(final.bucket, final.key + PARTIAL_SUFFIX)
    meter = Progress(reporter, "backup", str(final))
    meter.waiting_on(store)
    store.check_access(destination)
    server_version_num = _server_version_num(database_url)
    pg_bin_dir = pgtools.tools_dir(server_version_num, pg_bin_dir)  # one version for all tools
    pg_dump_version = check_pg_dump_version(server_version_num, pg_bin_dir)
    find_pg_tool("pg_restore", pg_bin_dir)  # needed to verify: fail before dumping, not after
    find_pg_tool("psql", pg_bin_dir)  # a rollback by restore runs the restore through psql
    metadata = {
        META_DATABASE: quote(database, safe=""),
        META_FROM_REVISION: quote(from_revision or "base", safe=""),
        META_PG_DUMP_VERSION: pg_dump_version,
        META_SERVER_VERSION: pgtools.server_version_text(server_version_num),
        META_STARTED_AT: progress.now(),
    }
    meter.emit("InProgress", 0)
    clean_abandoned(store, destination.child(quote(database, safe="") + "/"),
                    started - ABANDONED_AFTER, reporter)
    guard = SizeGuard(database_url, deadline_at, reporter)
    if jobs > 1:
        from schemashift.runner import parallel_backup  # it builds on this module's layout

        parallel_backup.clean_orphaned_parts(store, destination.child(quote(database, safe="")
                                             + "/"), started - ABANDONED_AFTER, reporter)
        return parallel_backup.take(store, final, metadata, database_url, meter, pg_bin_dir,
                                    jobs, guard)
    uploaded = _dump_into(store, partial, metadata, database_url, meter, pg_bin_dir, guard)
    meter.emit("Uploaded", uploaded.size, sha256=uploaded.sha256)
    try:
        entries = _verify(store, partial, uploaded, pg_bin_dir)
        metadata |= {META_SHA256: uploaded.sha256, META_SIZE: str(uploaded.size),
                     META_VERIFIED_AT: progress.now(), META_TOC_ENTRIES: str(entries)}
        store.publish(partial, final, metadata)
        if store.head(final).size != uploaded.size:
            store.delete(final)
            raise errors.MigrationFailed(f"the copy of the verified backup to {final} has the "
                                         "wrong size", reason=reasons.BACKUP_VERIFY_FAILED)
    finally:
        _delete_quietly(store, partial)
    status = progress.BackupStatus(url=str(final), sizeBytes=uploaded.size,
                                   sha256=uploaded.sha256, verified=True,
                                   completedAt=progress.now())
    meter.emit("Verified", uploaded.size, sha256=uploaded.sha256, entries=entries)
    return status


def _server_version_num(database_url: str) -> int:
    with db.connect(db.make_engine(database_url)) as conn:
        return db.server_version_num(conn)


def _dump_into(store: s3.ObjectStore, partial: s3.S3Url, metadata: dict[str, str],
               database_url: str, meter: Progress, pg_bin_dir: Path | None,
               guard: SizeGuard) -> UploadedStream:
    """pg_dump's stdout into a multipart upload; completed only if pg_dump succeeded."""
    pg_dump = find_pg_tool("pg_dump", pg_bin_dir)
    dbname, env = pgtools.connection_args(database_url)
    upload = MultipartUpload.begin(store, partial, metadata)
    try:
        process = subprocess.Popen(
            [str(pg_dump), "--format=custom", f"--compress={DUMP_COMPRESSION}", "--no-password",
             f"--dbname={dbname}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=guard.tagged(env), bufsize=0)
    except OSError as exc:
        upload.abort()
        raise errors.UsageError(f"cannot start {pg_dump}: {exc}",
                                hint="check the PostgreSQL client tools") from None
    assert process.stdout is not None and process.stderr is not None
    stderr = pgtools.OutputTail(process.stderr)
    guard.watch(process.kill)
    try:
        uploaded = upload.send(process.stdout, meter, store.on_wait)
        returncode = process.wait()
        guard.stop()
        if returncode != 0:
            guard.raise_refusal()
            raise errors.MigrationFailed(
                f"pg_dump failed (exit {returncode}): "
                f"{stderr.text(pgtools.password_of(database_url)) or 'no message'}",
                hint="the database role must be able to read every table (and sequence) it dumps",
                reason=reasons.BACKUP_FAILED)
        upload.complete()
    except BaseException:
        pgtools.stop(process)
        upload.abort()
        raise
    finally:
        guard.stop()
        process.stdout.close()
    return uploaded


def _verify(store: s3.ObjectStore, partial: s3.S3Url, uploaded: UploadedStream,
            pg_bin_dir: Path | None) -> int:
    """Read the object back: size and sha256 must match and pg_restore must parse its TOC."""
    pg_restore = find_pg_tool("pg_restore", pg_bin_dir)
    process = subprocess.Popen([str(pg_restore), "--list"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    assert process.stderr is not None
    listing = pgtools.OutputTail(process.stdout)
    stderr = pgtools.OutputTail(process.stderr)
    digest = pgtools.DigestingFeed(process.stdin)
    try:
        store.read(partial, digest.feed)
        digest.close()
        returncode = process.wait()
        listing.wait()
    except BaseException:
        pgtools.stop(process)
        raise
    problems = []
    if digest.size != uploaded.size:
        problems.append(f"{digest.size} bytes read back, {uploaded.size} uploaded")
    if digest.hexdigest() != uploaded.sha256:
        problems.append("sha256 read back differs from the one computed while uploading")
    if returncode != 0:  # an empty database has an empty TOC: parsing is what counts
        problems.append(f"pg_restore --list cannot parse it: {stderr.text() or 'no message'}")
    refuse_unverified(str(partial), problems)
    return listing.lines


def refuse_unverified(what: str, problems: list[str]) -> None:
    """A backup whose read-back found problems is never recorded as one."""
    if problems:
        raise errors.MigrationFailed(
            f"backup {what} failed verification: {'; '.join(problems)}",
            hint="check the object store's health; nothing was recorded as a backup",
            reason=reasons.BACKUP_VERIFY_FAILED)


def _delete_quietly(store: s3.ObjectStore, url: s3.S3Url) -> None:
    # A leftover .partial is never taken for a backup (and the next backup removes it).
    store.discard(lambda: store.delete(url))


def clean_abandoned(store: s3.ObjectStore, folder: s3.S3Url, before: datetime,
                    reporter: progress.Reporter) -> list[str]:
    """Remove `.partial` objects and incomplete uploads of this layout in `folder` (one
    database's) started before `before`; report them and the younger ones kept. Returns the
    URLs removed. Best effort: a store that cannot list uploads does not stop the backup."""
    def ours(url: s3.S3Url) -> bool:
        rest = url.key.removeprefix(folder.key)
        return url.key.startswith(folder.key) and "/" not in rest and bool(
            _PARTIAL_NAME.match(rest))

    removed: list[str] = []
    kept: list[str] = []
    try:
        uploads = [u for u in store.pending_uploads(folder) if ours(u.url)]
        partials = [o for o in store.list(folder) if ours(o.url)]
    except errors.SchemashiftError as exc:
        if exc.reason == reasons.STORAGE_STALLED:
            raise
        reporter.emit(events.BackupCleanup(
            prefix=str(folder), removed=[], kept=[],
            message=f"could not list leftovers of earlier runs: {exc.args[0]}"))
        return removed
    found = [(f"{u.url} (incomplete upload {u.upload_id})", u.initiated,
              lambda u=u: store.abort_upload(u)) for u in uploads]
    found += [(str(o.url), o.last_modified, lambda o=o: store.delete(o.url)) for o in partials]
    for name, started, remove in found:
        if datetime.fromisoformat(started) < before and _removed(remove):
            removed.append(name)
        else:
            kept.append(name)
    if removed or kept:
        reporter.emit(events.BackupCleanup(prefix=str(folder), removed=removed, kept=kept,
                                           message=_cleanup_message(removed, kept)))
    return removed


def _removed(remove: Callable[[], None]) -> bool:
    try:
        remove()
    except errors.SchemashiftError as exc:
        if exc.reason == reasons.STORAGE_STALLED:
            raise
        return False  # e.g. the key may write but not delete: kept, and reported as kept
    return True


def _cleanup_message(removed: list[str], kept: list[str]) -> str:
    text = f"removed {len(removed)} leftover(s) of interrupted backups"
    if kept:
        hours = ABANDONED_AFTER.total_seconds() / 3600
        text += (f"; kept {len(kept)} younger than {hours:g}h (a backup may still be writing "
                 "them); when none is running, remove them with `aws s3 rm URL` or "
                 "`aws s3api abort-multipart-upload --bucket B --key K --upload-id ID`")
    return text


def list_backups(backup_url: str, database: str | None = None) -> list[s3.ObjectInfo]:
    """Verified backups under the prefix (optionally of one database), oldest first.

    Only `.dump` and `.dumpdir` objects carrying the verified-at metadata count: `.partial`
    objects, parts, incomplete multipart uploads and anything else under the prefix are ignored.
    """
    prefix = s3.parse_url(backup_url, prefix=True)
    if database is not None:
        prefix = prefix.child(quote(database, safe="") + "/")
    store = open_store()
    candidates = [o for o in store.list(prefix)
                  if o.url.key.endswith((BACKUP_SUFFIX, dump_manifest.SUFFIX))]
    verified = [info for info in map(store.head, (o.url for o in candidates))
                if META_VERIFIED_AT in info.metadata]
    return sorted(verified, key=lambda o: o.url.key.rsplit("/", 1)[-1])


def restore_backup(database_url: str, object_url: str, *, clean: bool, jobs: int,
                   reporter: progress.Reporter, pg_bin_dir: Path | None = None) -> None:
    """Restore a verified backup into the database (empty, or existing with `clean`: then
    everything in it is replaced, in one transaction when `jobs` is 1)."""
    source = s3.parse_url(object_url)
    db.parse_url(database_url)  # a URL that cannot work is refused before anything connects
    if jobs < 1:
        raise errors.UsageError(f"--jobs must be at least 1, not {jobs}")
    store = open_store()
    meter = Progress(reporter, "restore", str(source))
    meter.waiting_on(store)
    info = store.head(source)
    if source.key.endswith(PARTIAL_SUFFIX) or META_VERIFIED_AT not in info.metadata \
            or META_SHA256 not in info.metadata:
        raise errors.UsageError(
            f"{source} is not a verified schemashift backup",
            hint="restore a .dump key listed under the backup prefix; .partial objects are "
                 "unfinished uploads", reason=reasons.BACKUP_NOT_VERIFIED)
    restore_with = restore_dir.restore if info.metadata.get(META_FORMAT) == \
        dump_manifest.FORMAT else pgrestore.run_restore
    restore_with(
        store, info, expected_sha256=info.metadata[META_SHA256], database_url=database_url,
        clean=clean, jobs=jobs, meter=meter,
        pg_bin_dir=pgtools.tools_for_archive(info.metadata.get(META_PG_DUMP_VERSION), pg_bin_dir))


def backup(project: Project, url: str, reporter: progress.Reporter
           ) -> progress.BackupStatus:
    """`schemashift backup --backup-url s3://bucket/prefix/`."""
    database_url = project.require_database_url()
    with db.connect(db.make_engine(database_url)) as conn:
        revisions = scripts.current_revisions(conn)
    return take_backup(database_url, url, from_revision="+".join(revisions) or None,
                       reporter=reporter)


def restore(project: Project, url: str, *, clean: bool, jobs: int,
            reporter: progress.Reporter) -> None:
    """`schemashift restore s3://bucket/…/….dump [--clean] [-j N]`."""
    restore_backup(project.require_database_url(), url, clean=clean, jobs=jobs,
                   reporter=reporter)
