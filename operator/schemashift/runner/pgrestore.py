"""Restoring a backup from object storage: all or nothing (one job), or parallel (not atomic).

One job: `pg_restore --single-transaction -f -` turns the streamed archive into SQL, and one
psql session runs, in one transaction, the clean-up (restore_cleanup, with `--clean`) and then
that SQL. The COMMIT is ours: pg_restore's own, at the end of its script, is held back and
written only when the archive's sha256 matched, pg_restore exited 0 and the script ended as
pg_restore ends it. Anything else kills psql before COMMIT, so the database is unchanged.
(pg_restore straight into the database cannot do this: its `--clean` drops only what the
archive contains, and fails on what the run added on top, such as a foreign key onto an older
table.) The archive's last chunk is also held back until the digest matches, as before.

Parallel (`--jobs` > 1): `pg_restore --jobs` needs a file, so the archive is downloaded and
checked first; the clean-up then commits on its own and pg_restore runs in several sessions.
That is not atomic, and a failure says so.

A directory-format backup (runner/restore_dir.py downloads and checks its parts first) is
restored the same two ways from its local directory: `restore_directory`.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import IO, Protocol, Unpack

from schemashift import db, errors, events, reasons, redact
from schemashift.runner import pgtools
from schemashift.runner.restore_cleanup import cleanup_sql
from schemashift.storage import s3

MESSAGE_LIMIT = 2000
PUMP_CHUNK = 64 * 1024
TAIL_BYTES = 64 * 1024  # more than the footer pg_restore writes after its COMMIT
_FOOTER = re.compile(rb"\nCOMMIT;\n(?:(?:[ \t]*|--[^\n]*|\\unrestrict [^\n]*)\n)*[ \t\n]*\Z")


class Meter(Protocol):
    def __call__(self, done: int) -> None: ...

    def emit(self, state: events.TransferState, done: int,
             **detail: Unpack[events.TransferDetail]) -> None: ...


def _tools(database_url: str, pg_bin_dir: Path | None,
           clean: bool) -> tuple[Path, str, dict[str, str], list[str], str]:
    """pg_restore, the connection (dbname, env), psql reading SQL from stdin, the clean prelude."""
    pg_restore = pgtools.find_pg_tool("pg_restore", pg_bin_dir)
    psql = pgtools.find_pg_tool("psql", pg_bin_dir)
    dbname, env = pgtools.connection_args(database_url)
    psql_args = [str(psql), "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1",
                 f"--dbname={dbname}", "--file=-"]
    return pg_restore, dbname, env, psql_args, cleanup_sql() if clean else ""


def restore_directory(directory: Path, info: s3.ObjectInfo, *, database_url: str, clean: bool,
                      jobs: int, meter: Meter, pg_bin_dir: Path | None) -> None:
    """Restore a checked local copy of a directory-format backup (`info`: its manifest)."""
    pg_restore, dbname, env, psql_args, prelude = _tools(database_url, pg_bin_dir, clean)
    failure = _Failure(database_url, info, jobs)
    if jobs == 1:
        _Atomic(None, info, "", meter, failure).run(
            [str(pg_restore), "--no-owner", "--single-transaction", "--exit-on-error",
             "--file=-", str(directory)], psql_args, env, prelude)
    else:
        if prelude:
            _run([*psql_args, "--single-transaction"], env, failure, prelude.encode())
        _run([str(pg_restore), "--no-owner", "--exit-on-error", "--no-password",
              f"--dbname={dbname}", f"--jobs={jobs}", str(directory)], env, failure)
    meter.emit("Restored", info.size)


def run_restore(store: s3.ObjectStore, info: s3.ObjectInfo, *, expected_sha256: str,
                database_url: str, clean: bool, jobs: int, meter: Meter,
                pg_bin_dir: Path | None) -> None:
    """Restore `info` into the database; with `clean`, first drop every user object."""
    pg_restore, dbname, env, psql_args, prelude = _tools(database_url, pg_bin_dir, clean)
    meter.emit("InProgress", 0)
    failure = _Failure(database_url, info, jobs)
    if jobs == 1:
        _Atomic(store, info, expected_sha256, meter, failure).run(
            [str(pg_restore), "--no-owner", "--single-transaction", "--exit-on-error",
             "--file=-"], psql_args, env, prelude)
    else:
        with tempfile.TemporaryDirectory(prefix="schemashift-restore-") as tmp:
            path = Path(tmp) / "backup.dump"
            feed = pgtools.DigestingFeed(None)

            def sink(chunk: bytes) -> None:
                feed.update(chunk)
                meter(feed.size)

            store.download(info.url, path, sink)
            failure.check_digest(feed, expected_sha256)
            if prelude:
                _run([*psql_args, "--single-transaction"], env, failure, prelude.encode())
            _run([str(pg_restore), "--no-owner", "--exit-on-error", "--no-password",
                  f"--dbname={dbname}", f"--jobs={jobs}", str(path)], env, failure)
    meter.emit("Restored", info.size)


class _Atomic:
    """archive (streamed, digest-checked; or a local directory: `store` None) → pg_restore →
    script → psql, one transaction."""

    def __init__(self, store: s3.ObjectStore | None, info: s3.ObjectInfo, expected_sha256: str,
                 meter: Meter, failure: _Failure):
        self.store = store
        self.info = info
        self.expected_sha256 = expected_sha256
        self.meter = meter
        self.failure = failure

    def run(self, restore_args: list[str], psql_args: list[str], env: dict[str, str],
            prelude: str) -> None:
        restore = subprocess.Popen(
            restore_args, stdin=subprocess.PIPE if self.store else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        psql = subprocess.Popen(psql_args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=env)
        assert restore.stdout and restore.stderr
        assert psql.stdin and psql.stderr
        restore_errors = pgtools.OutputTail(restore.stderr)
        psql_errors = pgtools.OutputTail(psql.stderr)
        script = pgtools.DigestingFeed(psql.stdin)  # written through, never hashed
        script.write(b"BEGIN;\n" + prelude.encode())
        pump = _Pump(restore.stdout, script)
        try:
            if self.store is not None:
                assert restore.stdin is not None
                self._feed(self.store, restore.stdin)
            restore_code = restore.wait()
            pump.join()
            if restore_code != 0:
                raise self.failure.restore_failed(
                    "pg_restore", restore_code, restore_errors.text(self._password()))
            committed = psql.poll() is None  # still reading: the script so far ran fine
            if committed:
                self._commit(script, pump.tail)
            psql_code = psql.wait()
            if psql_code != 0 or not committed:
                raise self.failure.restore_failed("psql", psql_code,
                                                  psql_errors.text(self._password()))
        finally:
            pgtools.stop(restore)
            pgtools.stop(psql)  # before COMMIT: killing the session rolls everything back
            pump.join()

    def _feed(self, store: s3.ObjectStore, stdin: IO[bytes]) -> None:
        feed = pgtools.DigestingFeed(stdin)
        held: list[bytes] = []

        def sink(chunk: bytes) -> None:
            if held:
                feed.write(held.pop())
            feed.update(chunk)
            held.append(chunk)
            self.meter(feed.size)

        store.read(self.info.url, sink)
        self.failure.check_digest(feed, self.expected_sha256)
        for chunk in held:
            feed.write(chunk)
        feed.close()

    def _commit(self, script: pgtools.DigestingFeed, tail: bytes) -> None:
        match = _FOOTER.search(tail)
        if match is None:
            raise errors.MigrationFailed(
                f"pg_restore's script for {self.info.url} does not end with its COMMIT: "
                "nothing was changed (not committed)",
                hint="use pg_restore from the PostgreSQL client tools of the server's major "
                     f"version ({pgtools.BINDIR_ENV})", reason=reasons.RESTORE_FAILED)
        script.write(tail[:match.start()] + b"\n" + tail[match.start() + len(b"\nCOMMIT;"):])
        script.write(b"\nCOMMIT;\n")
        script.close()

    def _password(self) -> str | None:
        return pgtools.password_of(self.failure.url)


class _Pump:
    """Copies pg_restore's script into psql, holding back its last TAIL_BYTES. A psql that
    stopped (an error) is not waited for: the rest is read and dropped, so pg_restore and the
    download never block on it."""

    def __init__(self, source: IO[bytes], sink: pgtools.DigestingFeed):
        self.tail = b""
        self._source = source
        self._sink = sink
        self._thread = threading.Thread(target=self._copy, daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        with self._source:
            while chunk := self._source.read1(PUMP_CHUNK):  # type: ignore[attr-defined]
                self.tail += chunk
                if len(self.tail) > TAIL_BYTES:
                    self._sink.write(self.tail[:-TAIL_BYTES])
                    self.tail = self.tail[-TAIL_BYTES:]

    def join(self) -> None:
        self._thread.join()


def _run(args: list[str], env: dict[str, str], failure: _Failure,
         stdin: bytes | None = None) -> None:
    done = subprocess.run(args, input=stdin, stdin=None if stdin is not None
                          else subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env=env, check=False)
    if done.returncode != 0:
        text = done.stderr.decode(errors="replace").strip()
        raise failure.restore_failed(Path(args[0]).name, done.returncode,
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

    def restore_failed(self, tool: str, returncode: int, stderr: str) -> errors.MigrationFailed:
        if len(stderr) > MESSAGE_LIMIT:
            stderr = "…" + stderr[-MESSAGE_LIMIT:]
        if self.jobs == 1:
            where = "nothing was changed (the restore ran in one transaction, rolled back)"
            hint = ("restore into an empty database, or pass --clean to replace everything "
                    "in it with the backup")
        else:
            where = (f"the database may be partly restored: a parallel restore (--jobs "
                     f"{self.jobs}) is not atomic")
            hint = "rerun with --clean and --jobs 1 for an all-or-nothing restore"
        return errors.MigrationFailed(
            f"restoring {self.info.url} into {db.safe_url(self.url)} failed ({tool} exit "
            f"{returncode}); {where}: {stderr or 'no message'}",
            hint=hint, reason=reasons.RESTORE_FAILED)
