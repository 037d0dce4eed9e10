"""Backup retention on real SeaweedFS S3 and PostgreSQL 18: keep N across 10 runs, maxAge,
`schemashift backups list|prune [--dry-run]`, leftovers of interrupted runs, bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from schemashift.runner import dump_manifest
from tests.fixtures.histories import Revision, write_history
from tests.fixtures.postgres import PgServer
from tests.fixtures.runner_cli import cli_env, run_apply
from tests.fixtures.s3 import S3Server

pytestmark = pytest.mark.integration

RUNS = 10
HISTORY = [Revision(f"r{n:02d}", f"table {n}", f'op.create_table("t{n}", '
                    'sa.Column("id", sa.Integer, primary_key=True))', f'op.drop_table("t{n}")')
           for n in range(1, RUNS + 1)]


def schemashift(s3_server: S3Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "schemashift.cli", *args], capture_output=True,
                          text=True, timeout=120, env=cli_env(extra=s3_server.env()))


def listed(s3_server: S3Server, prefix: str) -> list[dict[str, Any]]:
    done = schemashift(s3_server, "backups", "list", "--backup-url", prefix, "--json")
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)["backups"]
    return rows


def keys(s3_server: S3Server, bucket: str) -> list[str]:
    client = s3_server.client()
    return sorted(item["Key"] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket) for item in page.get("Contents", []))


def test_retention_keeps_exactly_keep_backups_across_ten_runs(
    database_url: str, tmp_path: Path, pg_server: PgServer, s3_server: S3Server, s3_bucket: str
) -> None:
    migrations = write_history(tmp_path, HISTORY)
    prefix = f"s3://{s3_bucket}/app/"
    taken: list[str] = []
    for number in range(1, RUNS + 1):
        run = run_apply(database_url, migrations, "--target", f"r{number:02d}",
                        "--backup-url", prefix, "--backup-keep", "3",
                        pg_bin_dir=pg_server.bin_dir, env=s3_server.env())
        assert run.exit_code == 0, run
        taken.append(run.result["backup"]["url"])
        [applied] = run.of("backup_retention")
        assert applied["deleted"] == taken[-4:-3]  # the one that fell out of the newest 3

        rows = listed(s3_server, prefix)

        assert [row["url"] for row in rows] == taken[::-1][:3]  # newest first, this run's too
        assert all(row["verified"] and row["database"] == database_url.rsplit("/", 1)[-1]
                   for row in rows)
    assert [row["fromRevision"] for row in rows] == ["r09", "r08", "r07"]
    kept = sorted(url.removeprefix(f"s3://{s3_bucket}/") for url in taken[-3:])
    stored = keys(s3_server, s3_bucket)
    # A .dump (one CPU) or a directory backup's .dumpdir manifest, whose parts go with it.
    assert [k for k in stored if k.endswith((".dump", dump_manifest.SUFFIX))] == kept
    assert {k.partition(dump_manifest.PARTS)[0] for k in stored
            if dump_manifest.PARTS in k} <= set(kept)


def test_prune_dry_run_deletes_nothing_then_prune_applies_the_same_decisions(
    database_url: str, tmp_path: Path, pg_server: PgServer, s3_server: S3Server, s3_bucket: str
) -> None:
    migrations = write_history(tmp_path, HISTORY[:4])
    prefix = f"s3://{s3_bucket}/app/"
    for number in range(1, 5):
        assert run_apply(database_url, migrations, "--target", f"r{number:02d}",
                         "--backup-url", prefix, pg_bin_dir=pg_server.bin_dir,
                         env=s3_server.env()).exit_code == 0
    every = [row["url"] for row in listed(s3_server, prefix)]
    before = keys(s3_server, s3_bucket)

    dry = schemashift(s3_server, "backups", "prune", "--backup-url", prefix,
                      "--backup-keep", "2", "--dry-run", "--json")

    assert dry.returncode == 0, dry.stderr
    decisions = {d["url"]: d["action"] for d in json.loads(dry.stdout)["decisions"]}
    assert decisions == {every[0]: "keep", every[1]: "keep", every[2]: "would delete",
                         every[3]: "would delete"}
    assert keys(s3_server, s3_bucket) == before
    text = schemashift(s3_server, "backups", "prune", "--backup-url", prefix,
                       "--backup-keep", "2", "--dry-run")
    assert "2 object(s) would delete (dry run: nothing was deleted)" in text.stdout
    assert keys(s3_server, s3_bucket) == before

    done = schemashift(s3_server, "backups", "prune", "--backup-url", prefix,
                       "--backup-keep", "2")

    assert done.returncode == 0, done.stderr
    assert "2 object(s) deleted" in done.stdout
    assert [row["url"] for row in listed(s3_server, prefix)] == every[:2]

    time.sleep(2.2)  # both remaining are now older than 1s; the newest still stays
    aged = schemashift(s3_server, "backups", "prune", "--backup-url", prefix,
                       "--backup-max-age", "1s")

    assert aged.returncode == 0, aged.stderr
    assert [row["url"] for row in listed(s3_server, prefix)] == every[:1]
    table = schemashift(s3_server, "backups", "list", "--backup-url", prefix)
    assert table.stdout.splitlines()[0].split() == [
        "URL", "DATABASE", "FROM-REVISION", "TIME", "SIZE", "VERIFIED"]
    assert every[0] in table.stdout and table.stdout.rstrip().endswith("yes")


def test_prune_removes_stale_leftovers_only_past_the_safety_age(
    s3_server: S3Server, s3_bucket: str
) -> None:
    client = s3_server.client()
    prefix = f"s3://{s3_bucket}/app/"
    stamp = "20261201T120000.000Z"
    leftovers = [f"app/db/{stamp}-a1.dump.partial",
                 f"app/db/copies/{stamp}-b2-public.t.copy.partial"]
    for key in leftovers:
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"half")
    upload = client.create_multipart_upload(Bucket=s3_bucket,
                                            Key=f"app/db/{stamp}-c3.dump.partial")["UploadId"]
    client.put_object(Bucket=s3_bucket, Key="app/db/notes.partial", Body=b"not ours")
    client.put_object(Bucket=s3_bucket, Key=f"app/db/{stamp}-a1.dump", Body=b"unverified")

    young = schemashift(s3_server, "backups", "prune", "--backup-url", prefix, "--json")

    assert young.returncode == 0, young.stderr
    assert {d["action"] for d in json.loads(young.stdout)["decisions"]} == {"keep"}
    time.sleep(2.2)
    dry = schemashift(s3_server, "backups", "prune", "--backup-url", prefix,
                      "--stale-after", "1s", "--dry-run", "--json")
    assert sorted(d["url"] for d in json.loads(dry.stdout)["decisions"]
                  if d["action"] == "would delete") == sorted(
        [f"s3://{s3_bucket}/{k}" for k in leftovers] + [f"s3://{s3_bucket}/app/db/{stamp}"
                                                         "-c3.dump.partial"])

    done = schemashift(s3_server, "backups", "prune", "--backup-url", prefix,
                       "--stale-after", "1s")

    assert done.returncode == 0, done.stderr
    assert keys(s3_server, s3_bucket) == ["app/db/20261201T120000.000Z-a1.dump",
                                          "app/db/notes.partial"]
    assert not [u for u in client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
                if u["UploadId"] == upload]
    rows = listed(s3_server, prefix)
    assert [(r["verified"], r["database"]) for r in rows] == [(False, "db")]


@pytest.mark.parametrize(("args", "exit_code", "says"), [
    (("--backup-keep", "-1"), 2, "backup keep must be a whole number from 0 to 100000"),
    (("--backup-max-age", "30d"), 2, "backup max age '30d' is not a duration"),
    (("--backup-max-age", "garbage-AKIA-like"), 2, "is not a duration"),
    (("--stale-after", "0s"), 2, "stale after '0s' must be greater than zero"),
    (("--backup-keep", "x"), 2, "'x' is not a valid integer"),
])
def test_bad_prune_inputs_are_refused_and_change_nothing(
    s3_server: S3Server, s3_bucket: str, args: tuple[str, ...], exit_code: int, says: str
) -> None:
    s3_server.client().put_object(Bucket=s3_bucket, Key="app/db/x.partial", Body=b"")
    before = keys(s3_server, s3_bucket)

    done = schemashift(s3_server, "backups", "prune", "--backup-url", f"s3://{s3_bucket}/app/",
                       *args)

    assert done.returncode == exit_code, done
    assert says in done.stderr
    assert keys(s3_server, s3_bucket) == before
    assert s3_server.secret_key not in done.stdout + done.stderr


def test_no_bucket_is_a_clear_error(s3_server: S3Server) -> None:
    for command in (("list",), ("prune", "--backup-keep", "1")):
        done = schemashift(s3_server, "backups", *command, "--backup-url",
                           "s3://no-such-bucket-here/app/")

        assert done.returncode == 3, done
        assert "bucket 'no-such-bucket-here' does not exist" in done.stderr
        assert s3_server.secret_key not in done.stdout + done.stderr


def test_apply_refuses_bad_retention_before_connecting(tmp_path: Path, s3_server: S3Server,
                                                       s3_bucket: str) -> None:
    migrations = write_history(tmp_path, HISTORY[:1])
    run = run_apply("postgresql://app:pw@127.0.0.1:1/none", migrations, "--backup-url",
                    f"s3://{s3_bucket}/app/", "--backup-max-age", "1y", env=s3_server.env())

    assert run.exit_code == 2, run
    assert "error: backup max age '1y' is not a duration" in run.stderr
    assert run.events == []
