"""Object storage that stops answering (SeaweedFS frozen with SIGSTOP: the process is alive, its
kernel still accepts connections, nothing is read or answered) and the leftovers of interrupted
backups. Every run here is bounded by a subprocess or call timeout far above the stall limit:
a missing stall detector shows as a timeout or as a reason other than StorageStalled."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemashift import errors, reasons
from schemashift.runner import backup, dump_dir
from schemashift.storage import s3, upload
from tests.fixtures.histories import write_history
from tests.fixtures.postgres import PgServer
from tests.fixtures.runner_cli import LiveRun, revision, run_apply, scalar, tables
from tests.fixtures.s3 import S3Server, start_seaweedfs, stop_seaweedfs
from tests.integration.test_backup import Events, populate
from tests.integration.test_runner_apply import HISTORY

pytestmark = pytest.mark.integration
MIB = 1024 * 1024
STALL = "4s"
# Far above the stall limit: reaching it means the run did not notice the frozen store.
BOUND_SECONDS = 120
BIG_TABLE = """
    CREATE TABLE big AS SELECT g AS id, md5(random()::text) || md5(random()::text)
        || md5(random()::text) || md5(random()::text) AS payload
    FROM generate_series(1, 600000) g;
"""


@dataclass
class FreezableS3:
    """A SeaweedFS of this module's own (freezing the session's would stall other tests)."""

    server: S3Server
    process: subprocess.Popen[bytes]

    def freeze(self) -> None:
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)

    @contextmanager
    def frozen(self) -> Iterator[None]:
        self.freeze()
        try:
            yield
        finally:
            self.thaw()

    def env(self) -> dict[str, str]:
        return self.server.env() | {s3.STALL_TIMEOUT_ENV: STALL}


@pytest.fixture(scope="module")
def freezable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreezableS3]:
    server, process = start_seaweedfs(tmp_path_factory.mktemp("freezable-s3"))
    store = FreezableS3(server, process)
    try:
        yield store
    finally:
        with suppress(ProcessLookupError):
            store.thaw()
        stop_seaweedfs(process)


@pytest.fixture
def bucket(freezable: FreezableS3) -> Iterator[str]:
    name = freezable.server.create_bucket()
    try:
        yield name
    finally:
        freezable.thaw()
        try:
            freezable.server.empty_and_delete_bucket(name)
        except Exception as exc:  # an abandoned call may still write into it once thawed
            print(f"could not clean up bucket {name}: {exc}")


@pytest.fixture
def freezable_env(freezable: FreezableS3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process's boto3 environment points at the freezable server, stall limit 4s."""
    for name in list(os.environ):
        if name.startswith("AWS_") and name != "AWS_CA_BUNDLE":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    env = freezable.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def _no_locks_held(database_url: str) -> bool:
    held = scalar(database_url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND "
                                "database = (SELECT oid FROM pg_database WHERE datname = "
                                "current_database())")
    return bool(held == 0)


# --- the runner: exit 3, nothing migrated, the lock released, a rerun proceeds ------------------

def test_a_store_frozen_before_the_backup_ends_the_run_at_the_stall_limit(
    database_url: str, tmp_path: Path, pg_server: PgServer, freezable: FreezableS3, bucket: str,
) -> None:
    migrations = write_history(tmp_path, HISTORY)
    assert run_apply(database_url, migrations, "--target", "a1").exit_code == 0
    backup_url = f"s3://{bucket}/app/"

    with freezable.frozen():
        run = run_apply(database_url, migrations, "--backup-url", backup_url,
                        pg_bin_dir=pg_server.bin_dir, env=freezable.env(),
                        timeout=BOUND_SECONDS)

    assert run.exit_code == 3, run
    result = run.result
    assert (result["outcome"], result["reason"]) == ("Failed", reasons.STORAGE_STALLED)
    assert f"object storage at {freezable.server.endpoint} moved no data for" in \
        result["message"]
    assert "Nothing was changed" in result["message"] and "SCHEMASHIFT_S3_STALL_TIMEOUT" in \
        result["message"]
    assert freezable.server.secret_key not in run.stdout + run.stderr
    waiting = [e for e in run.of("backup") if e.get("waitingSeconds")]
    assert waiting and "has moved no data for" in waiting[0]["message"]
    assert revision(database_url) == "a1"
    assert tables(database_url) == {"alembic_version", "patients"}
    assert _no_locks_held(database_url)

    rerun = run_apply(database_url, migrations, "--backup-url", backup_url,
                      pg_bin_dir=pg_server.bin_dir, env=freezable.env())
    assert rerun.exit_code == 0, rerun
    assert revision(database_url) == "c3"


