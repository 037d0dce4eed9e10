"""How many pg_dump jobs a backup uses: the Job's CPU limit, else the cgroup quota and the CPUs
this process may run on (runner/dump_dir.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from schemashift.runner import dump_dir

CPUS = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("limit", "cpu_max", "expected"), [
    ("2", "max 100000", 2),  # the Downward API's limits.cpu wins
    ("64", "max 100000", dump_dir.MAX_JOBS),  # at most MAX_JOBS sessions
    ("", "150000 100000", min(2, CPUS)),  # 1.5 CPUs of quota: 2 jobs, if the CPUs exist
    ("", "50000 100000", 1),  # half a CPU: one job, the single -Fc stream
    ("", "max 100000", min(CPUS, dump_dir.MAX_JOBS)),
    ("0", None, min(CPUS, dump_dir.MAX_JOBS)),  # no cgroup file; a zero limit is no limit
])
def test_dump_jobs(tmp_path: Path, limit: str, cpu_max: str | None, expected: int) -> None:
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max + "\n")
    assert dump_jobs_of(limit, path) == expected


def dump_jobs_of(limit: str, path: Path) -> int:
    env = {dump_dir.CPU_LIMIT_ENV: limit} if limit else {}
    return dump_dir.dump_jobs(env, cpu_max=path)
