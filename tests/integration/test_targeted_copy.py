"""Targeted copy on real PostgreSQL 18 and SeaweedFS S3: what the plan drops or rewrites is copied
before the change, and the runner's rollback by downgrade puts it back byte for byte."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.fixtures.histories import Revision, write_history
from tests.fixtures.models import invoke, query
from tests.fixtures.postgres import PgServer
from tests.fixtures.runner_cli import revision, run_apply
from tests.fixtures.s3 import S3Server

pytestmark = pytest.mark.integration

# Every column type whose text form could go wrong on the way out and back in.
CREATE_RECORDS = Revision(
    "a1", "create records",
    """
    op.execute('''CREATE TABLE records (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        label text NOT NULL,
        blob bytea, note text, amount numeric(30, 10), ratio double precision,
        seen timestamptz, tags text[], doc jsonb, raw json, span interval)''')
    """,
    'op.drop_table("records")',
)
ODD_ROWS = r"""
INSERT INTO records (label, blob, note, amount, ratio, seen, tags, doc, raw, span) VALUES
 ('plain', '\x00ff10'::bytea, 'tab	newline
backslash \ quote '' "dq" \N NUL-less ünïcødé 🐘', 12345678901234567890.0123456789,
  0.1, '2024-02-29 23:59:59.999999+05:45', ARRAY['a', NULL, 'b,c', '"q"', E'x\ny'],
  '{"b": [1, 2.50, null], "a": "é"}', '{ "dup": 1,  "dup": 2 }',
  '1 year 2 mons 3 days 04:05:06.789'),
 ('nulls', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 ('edges', ''::bytea, '', 'NaN', '-Infinity', 'infinity', '{}', 'null', '[]', '-1 day'),
 ('float', decode(repeat('ab', 3000), 'hex'), repeat('x', 100000), -0.0000000001,
  1.0000000000000002, '1970-01-01 00:00:00+00', ARRAY[''], '"s"', '"s"', '0')
"""
DROPPED = ("blob", "note", "amount", "ratio", "seen", "tags", "doc", "raw", "span")
DROP_COLUMNS = Revision(
    "b2", "drop the record details",
    "\n".join(f'op.drop_column("records", "{name}")' for name in DROPPED),
    """
    op.add_column("records", sa.Column("blob", sa.LargeBinary))
    op.add_column("records", sa.Column("note", sa.Text))
    op.add_column("records", sa.Column("amount", sa.Numeric(30, 10)))
    op.add_column("records", sa.Column("ratio", sa.Float(53)))
    op.add_column("records", sa.Column("seen", sa.DateTime(timezone=True)))
    op.add_column("records", sa.Column("tags", postgresql.ARRAY(sa.Text)))
    op.add_column("records", sa.Column("doc", postgresql.JSONB))
    op.add_column("records", sa.Column("raw", postgresql.JSON))
    op.add_column("records", sa.Column("span", postgresql.INTERVAL))
    """,
)
FAILS = Revision(
    "c3", "fails on the data",
    'op.execute("INSERT INTO records (id, label) OVERRIDING SYSTEM VALUE VALUES (1, \'dup\')")',
)
ALLOW = ("--allow", "drop-column", "--allow", "drop-table", "--allow", "change-column-type")


# Each value in its binary send form: the stored value itself, not a rendering of it.
SENT = ("id, label, byteasend(blob), textsend(note), numeric_send(amount), float8send(ratio), "
        "timestamptz_send(seen), array_send(tags), jsonb_send(doc), json_send(raw), "
        "interval_send(span)")


def values(database_url: str, table: str = "records", columns: str = SENT,
           order: str = "id") -> list[tuple[Any, ...]]:
    """Each row as PostgreSQL prints it (text) and as its values' binary send forms."""
    with psycopg.connect(database_url) as conn:
        conn.execute("SET TimeZone = 'America/Los_Angeles'")  # not the copy's UTC
        texts = conn.execute(f"SELECT t::text FROM {table} t ORDER BY {order}").fetchall()
        sent = conn.execute(f"SELECT {columns} FROM {table} ORDER BY {order}").fetchall()
    return list(zip(texts, sent, strict=True))


def seeded(database_url: str, tmp_path: Path, history: list[Revision], seed: str,
           target: str = "a1") -> Path:
    migrations = write_history(tmp_path, history)
    run = run_apply(database_url, migrations, "--target", target)
    assert run.exit_code == 0, run
    with psycopg.connect(database_url) as conn:
        conn.execute(seed)  # type: ignore[arg-type]
    return migrations


def test_a_dropped_column_is_copied_and_the_rollback_puts_it_back_byte_for_byte(
    database_url: str, tmp_path: Path, pg_server: PgServer, s3_server: S3Server, s3_bucket: str
) -> None:
    migrations = seeded(database_url, tmp_path, [CREATE_RECORDS, DROP_COLUMNS, FAILS], ODD_ROWS)
    before = values(database_url)

    run = run_apply(database_url, migrations, "--backup-url", f"s3://{s3_bucket}/app/", *ALLOW,
                    pg_bin_dir=pg_server.bin_dir, env=s3_server.env())

    assert run.exit_code == 1, run
    assert run.result["reason"] == "RolledBackByDowngrade", run
    [copy] = run.result["targetedCopies"]
    assert copy["revision"] == "b2" and copy["table"] == "public.records"
    assert copy["columns"] == list(DROPPED) and copy["keyColumns"] == ["id"]
    assert copy["rows"] == 4 and copy["verified"] is True and len(copy["sha256"]) == 64
    assert copy["url"].startswith(f"s3://{s3_bucket}/app/") and copy["url"].endswith(".copy")
    head = s3_server.client().head_object(
        Bucket=s3_bucket, Key=copy["url"].removeprefix(f"s3://{s3_bucket}/"))
    assert head["ContentLength"] == copy["sizeBytes"]
    assert "put back the targeted copies of public.records.blob" in run.result["message"]
    phases = [e["phase"] for e in run.of("phase")]
    assert phases.index("BackingUp") < phases.index("Migrating")
    assert revision(database_url) == "a1"
    assert values(database_url) == before
    for secret in ("app-Secr3t-pw", s3_server.secret_key):
        assert secret not in run.stdout + run.stderr


CREATE_SHOP = Revision(
    "s1", "create customers and orders",
    """
    op.execute("CREATE TYPE mood AS ENUM ('calm', 'angry')")
    op.execute('''CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL,
                                          weight numeric(10, 4), mood mood)''')
    op.execute('''CREATE TABLE orders (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        customer_id integer NOT NULL REFERENCES customers (id),
        note text, doubled bigint GENERATED ALWAYS AS (id * 2) STORED)''')
    """,
    """
    op.execute("DROP TABLE orders")
    op.execute("DROP TABLE customers")
    op.execute("DROP TYPE mood")
    """,
)
SHOP_ROWS = """
INSERT INTO customers (name, weight, mood) VALUES ('a', 1.2345, 'calm'), ('b', NULL, NULL),
    ('c', -99.9999, 'angry');
INSERT INTO orders (customer_id, note) SELECT 1 + g % 3, 'n' || g FROM generate_series(1, 50) g;
"""
# A table dropped (identity, a foreign key, a stored generated column) and a narrowed type.
DROP_ORDERS_NARROW_WEIGHT = Revision(
    "s2", "drop orders, narrow weight",
    """
    op.drop_table("orders")
    op.alter_column("customers", "weight", type_=sa.Numeric(10, 1),
                    existing_type=sa.Numeric(10, 4))
    """,
    """
    op.alter_column("customers", "weight", type_=sa.Numeric(10, 4),
                    existing_type=sa.Numeric(10, 1))
    op.execute('''CREATE TABLE orders (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        customer_id integer NOT NULL REFERENCES customers (id),
        note text, doubled bigint GENERATED ALWAYS AS (id * 2) STORED)''')
    """,
)
FAILS_ON_CUSTOMERS = Revision(
    "s3", "fails", 'op.execute("INSERT INTO customers (id, name) VALUES (1, \'dup\')")')


def test_a_dropped_table_and_a_narrowed_type_come_back_with_the_rollback(
    database_url: str, tmp_path: Path, pg_server: PgServer, s3_server: S3Server, s3_bucket: str
) -> None:
    migrations = seeded(database_url, tmp_path,
                        [CREATE_SHOP, DROP_ORDERS_NARROW_WEIGHT, FAILS_ON_CUSTOMERS],
                        SHOP_ROWS, target="s1")
    customers = values(database_url, "customers", "id, numeric_send(weight), mood::text")
    orders = values(database_url, "orders", "id, customer_id, textsend(note), doubled")

    run = run_apply(database_url, migrations, "--backup-url", f"s3://{s3_bucket}/app/", *ALLOW,
                    pg_bin_dir=pg_server.bin_dir, env=s3_server.env())

    assert run.result["reason"] == "RolledBackByDowngrade", run
    copies = {c["table"]: c for c in run.result["targetedCopies"]}
    assert copies["public.orders"]["columns"] == ["id", "customer_id", "note"]  # not `doubled`
    assert copies["public.orders"]["rows"] == 50
    assert (copies["public.customers"]["columns"], copies["public.customers"]["rule"]) == (
        ["weight"], "change-column-type")
    assert values(database_url, "customers", "id, numeric_send(weight), mood::text") == customers
    assert values(database_url, "orders", "id, customer_id, textsend(note), doubled") == orders
    with psycopg.connect(database_url) as conn:  # the identity continues after the restored ids
        assert conn.execute("INSERT INTO orders (customer_id) VALUES (2) RETURNING id"
                            ).fetchone() == (51,)


NO_KEY = Revision(
    "k1", "a table without a primary key",
    'op.execute("CREATE TABLE events (kind text, at date, payload text, weight real)")',
    'op.execute("DROP TABLE events")',
)
# Duplicates in every other column: only the multiset per group can be restored, and is.
NO_KEY_ROWS = """
INSERT INTO events VALUES ('a', '2024-01-01', 'p1', 1.5), ('a', '2024-01-01', 'p2', 1.5),
    ('a', '2024-01-01', 'p3', 1.5), ('b', NULL, 'p4', NULL), ('b', NULL, NULL, NULL),
    (NULL, NULL, 'p6', 2.25);
"""
DROP_PAYLOAD = Revision(
    "k2", "drop payload", 'op.drop_column("events", "payload")',
    'op.add_column("events", sa.Column("payload", sa.Text))')
FAILS_ON_EVENTS = Revision("k3", "fails", 'op.execute("SELECT 1 / 0")')


def test_without_a_primary_key_whole_rows_are_copied_and_each_group_gets_its_values_back(
    database_url: str, tmp_path: Path, pg_server: PgServer, s3_server: S3Server, s3_bucket: str
) -> None:
    migrations = seeded(database_url, tmp_path, [NO_KEY, DROP_PAYLOAD, FAILS_ON_EVENTS],
                        NO_KEY_ROWS, target="k1")
    every = "kind, at, payload, weight"
    before = sorted(map(str, query(database_url, f"SELECT {every} FROM events")))

    run = run_apply(database_url, migrations, "--backup-url", f"s3://{s3_bucket}/app/", *ALLOW,
                    pg_bin_dir=pg_server.bin_dir, env=s3_server.env())

    assert run.result["reason"] == "RolledBackByDowngrade", run
    [copy] = run.result["targetedCopies"]
    assert (copy["columns"], copy["keyColumns"]) == (["payload"], ["kind", "at", "weight"])
    assert sorted(map(str, query(database_url, f"SELECT {every} FROM events"))) == before


def test_without_a_backup_url_nothing_is_copied_and_no_catalog_is_created(
    database_url: str, tmp_path: Path
) -> None:
    migrations = seeded(database_url, tmp_path, [CREATE_RECORDS, DROP_COLUMNS], ODD_ROWS)

    run = run_apply(database_url, migrations, *ALLOW)

    assert run.exit_code == 0, run
    assert run.result["targetedCopies"] == []
    assert query(database_url, "SELECT to_regnamespace('schemashift')") == [(None,)]


def test_the_plan_says_what_a_run_with_a_backup_url_copies(
    database_url: str, tmp_path: Path
) -> None:
    migrations = seeded(database_url, tmp_path, [CREATE_RECORDS, DROP_COLUMNS], ODD_ROWS)

    done = invoke("plan", "--database-url", database_url, "--migrations", str(migrations))

    assert done.code == 0, done
    assert ("Copied before the change (with a backup URL): records.blob [b2: drop-column], "
            "records.note [b2: drop-column]") in done.out
