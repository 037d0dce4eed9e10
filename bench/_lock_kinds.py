"""Each kind create-model-migration writes, applied to a populated table under the load:
schemashift's generated revision (`schemashift apply`) beside Alembic's plain autogenerate
output (`create-model-migration --unsafe`, run with `alembic upgrade head`).

Both revisions are written by `schemashift create-model-migration` from the same models against
the same database (a copy of a template with `--kind-rows` accounts), then each is applied to a
fresh copy of it while pgbench runs its open-loop load on `accounts` and a transaction that read
`accounts` stays open `--hold` seconds after the migration first waits for a lock. Per kind:
failed app transactions (over the app's statement timeout), p99 and max latency, whether the
change is in place afterwards, and the target: no failed transaction and a max latency within
lock_timeout + 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from _under_load import (
    copy_database,
    drop_database,
    lock_timeout_s,
    migration_command,
    p99,
    ratio,
    under_load,
    write_ini,
)
from tests.fixtures.postgres import PgServer

HEADER = '''\
import sqlalchemy as sa

metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})
owners = sa.Table("owners", metadata, sa.Column("id", sa.Integer, primary_key=True))
accounts = sa.Table(
    "accounts", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("balance", sa.BigInteger, nullable=False),
    sa.Column("owner_id", sa.Integer),
    sa.Column("email", sa.Text),
    sa.Column("note", sa.Text@NOTE@),@EXTRA@
)
'''
OWNERS = 100
INDEX = '\n    sa.Index("ix_accounts_owner_id", "owner_id"),'


@dataclass(frozen=True)
class Kind:
    name: str
    extra: str = ""  # what the models add to accounts
    before: str = ""  # what the first models already have
    note: str = ""  # the note column's extra arguments in the changed models
    args: tuple[str, ...] = ()  # create-model-migration's extra arguments (safe revision only)
    done: str = "SELECT true"  # true once the change is in place


KINDS = [
    Kind("index", INDEX, done="SELECT indisvalid FROM pg_index "
                              "WHERE indexrelid = to_regclass('ix_accounts_owner_id')"),
    Kind("unique", '\n    sa.UniqueConstraint("email"),',
         done="SELECT count(*) = 1 FROM pg_constraint WHERE conname = 'uq_accounts_email'"),
    Kind("foreign-key", '\n    sa.ForeignKeyConstraint(["owner_id"], ["owners.id"]),',
         done="SELECT coalesce(bool_and(convalidated), false) FROM pg_constraint "
              "WHERE conname = 'fk_accounts_owner_id_owners'"),
    Kind("check", '\n    sa.CheckConstraint("balance >= 0", name="balance_not_negative"),',
         done="SELECT coalesce(bool_and(convalidated), false) FROM pg_constraint "
              "WHERE conname = 'ck_accounts_balance_not_negative'"),
    Kind("not-null", note=", nullable=False",
         done="SELECT attnotnull FROM pg_attribute WHERE attrelid = 'accounts'::regclass "
              "AND attname = 'note'"),
    Kind("backfill", '\n    sa.Column("status", sa.Text, nullable=False),',
         args=("--backfill", "accounts.status='active'"),
         done="SELECT coalesce(bool_and(attnotnull), false) FROM pg_attribute "
              "WHERE attrelid = 'accounts'::regclass AND attname = 'status'"),
    Kind("drop-index", before=INDEX,
         done="SELECT to_regclass('ix_accounts_owner_id') IS NULL"),
]
SMALLEST = ("not-null",)  # an ACCESS EXCLUSIVE step that waits, then retries
VARIANTS = {"safe": "schemashift (generated)", "plain": "alembic (--unsafe)"}


@dataclass
class KindOutcome:
    kind: str
    variant: str
    exit_code: int
    applied: bool
    migration_s: float
    transactions: int
    failed: int
    p99_ms: float
    max_ms: float


def selected(names: str) -> list[Kind]:
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    unknown = sorted(set(wanted) - {kind.name for kind in KINDS})
    if unknown:
        raise SystemExit(f"--kinds: unknown {', '.join(unknown)}; the kinds are "
                         f"{', '.join(kind.name for kind in KINDS)}")
    return [kind for kind in KINDS if kind.name in wanted]


def write_models(directory: Path, name: str, extra: str = "", note: str = "") -> str:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.py").write_text(HEADER.replace("@EXTRA@", extra).replace("@NOTE@", note))
    return f"{name}:metadata"


def schemashift(*args: str, models: Path, url: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(models), *_our_path()])}
    done = subprocess.run([sys.executable, "-m", "schemashift.cli", *args, "--database-url",
                           url], capture_output=True, text=True, timeout=600, env=env)
    if done.returncode != 0:
        raise SystemExit(f"schemashift {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def _our_path() -> list[str]:
    root = Path(__file__).resolve().parent.parent
    return [str(root / "operator"), *filter(None, [os.environ.get("PYTHONPATH")])]


@dataclass
class Prepared:
    template: str  # a database at the first revision, with rows
    safe: Path  # migrations: the first revision, then the generated one
    plain: Path  # the first revision, then Alembic's plain one


def prepare(server: PgServer, work: Path, kind: Kind, rows: int,
            templates: dict[str, tuple[str, Path]]) -> Prepared:
    """The kind's template database and first revision (shared by kinds with the same first
    models) and its two histories, each written by create-model-migration."""
    models = work / "models"
    if kind.before not in templates:
        number = len(templates)
        first = write_models(models, f"first_{number}", kind.before)
        template, base = f"kinds_template_{number}", work / f"history-{number}"
        server.create_database(template)
        url = server.app_url(template)
        schemashift("create-model-migration", "-m", "accounts", "--apply", "--metadata", first,
                    "--migrations", str(base), models=models, url=url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"INSERT INTO owners SELECT generate_series(1, {OWNERS})")
            conn.execute(f"INSERT INTO accounts SELECT g, 0, 1 + g % {OWNERS}, "  # type: ignore[arg-type]
                         f"'a' || g || '@example.org', 'n' FROM generate_series(1, {rows}) g")
            conn.execute("VACUUM ANALYZE")
        templates[kind.before] = (template, base)
    template, base = templates[kind.before]
    changed = write_models(models, f"changed_{kind.name.replace('-', '_')}", kind.extra,
                           kind.note)
    histories = {}
    for variant, extra_args in (("safe", kind.args), ("plain", ("--unsafe",))):
        directory = work / f"{kind.name}-{variant}"
        shutil.copytree(base, directory)
        schemashift("create-model-migration", "-m", f"{kind.name} ({variant})", "--metadata",
                    changed, "--migrations", str(directory), *extra_args, models=models,
                    url=server.app_url(template))
        histories[variant] = directory
    return Prepared(template, histories["safe"], histories["plain"])


def applied_check(kind: Kind) -> Callable[[psycopg.Connection[tuple[object, ...]]], bool]:
    def check(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
        row = conn.execute(kind.done).fetchone()  # type: ignore[arg-type]
        return bool(row and row[0])
    return check


def table_header() -> str:
    return (f"{'kind':<13}{'run':<26}{'exit':>5}{'done':>6}{'migration s':>13}{'txns':>7}"
            f"{'failed':>8}{'p99 ms':>9}{'max ms':>9}")


def table_row(label: str, o: KindOutcome) -> str:
    return (f"{o.kind:<13}{label:<26}{o.exit_code:>5}{'yes' if o.applied else 'NO':>6}"
            f"{o.migration_s:>13.2f}{o.transactions:>7}{o.failed:>8}{o.p99_ms:>9.0f}"
            f"{o.max_ms:>9.0f}")


def describe(args: argparse.Namespace, lock_timeout_ms: float) -> str:
    return textwrap.fill(
        f"Generated kinds on a table of {args.kind_rows:,} accounts: each kind's revision "
        "written by create-model-migration (safe: `schemashift apply`; plain: --unsafe, "
        "`alembic upgrade head`), under the same load and conflicting transaction; target: 0 "
        f"failed and max <= lock_timeout + 100 ms = {lock_timeout_ms + 100:.0f} ms.", 100)


def run_kinds(server: PgServer, base: Path, args: argparse.Namespace) -> None:
    """Each generated kind, safe beside plain, interleaved in each repeat."""
    chosen = selected(args.kinds)
    if not chosen:
        return
    print("\n" + describe(args, 1000 * lock_timeout_s(args)))
    templates: dict[str, tuple[str, Path]] = {}
    prepared = {kind.name: prepare(server, base / "kinds", kind, args.kind_rows,
                            templates) for kind in chosen}
    results: dict[tuple[str, str], list[KindOutcome]] = {}
    print(table_header())
    for repeat in range(1, args.repeats + 1):
        for kind in chosen:
            for variant, label in VARIANTS.items():
                outcome = kind_once(server, base / f"kinds-{repeat}", kind, variant,
                                    prepared[kind.name], args)
                results.setdefault((kind.name, variant), []).append(outcome)
                print(table_row(f"{repeat}: {label}", outcome), flush=True)
    kinds_report(chosen, results, args)


def kind_once(server: PgServer, work: Path, kind: Kind, variant: str,
              prepared: Prepared, args: argparse.Namespace) -> KindOutcome:
    database = f"kind_{kind.name.replace('-', '_')}_{variant}"
    copy_database(server, prepared.template, database)
    url = server.app_url(database)
    work.mkdir(parents=True, exist_ok=True)
    migrations = prepared.safe if variant == "safe" else prepared.plain
    ini = write_ini(work / f"{kind.name}-{variant}.ini", url, migrations)
    command, env = migration_command("schemashift" if variant == "safe" else "alembic", url,
                                     migrations, ini, args)
    window, applied = under_load(server, database, command, env, work,
                                 f"{kind.name}-{variant}", args, applied_check(kind))
    drop_database(server, database)
    if window.exit_code != 0 and variant == "safe":
        print(f"{kind.name}: schemashift exited {window.exit_code}: "
              f"{_result_message(window.stdout)}{window.stderr[-1500:]}", file=sys.stderr)
    return KindOutcome(
        kind=kind.name, variant=variant, exit_code=window.exit_code, applied=applied,
        migration_s=window.migration_s, transactions=len(window.latencies),
        failed=window.failed, p99_ms=1000 * p99(window.latencies),
        max_ms=1000 * max(window.latencies, default=0.0))


def _result_message(json_lines: str) -> str:
    results = [json.loads(line) for line in json_lines.splitlines()
               if line.startswith('{"event": "result"')]
    return f"{results[-1].get('reason')}: {results[-1].get('message')}" if results else ""


def kinds_report(chosen: list[Kind], results: dict[tuple[str, str],
                 list[KindOutcome]], args: argparse.Namespace) -> None:
    limit = 1000 * lock_timeout_s(args) + 100
    print(f"\nmedians of {args.repeats} (target for schemashift: 0 failed, max <= "
          f"{limit:.0f} ms):")
    print(table_header())
    for kind in chosen:
        safe, plain = (median_kind(results[(kind.name, v)]) for v in VARIANTS)
        for variant, outcome in zip(VARIANTS.values(), (safe, plain), strict=True):
            print(table_row(variant, outcome))
        met = safe.failed == 0 and safe.max_ms <= limit and safe.exit_code == 0 and safe.applied
        print(f"{kind.name:<13}plain / schemashift: p99 {ratio(plain.p99_ms, safe.p99_ms)}, "
              f"max {ratio(plain.max_ms, safe.max_ms)}, failed {plain.failed} vs "
              f"{safe.failed}; target {'met' if met else 'NOT met'}")


def median_kind(runs: list[KindOutcome]) -> KindOutcome:
    def med(values: Sequence[float]) -> float:
        return float(statistics.median(values))

    return KindOutcome(
        kind=runs[0].kind, variant=runs[0].variant, exit_code=max(r.exit_code for r in runs),
        applied=all(r.applied for r in runs), migration_s=med([r.migration_s for r in runs]),
        transactions=round(med([r.transactions for r in runs])),
        failed=round(med([r.failed for r in runs])), p99_ms=med([r.p99_ms for r in runs]),
        max_ms=med([r.max_ms for r in runs]))
