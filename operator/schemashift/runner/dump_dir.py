"""`pg_dump -Fd -j N` as a process whose table files are read while pg_dump writes them.

pg_dump's directory format writes one file per table's data (`<dumpId>.dat.gz`), each by one of
N worker processes, and the table of contents (`toc.dat`) last. With `-v` its leader logs
"finished item <dumpId> …" once a worker has closed an item's file. So a data file can be read
from the moment it appears: `GrowingFile` reads what is there, waits at its end for more, and
ends when pg_dump says the item is finished (or pg_dump exited). The upload of each table thus
streams alongside the dump (runner/parallel_backup.py), as the single-stream `-Fc` upload does,
and local disk only holds the files not yet uploaded.

N comes from the CPUs the Job may use: the Downward API's `limits.cpu` (CPU_LIMIT_ENV, set by
kube/jobspec.py) when set, else the smaller of the cgroup's `cpu.max` quota and the CPUs this
process may run on; at most MAX_JOBS (each job is one more database session), at least 1.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any, cast

from schemashift import errors, redact
from schemashift.runner import pgtools

CPU_LIMIT_ENV = "SCHEMASHIFT_CPU_LIMIT"
MAX_JOBS = 8
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
DATA_FILE = re.compile(r"^(\d+)\.dat(?:\.(?:gz|lz4|zst))?$")
_FINISHED = re.compile(r"finished item (\d+) ")
_PROBLEM = re.compile(r"\b(error|warning|detail|hint|fatal):", re.IGNORECASE)
FOLLOW_POLL_SECONDS = 0.05
KEPT_LINES = 40


def dump_jobs(env: dict[str, str] | None = None, cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """How many pg_dump jobs this process's CPUs carry (see the module's text)."""
    env = dict(os.environ) if env is None else env
    limit = env.get(CPU_LIMIT_ENV, "").strip()
    if limit.isdigit() and int(limit) > 0:  # the Job's own limit: authoritative
        return min(MAX_JOBS, int(limit))
    known: list[int] = []
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            known.append(math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    affinity = getattr(os, "sched_getaffinity", None)
    known.append(len(affinity(0)) if affinity is not None else (os.cpu_count() or 1))
    return max(1, min(MAX_JOBS, *known))


class DirectoryDump:
    """One `pg_dump --format=directory --jobs=N --verbose` run into `directory`."""

    def __init__(self, pg_dump: Path, dbname: str, env: dict[str, str], *, jobs: int,
                 directory: Path, compress: str, password: str | None):
        self.directory = directory
        self._args = [str(pg_dump), "--format=directory", f"--jobs={jobs}", "--verbose",
                      f"--compress={compress}", "--no-password", f"--file={directory}",
                      f"--dbname={dbname}"]
        self._env = env
        self._password = password
        self._finished: set[int] = set()
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._problems: list[str] = []
        self._tail: list[str] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        try:
            # A group of its own: stopping it stops its forked workers too (killing only the
            # leader would leave a worker copying a big table to its end).
            self._process = subprocess.Popen(self._args, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                             env=self._env, start_new_session=True)
        except OSError as exc:
            raise errors.UsageError(f"cannot start {self._args[0]}: {exc}",
                                    hint="check the PostgreSQL client tools") from None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        with self._process.stderr as stream:
            for raw in stream:
                line = raw.decode(errors="replace").rstrip()
                found = _FINISHED.search(line)
                with self._lock:
                    if found:
                        self._finished.add(int(found.group(1)))
                    elif _PROBLEM.search(line):
                        self._problems = [*self._problems, line][-KEPT_LINES:]
                    self._tail = [*self._tail, line][-KEPT_LINES:]

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def new_data_files(self) -> list[Path]:
        """Data files that appeared since the last call, oldest first."""
        try:
            fresh = [path for path in self.directory.iterdir()
                     if DATA_FILE.match(path.name) and path.name not in self._seen]
        except FileNotFoundError:  # pg_dump has not created the directory yet
            return []
        self._seen.update(path.name for path in fresh)
        return sorted(fresh, key=lambda path: int(path.name.split(".")[0]))

    def other_files(self) -> list[Path]:
        """Everything but the data files (toc.dat, large objects): read once pg_dump exited."""
        return sorted(path for path in self.directory.iterdir()
                      if not DATA_FILE.match(path.name) and path.is_file())

    def done_with(self, path: Path) -> bool:
        """pg_dump closed `path` for good (its item is finished, or pg_dump exited)."""
        match = DATA_FILE.match(path.name)
        with self._lock:
            finished = match is not None and int(match.group(1)) in self._finished
        return finished or not self.running()

    def follow(self, path: Path, abandoned: threading.Event) -> IO[bytes]:
        return cast(IO[bytes], GrowingFile(path, lambda: self.done_with(path), abandoned))

    def wait(self) -> int:
        assert self._process is not None
        code = self._process.wait()
        if self._reader is not None:
            self._reader.join(10)
        return code

    def stop(self) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        pgtools.stop(self._process)

    def failure_text(self) -> str:
        with self._lock:
            lines = self._problems or self._tail[-5:]
        return redact.redact("\n".join(lines), self._password) or "no message"


class GrowingFile(io.RawIOBase):
    """A file another process is still writing, read as a stream: at its current end it waits
    until more is written or `finished()` says the writer closed it for good."""

    def __init__(self, path: Path, finished: Any, abandoned: threading.Event):
        super().__init__()
        self.path = path
        self._file = path.open("rb")
        self._finished = finished
        self._abandoned = abandoned

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            if self._abandoned.is_set():
                raise errors.MigrationFailed(f"reading {self.path.name} was abandoned")
            done = self._finished()  # asked before reading: what follows is all there is
            count = self._file.readinto(buffer)
            if count or done:
                return count or 0
            time.sleep(FOLLOW_POLL_SECONDS)

    def close(self) -> None:
        self._file.close()
        super().close()
