"""`pg_dump -Fd -j N` backups to real S3 (SeaweedFS) from real PostgreSQL 18: each file uploaded
as it is written, verified as a whole, restorable with `pg_restore -j` and all-or-nothing; a
killed run leaves nothing that passes for a backup; a damaged part is caught; the size guard
refuses a dump that would overrun the deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemashift import errors, reasons
from schemashift.runner import backup, dump_dir, parallel_backup
from schemashift.runner.dump_manifest import Manifest, Part
from schemashift.storage import s3
from tests.fixtures import corpus
from tests.fixtures.histories import write_history
from tests.fixtures.postgres import PgServer
from tests.fixtures.runner_cli import run_apply, scalar
from tests.fixtures.s3 import S3Server
from tests.fixtures.throttle import throttled
from tests.integration.test_backup import (
    Events,
    _damage,
    cli_env,
    objects,
    populate,
    snapshot,
    take,
)
from tests.integration.test_runner_apply import CREATE_PATIENTS
from tests.integration.test_runner_locks import CREATE_NOTES
from tests.integration.test_runner_rollback import FAILS_ON_DATA

pytestmark = pytest.mark.integration

MORE_TABLES = """
CREATE TABLE notes AS SELECT g AS id, repeat(md5(g::text), 8) AS body
    FROM generate_series(1, 20000) g;
