"""What the process kubelet knows about one pod it runs, and small helpers its parts share."""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tail(path: Path, lines: int) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class PodRun:
    """One pod's process, its files and its restart/deadline/termination bookkeeping."""

    uid: str
    namespace: str
    name: str
    directory: Path
    container: str
    image: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    pod_started_at: float = 0.0  # monotonic, for activeDeadlineSeconds
    restarts: int = 0
    log_starts: list[int] = field(default_factory=list)  # where each instance's output begins
    restart_at: float = 0.0
    last_terminated: dict[str, Any] | None = None
    kill_at: float | None = None  # SIGKILL time once SIGTERM was sent
    deadline_exceeded: bool = False
    terminal: bool = False
    start_time: str = field(default_factory=now)  # the pod's status.startTime

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_file(self) -> Path:
        return self.directory / f"{self.container}.log"

    @property
    def message_file(self) -> Path:
        return self.directory / "termination-log"

    @property
    def sa_dir(self) -> Path:
        return self.directory / "serviceaccount"
