"""S3-compatible object storage via boto3's standard configuration, with errors users can act on.

Configuration is boto3's own (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_DEFAULT_REGION, AWS_PROFILE, config files): nothing of ours to configure twice. Addressing is
path-style, which S3-compatible stores (SeaweedFS, MinIO, Ceph) need and AWS still serves, and CRC
checksums are only sent when an operation requires them (boto3 >= 1.36 sends them by default and
some S3-compatible stores reject them).

Every call has a deadline (storage/deadline.py): no data moving for `stall_seconds` ends it with
StorageStalled (exit 3), whatever botocore's retries would do. botocore's own timeouts stay as a
second line: connect and each socket operation within twice the stall limit (longer than the
deadline, so a frozen store is always reported as stalled, not as a connection botocore gave up
on), retries in botocore's "standard" mode (3 attempts unless AWS_MAX_ATTEMPTS says otherwise).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import boto3
import botocore.config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from schemashift import errors, reasons, redact
from schemashift.storage import deadline

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")
READ_CHUNK = 1024 * 1024
# Server-side copies above this size go part by part (a single CopyObject stops at 5 GiB).
COPY_PART_SIZE = 256 * 1024 * 1024
BACKSTOP_FACTOR = 2  # botocore's socket timeouts, in stall limits
DEFAULT_STALL_SECONDS = 30.0
# The stall limit's variable (a duration: 30s, 2m); the runner parses it (runner/backup.py).
STALL_TIMEOUT_ENV = "SCHEMASHIFT_S3_STALL_TIMEOUT"
ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
_BUCKET_CHARS = re.compile(r"^[a-z0-9][a-z0-9.\-]*[a-z0-9]$")
_REGION = re.compile(r"^[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?$")
_DENIED = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "InvalidToken",
           "ExpiredToken", "AuthorizationHeaderMalformed", "403", "Forbidden"}
_MISSING_BUCKET = {"NoSuchBucket"}
_MISSING_KEY = {"NoSuchKey", "404", "NotFound"}
_BUCKET_HINT = ("bucket names have 3-63 lowercase letters, digits, dots and hyphens, start and "
                "end with a letter or digit (S3's naming rules); use s3://bucket/prefix/")


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
    if "@" in parts.netloc:  # s3://key:secret@bucket/: never echo it
        raise errors.UsageError(
            "the backup URL carries credentials (user@ or key:secret@ before the bucket)",
            hint="give s3://bucket/prefix/ only; credentials come from AWS_ACCESS_KEY_ID and "
                 "AWS_SECRET_ACCESS_KEY")
    if parts.scheme != "s3" or not parts.netloc:
        raise errors.UsageError(
            f"{redact.redact(url)!r} is not an s3:// URL",
            hint="use s3://bucket/prefix/ (the endpoint comes from AWS_ENDPOINT_URL)",
        )
    problem = bucket_problem(parts.netloc)
    if problem:
        raise errors.UsageError(f"{parts.netloc!r} is not a valid bucket name: {problem}",
                                hint=_BUCKET_HINT)
    key = parts.path.lstrip("/")
    if prefix and key and not key.endswith("/"):
        key += "/"
    if not prefix and (not key or key.endswith("/")):
        raise errors.UsageError(f"{url!r} names a folder, not an object",
                                hint="give the full key of a backup, e.g. s3://bucket/app/db/….dump")
    return S3Url(parts.netloc, key)


def bucket_problem(name: str) -> str | None:
    """What breaks S3's bucket naming rules in `name`, or None."""
    if not 3 <= len(name) <= 63:
        return f"{len(name)} characters, not 3-63"
    if not _BUCKET_CHARS.match(name):
        return "only lowercase letters, digits, dots and hyphens, starting and ending with a " \
               "letter or digit"
    if ".." in name:
        return "two adjacent dots"
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return None
    return "formatted like an IP address"


def endpoint_problem(endpoint: str) -> str | None:
    """What is wrong with an S3 endpoint URL (http(s)://host[:port]), or None."""
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError:
        return "its port is not a number from 1 to 65535"
    if parts.scheme not in ("http", "https"):
        return "it does not start with http:// or https://"
    if parts.username is not None or parts.password is not None:
        return "it carries credentials (user@ before the host)"
    if not parts.hostname:
        return "it names no host"
    if port == 0:
        return "its port is not a number from 1 to 65535"
    if parts.query or parts.fragment or any(c.isspace() for c in endpoint):
        return "it has a query, fragment or whitespace"
    return None


def _configured_endpoint() -> tuple[str, str] | None:
    for name in ENDPOINT_ENVS:
        if os.environ.get(name):
            return name, os.environ[name]
    return None


def _bad_endpoint(source: str, endpoint: str, problem: str) -> errors.UsageError:
    shown = "" if "credentials" in problem else f" {endpoint!r}"
    return errors.UsageError(
        f"the S3 endpoint{shown} ({source}) is not usable: {problem}",
        hint="set it to http(s)://host[:port], e.g. http://minio.storage:9000 or "
             "https://s3.eu-west-1.amazonaws.com")