CREATE TABLE empty_one (id int);
SELECT lo_from_bytea(0, 'a large object');
"""


def parts_of(server: S3Server, bucket: str, url: str) -> dict[str, int]:
    key = url.split("/", 3)[3] + ".parts/"
    found = server.client().list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
    return {item["Key"].removeprefix(key): item["Size"] for item in found}


def manifest_of(server: S3Server, bucket: str, url: str) -> Manifest:
    key = url.split("/", 3)[3]
    obj = server.client().get_object(Bucket=bucket, Key=key)
    return Manifest.parse(obj["Body"].read(), obj["Metadata"]["schemashift-sha256"], key)


def test_directory_backup_round_trip_with_parallel_and_atomic_restore(
    pg_server: PgServer, s3_server: S3Server, s3_env: dict[str, str], s3_bucket: str,
    database_url: str,
) -> None:
    populate(database_url)
    populate(database_url, MORE_TABLES)
    before = snapshot(database_url, pg_server.bin_dir)
    events = Events()

    status = take(database_url, s3_bucket, pg_server.bin_dir, reporter=events, jobs=2)

    assert status.verified and status.url.endswith("-1a2b3c4d.dumpdir")
    manifest = manifest_of(s3_server, s3_bucket, status.url)
    stored = parts_of(s3_server, s3_bucket, status.url)
    assert stored == {part.name: part.size for part in manifest.parts}
    assert "toc.dat" in stored and any(name.startswith("blob") for name in stored)
    assert sum(1 for name in stored if dump_dir.DATA_FILE.match(name)) == 4  # 4 tables
    assert status.sizeBytes == manifest.size == sum(stored.values())
    assert manifest.toc_entries > 10
    head = s3_server.client().head_object(Bucket=s3_bucket, Key=status.url.split("/", 3)[3])
    assert head["Metadata"]["schemashift-format"] == "directory"
    assert head["Metadata"]["schemashift-sha256"] == status.sha256
    assert events.states("backup")[-2:] == ["Uploaded", "Verified"]
    assert [b.url for b in backup.list_backups(f"s3://{s3_bucket}/app/")] == [
        s3.parse_url(status.url)]

    copy = pg_server.create_database()
    try:
        restored = pg_server.app_url(copy)
        backup.restore_backup(restored, status.url, clean=False, jobs=2, reporter=events,
                              pg_bin_dir=pg_server.bin_dir)
        assert snapshot(restored, pg_server.bin_dir) == before
    finally:
        pg_server.drop_database(copy)
    _damage(database_url)
    backup.restore_backup(database_url, status.url, clean=True, jobs=1, reporter=events,
                          pg_bin_dir=pg_server.bin_dir)
    assert snapshot(database_url, pg_server.bin_dir) == before


def test_a_damaged_or_missing_part_is_caught_before_the_database_changes(
    pg_server: PgServer, s3_server: S3Server, s3_env: dict[str, str], s3_bucket: str,
    database_url: str,
) -> None:
    populate(database_url)
    status = take(database_url, s3_bucket, pg_server.bin_dir, jobs=2)
    prefix = status.url.split("/", 3)[3] + ".parts/"
    data = next(n for n in parts_of(s3_server, s3_bucket, status.url)
                if dump_dir.DATA_FILE.match(n))
    client = s3_server.client()
    body = bytearray(client.get_object(Bucket=s3_bucket, Key=prefix + data)["Body"].read())
    body[len(body) // 2] ^= 0xFF  # same size, another sha256
    client.put_object(Bucket=s3_bucket, Key=prefix + data, Body=bytes(body))
    _damage(database_url)
    damaged = snapshot(database_url, pg_server.bin_dir)

    for jobs in (1, 2):
        with pytest.raises(errors.MigrationFailed) as caught:
            backup.restore_backup(database_url, status.url, clean=True, jobs=jobs,
                                  reporter=Events(), pg_bin_dir=pg_server.bin_dir)
        assert caught.value.reason == reasons.BACKUP_VERIFY_FAILED
        assert data in str(caught.value) and "was not changed" in str(caught.value)
        assert snapshot(database_url, pg_server.bin_dir) == damaged

    client.delete_object(Bucket=s3_bucket, Key=prefix + data)
    with pytest.raises(errors.MigrationFailed) as caught:
        backup.restore_backup(database_url, status.url, clean=True, jobs=1,
                              reporter=Events(), pg_bin_dir=pg_server.bin_dir)
    assert f"{data} is missing" in str(caught.value)
    store = backup.open_store()
    found = [Part(n, 0, "") for n in parts_of(s3_server, s3_bucket, status.url)]
    with pytest.raises(errors.MigrationFailed) as caught:  # the whole-backup check
        parallel_backup._verify_toc(store, s3.S3Url(s3_bucket, prefix), found,
                                    pg_server.bin_dir)
    assert "no part holds the data of TOC entries" in str(caught.value)
    assert snapshot(database_url, pg_server.bin_dir) == damaged


def test_restoring_a_part_or_a_manifest_less_folder_is_refused(
    pg_server: PgServer, s3_server: S3Server, s3_env: dict[str, str], s3_bucket: str,
    database_url: str,
) -> None:
    populate(database_url)
    status = take(database_url, s3_bucket, pg_server.bin_dir, jobs=2)
    part = status.url + ".parts/toc.dat"
    with pytest.raises(errors.UsageError) as caught:
        backup.restore_backup(database_url, part, clean=True, jobs=1, reporter=Events(),
                              pg_bin_dir=pg_server.bin_dir)
    assert caught.value.reason == reasons.BACKUP_NOT_VERIFIED


def test_a_killed_directory_backup_leaves_nothing_that_passes_for_a_backup(
    pg_server: PgServer, s3_server: S3Server, s3_env: dict[str, str], s3_bucket: str,
    database_url: str,
) -> None:
    populate(database_url, """
        CREATE TABLE big AS SELECT g AS id, md5(random()::text) || md5(random()::text)
            || md5(random()::text) || md5(random()::text) AS payload
        FROM generate_series(1, 600000) g;
        CREATE TABLE big2 AS SELECT * FROM big;
    """)
    prefix = f"s3://{s3_bucket}/app/"
    client = s3_server.client()
    runner = subprocess.Popen(
        [sys.executable, "-m", "schemashift.cli", "backup", "--json", "--database-url",
         database_url, "--backup-url", prefix],
        env=cli_env({**s3_server.env(), "SCHEMASHIFT_CPU_LIMIT": "2"}, pg_server.bin_dir),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not _a_part_moved(client, s3_bucket):
            assert runner.poll() is None, "the backup ended before it could be killed"
            assert time.monotonic() < deadline, "no part was uploaded in time"
            time.sleep(0.02)
        os.killpg(runner.pid, signal.SIGKILL)  # the runner and its pg_dump workers
    finally:
        runner.kill()
        runner.wait()

    assert backup.list_backups(prefix) == []
    keys = objects(s3_server, s3_bucket)
    assert not [k for k in keys if k.endswith((".dump", ".dumpdir"))]
    for key in keys:
        with pytest.raises(errors.UsageError) as caught:
            backup.restore_backup(database_url, f"s3://{s3_bucket}/{key}", clean=True,
                                  jobs=1, reporter=Events(), pg_bin_dir=pg_server.bin_dir)
        assert caught.value.reason == reasons.BACKUP_NOT_VERIFIED

    status = take(database_url, s3_bucket, pg_server.bin_dir, jobs=2)

    assert [b.url for b in backup.list_backups(prefix)] == [s3.parse_url(status.url)]
    folder = s3.S3Url(s3_bucket, status.url.split("/", 3)[3].rsplit("/", 1)[0] + "/")
    events = Events()
    later = datetime.now(UTC) + timedelta(minutes=1)  # as if the leftovers were hours old
    removed = parallel_backup.clean_orphaned_parts(backup.open_store(), folder, later, events)
    assert len(removed) == 1 and removed[0] != status.url + ".parts/"
    assert [k for k in objects(s3_server, s3_bucket) if ".dumpdir" in k
            and not k.startswith(status.url.split("/", 3)[3])] == []
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert events.events[-1]["event"] == "backup_cleanup"
    copy = pg_server.create_database()
    try:  # the verified backup's parts were left alone
        backup.restore_backup(pg_server.app_url(copy), status.url, clean=False, jobs=2,
                              reporter=Events(), pg_bin_dir=pg_server.bin_dir)
    finally:
        pg_server.drop_database(copy)


def _a_part_moved(client: Any, bucket: str) -> bool:
    if client.list_objects_v2(Bucket=bucket).get("Contents"):
        return True
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        parts = client.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        if parts.get("Parts"):
            return True
    return False


def test_restore_policy_restores_a_directory_backup(
    database_url: str, tmp_path: Path, pg_server: PgServer, s3_server: S3Server, s3_bucket: str
) -> None:
    migrations = write_history(tmp_path, [CREATE_PATIENTS, CREATE_NOTES, FAILS_ON_DATA])
    assert run_apply(database_url, migrations, "--target", "a1").exit_code == 0

    run = run_apply(database_url, migrations, "--backup-url", f"s3://{s3_bucket}/app/",
                    "--rollback-policy", "restore", pg_bin_dir=pg_server.bin_dir,
                    env={**s3_server.env(), "SCHEMASHIFT_CPU_LIMIT": "2"})

    assert run.exit_code == 1, run
    assert run.result["backup"]["url"].endswith(".dumpdir")
    assert (run.result["outcome"], run.result["reason"]) == ("RolledBack", "RolledBackByRestore")
    assert scalar(database_url, "SELECT version_num FROM alembic_version") == "a1"
    assert scalar(database_url, "SELECT string_agg(name, ',' ORDER BY id) FROM patients") == (
        "Ada,Grace")


def test_a_real_third_party_history_backs_up_in_parallel_and_restores_equal(
    pg_server: PgServer, s3_env: dict[str, str], s3_bucket: str, database_url: str,
) -> None:
    import optuna

    corpus.start_and_upgrade(corpus.OPTUNA, database_url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=corpus.sqlalchemy_url(database_url),
                                study_name="schemashift-backup")
    study.optimize(lambda trial: trial.suggest_float("x", -10, 10) ** 2, n_trials=30)
    before = snapshot(database_url, pg_server.bin_dir)
    assert before["tables"]["trials"][0] == 30

    status = take(database_url, s3_bucket, pg_server.bin_dir, jobs=2)

    assert status.url.endswith(".dumpdir")
    copy = pg_server.create_database()
    try:
        backup.restore_backup(pg_server.app_url(copy), status.url, clean=False, jobs=2,
                              reporter=Events(), pg_bin_dir=pg_server.bin_dir)
        assert snapshot(pg_server.app_url(copy), pg_server.bin_dir) == before
    finally:
        pg_server.drop_database(copy)


@pytest.mark.parametrize("cpus", ["1", "2"])
def test_a_dump_that_would_overrun_the_deadline_is_refused_before_any_change(
    pg_server: PgServer, s3_server: S3Server, s3_env: dict[str, str], s3_bucket: str,
    database_url: str, tmp_path: Path, cpus: str,
) -> None:
    migrations = write_history(tmp_path, [CREATE_PATIENTS, CREATE_NOTES])
    assert run_apply(database_url, migrations, "--target", "a1").exit_code == 0
    populate(database_url, """
        CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g + 1)::text) AS payload
        FROM generate_series(1, 2000000) g;
        ANALYZE big;
    """)
    with throttled("127.0.0.1", pg_server.port, 2_000_000) as port:
        slow = database_url.replace(f":{pg_server.port}/", f":{port}/")

        run = run_apply(slow, migrations, "--backup-url", f"s3://{s3_bucket}/app/",
                        "--deadline-seconds", "30", pg_bin_dir=pg_server.bin_dir,
                        env={**s3_server.env(), "SCHEMASHIFT_CPU_LIMIT": cpus})

    assert run.exit_code == 2, run
    assert run.result["reason"] == "BackupWouldOverrunDeadline"
    message = run.result["message"]
    assert "would overrun the deadline" in message and "restorePoint" in message
    assert "Nothing was changed" in message
    estimate = run.of("backup_estimate")[-1]
    assert estimate["fits"] is False and estimate["projectedSeconds"] > estimate[
        "remainingSeconds"]
    assert scalar(database_url, "SELECT version_num FROM alembic_version") == "a1"
    assert backup.list_backups(f"s3://{s3_bucket}/app/") == []
    gone = time.monotonic() + 30  # pg_dump (all its workers) stopped: its sessions end
    while scalar(database_url, "SELECT count(*) FROM pg_stat_activity "
                               "WHERE application_name LIKE 'schemashift-backup-%'") != 0:
        assert time.monotonic() < gone, "pg_dump's sessions are still there"
        time.sleep(0.2)


def test_a_dump_that_fits_the_deadline_goes_on(
    pg_server: PgServer, s3_server: S3Server, s3_bucket: str, database_url: str,
    tmp_path: Path,
) -> None:
    migrations = write_history(tmp_path, [CREATE_PATIENTS, CREATE_NOTES])
    assert run_apply(database_url, migrations, "--target", "a1").exit_code == 0
    populate(database_url, """
        CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g + 1)::text) AS payload
        FROM generate_series(1, 200000) g;
        ANALYZE big;
    """)
    with throttled("127.0.0.1", pg_server.port, 2_000_000) as port:
        slow = database_url.replace(f":{pg_server.port}/", f":{port}/")

        run = run_apply(slow, migrations, "--backup-url", f"s3://{s3_bucket}/app/",
                        "--deadline-seconds", "600", pg_bin_dir=pg_server.bin_dir,
                        env=s3_server.env())

    assert run.exit_code == 0, run
    assert [e["fits"] for e in run.of("backup_estimate")] == [True]
    assert run.result["backup"]["verified"] is True
    assert scalar(database_url, "SELECT version_num FROM alembic_version") == "n2"
