"""S3-compatible object storage via boto3's standard configuration, with errors users can act on.

Configuration is boto3's own (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_DEFAULT_REGION, AWS_PROFILE, config files): nothing of ours to configure twice. Addressing is
path-style, which S3-compatible stores (SeaweedFS, MinIO, Ceph) need and AWS still serves, and CRC
checksums are only sent when an operation requires them (boto3 >= 1.36 sends them by default and
some S3-compatible stores reject them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
import botocore.config
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from schemashift import errors, reasons, redact

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

READ_CHUNK = 1024 * 1024
# Server-side copies above this size go part by part (a single CopyObject stops at 5 GiB).
COPY_PART_SIZE = 256 * 1024 * 1024
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_DENIED = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "InvalidToken",
           "ExpiredToken", "AuthorizationHeaderMalformed", "403", "Forbidden"}
_MISSING_BUCKET = {"NoSuchBucket"}
_MISSING_KEY = {"NoSuchKey", "404", "NotFound"}


@dataclass(frozen=True)
class S3Url:
    """`s3://bucket/key`; for a destination prefix the key ends with '/' (or is empty)."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def child(self, name: str) -> S3Url:
        return S3Url(self.bucket, f"{self.key}{name}")


def parse_url(url: str, *, prefix: bool = False) -> S3Url:
    """Parse s3://bucket/key; with `prefix`, the key is a folder (a trailing '/' is added)."""
    parts = urlsplit(url.strip())
    if parts.scheme != "s3" or not parts.netloc:
        raise errors.UsageError(
            f"{redact.redact(url)!r} is not an s3:// URL",
            hint="use s3://bucket/prefix/ (the endpoint comes from AWS_ENDPOINT_URL)",
        )
    if not _BUCKET_NAME.match(parts.netloc):
        raise errors.UsageError(
            f"{parts.netloc!r} is not a valid bucket name",
            hint="bucket names have 3-63 lowercase letters, digits, dots and hyphens",
        )
    key = parts.path.lstrip("/")
    if prefix and key and not key.endswith("/"):
        key += "/"
    if not prefix and (not key or key.endswith("/")):
        raise errors.UsageError(f"{url!r} names a folder, not an object",
                                hint="give the full key of a backup, e.g. s3://bucket/app/db/….dump")
    return S3Url(parts.netloc, key)


@dataclass(frozen=True)
class ObjectInfo:
    url: S3Url
    size: int
    metadata: dict[str, str]
    last_modified: str


class ObjectStore:
    """One boto3 S3 client plus the context needed to explain its failures."""

    def __init__(self, client: S3Client, secret: str | None = None):
        self.client = client
        self.endpoint = client.meta.endpoint_url
        self._secret = secret

    @classmethod
    def from_environment(cls) -> ObjectStore:
        session = boto3.session.Session()
        config = botocore.config.Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=10,
            read_timeout=120,
            max_pool_connections=16,
        )
        credentials = session.get_credentials()
        secret = credentials.secret_key if credentials is not None else None
        return cls(session.client("s3", config=config), secret)

    @contextmanager
    def errors_for(self, url: S3Url) -> Iterator[None]:
        """Turn boto3/botocore failures into the contract's errors (exit 3 for infrastructure)."""
        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            raise self.describe(exc, url) from None

    def describe(self, exc: BaseException, url: S3Url) -> errors.SchemashiftError:
        where = f"object storage at {self.endpoint} (bucket {url.bucket!r})"
        detail = redact.redact(str(exc), self._secret)
        if isinstance(exc, NoCredentialsError):
            return errors.InfrastructureError(
                f"no credentials for {where}",
                hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
                reason=reasons.STORAGE_ACCESS_DENIED)
        if not isinstance(exc, ClientError):
            return errors.InfrastructureError(
                f"cannot reach {where}: {detail}",
                hint="check AWS_ENDPOINT_URL, that the store is running and the network path",
                reason=reasons.STORAGE_UNREACHABLE)
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = redact.redact(str(error.get("Message", "")), self._secret)
        if code in _MISSING_BUCKET:
            return errors.InfrastructureError(
                f"bucket {url.bucket!r} does not exist at {self.endpoint}",
                hint="create the bucket (or fix the bucket name in the backup URL)",
                reason=reasons.BUCKET_NOT_FOUND)
        if code in _DENIED:
            return errors.InfrastructureError(
                f"{where} refused access: {code}: {message}".rstrip(": "),
                hint="check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the profile) and "
                     "that the key may list, read and write the bucket",
                reason=reasons.STORAGE_ACCESS_DENIED)
        if code in _MISSING_KEY:
            return errors.UsageError(
                f"no object {url} at {self.endpoint}",
                hint="list the backups under the prefix and give the full key of one",
                reason=reasons.BACKUP_NOT_FOUND)
        return errors.InfrastructureError(
            f"{where} failed: {code}: {message}", reason=reasons.STORAGE_UNREACHABLE,
            hint="check the object store's health and logs")

    def check_access(self, prefix: S3Url) -> None:
        """Prove the bucket exists and the credentials work, before anything expensive starts."""
        with self.errors_for(prefix):
            self.client.list_objects_v2(Bucket=prefix.bucket, Prefix=prefix.key, MaxKeys=1)

    def list(self, prefix: S3Url) -> Iterator[ObjectInfo]:
        """Every object under `prefix` (metadata not included: listing does not return it)."""
        with self.errors_for(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=prefix.bucket, Prefix=prefix.key)
            for page in pages:
                for item in page.get("Contents", []):
                    yield ObjectInfo(S3Url(prefix.bucket, item["Key"]), item["Size"], {},
                                     item["LastModified"].isoformat())

    def head(self, url: S3Url) -> ObjectInfo:
        with self.errors_for(url):
            response = self.client.head_object(Bucket=url.bucket, Key=url.key)
        return ObjectInfo(url, response["ContentLength"], dict(response.get("Metadata", {})),
                          response["LastModified"].isoformat())

    def read(self, url: S3Url, sink: Callable[[bytes], None]) -> None:
        """Stream the object into `sink`, chunk by chunk (bounded memory)."""
        with self.errors_for(url):
            body = self.client.get_object(Bucket=url.bucket, Key=url.key)["Body"]
            try:
                for chunk in body.iter_chunks(READ_CHUNK):
                    sink(chunk)
            finally:
                body.close()

    def download(self, url: S3Url, path: Path, sink: Callable[[bytes], None]) -> None:
        """Write the object to `path`, passing each chunk to `sink` as well (hash, progress)."""
        with path.open("wb") as out:
            def write(chunk: bytes) -> None:
                out.write(chunk)
                sink(chunk)

            self.read(url, write)

    def publish(self, source: S3Url, target: S3Url, metadata: dict[str, str]) -> None:
        """Server-side copy to `target` with `metadata` (part by part when large)."""
        with self.errors_for(target):
            self.client.copy(
                {"Bucket": source.bucket, "Key": source.key}, target.bucket, target.key,
                ExtraArgs={"Metadata": metadata, "MetadataDirective": "REPLACE"},
                Config=TransferConfig(multipart_threshold=COPY_PART_SIZE,
                                      multipart_chunksize=COPY_PART_SIZE, max_concurrency=4),
            )

    def delete(self, url: S3Url) -> None:
        with self.errors_for(url):
            self.client.delete_object(Bucket=url.bucket, Key=url.key)

    def client_call(self, url: S3Url, operation: str, **kwargs: Any) -> Any:
        """Call one client operation with error translation (for the multipart upload)."""
        with self.errors_for(url):
            return getattr(self.client, operation)(**kwargs)
