"""Lock safety under open-loop load: schemashift apply vs plain `alembic upgrade head`, and each
kind create-model-migration generates vs Alembic's plain autogenerate output.

Real `pgbench` runs short transactions on `accounts` at a fixed rate (`--rate`: open loop, so
a blocked client does not slow the schedule and queued work shows as latency, counted from each
transaction's scheduled start). A transaction that read `accounts` holds its lock; the
migration adds a column to `accounts` (ACCESS EXCLUSIVE). The conflicting transaction commits
`--hold` seconds after the migration first queues for its lock, the same for every run. Three
runs, interleaved in each repeat, each on a fresh copy of one database:

- `schemashift apply` with its lock timeout and lock retries (the defaults unless given);
- `alembic upgrade head` as is (no lock_timeout): its ALTER queues behind the transaction and
  every app query queues behind the ALTER;
- `alembic upgrade head` with the same lock_timeout (PGOPTIONS): it gives up at the first one.

A load transaction that took longer than the app's statement_timeout counts as failed: the app
would have cancelled it. Printed per run and as medians: the exit code, whether the column exists
afterwards, the migration command's duration, the transactions scheduled from its first lock
wait until it and the conflicting transaction were done, the failed ones, p99 and max latency;
the load average at start and end.

Then each generated kind (bench/_lock_kinds.py): index, unique, foreign key, CHECK, NOT NULL,
a backfilled NOT NULL column, dropped index, on a table of `--kind-rows` (1M) accounts, the
revision create-model-migration writes applied by `schemashift apply` beside the one it writes
with `--unsafe` (Alembic's plain autogenerate output) applied by `alembic upgrade head`.

    python bench/lock_safety.py [--repeats 3] [--rate 200] [--clients 10] [--hold 10]
                                [--lock-timeout 500ms] [--lock-retries 15]
                                [--kinds index,unique,...] [--kind-rows 1000000] [--smallest]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))  # this checkout's schemashift, installed or not

import _lock_kinds as kinds  # noqa: E402
from _under_load import (  # noqa: E402
    APP_TIMEOUT_S,
    ROWS,
    copy_database,
    drop_database,
    load_average,
    migration_command,
    p99,
    ratio,
    under_load,
    write_ini,
)
from tests.fixtures.histories import Revision, write_history  # noqa: E402
from tests.fixtures.postgres import (  # noqa: E402
    PgServer,
    start_embedded_server,
    stop_embedded_server,
)

from schemashift.runner import options_table  # noqa: E402

HISTORY = [
    Revision("r1", "accounts",
             f"""
             op.create_table("accounts", sa.Column("id", sa.Integer, primary_key=True),
                             sa.Column("balance", sa.BigInteger, nullable=False))
             op.execute("INSERT INTO accounts SELECT g, 0 FROM generate_series(1, {ROWS}) g")
             """,
             'op.drop_table("accounts")'),
    Revision("r2", "add a note column", 'op.add_column("accounts", sa.Column("note", sa.Text))',
             'op.drop_column("accounts", "note")'),
]
VARIANTS = {
    "schemashift": "schemashift apply",
    "alembic": "alembic upgrade head",
    "alembic-lock-timeout": "alembic + lock_timeout",
}
@dataclass
class Outcome:
    variant: str
    exit_code: int
    applied: bool
    migration_s: float
    transactions: int
    failed: int
    p99_ms: float
    max_ms: float
    attempts: int | None  # schemashift's lock attempts


def run_once(variant: str, server: PgServer, work: Path, migrations: Path,
             args: argparse.Namespace) -> Outcome:
    database = f"bench_{variant.replace('-', '_')}"
    copy_database(server, "bench_template", database)
    url = server.app_url(database)
    work.mkdir(parents=True, exist_ok=True)
    ini = write_ini(work / f"{variant}.ini", url, migrations)
    command, env = migration_command(variant, url, migrations, ini, args)
    window, applied = under_load(server, database, command, env, work, variant, args,
                                 column_exists)
    drop_database(server, database)
    code = window.exit_code
    if code != 0 and variant != "alembic-lock-timeout":
        print(f"{variant} exited {code}: {window.stderr[-1500:]}", file=sys.stderr)
    return Outcome(
        variant=variant, exit_code=code, applied=applied, migration_s=window.migration_s,
        transactions=len(window.latencies), failed=window.failed,
        p99_ms=1000 * p99(window.latencies), max_ms=1000 * max(window.latencies, default=0.0),
        attempts=lock_attempts(window.stdout) if variant == "schemashift" else None)


def lock_attempts(json_lines: str) -> int:
    events = [json.loads(line) for line in json_lines.splitlines() if line.startswith("{")]
    return 1 + sum(1 for event in events if event.get("event") == "lock_retry")


def column_exists(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    return conn.execute("SELECT 1 FROM information_schema.columns WHERE table_name = 'accounts' "
                        "AND column_name = 'note'").fetchone() is not None


def prepare_template(server: PgServer, work: Path, migrations: Path) -> None:
    """bench_template at r1 (the table with its rows): each run starts from a copy of it."""
    server.create_database("bench_template")
    ini = write_ini(work / "template.ini", server.app_url("bench_template"), migrations)
    done = subprocess.run([sys.executable, "-m", "alembic", "-c", str(ini), "upgrade", "r1"],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"could not prepare the database: {done.stderr[-2000:]}")


def median_row(variant: str, runs: list[Outcome]) -> Outcome:
    def med(values: Sequence[float]) -> float:
        return float(statistics.median(values))

    attempts = [run.attempts for run in runs if run.attempts is not None]
    return Outcome(
        variant=variant, exit_code=max(run.exit_code for run in runs),
        applied=all(run.applied for run in runs),
        migration_s=med([run.migration_s for run in runs]),
        transactions=round(med([run.transactions for run in runs])),
        failed=round(med([run.failed for run in runs])),
        p99_ms=med([run.p99_ms for run in runs]), max_ms=med([run.max_ms for run in runs]),
        attempts=round(med(attempts)) if attempts else None)


HEADER = (f"{'run':<24}{'exit':>5}{'column':>8}{'migration s':>13}{'txns':>7}{'failed':>8}"
          f"{'p99 ms':>9}{'max ms':>9}  attempts")


def row(label: str, o: Outcome) -> str:
    return (f"{label:<24}{o.exit_code:>5}{'yes' if o.applied else 'NO':>8}{o.migration_s:>13.2f}"
            f"{o.transactions:>7}{o.failed:>8}{o.p99_ms:>9.0f}{o.max_ms:>9.0f}  "
            f"{o.attempts if o.attempts is not None else '-'}")


def report(results: dict[str, list[Outcome]], args: argparse.Namespace) -> None:
    medians = {variant: median_row(variant, runs) for variant, runs in results.items()}
    print(f"\nmedians of {args.repeats}:")
    print(HEADER)
    for variant, outcome in medians.items():
        print(row(VARIANTS[variant], outcome))
    ours = medians["schemashift"]
    for variant in ("alembic", "alembic-lock-timeout"):
        other = medians[variant]
        print(f"{VARIANTS[variant]} / schemashift: p99 {ratio(other.p99_ms, ours.p99_ms)}, "
              f"max {ratio(other.max_ms, ours.max_ms)}, failed {other.failed} vs {ours.failed}, "
              f"column added {added(results[variant])} vs {added(results['schemashift'])}")
    for variant, runs in results.items():
        missing = [str(i + 1) for i, run in enumerate(runs) if not run.applied]
        if missing:
            print(f"NOT migrated: after {VARIANTS[variant]} the column is missing "
                  f"(repeat {', '.join(missing)})")


def added(runs: list[Outcome]) -> str:
    return f"{sum(run.applied for run in runs)}/{len(runs)}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rate", type=int, default=200, help="load transactions per second")
    parser.add_argument("--clients", type=int, default=10, help="load connections")
    parser.add_argument("--hold", type=float, default=10.0,
                        help="seconds the conflicting transaction stays open after the "
                             "migration first waits for its lock")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--lock-timeout", default=options_table.LOCK_TIMEOUT.default)
    parser.add_argument("--lock-retries", type=int, default=options_table.LOCK_RETRIES.default)
    parser.add_argument("--pgbench", help="pgbench to run (default: the server's own)")
    parser.add_argument("--kinds", default=",".join(kind.name for kind in kinds.KINDS),
                        help="the generated kinds to run (comma-separated; empty: none)")
    parser.add_argument("--kind-rows", type=int, default=1_000_000,
                        help="accounts in the generated kinds' table")
    parser.add_argument("--smallest", action="store_true",
                        help="the smallest meaningful run: 1 repeat, a short conflict, one "
                             "kind on a small table")
    args = parser.parse_args()
    if args.smallest:
        args.repeats, args.rate, args.clients, args.hold, args.warmup = 1, 100, 4, 1.0, 0.5
        args.kinds, args.kind_rows = ",".join(kinds.SMALLEST), 10_000
    return args


def pgbench_version(pgbench: str) -> str:
    return subprocess.run([pgbench, "--version"], capture_output=True, text=True,
                          check=True).stdout.strip()


def main() -> None:
    args = parse_args()
    print(f"load average at start: {load_average()}")
    base = Path(tempfile.mkdtemp(prefix="schemashift-bench-locks-"))
    server, handle = start_embedded_server(base)
    results: dict[str, list[Outcome]] = {variant: [] for variant in VARIANTS}
    try:
        args.pgbench = args.pgbench or str(server.bin_dir / "pgbench")
        print(f"{pgbench_version(args.pgbench)}: {args.rate} transactions/s over {args.clients} "
              f"clients (UPDATE+SELECT of one of {ROWS:,} accounts), open loop; a transaction "
              f"reading accounts commits {args.hold:g}s after the migration first waits for "
              f"its lock; failed = over the app's statement_timeout {APP_TIMEOUT_S:g}s; "
              f"lock_timeout {args.lock_timeout}, schemashift lock retries {args.lock_retries}")
        migrations = write_history(base / "migrations", HISTORY)
        prepare_template(server, base, migrations)
        print(HEADER)
        for repeat in range(1, args.repeats + 1):
            for variant, label in VARIANTS.items():
                outcome = run_once(variant, server, base / f"{repeat}", migrations, args)
                results[variant].append(outcome)
                print(row(f"{repeat}: {label}", outcome), flush=True)
        report(results, args)
        print(f"load average: {load_average()}")
        kinds.run_kinds(server, base, args)
    finally:
        stop_embedded_server(server, handle)
        shutil.rmtree(base, ignore_errors=True)
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
