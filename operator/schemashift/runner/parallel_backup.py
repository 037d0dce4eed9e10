"""A pgDump backup in pg_dump's directory format, dumped with N jobs and uploaded as it is written.

Each table's file streams into its own multipart upload while its pg_dump worker writes it
(runner/dump_dir.py), is read back (size + sha256) as soon as it is complete, and leaves the
local disk then; pg_dump's other files (toc.dat, large objects) follow once it exited. The
backup is verified as a whole before it gets its name (runner/dump_manifest.py): every part
read back, the table of contents read back from storage and parsed by `pg_restore --list`,
every TABLE DATA entry of it present among the parts. Only then is the manifest written under
the final key. A failure or a kill before that leaves parts without a manifest, which are no
backup (listing and restore ignore them; the next backup to the prefix removes them once
abandoned, runner/backup.py).
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import IO

from schemashift import errors, events, progress, reasons
from schemashift.runner import backup as layout
from schemashift.runner import dump_dir, pgtools
from schemashift.runner.dump_manifest import PARTS, SUFFIX, Manifest, Part
from schemashift.runner.size_guard import SizeGuard
from schemashift.storage import s3
from schemashift.storage.upload import MultipartUpload

POLL_SECONDS = 0.1


class _Parts:
    """Uploads (and reads back) the parts on a thread pool; the bytes sent, for progress."""

    def __init__(self, store: s3.ObjectStore, prefix: s3.S3Url, meter: layout.Progress,
                 workers: int):
        self.store = store
        self.prefix = prefix
        self.meter = meter
        self.abandoned = threading.Event()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="dump-part")
        self._futures: list[Future[Part]] = []
        self._sent: dict[str, int] = {}
        self._lock = threading.Lock()

    def submit(self, name: str, stream: IO[bytes], local: Path) -> None:
        self._futures.append(self._pool.submit(self._upload, name, stream, local))

    def failed(self) -> BaseException | None:
        return next((f.exception() for f in self._futures if f.done() and f.exception()), None)

    def wait(self) -> list[Part]:
        try:
            return [future.result() for future in self._futures]
        finally:
            self._pool.shutdown(wait=True)

    def abandon(self) -> None:
        self.abandoned.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for future in self._futures:
            if future.done() and not future.cancelled() and future.exception() is None:
                self._discard(future.result())

    def _discard(self, part: Part) -> None:
        self.store.discard(lambda: self.store.delete(self.prefix.child(part.name)))

    def _progress(self, name: str, done: int) -> None:
        with self._lock:
            self._sent[name] = done
            self.meter(sum(self._sent.values()))

    def _upload(self, name: str, stream: IO[bytes], local: Path) -> Part:
        url = self.prefix.child(name)
        upload = MultipartUpload.begin(self.store, url, {})
        try:
            sent = upload.send(stream, lambda done: self._progress(name, done), concurrency=1)
            if sent.size:
                upload.complete()
            else:  # an empty file: S3 refuses a multipart upload without parts
                upload.abort()
                self.store.client_call(url, "put_object", notify=False, Bucket=url.bucket,
                                       Key=url.key, Body=b"")
        except BaseException:
            upload.abort()
            raise
        finally:
            stream.close()
        digest = pgtools.DigestingFeed(None)
        self.store.read(url, digest.update)
        if (digest.size, digest.hexdigest()) != (sent.size, sent.sha256):
            raise errors.MigrationFailed(
                f"backup part {url} failed verification: {digest.size} bytes read back, "
                f"{sent.size} uploaded; sha256 "
                f"{'equal' if digest.hexdigest() == sent.sha256 else 'differs'}",
                hint="check the object store's health; nothing was recorded as a backup",
                reason=reasons.BACKUP_VERIFY_FAILED)
        local.unlink(missing_ok=True)  # uploaded and read back: free the local disk
        return Part(name, sent.size, sent.sha256)


def take(store: s3.ObjectStore, final: s3.S3Url, metadata: dict[str, str], database_url: str,
         meter: layout.Progress, pg_bin_dir: Path | None, jobs: int,
         guard: SizeGuard) -> progress.BackupStatus:
    """Dump with `jobs` jobs into parts under `<final>.parts/`, verify, then write the manifest
    to `final`; returns only a verified backup."""
    prefix = s3.S3Url(final.bucket, final.key + PARTS)
    with tempfile.TemporaryDirectory(prefix="schemashift-dump-") as scratch:
        parts = _Parts(store, prefix, meter, workers=jobs)  # as many as pg_dump writes at once
        try:
            found = _dump(parts, Path(scratch) / "dump", database_url, pg_bin_dir, jobs, guard)
            meter.emit("Uploaded", sum(p.size for p in found), parts=len(found))
            manifest = Manifest(tuple(found), _verify_toc(store, prefix, found, pg_bin_dir))
        except BaseException:
            parts.abandon()
            raise
    body = manifest.body()
    digest = hashlib.sha256(body).hexdigest()
    metadata = {**metadata, layout.META_SHA256: digest, layout.META_SIZE: str(manifest.size),
                layout.META_VERIFIED_AT: progress.now(),
                layout.META_TOC_ENTRIES: str(manifest.toc_entries),
                layout.META_FORMAT: "directory"}
    store.client_call(final, "put_object", Bucket=final.bucket, Key=final.key, Body=body,
                      Metadata=metadata, ContentType="application/json")
    readback = pgtools.DigestingFeed(None)
    store.read(final, readback.update)
    if readback.hexdigest() != digest:
        store.delete(final)
        raise errors.MigrationFailed(f"the manifest written to {final} did not read back "
                                     "identically", reason=reasons.BACKUP_VERIFY_FAILED)
    meter.emit("Verified", manifest.size, sha256=digest, entries=manifest.toc_entries,
               parts=len(manifest.parts))
    return progress.BackupStatus(url=str(final), sizeBytes=manifest.size, sha256=digest,
                                 verified=True, completedAt=progress.now())


def _dump(parts: _Parts, directory: Path, database_url: str, pg_bin_dir: Path | None,
          jobs: int, guard: SizeGuard) -> list[Part]:
    dbname, env = pgtools.connection_args(database_url)
    dump = dump_dir.DirectoryDump(
        pgtools.find_pg_tool("pg_dump", pg_bin_dir), dbname, guard.tagged(env), jobs=jobs,
        directory=directory, compress=layout.DUMP_COMPRESSION,
        password=pgtools.password_of(database_url))
    dump.start()
    guard.watch(dump.stop)
    try:
        while dump.running():
            for path in dump.new_data_files():
                parts.submit(path.name, dump.follow(path, parts.abandoned), path)
            failure = parts.failed()
            if failure is not None:
                raise failure
            time.sleep(POLL_SECONDS)
        code = dump.wait()
        guard.stop()
        if code != 0:
            guard.raise_refusal()
            raise errors.MigrationFailed(
                f"pg_dump failed (exit {code}): {dump.failure_text()}",
                hint="the database role must be able to read every table (and sequence) it "
                     "dumps", reason=reasons.BACKUP_FAILED)
        for path in dump.new_data_files() + dump.other_files():
            parts.submit(path.name, path.open("rb"), path)
        return parts.wait()
    finally:
        guard.stop()
        dump.stop()


def _verify_toc(store: s3.ObjectStore, prefix: s3.S3Url, found: list[Part],
                pg_bin_dir: Path | None) -> int:
    """toc.dat read back from storage parses, and names no data file that is missing."""
    names = {part.name for part in found}
    with tempfile.TemporaryDirectory(prefix="schemashift-toc-") as scratch:
        store.download(prefix.child("toc.dat"), Path(scratch) / "toc.dat", lambda _: None)
        done = subprocess.run([str(pgtools.find_pg_tool("pg_restore", pg_bin_dir)), "--list",
                               scratch], capture_output=True, check=False)
    listing = done.stdout.decode(errors="replace").splitlines()
    problems = []
    if done.returncode != 0 or "toc.dat" not in names:
        problems.append("pg_restore --list cannot parse its table of contents: "
                        f"{done.stderr.decode(errors='replace').strip() or 'no message'}")
    entries = [line for line in listing if line.strip() and not line.startswith(";")]
    data_ids = {line.split(";", 1)[0] for line in entries if " TABLE DATA " in line}
    missing = sorted(i for i in data_ids
                     if not any(dump_dir.DATA_FILE.match(n) and n.split(".")[0] == i
                                for n in names))
    if missing:
        problems.append(f"no part holds the data of TOC entries {', '.join(missing[:10])}")
    layout.refuse_unverified(f"under {prefix}", problems)
    return len(entries)


def clean_orphaned_parts(store: s3.ObjectStore, folder: s3.S3Url, before: datetime,
                         reporter: progress.Reporter) -> list[str]:
    """Parts under `folder` (one database's) whose backup has no manifest and whose newest part
    is older than `before`: left by a killed run. Removed with their incomplete uploads, and
    reported; best effort, like runner/backup.py's clean_abandoned."""
    try:
        listed = list(store.list(folder))
        uploads = list(store.pending_uploads(folder))
    except errors.SchemashiftError as exc:
        if exc.reason == reasons.STORAGE_STALLED:
            raise
        return []
    keys = {info.url.key for info in listed}
    newest: dict[str, str] = {}
    for when, key in [(i.last_modified, i.url.key) for i in listed] + [
            (u.initiated, u.url.key) for u in uploads]:
        backup_key, found, _ = key.partition(PARTS)
        if found and backup_key.endswith(SUFFIX) and backup_key not in keys:
            newest[backup_key] = max(newest.get(backup_key, ""), when)
    orphans = {k for k, when in newest.items() if datetime.fromisoformat(when) < before}
    for url in [i.url for i in listed if PARTS in i.url.key
                and i.url.key.partition(PARTS)[0] in orphans]:
        store.discard(partial(store.delete, url))
    for upload in [u for u in uploads if u.url.key.partition(PARTS)[0] in orphans]:
        store.discard(partial(store.abort_upload, upload))
    removed = sorted(f"s3://{folder.bucket}/{key}{PARTS}" for key in orphans)
    if removed:
        reporter.emit(events.BackupCleanup(
            prefix=str(folder), removed=removed, kept=[],
            message=f"removed the parts of {len(removed)} interrupted directory backup(s) "
                    "(no manifest)"))
    return removed