def test_a_store_frozen_mid_upload_ends_the_run_and_the_next_one_reports_the_leftover(
    database_url: str, tmp_path: Path, pg_server: PgServer, freezable: FreezableS3, bucket: str,
) -> None:
    migrations = write_history(tmp_path, HISTORY)
    assert run_apply(database_url, migrations, "--target", "a1").exit_code == 0
    populate(database_url, BIG_TABLE)
    backup_url = f"s3://{bucket}/app/"
    client = freezable.server.client()

    # One CPU: the single-stream `-Fc` dump, whose one multipart upload is the leftover below.
    single_stream = {**freezable.env(), dump_dir.CPU_LIMIT_ENV: "1"}
    live = LiveRun(database_url, migrations, "--backup-url", backup_url,
                   pg_bin_dir=pg_server.bin_dir, env=single_stream)
    try:
        deadline = time.monotonic() + BOUND_SECONDS
        while not client.list_multipart_uploads(Bucket=bucket).get("Uploads"):
            assert live.process.poll() is None and time.monotonic() < deadline, \
                "the backup's multipart upload did not start"
            time.sleep(0.01)
        with freezable.frozen():
            assert live.process.poll() is None, "the backup ended before the store froze"
            run = live.finish(timeout=BOUND_SECONDS)
    finally:
        if live.process.poll() is None:
            live.kill()

    assert run.exit_code == 3, run
    assert run.result["reason"] == reasons.STORAGE_STALLED, run
    assert "moved no data for" in run.result["message"]
    assert "Nothing was changed" in run.result["message"]
    assert run.result["backup"] is None
    assert revision(database_url) == "a1"
    assert scalar(database_url, "SELECT count(*) FROM big") == 600000
    assert _no_locks_held(database_url)
    assert not [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])
                if o["Key"].endswith(".dump")]
    leftover = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert len(leftover) == 1 and leftover[0]["Key"].endswith(".dump.partial")

    rerun = run_apply(database_url, migrations, "--backup-url", backup_url,
                      pg_bin_dir=pg_server.bin_dir, env=freezable.env())

    assert rerun.exit_code == 0, rerun
    assert revision(database_url) == "c3"
    [cleanup] = rerun.of("backup_cleanup")  # younger than ABANDONED_AFTER: kept, and said so
    assert cleanup["removed"] == [] and leftover[0]["Key"] in cleanup["kept"][0]
    assert "abort-multipart-upload" in cleanup["message"]


# --- the storage layer: upload, download and simple calls under the deadline -------------------

class _FreezingStream(io.RawIOBase):
    """Data for the upload; freezes the store once `after` bytes were read."""

    def __init__(self, total: int, after: int, freeze: Any):
        self.left, self.after, self.freeze = total, after, freeze
        self.read_so_far = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.read_so_far >= self.after and self.freeze is not None:
            self.freeze()
            self.freeze = None
        n = min(len(buffer), self.left)
        buffer[:n] = os.urandom(n)
        self.left -= n
        self.read_so_far += n
        return n


def test_an_upload_to_a_frozen_store_fails_as_stalled_and_reports_while_waiting(
    freezable: FreezableS3, freezable_env: dict[str, str], bucket: str,
) -> None:
    store = backup.open_store()
    assert store.stall_seconds == 4
    target = s3.S3Url(bucket, "db/frozen.bin")
    multipart = upload.MultipartUpload.begin(store, target, {})
    stream = io.BufferedReader(_FreezingStream(64 * MIB, 8 * MIB, freezable.freeze))
    waits: list[float] = []
    caught: list[BaseException] = []

    def send() -> None:
        try:
            multipart.send(stream, lambda _: None, waits.append)
        except BaseException as exc:
            caught.append(exc)

    worker = threading.Thread(target=send, daemon=True)
    worker.start()
    worker.join(BOUND_SECONDS)

    assert not worker.is_alive(), "the upload did not notice the frozen store"
    [error] = caught
    assert isinstance(error, errors.InfrastructureError) and error.exit_code == 3
    assert error.reason == reasons.STORAGE_STALLED and store.stalled
    assert "uploading part" in str(error) and freezable.server.endpoint in str(error)
    assert waits and all(w < store.stall_seconds + 1 for w in waits)
    multipart.abort()  # skipped after a stall: it would wait on the frozen store again


