"""A run killed while its targeted copy uploads leaves nothing that could be taken for a copy: no
final key, no catalog row, the database unchanged; prune removes the leftover once stale, and a
rerun copies again."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.histories import Revision, write_history
from tests.fixtures.models import execute, query
from tests.fixtures.postgres import PgServer
from tests.fixtures.runner_cli import apply_command, cli_env, revision, run_apply
from tests.fixtures.s3 import S3Server
from tests.integration.test_retention import keys, schemashift

pytestmark = pytest.mark.integration

BIG = Revision("g1", "big table", 'op.execute("CREATE TABLE big (id int PRIMARY KEY, '
                                  'payload text)")', 'op.execute("DROP TABLE big")')
DROP_PAYLOAD = Revision("g2", "drop payload", 'op.drop_column("big", "payload")',
                        'op.add_column("big", sa.Column("payload", sa.Text))')


def copy_part_uploaded(client: Any, bucket: str) -> bool:
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        if "/copies/" in upload["Key"] and client.list_parts(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]).get("Parts"):
            return True
    return False


def test_killed_during_the_copy_leaves_no_copy_and_a_rerun_copies_again(
    database_url: str, tmp_path: Path, pg_server: PgServer, s3_server: S3Server, s3_bucket: str
) -> None:
    migrations = write_history(tmp_path, [BIG, DROP_PAYLOAD])
    assert run_apply(database_url, migrations, "--target", "g1").exit_code == 0
    execute(database_url, "INSERT INTO big SELECT g, repeat(md5(g::text), 8) "
                          "FROM generate_series(1, 400000) g")
    prefix = f"s3://{s3_bucket}/app/"
    client = s3_server.client()
    runner = subprocess.Popen(
        apply_command(database_url, migrations, "--backup-url", prefix, "--allow",
                      "drop-column"),
        env=cli_env(pg_server.bin_dir, s3_server.env()), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not copy_part_uploaded(client, s3_bucket):
            assert runner.poll() is None, "the run ended before its copy could be killed"
            assert time.monotonic() < deadline, "no part of the copy was uploaded in time"
            time.sleep(0.02)
        os.kill(runner.pid, signal.SIGKILL)
    finally:
        runner.kill()
        runner.wait()

    assert not [k for k in keys(s3_server, s3_bucket) if k.endswith(".copy")]
    assert query(database_url, "SELECT count(*) FROM schemashift.preserved_data") == [(0,)]
    assert revision(database_url) == "g1"
    assert query(database_url, "SELECT count(payload) FROM big") == [(400000,)]

    time.sleep(2.2)
    pruned = schemashift(s3_server, "backups", "prune", "--backup-url", prefix,
                         "--stale-after", "1s")
    assert pruned.returncode == 0, pruned.stderr
    assert "/copies/" in pruned.stdout and "left by an interrupted run" in pruned.stdout
    assert not [u for u in client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
                if "/copies/" in u["Key"]]

    rerun = run_apply(database_url, migrations, "--backup-url", prefix, "--allow",
                      "drop-column", pg_bin_dir=pg_server.bin_dir, env=s3_server.env())

    assert rerun.exit_code == 0, rerun
    [copy] = rerun.result["targetedCopies"]
    assert copy["rows"] == 400000
    assert [k for k in keys(s3_server, s3_bucket) if k.endswith(".copy")] == [
        copy["url"].removeprefix(f"s3://{s3_bucket}/")]
    assert query(database_url, "SELECT url FROM schemashift.preserved_data") == [(copy["url"],)]
