"""A stream of unknown size into one S3 multipart upload: no temp file, bounded memory.

Parts are read from the stream into memory one at a time, hashed (sha256 of the whole stream) and
uploaded by a small thread pool while the next part is read, so the producer (pg_dump) rarely
waits. At most UPLOAD_CONCURRENCY + 1 part buffers exist at once.

Part sizes grow because S3 allows 10,000 parts per upload: 8 MiB parts alone stop at ~78 GiB.
The size doubles every 1,000 parts (8 MiB for the first 8 GiB, 16 MiB up to 24 GiB, …) and is
capped at 512 MiB, which fits ~2.5 TiB of dump in 10,000 parts; memory grows only past 8 GiB of
dump and stays below (UPLOAD_CONCURRENCY + 1) x 512 MiB in any case.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

from schemashift import errors, reasons
from schemashift.storage.s3 import ObjectStore, S3Url

MIB = 1024 * 1024
FIRST_PART_SIZE = 8 * MIB
MAX_PART_SIZE = 512 * MIB
PARTS_PER_SIZE = 1000
MAX_PARTS = 10_000
READ_CHUNK = MIB
UPLOAD_CONCURRENCY = 2


def part_size(part_number: int) -> int:
    """Size of part `part_number` (1-based)."""
    return min(FIRST_PART_SIZE << ((part_number - 1) // PARTS_PER_SIZE), MAX_PART_SIZE)


def capacity(parts: int = MAX_PARTS) -> int:
    """Bytes that fit in `parts` parts."""
    return sum(part_size(n) for n in range(1, parts + 1))


@dataclass(frozen=True)
class UploadedStream:
    size: int
    sha256: str
    parts: int


class MultipartUpload:
    """Start with `begin`; then `send(stream)`, and `complete()` or `abort()`.

    Until `complete()` succeeds nothing is visible under the key: an upload that is aborted, or
    whose process dies, leaves only an incomplete multipart upload (bucket lifecycle rules
    `AbortIncompleteMultipartUpload` clean those up).
    """

    def __init__(self, store: ObjectStore, target: S3Url, upload_id: str):
        self.store = store
        self.target = target
        self.upload_id = upload_id
        self._parts: list[dict[str, Any]] = []

    @classmethod
    def begin(cls, store: ObjectStore, target: S3Url, metadata: dict[str, str]) -> MultipartUpload:
        response = store.client_call(target, "create_multipart_upload", Bucket=target.bucket,
                                     Key=target.key, Metadata=metadata)
        return cls(store, target, response["UploadId"])

    def send(self, stream: IO[bytes], on_progress: Callable[[int], None]) -> UploadedStream:
        """Upload `stream` to its end; `on_progress(bytes_so_far)` is called every READ_CHUNK."""
        hasher = hashlib.sha256()
        total = 0
        number = 0
        pending: deque[Future[dict[str, Any]]] = deque()
        with ThreadPoolExecutor(UPLOAD_CONCURRENCY, thread_name_prefix="s3-part") as pool:
            try:
                while True:
                    number += 1
                    if number > MAX_PARTS:
                        raise errors.MigrationFailed(
                            f"the dump is larger than {capacity() // MIB} MiB, the most one "
                            "multipart upload holds with these part sizes",
                            reason=reasons.BACKUP_FAILED)
                    part = _read_part(stream, part_size(number), total, on_progress)
                    if not part:
                        break
                    hasher.update(part)
                    total += len(part)
                    while len(pending) >= UPLOAD_CONCURRENCY:
                        self._parts.append(pending.popleft().result())
                    pending.append(pool.submit(self._upload_part, number, part))
                    del part
                while pending:
                    self._parts.append(pending.popleft().result())
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
        return UploadedStream(size=total, sha256=hasher.hexdigest(), parts=len(self._parts))

    def _upload_part(self, number: int, body: bytearray) -> dict[str, Any]:
        response = self.store.client_call(
            self.target, "upload_part", Bucket=self.target.bucket, Key=self.target.key,
            UploadId=self.upload_id, PartNumber=number, Body=body)
        return {"ETag": response["ETag"], "PartNumber": number}

    def complete(self) -> None:
        if not self._parts:
            raise errors.MigrationFailed("nothing to upload: the stream was empty",
                                         reason=reasons.BACKUP_FAILED)
        self.store.client_call(
            self.target, "complete_multipart_upload", Bucket=self.target.bucket,
            Key=self.target.key, UploadId=self.upload_id,
            MultipartUpload={"Parts": sorted(self._parts, key=lambda p: p["PartNumber"])})

    def abort(self) -> None:
        """Best effort: the caller is already failing for a better reason, and an orphan
        upload is invisible (and removed by an AbortIncompleteMultipartUpload lifecycle rule)."""
        with contextlib.suppress(Exception):
            self.store.client.abort_multipart_upload(
                Bucket=self.target.bucket, Key=self.target.key, UploadId=self.upload_id)


def _read_part(stream: IO[bytes], size: int, before: int,
               on_progress: Callable[[int], None]) -> bytearray:
    """Fill one part from the stream; shorter only at the end of the stream."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    filled = 0
    try:
        while filled < size:
            got = stream.readinto(view[filled:filled + READ_CHUNK])  # type: ignore[attr-defined]
            if not got:
                break
            filled += got
            on_progress(before + filled)
    finally:
        view.release()
    del buffer[filled:]
    return buffer
