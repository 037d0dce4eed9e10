"""The machinery of bench/lock_safety.py: open-loop pgbench load, a conflicting transaction,
a migration command run under both, and the load's latencies over the migration's window."""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from tests.fixtures.postgres import APP_PASSWORD, APP_ROLE, PgServer

from schemashift.runner import options_table
from schemashift.runner.options import postgres_ms

ROOT = Path(__file__).resolve().parent.parent

ROWS = 10_000
APP_TIMEOUT_S = 3.0  # what a web app typically allows a request's query (statement_timeout)
LOAD_APP = "bench-lock-safety-load"  # the load's application_name: how its sessions are ended
LOAD_SCRIPT = f"""\\set id random(1, {ROWS})
BEGIN;
UPDATE accounts SET balance = balance + 1 WHERE id = :id;
SELECT balance FROM accounts WHERE id = :id;
END;
"""

_PROGRESS = re.compile(r"progress: ([\d.]+) s, ([\d.]+) tps.* lag ([\d.]+) ms")


@dataclass(frozen=True)
class Sample:
    scheduled: float  # epoch seconds
    latency: float  # seconds, from the scheduled start


class Load:
    """pgbench at a fixed rate until its sessions are terminated (it then writes its logs)."""

    def __init__(self, pgbench: str, server: PgServer, database: str, work: Path,
                 args: argparse.Namespace):
        work.mkdir(parents=True)
        (work / "load.sql").write_text(LOAD_SCRIPT)
        self.prefix = work / "txn"
        self.rate = args.rate
        self.progress: list[tuple[float, float, float]] = []  # (epoch, tps, lag ms)
        self.errors: list[str] = []
        env = {**os.environ, "PGPASSWORD": APP_PASSWORD, "PGAPPNAME": LOAD_APP}
        env.pop("PGOPTIONS", None)
        self.process = subprocess.Popen(
            [pgbench, "-n", "-h", server.host, "-p", str(server.port), "-U", APP_ROLE,
             "-c", str(args.clients), "-j", "2", "-R", str(args.rate), "-T", "3600",
             "-f", str(work / "load.sql"), "-l", "--log-prefix", str(self.prefix),
             "-P", "1", "--progress-timestamp", database],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read_progress, daemon=True)
        self._reader.start()

    def _read_progress(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            found = _PROGRESS.search(line)
            if found:
                self.progress.append((float(found[1]), float(found[2]), float(found[3])))
            elif "terminating connection" not in line:
                self.errors.append(line.rstrip())

    def wait_caught_up(self, since: float, timeout: float = 30.0) -> bool:
        """True once a report ending after `since` shows the rate kept with little lag (a
        backlog still draining shows as lag; a blocked second as no transactions)."""
        deadline = time.time() + timeout
        while time.time() < deadline and self.process.poll() is None:
            if any(at > since and tps >= self.rate / 2 and lag < 100
                   for at, tps, lag in self.progress):
                return True
            time.sleep(0.1)
        return False

    def stop(self, admin: psycopg.Connection[tuple[object, ...]]) -> list[Sample]:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE application_name = %s", (LOAD_APP,))
        self.process.wait(timeout=60)
        self._reader.join(timeout=10)
        samples = [sample for path in self.prefix.parent.glob(f"{self.prefix.name}*")
                   for sample in _samples(path)]
        if not samples:
            raise SystemExit("pgbench ran no transaction: " + "\n".join(self.errors[-5:]))
        return samples


def _samples(log: Path) -> list[Sample]:
    """pgbench -l lines: client, transaction, latency us, script, end epoch s, end us, lag us."""
    found = []
    for line in log.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[2].isdigit():
            latency = int(fields[2]) / 1e6
            found.append(Sample(int(fields[4]) + int(fields[5]) / 1e6 - latency, latency))
    return found


class Blocker:
    """A transaction that read `accounts`: it holds ACCESS SHARE until released."""

    def __init__(self, url: str):
        self.conn = psycopg.connect(url)
        self.conn.execute("SELECT sum(balance) FROM accounts")

    def release(self) -> float:
        self.conn.commit()
        self.conn.close()
        return time.time()


class Migration:
    """The migration command; its output goes to files, so it can be polled while it runs."""

    def __init__(self, command: list[str], env: dict[str, str], output: Path):
        self.stdout, self.stderr = output.with_suffix(".out"), output.with_suffix(".err")
        with self.stdout.open("w") as out, self.stderr.open("w") as err:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        self.began = time.time()
        self.ended: float | None = None

    def running(self) -> bool:
        if self.ended is None and self.process.poll() is not None:
            self.ended = time.time()
        return self.ended is None

    def sleep_until(self, moment: float) -> None:
        while time.time() < moment:
            self.running()
            time.sleep(0.01)

    def finish(self) -> float:
        self.process.wait(timeout=900)
        self.running()
        assert self.ended is not None
        return self.ended


def first_lock_wait(conn: psycopg.Connection[tuple[object, ...]],
                    migration: Migration) -> float | None:
    """When the migration first waited for a lock (None: it never did): any session but the
    load's and this one waiting for a lock, a table's or another transaction's (CREATE/DROP
    INDEX CONCURRENTLY wait for the transactions that use the table, not for a table lock)."""
    while migration.running():
        if conn.execute("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND application_name IS DISTINCT FROM %s AND pid <> pg_backend_pid()",
                        (LOAD_APP,)).fetchone():
            return time.time()
        time.sleep(0.01)
    return None


@dataclass
class Window:
    """One migration under load: its exit code and times, and the load's latencies from its
    first lock wait (or start) until it and the conflicting transaction were done."""

    exit_code: int
    migration_s: float
    latencies: list[float]
    stdout: str
    stderr: str

    @property
    def failed(self) -> int:
        return sum(latency > APP_TIMEOUT_S for latency in self.latencies)


def under_load(server: PgServer, database: str, command: list[str], env: dict[str, str],
               work: Path, label: str, args: argparse.Namespace,
               applied: Callable[[psycopg.Connection[tuple[object, ...]]], bool]
               ) -> tuple[Window, bool]:
    """Run `command` against `database` under the open-loop load, with a transaction that read
    accounts committing `args.hold` seconds after the migration first waits for a lock."""
    url = server.app_url(database)
    with server.admin(database) as watcher, server.admin() as admin:
        load = Load(args.pgbench, server, database, work / f"load-{label}", args)
        time.sleep(args.warmup)
        blocker = Blocker(url)
        migration = Migration(command, env, work / label)
        waited = first_lock_wait(watcher, migration)
        migration.sleep_until((waited or time.time()) + args.hold)
        released = blocker.release()
        ended = migration.finish()
        if not load.wait_caught_up(max(ended, released)):
            print(f"warning: {label}: the load had not caught up when stopped", file=sys.stderr)
        samples = load.stop(admin)
        done = applied(watcher)
    start = (waited or migration.began) - 0.05  # the step queued up to one poll before
    window = [s.latency for s in samples if start <= s.scheduled <= max(ended, released)]
    if len(window) < 0.8 * args.rate * (max(ended, released) - start):
        print(f"warning: {label}: only {len(window)} transactions logged", file=sys.stderr)
    return Window(migration.process.returncode, ended - migration.began, window,
                  migration.stdout.read_text(), migration.stderr.read_text()), done



def migration_command(variant: str, url: str, migrations: Path, ini: Path,
                      args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "operator"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("PGOPTIONS", None)
    if variant == "schemashift":
        return [sys.executable, "-m", "schemashift.cli", "apply", "--json", "--database-url", url,
                "--migrations", str(migrations), "--lock-timeout", args.lock_timeout,
                "--lock-retries", str(args.lock_retries)], env
    if variant == "alembic-lock-timeout":
        env["PGOPTIONS"] = f"-c lock_timeout={postgres_ms(lock_timeout_s(args))}"
    return [sys.executable, "-m", "alembic", "-c", str(ini), "upgrade", "head"], env


def lock_timeout_s(args: argparse.Namespace) -> float:
    return float(options_table.LOCK_TIMEOUT.seconds(args.lock_timeout))



def copy_database(server: PgServer, template: str, database: str) -> None:
    with server.admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{database}" TEMPLATE "{template}" OWNER {APP_ROLE}')


def drop_database(server: PgServer, database: str) -> None:
    with server.admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def p99(latencies: list[float]) -> float:
    if len(latencies) < 100:
        return max(latencies, default=0.0)
    return statistics.quantiles(latencies, n=100)[98]



_LOGGING = ("[loggers]\nkeys = root\n[handlers]\nkeys = console\n[formatters]\nkeys = generic\n"
            "[logger_root]\nlevel = WARNING\nhandlers = console\n[handler_console]\n"
            "class = StreamHandler\nargs = (sys.stderr,)\nformatter = generic\n"
            "[formatter_generic]\nformat = %%(levelname)s %%(message)s\n")


def write_ini(path: Path, url: str, migrations: Path) -> Path:
    sa_url = url.replace("postgresql://", "postgresql+psycopg://").replace("%", "%%")
    path.write_text(f"[alembic]\nscript_location = {migrations}\nsqlalchemy.url = {sa_url}\n"
                    + _LOGGING)
    return path



def ratio(value: float, baseline: float) -> str:
    return f"{value / max(baseline, 1e-9):.1f}x"



def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


