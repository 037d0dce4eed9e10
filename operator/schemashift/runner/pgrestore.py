"""pg_restore fed from object storage: streamed (single transaction) or downloaded (parallel).

A streamed restore checks the object's sha256 before pg_restore sees the end of its input: the
last chunk is held back until the digest matches, so a corrupt download kills pg_restore inside
its single transaction and the database is left unchanged.
`pg_restore --jobs` cannot read a pipe, so a parallel restore downloads to a temporary file first.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Protocol

from schemashift import db, errors, reasons, redact
from schemashift.runner import pgtools
from schemashift.storage import s3

MESSAGE_LIMIT = 2000


class Meter(Protocol):
    def __call__(self, done: int) -> None: ...

    def emit(self, state: str, done: int, **extra: object) -> None: ...


def run_restore(store: s3.ObjectStore, info: s3.ObjectInfo, *, expected_sha256: str,
                database_url: str, clean: bool, jobs: int, meter: Meter,
                pg_bin_dir: Path | None) -> None:
    pg_restore = pgtools.find_pg_tool("pg_restore", pg_bin_dir)
    dbname, env = pgtools.connection_args(database_url)
    args = [str(pg_restore), "--no-owner", "--exit-on-error", "--no-password",
            f"--dbname={dbname}"]
    if clean:
        args += ["--clean", "--if-exists"]
    meter.emit("InProgress", 0)
    failure = _Failure(database_url, info, jobs)
    if jobs == 1:
        _restore_streamed(store, info, expected_sha256, [*args, "--single-transaction"], env,
                          meter, failure)
    else:
        with tempfile.TemporaryDirectory(prefix="schemashift-restore-") as tmp:
            path = Path(tmp) / "backup.dump"
            feed = pgtools.DigestingFeed(None)

            def sink(chunk: bytes) -> None:
                feed.update(chunk)
                meter(feed.size)

            store.download(info.url, path, sink)
            failure.check_digest(feed, expected_sha256)
            _run([*args, f"--jobs={jobs}", str(path)], env, failure)
    meter.emit("Restored", info.size)


def _restore_streamed(store: s3.ObjectStore, info: s3.ObjectInfo, expected_sha256: str,
                      args: list[str], env: dict[str, str], meter: Meter,
                      failure: _Failure) -> None:
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=env)
    assert process.stdin is not None and process.stderr is not None
    stderr = pgtools.OutputTail(process.stderr)
    feed = pgtools.DigestingFeed(process.stdin)
    held: list[bytes] = []

    def sink(chunk: bytes) -> None:
        if held:
            feed.write(held.pop())
        feed.update(chunk)
        held.append(chunk)
        meter(feed.size)

    try:
        store.read(info.url, sink)
        failure.check_digest(feed, expected_sha256)
        for chunk in held:
            feed.write(chunk)
        feed.close()
        returncode = process.wait()
    except BaseException:
        pgtools.stop(process)
        raise
    if returncode != 0:
        raise failure.restore_failed(returncode, stderr.text(pgtools.password_of(failure.url)))


def _run(args: list[str], env: dict[str, str], failure: _Failure) -> None:
    done = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env=env, check=False)
    if done.returncode != 0:
        text = done.stderr.decode(errors="replace").strip()
        raise failure.restore_failed(done.returncode,
                                     redact.redact(text, pgtools.password_of(failure.url)))


class _Failure:
    """The errors a restore can end with, worded for where the database was left."""

    def __init__(self, url: str, info: s3.ObjectInfo, jobs: int):
        self.url = url
        self.info = info
        self.jobs = jobs

    def check_digest(self, feed: pgtools.DigestingFeed, expected_sha256: str) -> None:
        if feed.size == self.info.size and feed.hexdigest() == expected_sha256:
            return
        raise errors.MigrationFailed(
            f"backup {self.info.url} does not match its recorded sha256/size ({feed.size} bytes "
            f"read, {self.info.size} expected): the database was not changed",
            hint="the object was altered or damaged in storage; restore another backup",
            reason=reasons.BACKUP_VERIFY_FAILED)

    def restore_failed(self, returncode: int, stderr: str) -> errors.MigrationFailed:
        if len(stderr) > MESSAGE_LIMIT:
            stderr = "…" + stderr[-MESSAGE_LIMIT:]
        where = ("nothing was changed (single transaction)" if self.jobs == 1
                 else "the database may be partly restored (parallel restore)")
        return errors.MigrationFailed(
            f"pg_restore of {self.info.url} into {db.safe_url(self.url)} failed "
            f"(exit {returncode}); {where}: {stderr or 'no message'}",
            hint="restore into an empty database, or pass --clean to replace the objects the "
                 "backup contains",
            reason=reasons.RESTORE_FAILED)
