"""Verified backups to real S3 (SeaweedFS) from real PostgreSQL, restore, version skew, faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from schemashift import errors, reasons
from schemashift.events import Event
from schemashift.runner import backup
from schemashift.storage import s3
from tests.fixtures.postgres import PgServer
from tests.fixtures.s3 import S3Server

pytestmark = pytest.mark.integration

PG15_BIN = Path("/usr/lib/postgresql/15/bin")
SCHEMA = """
CREATE TYPE mood AS ENUM ('calm', 'anxious', 'cheerful');
CREATE TABLE patients (
    id serial PRIMARY KEY,
    name text NOT NULL CHECK (name <> ''),
    mood mood,
    born date,
    note text,
    data jsonb DEFAULT '{}'::jsonb,
    photo bytea
);
CREATE INDEX patients_name ON patients (name);
CREATE TABLE visits (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_id integer NOT NULL REFERENCES patients (id) ON DELETE CASCADE,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE VIEW busy_patients AS
    SELECT p.name, count(*) AS visits FROM patients p JOIN visits v ON v.patient_id = p.id
    GROUP BY p.name HAVING count(*) > 3;
COMMENT ON TABLE patients IS 'people we care for — ünïcode';
INSERT INTO patients (name, mood, born, note, data, photo)
    SELECT 'patient ' || g, (ARRAY['calm', 'anxious', 'cheerful'])[1 + g % 3]::mood,
           date '1950-01-01' + g, CASE WHEN g % 7 = 0 THEN NULL ELSE md5(g::text) END,
           jsonb_build_object('g', g), decode(md5(g::text), 'hex')
    FROM generate_series(1, 500) g;
INSERT INTO visits (patient_id, at)
    SELECT 1 + g % 500, timestamptz '2024-01-01' + g * interval '1 hour'
    FROM generate_series(1, 2000) g;
"""


def populate(url: str, sql: str = SCHEMA) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


def snapshot(url: str, bin_dir: Path) -> dict[str, Any]:
    """Schema (pg_dump --schema-only) plus, per table, row count and content checksum."""
    schema = subprocess.run([str(bin_dir / "pg_dump"), "--schema-only", "--no-owner",
                             f"--dbname={url}"], capture_output=True, text=True, check=True)
    lines = [line for line in schema.stdout.splitlines()
             if not line.startswith(("\\restrict", "\\unrestrict", "-- Dumped"))]
    tables: dict[str, Any] = {}
    with psycopg.connect(url) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
        for name in names:
            tables[name] = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), ''))"
                f' FROM "{name}" t').fetchone()
        sequences = conn.execute(
            "SELECT sequencename, last_value FROM pg_sequences ORDER BY 1").fetchall()
    return {"schema": lines, "tables": tables, "sequences": sequences}


class Events:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: Event) -> None:
        self.events.append({"event": event.event_name(), **event.to_wire()})

    def states(self, event: str) -> list[str]:
        return [e["state"] for e in self.events if e["event"] == event]


def objects(server: S3Server, bucket: str) -> list[str]:
    return [o["Key"] for o in server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


def take(url: str, bucket: str, bin_dir: Path, revision: str | None = "1a2b3c4d",
         reporter: Events | None = None, jobs: int = 1) -> Any:
    """One job: the single-stream -Fc archive (test_parallel_backup.py: -Fd -j N)."""
    return backup.take_backup(url, f"s3://{bucket}/app/", from_revision=revision,
                              reporter=reporter or Events(), pg_bin_dir=bin_dir, jobs=jobs)


@pytest.mark.parametrize("jobs", [1, 2])
def test_backup_then_restore_into_an_empty_database_gives_the_same_database(
    pg_server: PgServer, s3_server: S3Server, s3_env: dict[str, str], s3_bucket: str,
    database_url: str, jobs: int,
) -> None:
    populate(database_url)
    events = Events()

    status = take(database_url, s3_bucket, pg_server.bin_dir, reporter=events)

    database = database_url.rsplit("/", 1)[1]
    assert status.verified and status.sizeBytes > 0 and len(status.sha256 or "") == 64
    assert status.url.startswith(f"s3://{s3_bucket}/app/{database}/")
    assert status.url.endswith("-1a2b3c4d.dump")
    assert objects(s3_server, s3_bucket) == [status.url.split("/", 3)[3]]  # no .partial left
    head = s3_server.client().head_object(Bucket=s3_bucket, Key=status.url.split("/", 3)[3])
    metadata = head["Metadata"]
    assert metadata["schemashift-sha256"] == status.sha256
    assert metadata["schemashift-size"] == str(status.sizeBytes) == str(head["ContentLength"])
    assert metadata["schemashift-database"] == database
    assert metadata["schemashift-from-revision"] == "1a2b3c4d"
    assert metadata["schemashift-pg-dump-version"].startswith("pg_dump (PostgreSQL) 18")
    assert int(metadata["schemashift-toc-entries"]) > 5
    assert {"schemashift-started-at", "schemashift-verified-at"} <= set(metadata)
    assert events.states("backup")[0] == "InProgress"
    assert events.states("backup")[-2:] == ["Uploaded", "Verified"]
    assert [b.url for b in backup.list_backups(f"s3://{s3_bucket}/app/")] == [
        s3.parse_url(status.url)]

    copy = pg_server.create_database()
    try:
        restored = pg_server.app_url(copy)
        backup.restore_backup(restored, status.url, clean=False, jobs=jobs, reporter=events,
                              pg_bin_dir=pg_server.bin_dir)
        assert snapshot(restored, pg_server.bin_dir) == snapshot(database_url, pg_server.bin_dir)
        assert events.states("restore")[-1] == "Restored"
    finally:
        pg_server.drop_database(copy)


def test_an_empty_database_backs_up_and_restores(
    pg_server: PgServer, s3_env: dict[str, str], s3_bucket: str, database_url: str,
) -> None:
    status = take(database_url, s3_bucket, pg_server.bin_dir, revision=None)
    assert status.verified and status.sizeBytes > 0
    copy = pg_server.create_database()
    try:
        backup.restore_backup(pg_server.app_url(copy), status.url, clean=False, jobs=1,
                              reporter=Events(), pg_bin_dir=pg_server.bin_dir)
        assert snapshot(pg_server.app_url(copy), pg_server.bin_dir)["tables"] == {}
    finally:
        pg_server.drop_database(copy)


def test_verification_rejects_an_object_pg_restore_cannot_parse(
    pg_server: PgServer, s3_env: dict[str, str], s3_bucket: str,
) -> None:
    import io

    from schemashift.storage import upload

    store = s3.ObjectStore.from_environment()
    partial = s3.S3Url(s3_bucket, "app/db/x.dump.partial")
    multipart = upload.MultipartUpload.begin(store, partial, {})
    sent = multipart.send(io.BytesIO(b"not a pg_dump archive" * 1000), lambda _: None)
    multipart.complete()
    with pytest.raises(errors.MigrationFailed) as caught:
        backup._verify(store, partial, sent, pg_server.bin_dir)
    assert caught.value.reason == reasons.BACKUP_VERIFY_FAILED
    assert "pg_restore --list cannot parse it" in str(caught.value)


def _damage(url: str) -> None:
    populate(url, """
        DELETE FROM visits WHERE id % 3 = 0;
        UPDATE patients SET name = 'changed ' || id WHERE id < 50;
        ALTER TABLE patients ADD COLUMN extra int;
        DROP VIEW busy_patients;
    """)


@pytest.mark.parametrize("jobs", [1, 2])
def test_restore_clean_puts_a_changed_database_back(
    pg_server: PgServer, s3_env: dict[str, str], s3_bucket: str, database_url: str, jobs: int,
) -> None:
    populate(database_url)
    before = snapshot(database_url, pg_server.bin_dir)
    status = take(database_url, s3_bucket, pg_server.bin_dir)
    _damage(database_url)
    assert snapshot(database_url, pg_server.bin_dir) != before

    backup.restore_backup(database_url, status.url, clean=True, jobs=jobs, reporter=Events(),
                          pg_bin_dir=pg_server.bin_dir)

    assert snapshot(database_url, pg_server.bin_dir) == before


def test_restore_into_a_non_empty_database_without_clean_fails_and_changes_nothing(
    pg_server: PgServer, s3_env: dict[str, str], s3_bucket: str, database_url: str,
) -> None:
    populate(database_url)
    status = take(database_url, s3_bucket, pg_server.bin_dir)
    _damage(database_url)
    damaged = snapshot(database_url, pg_server.bin_dir)

    with pytest.raises(errors.MigrationFailed) as caught:
        backup.restore_backup(database_url, status.url, clean=False, jobs=1, reporter=Events(),
                              pg_bin_dir=pg_server.bin_dir)

    assert caught.value.reason == reasons.RESTORE_FAILED
    assert "already exists" in str(caught.value) and "nothing was changed" in str(caught.value)
    assert "app-Secr3t-pw" not in str(caught.value)
    assert snapshot(database_url, pg_server.bin_dir) == damaged


def test_a_damaged_backup_is_refused_before_pg_restore_commits(
    pg_server: PgServer, s3_server: S3Server, s3_env: dict[str, str], s3_bucket: str,
    database_url: str,
) -> None:
    populate(database_url)
    status = take(database_url, s3_bucket, pg_server.bin_dir)
    key = status.url.split("/", 3)[3]
    client = s3_server.client()
    head = client.head_object(Bucket=s3_bucket, Key=key)
    body = bytearray(client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    body[-100] ^= 0xFF  # one flipped byte near the end: sizes match, sha256 does not
    client.put_object(Bucket=s3_bucket, Key=key, Body=bytes(body), Metadata=head["Metadata"])
    _damage(database_url)
    damaged = snapshot(database_url, pg_server.bin_dir)

    with pytest.raises(errors.MigrationFailed) as caught:
        backup.restore_backup(database_url, status.url, clean=True, jobs=1, reporter=Events(),
                              pg_bin_dir=pg_server.bin_dir)

    assert caught.value.reason == reasons.BACKUP_VERIFY_FAILED
    assert snapshot(database_url, pg_server.bin_dir) == damaged


def test_restore_refuses_partial_and_missing_objects(
    pg_server: PgServer, s3_server: S3Server, s3_env: dict[str, str], s3_bucket: str,
    database_url: str,
) -> None:
    s3_server.client().put_object(Bucket=s3_bucket, Key="app/db/x.dump.partial", Body=b"PGDMP")
    s3_server.client().put_object(Bucket=s3_bucket, Key="app/db/y.dump", Body=b"PGDMP")
    for key in ("app/db/x.dump.partial", "app/db/y.dump"):
        with pytest.raises(errors.UsageError) as caught:
            backup.restore_backup(database_url, f"s3://{s3_bucket}/{key}", clean=True, jobs=1,
                                  reporter=Events(), pg_bin_dir=pg_server.bin_dir)
        assert caught.value.reason == reasons.BACKUP_NOT_VERIFIED
    with pytest.raises(errors.UsageError) as caught:
        backup.restore_backup(database_url, f"s3://{s3_bucket}/app/db/none.dump", clean=True,
                              jobs=1, reporter=Events(), pg_bin_dir=pg_server.bin_dir)
    assert caught.value.reason == reasons.BACKUP_NOT_FOUND
    assert backup.list_backups(f"s3://{s3_bucket}/app/") == []


def test_pg_dump_18_backs_up_a_postgresql_15_server(
    pg15_server: PgServer, pg_server: PgServer, s3_env: dict[str, str], s3_bucket: str,
) -> None:
    name = pg15_server.create_database()
    try:
        source = pg15_server.app_url(name)
        populate(source)
        status = take(source, s3_bucket, pg_server.bin_dir, revision=None)
        assert status.verified and status.url.endswith("-base.dump")
        target = pg_server.create_database()
        try:
            backup.restore_backup(pg_server.app_url(target), status.url, clean=False, jobs=1,
                                  reporter=Events(), pg_bin_dir=pg_server.bin_dir)
            tables = snapshot(pg_server.app_url(target), pg_server.bin_dir)["tables"]
            assert tables == snapshot(source, pg_server.bin_dir)["tables"]
        finally:
            pg_server.drop_database(target)
    finally:
        pg15_server.drop_database(name)


def test_pg_dump_15_is_refused_for_a_postgresql_18_server_naming_both_versions(
    pg15_server: PgServer, pg_server: PgServer, s3_server: S3Server, s3_env: dict[str, str],
    s3_bucket: str, database_url: str,
) -> None:
    with pytest.raises(errors.PolicyRefused) as caught:
        take(database_url, s3_bucket, pg15_server.bin_dir)
    error = caught.value
    assert error.reason == reasons.PG_DUMP_TOO_OLD == "PgDumpTooOld" and error.exit_code == 2
    assert "pg_dump (PostgreSQL) 15." in str(error) and "PostgreSQL 18." in str(error)
    assert objects(s3_server, s3_bucket) == []
    assert backup.check_pg_dump_version(150018, pg15_server.bin_dir).startswith(
        "pg_dump (PostgreSQL) 15")
    assert backup.check_pg_dump_version(150018, pg_server.bin_dir).startswith(
        "pg_dump (PostgreSQL) 18")


def test_find_pg_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_server: PgServer) -> None:
    assert backup.find_pg_tool("pg_dump", pg_server.bin_dir) == pg_server.bin_dir / "pg_dump"
    monkeypatch.setenv("SCHEMASHIFT_PG_BINDIR", str(pg_server.bin_dir))
    assert backup.find_pg_tool("pg_restore") == pg_server.bin_dir / "pg_restore"
    monkeypatch.setenv("SCHEMASHIFT_PG_BINDIR", str(tmp_path))
    with pytest.raises(errors.UsageError, match=f"pg_dump not found in {tmp_path}"):
        backup.find_pg_tool("pg_dump")
    monkeypatch.delenv("SCHEMASHIFT_PG_BINDIR")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(errors.UsageError, match="pg_dump not found on PATH"):
        backup.find_pg_tool("pg_dump")


def test_pg_dump_permission_denied_fails_the_backup_and_records_nothing(
    pg_server: PgServer, s3_server: S3Server, s3_env: dict[str, str], s3_bucket: str,
    database_url: str,
) -> None:
    populate(database_url)
    with pg_server.admin(database_url.rsplit("/", 1)[1]) as conn:
        conn.execute("CREATE TABLE superuser_secrets (x int)")  # owned by postgres, no grant

    with pytest.raises(errors.MigrationFailed) as caught:
        take(database_url, s3_bucket, pg_server.bin_dir)

    assert caught.value.reason == reasons.BACKUP_FAILED
    assert "permission denied for table superuser_secrets" in str(caught.value)
    assert "app-Secr3t-pw" not in str(caught.value)
    assert objects(s3_server, s3_bucket) == []
    assert s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


# --- the real CLI, as users run it -------------------------------------------------------------

def cli(*args: str, env: dict[str, str], bin_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "schemashift.cli", *args], capture_output=True,
                          text=True, timeout=300, env=cli_env(env, bin_dir), check=False)


def cli_env(extra: dict[str, str], bin_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SCHEMASHIFT_"))}
    return env | {"SCHEMASHIFT_PG_BINDIR": str(bin_dir), "AWS_CONFIG_FILE": os.devnull,
                  "AWS_SHARED_CREDENTIALS_FILE": os.devnull} | extra


@pytest.mark.parametrize(("cpus", "suffix"), [("1", ".dump"), ("2", ".dumpdir")])
def test_cli_backup_and_restore(pg_server: PgServer, s3_server: S3Server, s3_bucket: str,
                                database_url: str, cpus: str, suffix: str) -> None:
    """One CPU: a -Fc archive; more: pg_dump -Fd -j N (the Downward API's limits.cpu)."""
    populate(database_url)
    done = cli("backup", "--json", "--database-url", database_url,
               "--backup-url", f"s3://{s3_bucket}/app",
               env={**s3_server.env(), "SCHEMASHIFT_CPU_LIMIT": cpus}, bin_dir=pg_server.bin_dir)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"')]
    assert [e["state"] for e in events][-2:] == ["Uploaded", "Verified"]
    status = json.loads(done.stdout[done.stdout.index("\n{\n") + 1:])
    assert status["verified"] is True and status["url"].endswith(f"-base{suffix}")
    assert "app-Secr3t-pw" not in done.stdout + done.stderr

    target = pg_server.create_database()
    try:
        done = cli("restore", status["url"], "--database-url", pg_server.app_url(target),
                   env=s3_server.env(), bin_dir=pg_server.bin_dir)
        assert done.returncode == 0, done.stderr
        assert f"Restored {status['url']}" in done.stdout
        assert snapshot(pg_server.app_url(target), pg_server.bin_dir) == snapshot(
            database_url, pg_server.bin_dir)
    finally:
        pg_server.drop_database(target)


@pytest.mark.parametrize("fault", ["unreachable", "wrong-secret", "missing-bucket"])
def test_cli_backup_storage_faults_exit_3_and_write_nothing(
    pg_server: PgServer, s3_server: S3Server, s3_bucket: str, database_url: str, fault: str,
) -> None:
    from tests.fixtures.postgres import _free_port

    populate(database_url)
    env, bucket = s3_server.env(), s3_bucket
    if fault == "unreachable":
        env |= {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}", "AWS_MAX_ATTEMPTS": "1"}
    elif fault == "wrong-secret":
        env["AWS_SECRET_ACCESS_KEY"] = "wrong-secret-key-123"
    else:
        bucket = "no-such-bucket-here"

    done = cli("backup", "--database-url", database_url, "--backup-url", f"s3://{bucket}/app/",
               env=env, bin_dir=pg_server.bin_dir)

    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("error: ") and "hint: " in done.stderr
    assert env["AWS_ENDPOINT_URL"] in done.stderr and bucket in done.stderr
    for secret in (env["AWS_SECRET_ACCESS_KEY"], s3_server.secret_key, "app-Secr3t-pw"):
        assert secret not in done.stderr + done.stdout
    assert objects(s3_server, s3_bucket) == []
    assert s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_runner_killed_during_backup_records_no_backup_and_a_rerun_works(
    pg_server: PgServer, s3_server: S3Server, s3_env: dict[str, str], s3_bucket: str,
    database_url: str,
) -> None:
    populate(database_url, """
        CREATE TABLE big AS SELECT g AS id, md5(random()::text) || md5(random()::text)
            || md5(random()::text) || md5(random()::text) AS payload
        FROM generate_series(1, 600000) g;
    """)
    prefix = f"s3://{s3_bucket}/app/"
    client = s3_server.client()
    runner = subprocess.Popen(
        [sys.executable, "-m", "schemashift.cli", "backup", "--json", "--database-url",
         database_url, "--backup-url", prefix], env=cli_env(s3_server.env(), pg_server.bin_dir),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not _uploaded_a_part(client, s3_bucket):
            assert runner.poll() is None, "the backup ended before it could be killed"
            assert time.monotonic() < deadline, "no part was uploaded in time"
            time.sleep(0.02)
        assert runner.poll() is None
        os.kill(runner.pid, signal.SIGKILL)
    finally:
        runner.kill()
        runner.wait()

    assert backup.list_backups(prefix) == []
    assert not [k for k in objects(s3_server, s3_bucket) if k.endswith(".dump")]

    status = take(database_url, s3_bucket, pg_server.bin_dir)

    assert [b.url for b in backup.list_backups(prefix)] == [s3.parse_url(status.url)]


def _uploaded_a_part(client: Any, bucket: str) -> bool:
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        parts = client.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        if parts.get("Parts"):
            return True
    return False