@dataclass(frozen=True)
class ObjectInfo:
    url: S3Url
    size: int
    metadata: dict[str, str]
    last_modified: str


@dataclass(frozen=True)
class PendingUpload:
    """An incomplete multipart upload."""

    url: S3Url
    upload_id: str
    initiated: str


class ObjectStore:
    """One boto3 S3 client plus the context needed to explain its failures.

    `on_wait(idle_seconds)`, when set, is called while a call of the caller's thread has moved
    no data for a while (progress events); `stalled` is set once a call was abandoned, so
    best-effort cleanups do not wait on a frozen store a second time.
    """

    def __init__(self, client: S3Client, secret: str | None = None,
                 stall_seconds: float = DEFAULT_STALL_SECONDS):
        self.client = client
        self.endpoint = client.meta.endpoint_url
        self.stall_seconds = stall_seconds
        self.on_wait: Callable[[float], None] | None = None
        self.stalled = False
        self._secret = secret

    @classmethod
    def from_environment(cls, stall_seconds: float = DEFAULT_STALL_SECONDS) -> ObjectStore:
        """The store boto3's configuration names; a bad endpoint or region is a UsageError
        (nothing connects: creating a client opens no connection)."""
        configured = _configured_endpoint()
        if configured is not None:
            problem = endpoint_problem(configured[1])
            if problem:
                raise _bad_endpoint(*configured, problem)
        session = boto3.session.Session()
        config = botocore.config.Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # urllib3 applies the connect timeout to sending the request body too: below the
            # stall limit it failed a send to a frozen store first, as "Connection was closed",
            # and botocore's retry re-read the body. Both stay above the limit: the detector
            # decides, botocore's timeouts are the backstop.
            connect_timeout=BACKSTOP_FACTOR * stall_seconds,
            read_timeout=BACKSTOP_FACTOR * stall_seconds,
            retries={"mode": "standard"},
            max_pool_connections=16,
        )
        try:
            client = session.client("s3", config=config)
        except ValueError as exc:  # an endpoint from a config file botocore cannot parse
            raise errors.UsageError(
                f"the S3 endpoint is not usable: {redact.redact(str(exc))}",
                hint="set AWS_ENDPOINT_URL to http(s)://host[:port]") from None
        problem = endpoint_problem(client.meta.endpoint_url)
        if problem:
            raise _bad_endpoint("AWS configuration", client.meta.endpoint_url, problem)
        region = client.meta.region_name or ""
        if not _REGION.match(region):
            raise errors.UsageError(
                f"the AWS region {region!r} (AWS_DEFAULT_REGION / AWS_REGION) is not a region "
                "name", hint="use e.g. us-east-1 (S3-compatible stores accept us-east-1)")
        credentials = session.get_credentials()
        secret = credentials.secret_key if credentials is not None else None
        return cls(client, secret, stall_seconds)

    # -- calls with a deadline and errors users can act on --------------------------------------

    def call(self, url: S3Url, what: str, work: Callable[[deadline.Activity], T], *,
             notify: bool = True) -> T:
        """`work(activity)` under the stall deadline; boto3 failures become the contract's
        errors. `notify=False` for calls made off the caller's thread (no progress events)."""
        try:
            return deadline.run(work, limit=self.stall_seconds,
                                on_wait=self.on_wait if notify else None)
        except deadline.Stalled as stall:
            self.stalled = True
            raise errors.InfrastructureError(
                f"object storage at {self.endpoint} moved no data for {stall.idle:.0f}s "
                f"while {what} {url}: stopped waiting (the stall limit is "
                f"{self.stall_seconds:g}s)",
                hint=f"check that the store is running and not overloaded or paused, and the "
                     f"network path; {STALL_TIMEOUT_ENV} sets the limit (e.g. 2m)",
                reason=reasons.STORAGE_STALLED) from None
        except (BotoCoreError, ClientError) as exc:
            raise self.describe(exc, url) from None

    def client_call(self, url: S3Url, operation: str, *, notify: bool = True,
                    **kwargs: Any) -> Any:
        """One client operation under the deadline (complete_multipart_upload, …)."""
        what = operation.replace("_", " ")
        return self.call(url, what, lambda _: getattr(self.client, operation)(**kwargs),
                         notify=notify)

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
            return self._missing_bucket(url)
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

    def _missing_bucket(self, url: S3Url) -> errors.InfrastructureError:
        # Exit 3 like every storage fault (the contract's "object storage unreachable"); the
        # reason and hint say it is the name or the endpoint, which no retry fixes.
        return errors.InfrastructureError(
            f"bucket {url.bucket!r} does not exist at {self.endpoint}",
            hint=f"create the bucket (e.g. aws s3 mb s3://{url.bucket}), or fix the bucket name "
                 "in the backup URL or AWS_ENDPOINT_URL",
            reason=reasons.BUCKET_NOT_FOUND)

    # -- operations -----------------------------------------------------------------------------

    def check_access(self, prefix: S3Url) -> None:
        """Prove the bucket exists and the credentials work, before anything expensive starts."""
        self.call(prefix, "checking access to", lambda _: self.client.list_objects_v2(
            Bucket=prefix.bucket, Prefix=prefix.key, MaxKeys=1))

    def list(self, prefix: S3Url) -> Iterator[ObjectInfo]:
        """Every object under `prefix` (metadata not included: listing does not return it)."""
        def pages(activity: deadline.Activity) -> list[ObjectInfo]:
            found = []
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=prefix.bucket, Prefix=prefix.key):
                activity.touch()
                found += [ObjectInfo(S3Url(prefix.bucket, item["Key"]), item["Size"], {},
                                     item["LastModified"].isoformat())
                          for item in page.get("Contents", [])]
            return found

        return iter(self.call(prefix, "listing", pages))

    def pending_uploads(self, prefix: S3Url) -> Sequence[PendingUpload]:
        """Incomplete multipart uploads under `prefix`."""
        def pages(activity: deadline.Activity) -> list[PendingUpload]:
            found = []
            for page in self.client.get_paginator("list_multipart_uploads").paginate(
                    Bucket=prefix.bucket, Prefix=prefix.key):
                activity.touch()
                found += [PendingUpload(S3Url(prefix.bucket, item["Key"]), item["UploadId"],
                                        item["Initiated"].isoformat())
                          for item in page.get("Uploads", [])]
            return found

        return self.call(prefix, "listing the incomplete uploads under", pages)

    def head(self, url: S3Url) -> ObjectInfo:
        try:
            response = self.client_call(url, "head_object", Bucket=url.bucket, Key=url.key)
        except errors.UsageError as missing:
            # HEAD answers a bare 404 for a missing bucket too: ask the bucket to tell them apart.
            if missing.reason == reasons.BACKUP_NOT_FOUND:
                self.check_access(S3Url(url.bucket, ""))
            raise
        return ObjectInfo(url, response["ContentLength"], dict(response.get("Metadata", {})),
                          response["LastModified"].isoformat())

    def read(self, url: S3Url, sink: Callable[[bytes], None]) -> None:
        """Stream the object into `sink`, chunk by chunk (bounded memory). Time spent in `sink`
        (a slow pg_restore) does not count against the stall limit."""
        def stream(activity: deadline.Activity) -> None:
            body = self.client.get_object(Bucket=url.bucket, Key=url.key)["Body"]
            try:
                for chunk in body.iter_chunks(READ_CHUNK):
                    if activity.abandoned:
                        return
                    with activity.holding():
                        sink(chunk)
            finally:
                body.close()

        self.call(url, "reading", stream)

    def download(self, url: S3Url, path: Path, sink: Callable[[bytes], None]) -> None:
        """Write the object to `path`, passing each chunk to `sink` as well (hash, progress)."""
        with path.open("wb") as out:
            def write(chunk: bytes) -> None:
                out.write(chunk)
                sink(chunk)

            self.read(url, write)

    def publish(self, source: S3Url, target: S3Url, metadata: dict[str, str]) -> None:
        """Server-side copy to `target` with `metadata` (part by part when large)."""
        size = self.head(source).size
        copy_source = {"Bucket": source.bucket, "Key": source.key}
        if size <= COPY_PART_SIZE:
            self.client_call(target, "copy_object", CopySource=copy_source, Bucket=target.bucket,
                             Key=target.key, Metadata=metadata, MetadataDirective="REPLACE")
            return
        upload = self.client_call(target, "create_multipart_upload", Bucket=target.bucket,
                                  Key=target.key, Metadata=metadata)["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, size, COPY_PART_SIZE), start=1):
                end = min(start + COPY_PART_SIZE, size) - 1
                done = self.client_call(
                    target, "upload_part_copy", Bucket=target.bucket, Key=target.key,
                    UploadId=upload, PartNumber=number, CopySource=copy_source,
                    CopySourceRange=f"bytes={start}-{end}")
                parts.append({"ETag": done["CopyPartResult"]["ETag"], "PartNumber": number})
            self.client_call(target, "complete_multipart_upload", Bucket=target.bucket,
                             Key=target.key, UploadId=upload, MultipartUpload={"Parts": parts})
        except BaseException:
            self.discard(lambda: self.abort_upload(PendingUpload(target, upload, "")))
            raise

    def delete(self, url: S3Url) -> None:
        self.client_call(url, "delete_object", Bucket=url.bucket, Key=url.key)

    def abort_upload(self, upload: PendingUpload) -> None:
        self.client_call(upload.url, "abort_multipart_upload", Bucket=upload.url.bucket,
                         Key=upload.url.key, UploadId=upload.upload_id)

    def discard(self, undo: Callable[[], object]) -> None:
        """A best-effort cleanup (the caller is failing for a better reason already): errors
        are ignored, and it is skipped once a call stalled, rather than waiting on a frozen
        store a second time. What it would have removed is invisible (an incomplete upload, a
        .partial key) and the next backup to the prefix removes it (runner/backup.py)."""
        if self.stalled:
            return
        with contextlib.suppress(errors.SchemashiftError):
            undo()
