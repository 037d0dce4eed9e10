"""Lock safety under load: schemashift's runner vs plain `alembic upgrade head`.

A pgbench-like load (threads running many short transactions on `accounts`) runs while one long
transaction reads `accounts` and a migration adds a column to it (ACCESS EXCLUSIVE). The naive
run queues its ALTER behind the long transaction, and every app query queues behind the ALTER;
the runner's attempts give up after `lock_timeout` and retry with pauses in between.

Prints, for each run: transactions, failed transactions, max and p99 latency of the load while
the migration ran (a failed transaction counts with the time it took to fail), and the
migration's own duration; then the naive/ours ratios.

    python bench/lock_safety.py [--clients 8] [--long-transaction 6] [--lock-timeout 500ms]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.histories import Revision, write_history  # noqa: E402
from tests.fixtures.postgres import start_embedded_server  # noqa: E402

ROWS = 10_000
APP_STATEMENT_TIMEOUT = "3s"  # what a web app typically allows a request's query

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


@dataclass
class Load:
    url: str
    clients: int
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds)
    failures: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for thread in threads:
            thread.start()
        return threads

    def _client(self) -> None:
        rng = random.Random()
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"SET statement_timeout = '{APP_STATEMENT_TIMEOUT}'")
            while not self.stop.is_set():
                began = time.perf_counter()
                try:
                    with conn.transaction():
                        account = rng.randint(1, ROWS)
                        conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = %s",
                                     (account,))
                        conn.execute("SELECT balance FROM accounts WHERE id = %s", (account,))
                except psycopg.Error:
                    with self._lock:  # a failed transaction's wait counts as latency too
                        self.failures.append((began, time.perf_counter() - began))
                    continue
                with self._lock:
                    self.latencies.append((began, time.perf_counter() - began))
                time.sleep(0.002)


def long_transaction(url: str, seconds: float, started: threading.Event) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("SELECT sum(balance) FROM accounts")  # holds ACCESS SHARE until commit
        started.set()
        time.sleep(seconds)
        conn.commit()


@dataclass
class Outcome:
    name: str
    migration_seconds: float
    exit_code: int
    transactions: int
    failed: int
    max_ms: float
    p99_ms: float
    attempts: str


def run_once(name: str, admin: psycopg.Connection[tuple[object, ...]], server_app_url: str,
             work: Path, args: argparse.Namespace) -> Outcome:
    database = f"bench_{name}"
    admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    admin.execute(f'CREATE DATABASE "{database}" OWNER app')
    url = server_app_url + database
    migrations = write_history(work / name, HISTORY)
    prepare = _schemashift(url, migrations, "--target", "r1")
    assert prepare.returncode == 0, prepare.stderr

    load = Load(url, args.clients)
    threads = load.start()
    time.sleep(1.0)
    started = threading.Event()
    blocker = threading.Thread(target=long_transaction,
                               args=(url, args.long_transaction, started), daemon=True)
    blocker.start()
    started.wait()
    time.sleep(0.3)
    began = time.perf_counter()
    if name == "schemashift":
        done = _schemashift(url, migrations, "--lock-timeout", args.lock_timeout,
                            "--lock-retries", "20")
        retries = done.stdout.count('"event": "lock_retry"')
        attempts = f"{retries + 1} attempts"
    else:
        done = _alembic(url, migrations)
        attempts = "1 (queued)"
        if done.returncode != 0:
            print(f"alembic failed: {done.stderr[-2000:]}", file=sys.stderr)
    ended = time.perf_counter()
    blocker.join()
    time.sleep(1.0)
    load.stop.set()
    for thread in threads:
        thread.join()
    failed = [lat for start, lat in load.failures if began - 0.1 <= start <= ended]
    window = [lat for start, lat in load.latencies if began - 0.1 <= start <= ended] + failed
    admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return Outcome(
        name=name, migration_seconds=ended - began, exit_code=done.returncode,
        transactions=len(window), failed=len(failed),
        max_ms=max(window, default=0) * 1000,
        p99_ms=(statistics.quantiles(window, n=100)[98] if len(window) >= 100
                else max(window, default=0)) * 1000,
        attempts=attempts,
    )


def _schemashift(url: str, migrations: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "schemashift.cli", "apply", "--json", "--database-url", url,
         "--migrations", str(migrations), *args], capture_output=True, text=True, timeout=600)


_LOGGING = """
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


def _alembic(url: str, migrations: Path) -> subprocess.CompletedProcess[str]:
    ini = migrations.parent / "alembic.ini"
    sa_url = url.replace("postgresql://", "postgresql+psycopg://").replace("%", "%%")
    ini.write_text(f"[alembic]\nscript_location = {migrations}\nsqlalchemy.url = {sa_url}\n"
                   + _LOGGING)
    return subprocess.run([sys.executable, "-m", "alembic", "-c", str(ini), "upgrade", "head"],
                          capture_output=True, text=True, timeout=600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--long-transaction", type=float, default=10.0,
                        help="seconds the conflicting transaction stays open")
    parser.add_argument("--lock-timeout", default="500ms")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="schemashift-bench-locks-"))
    server, handle = start_embedded_server(base)
    try:
        app_url = f"postgresql://app:app-Secr3t-pw@{server.host}:{server.port}/"
        with server.admin() as admin:
            outcomes = [run_once(name, admin, app_url, base, args)
                        for name in ("alembic", "schemashift")]
    finally:
        handle.cleanup()  # type: ignore[attr-defined]
        shutil.rmtree(base, ignore_errors=True)

    print(f"load: {args.clients} clients, short UPDATE+SELECT transactions, app "
          f"statement_timeout {APP_STATEMENT_TIMEOUT}; long transaction "
          f"{args.long_transaction:g}s; runner lock_timeout {args.lock_timeout}")
    print(f"{'run':<22}{'exit':>5}{'migration s':>13}{'txns':>8}{'failed':>8}"
          f"{'max ms':>10}{'p99 ms':>10}  attempts")
    for o in outcomes:
        label = "alembic upgrade head" if o.name == "alembic" else "schemashift apply"
        print(f"{label:<22}{o.exit_code:>5}{o.migration_seconds:>13.2f}{o.transactions:>8}"
              f"{o.failed:>8}{o.max_ms:>10.0f}{o.p99_ms:>10.0f}  {o.attempts}")
    naive, ours = outcomes
    print(f"max latency naive/ours: {naive.max_ms / max(ours.max_ms, 1e-9):.1f}x; "
          f"p99 naive/ours: {naive.p99_ms / max(ours.p99_ms, 1e-9):.1f}x; "
          f"failed transactions naive {naive.failed} vs ours {ours.failed}")
    from schemashift.runner.options import parse_duration

    limit_ms = parse_duration(args.lock_timeout, name="lock timeout") * 1000
    verdict = "met" if ours.failed == 0 and ours.max_ms <= limit_ms * 1.5 else "NOT met"
    print(f"target (ours: no failed transaction, max latency within lock_timeout "
          f"{limit_ms:.0f}ms + scheduling slack): {verdict}")


if __name__ == "__main__":
    main()
