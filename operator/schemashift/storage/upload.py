"""A stream of unknown size into one S3 multipart upload: no temp file, bounded memory.

Parts are read from the stream into memory one at a time, hashed (sha256 of the whole stream) and
uploaded by a small thread pool while the next part is read, so the producer (pg_dump) rarely
waits. At most UPLOAD_CONCURRENCY + 1 part buffers exist at once, reused from part to part.

Part sizes grow because S3 allows 10,000 parts per upload: 8 MiB parts alone stop at ~78 GiB.
The size doubles every 1,000 parts (8 MiB for the first 8 GiB, 16 MiB up to 24 GiB, …) and is
capped at 512 MiB, which fits ~2.5 TiB of dump in 10,000 parts; memory grows only past 8 GiB of
dump and stays below (UPLOAD_CONCURRENCY + 1) x 512 MiB in any case.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any, cast

from schemashift import errors, reasons
from schemashift.storage import deadline
from schemashift.storage.s3 import ObjectStore, PendingUpload, S3Url

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
    whose process dies, leaves only an incomplete multipart upload (the next backup to the
    prefix aborts it, runner/backup.py; so do `AbortIncompleteMultipartUpload` lifecycle rules).
    Each part is sent under the store's stall deadline, its body counted as the HTTP layer reads
    it: a store that accepts no bytes for the stall limit fails the upload (StorageStalled).
    """

    def __init__(self, store: ObjectStore, target: S3Url, upload_id: str):
        self.store = store
        self.target = target
        self.upload_id = upload_id
        self._parts: list[dict[str, Any]] = []
        self._moved = deadline.Activity()  # any part's bytes: for progress while waiting

    @classmethod
    def begin(cls, store: ObjectStore, target: S3Url, metadata: dict[str, str]) -> MultipartUpload:
        response = store.client_call(target, "create_multipart_upload", Bucket=target.bucket,
                                     Key=target.key, Metadata=metadata)
        return cls(store, target, response["UploadId"])

    def send(self, stream: IO[bytes], on_progress: Callable[[int], None],
             on_wait: Callable[[float], None] | None = None, *,
             concurrency: int = UPLOAD_CONCURRENCY) -> UploadedStream:
        """Upload `stream` to its end; `on_progress(bytes_so_far)` is called as data arrives,
        `on_wait(idle_seconds)` while the store has accepted nothing for a while. At most
        `concurrency` parts are in flight (and `concurrency` + 1 part buffers in memory)."""
        hasher = hashlib.sha256()
        total = 0
        number = 0
        buffers = _Buffers()
        pending: deque[tuple[Future[dict[str, Any]], bytearray | None]] = deque()
        with ThreadPoolExecutor(concurrency, thread_name_prefix="s3-part") as pool:
            try:
                while True:
                    number += 1
                    if number > MAX_PARTS:
                        raise errors.MigrationFailed(
                            f"the dump is larger than {capacity() // MIB} MiB, the most one "
                            "multipart upload holds with these part sizes",
                            reason=reasons.BACKUP_FAILED)
                    buffer = buffers.take(part_size(number))
                    filled = _read_into(stream, buffer, total, on_progress)
                    if not filled:
                        break
                    with memoryview(buffer) as view:
                        hasher.update(view[:filled])
                        # Only the last part is short: it alone is copied, and its buffer freed.
                        body = buffer if filled == len(buffer) else bytearray(view[:filled])
                    total += filled
                    while len(pending) >= concurrency:
                        self._collect(*pending.popleft(), buffers, on_wait)
                    self._moved.touch()  # time spent reading the stream is not the store's
                    pending.append((pool.submit(self._upload_part, number, body),
                                    buffer if body is buffer else None))
                while pending:
                    self._collect(*pending.popleft(), buffers, on_wait)
            except BaseException:
                for future, _ in pending:
                    future.cancel()
                raise
        return UploadedStream(size=total, sha256=hasher.hexdigest(), parts=len(self._parts))

    def _collect(self, future: Future[dict[str, Any]], buffer: bytearray | None,
                 buffers: _Buffers, on_wait: Callable[[float], None] | None) -> None:
        while True:  # the part's own deadline ends the wait; this loop only reports it
            try:
                self._parts.append(future.result(timeout=deadline.POLL_SECONDS))
                break
            except concurrent.futures.TimeoutError:
                idle = self._moved.idle()
                if on_wait is not None and idle >= deadline.notice_after(self.store.stall_seconds):
                    on_wait(idle)
        if buffer is not None:
            buffers.give(buffer)

    def _upload_part(self, number: int, body: bytearray) -> dict[str, Any]:
        def send(activity: deadline.Activity) -> Any:
            def moved() -> None:
                activity.touch()
                self._moved.touch()

            return self.store.client.upload_part(
                Bucket=self.target.bucket, Key=self.target.key, UploadId=self.upload_id,
                PartNumber=number, Body=cast(IO[bytes], _Body(body, moved)))

        response = self.store.call(self.target, f"uploading part {number} of", send,
                                   notify=False)
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
        """Best effort (ObjectStore.discard): the caller is already failing for a better reason."""
        self.store.discard(lambda: self.store.abort_upload(
            PendingUpload(self.target, self.upload_id, "")))


class _Body(io.RawIOBase):
    """A part's bytes as a seekable stream (botocore rewinds it to retry), reporting each read
    of bytes not read before: the HTTP layer reads the body as the socket accepts it, so those
    reads are bytes moving."""

    def __init__(self, data: bytearray, moved: Callable[[], None]):
        super().__init__()
        self._data = data
        self._position = 0
        self._furthest = 0
        self._moved = moved

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = max(0, min(len(buffer), len(self._data) - self._position))
        with memoryview(self._data) as view:
            buffer[:count] = view[self._position:self._position + count]
        self._position += count
        if self._position > self._furthest:  # a retry re-reading sent bytes is no progress
            self._furthest = self._position
            self._moved()
        return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._data)}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position


class _Buffers:
    """Part buffers reused from part to part, so memory stays at the live buffers' size rather
    than at whatever the allocator keeps after thousands of 8+ MiB allocations."""

    def __init__(self) -> None:
        self._free: list[bytearray] = []

    def take(self, size: int) -> bytearray:
        while self._free:
            buffer = self._free.pop()
            if len(buffer) == size:
                return buffer
        return bytearray(size)

    def give(self, buffer: bytearray) -> None:
        self._free.append(buffer)


def _read_into(stream: IO[bytes], buffer: bytearray, before: int,
               on_progress: Callable[[int], None]) -> int:
    """Fill the buffer from the stream; returns how much was read (less only at the end)."""
    filled = 0
    with memoryview(buffer) as view:
        while filled < len(buffer):
            got = stream.readinto(view[filled:filled + READ_CHUNK])  # type: ignore[attr-defined]
            if not got:
                break
            filled += got
            on_progress(before + filled)
    return filled