def test_a_download_from_a_frozen_store_fails_as_stalled_but_a_slow_consumer_does_not(
    freezable: FreezableS3, freezable_env: dict[str, str], bucket: str,
) -> None:
    data = os.urandom(48 * MIB)
    freezable.server.client().put_object(Bucket=bucket, Key="big.bin", Body=data)
    store = backup.open_store()
    url = s3.S3Url(bucket, "big.bin")

    received: list[bytes] = []

    def slow(chunk: bytes) -> None:  # a consumer slower than the stall limit is not a stall
        if not received:
            threading.Event().wait(store.stall_seconds + 1)
        received.append(chunk)

    store.read(url, slow)
    assert b"".join(received) == data

    def freezing(chunk: bytes) -> None:
        if not received:
            freezable.freeze()
        received.append(chunk)

    received.clear()
    with pytest.raises(errors.InfrastructureError) as caught:
        store.read(url, freezing)
    assert caught.value.reason == reasons.STORAGE_STALLED and "reading" in str(caught.value)
    assert sum(map(len, received)) < len(data)


@pytest.mark.parametrize("operation", ["check_access", "head", "list", "pending_uploads"])
def test_every_call_to_a_frozen_store_ends_at_the_stall_limit(
    freezable: FreezableS3, freezable_env: dict[str, str], bucket: str, operation: str,
) -> None:
    store = backup.open_store()
    url = s3.S3Url(bucket, "app/db/x.dump")
    with freezable.frozen(), pytest.raises(errors.InfrastructureError) as caught:
        getattr(store, operation)(url)
    assert caught.value.reason == reasons.STORAGE_STALLED, caught.value
    assert freezable_env["AWS_SECRET_ACCESS_KEY"] not in str(caught.value)


# --- leftovers of interrupted runs --------------------------------------------------------------

LEFTOVER = "app/db/20200101T000000.000Z-a1.dump.partial"
NOT_OURS = [
    "app/db/20200101T000000.000Z-a1.dump",          # a backup (verified or not): never touched
    "app/db/notes.partial",                         # not our naming pattern
    "app/other/20200101T000000.000Z-a1.dump.partial",  # another database's folder
    "elsewhere/db/20200101T000000.000Z-a1.dump.partial",  # another prefix
    "app/db/nested/20200101T000000.000Z-a1.dump.partial",  # below the database's folder
]


def _leftovers(client: Any, bucket: str) -> None:
    for key in [LEFTOVER, *NOT_OURS]:
        client.put_object(Bucket=bucket, Key=key, Body=b"PGDMP")
        client.create_multipart_upload(Bucket=bucket, Key=key)


def _state(client: Any, bucket: str) -> tuple[set[str], set[str]]:
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}
    uploads = {u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}
    return keys, uploads


def test_only_our_old_leftovers_in_the_database_folder_are_removed(
    freezable: FreezableS3, freezable_env: dict[str, str], bucket: str,
) -> None:
    client = freezable.server.client()
    _leftovers(client, bucket)
    store = backup.open_store()
    folder = s3.S3Url(bucket, "app/db/")
    events = Events()

    removed = backup.clean_abandoned(store, folder, datetime.now(UTC) - timedelta(hours=1),
                                     events)
    assert removed == [] and _state(client, bucket) == ({LEFTOVER, *NOT_OURS},
                                                     {LEFTOVER, *NOT_OURS})
    [younger] = events.events
    assert younger["removed"] == [] and len(younger["kept"]) == 2
    assert "aws s3 rm" in younger["message"]

    removed = backup.clean_abandoned(store, folder, datetime.now(UTC) + timedelta(minutes=1),
                                     events)

    assert len(removed) == 2 and all(LEFTOVER in r for r in removed)
    assert _state(client, bucket) == (set(NOT_OURS), set(NOT_OURS))


def test_a_backup_removes_the_old_leftovers_of_its_database(
    pg_server: PgServer, database_url: str, freezable: FreezableS3,
    freezable_env: dict[str, str], bucket: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    populate(database_url)
    client = freezable.server.client()
    database = database_url.rsplit("/", 1)[1]
    stale = f"app/{database}/20200101T000000.000Z-base.dump.partial"
    client.put_object(Bucket=bucket, Key=stale, Body=b"PGDMP")
    client.create_multipart_upload(Bucket=bucket, Key=stale)
    monkeypatch.setattr(backup, "ABANDONED_AFTER", timedelta(minutes=-1))  # all count as old
    events = Events()

    status = backup.take_backup(database_url, f"s3://{bucket}/app/", from_revision=None,
                                reporter=events, pg_bin_dir=pg_server.bin_dir)

    [cleanup] = [e for e in events.events if e["event"] == "backup_cleanup"]
    assert len(cleanup["removed"]) == 2 and cleanup["kept"] == []
    keys, uploads = _state(client, bucket)
    this_backup = status.url.removeprefix(f"s3://{bucket}/")  # a `-Fd` one's parts sit beside it
    assert this_backup in keys and uploads == set()
    assert all(key == this_backup or key.startswith(f"{this_backup}.parts/") for key in keys)
