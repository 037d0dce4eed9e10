"""schemashift.storage against a real S3 server (SeaweedFS): streamed upload, read, copy, errors."""

from __future__ import annotations

import hashlib
import io
import os
from typing import IO

import pytest

from schemashift import errors, reasons
from schemashift.storage import s3, upload
from tests.fixtures.s3 import S3Server

pytestmark = pytest.mark.integration
MIB = 1024 * 1024


def test_part_sizes_grow_so_a_multi_terabyte_dump_fits_in_10000_parts() -> None:
    sizes = [upload.part_size(n) for n in range(1, upload.MAX_PARTS + 1)]
    assert sizes[0] == 8 * MIB and sizes[999] == 8 * MIB and sizes[1000] == 16 * MIB
    assert sizes == sorted(sizes)
    assert max(sizes) <= 5 * 1024 * MIB  # S3's largest part
    assert upload.capacity() >= 2 * 1024**4  # fixed 8 MiB parts would stop at ~78 GiB
    assert upload.capacity(1000) == 8000 * MIB


def test_parse_url() -> None:
    assert s3.parse_url("s3://backups/app", prefix=True) == s3.S3Url("backups", "app/")
    assert s3.parse_url("s3://backups", prefix=True) == s3.S3Url("backups", "")
    assert str(s3.parse_url("s3://backups/app/db/x.dump")) == "s3://backups/app/db/x.dump"
    for bad in ("http://backups/app", "s3:///app", "s3://B/app", "s3://ab/x"):
        with pytest.raises(errors.UsageError):
            s3.parse_url(bad, prefix=True)
    with pytest.raises(errors.UsageError, match="names a folder"):
        s3.parse_url("s3://backups/app/")


def _send(store: s3.ObjectStore, target: s3.S3Url, stream: IO[bytes],
          metadata: dict[str, str] | None = None) -> upload.UploadedStream:
    progress: list[int] = []
    multipart = upload.MultipartUpload.begin(store, target, metadata or {})
    try:
        sent = multipart.send(stream, progress.append)
        multipart.complete()
    except BaseException:
        multipart.abort()
        raise
    assert progress and progress == sorted(progress) and progress[-1] == sent.size
    return sent


def test_streamed_upload_round_trip(s3_env: dict[str, str], s3_bucket: str) -> None:
    store = s3.ObjectStore.from_environment()
    data = os.urandom(19 * MIB + 123)
    target = s3.S3Url(s3_bucket, "db/one.bin")

    sent = _send(store, target, io.BytesIO(data), {"schemashift-test": "yes"})

    assert (sent.size, sent.parts) == (len(data), 3)
    assert sent.sha256 == hashlib.sha256(data).hexdigest()
    info = store.head(target)
    assert info.size == len(data) and info.metadata == {"schemashift-test": "yes"}
    chunks: list[bytes] = []
    store.read(target, chunks.append)
    assert b"".join(chunks) == data
    assert [o.url.key for o in store.list(s3.S3Url(s3_bucket, "db/"))] == ["db/one.bin"]


def test_part_size_grows_as_parts_accumulate(s3_env: dict[str, str], s3_bucket: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upload, "FIRST_PART_SIZE", 5 * MIB)  # S3's smallest part
    monkeypatch.setattr(upload, "PARTS_PER_SIZE", 2)
    store = s3.ObjectStore.from_environment()
    data = os.urandom(32 * MIB)  # 5 + 5 + 10 + 10 + 2 MiB

    sent = _send(store, s3.S3Url(s3_bucket, "grow.bin"), io.BytesIO(data))

    assert sent.parts == 5 and sent.size == len(data)
    assert store.head(s3.S3Url(s3_bucket, "grow.bin")).size == len(data)


class _FailingStream(io.RawIOBase):
    """Yields some data, then breaks like a dying producer."""

    def __init__(self, good: int):
        self.left = good

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.left <= 0:
            raise OSError("producer died")
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        return n


def test_failed_stream_leaves_nothing_behind(s3_server: S3Server, s3_env: dict[str, str],
                                             s3_bucket: str) -> None:
    store = s3.ObjectStore.from_environment()
    with pytest.raises(OSError, match="producer died"):
        _send(store, s3.S3Url(s3_bucket, "broken.bin"), io.BufferedReader(_FailingStream(20 * MIB)))
    client = s3_server.client()
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_publish_copies_part_by_part_with_new_metadata(s3_env: dict[str, str], s3_bucket: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3, "COPY_PART_SIZE", 5 * MIB)
    store = s3.ObjectStore.from_environment()
    data = os.urandom(12 * MIB)
    source, target = s3.S3Url(s3_bucket, "a.partial"), s3.S3Url(s3_bucket, "a")
    _send(store, source, io.BytesIO(data), {"stage": "partial"})

    store.publish(source, target, {"stage": "final", "sha256": hashlib.sha256(data).hexdigest()})

    info = store.head(target)
    assert info.size == len(data)
    assert info.metadata == {"stage": "final", "sha256": hashlib.sha256(data).hexdigest()}
    chunks: list[bytes] = []
    store.read(target, chunks.append)
    assert hashlib.sha256(b"".join(chunks)).digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize(("variable", "value", "code"), [
    ("AWS_SECRET_ACCESS_KEY", "not-the-secret-key", "SignatureDoesNotMatch"),
    ("AWS_ACCESS_KEY_ID", "NO-SUCH-KEY", "InvalidAccessKeyId"),
])
def test_wrong_credentials_are_refused_clearly(
    s3_server: S3Server, s3_env: dict[str, str], s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, code: str,
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(errors.InfrastructureError) as caught:
        s3.ObjectStore.from_environment().check_access(s3.S3Url(s3_bucket, "app/"))
    error = caught.value
    assert error.exit_code == 3 and error.reason == reasons.STORAGE_ACCESS_DENIED
    assert code in str(error) and s3_server.endpoint in str(error) and s3_bucket in str(error)
    assert "not-the-secret-key" not in str(error) and s3_server.secret_key not in str(error)


@pytest.mark.parametrize("operation", ["check_access", "head"])
def test_missing_bucket_is_named_with_a_fix(s3_server: S3Server, s3_env: dict[str, str],
                                            operation: str) -> None:
    store = s3.ObjectStore.from_environment()
    with pytest.raises(errors.InfrastructureError) as caught:
        getattr(store, operation)(s3.S3Url("no-such-bucket", "app/db/x.dump"))
    error = caught.value
    assert (error.reason, error.exit_code) == (reasons.BUCKET_NOT_FOUND, 3)
    assert "bucket 'no-such-bucket' does not exist" in str(error)
    assert s3_server.endpoint in str(error) and "create the bucket" in str(error)


def test_unreachable_endpoint(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fixtures.postgres import _free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(errors.InfrastructureError) as caught:
        s3.ObjectStore.from_environment().check_access(s3.S3Url("backups", ""))
    assert caught.value.reason == reasons.STORAGE_UNREACHABLE
    assert "cannot reach object storage at http://127.0.0.1:" in str(caught.value)


def test_missing_object_is_a_usage_error(s3_env: dict[str, str], s3_bucket: str) -> None:
    with pytest.raises(errors.UsageError) as caught:
        s3.ObjectStore.from_environment().head(s3.S3Url(s3_bucket, "nope.dump"))
    assert caught.value.reason == reasons.BACKUP_NOT_FOUND
