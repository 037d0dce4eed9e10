"""A stream stored so that its final key exists only once it was read back and matched.

The stream goes to `<final key>.partial` (one multipart upload: nothing is visible until it
completes), is read back whole (size and sha256 must equal what was sent), is then copied
server-side to the final key with its metadata, and the `.partial` is removed. A process killed
at any point leaves an incomplete upload or a `.partial`, never the final key: the rule of
README "Local mode" for backups, here for any object the runner relies on (targeted copies).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import IO

from schemashift import errors, reasons
from schemashift.storage.s3 import ObjectStore, S3Url
from schemashift.storage.upload import MultipartUpload, UploadedStream

PARTIAL_SUFFIX = ".partial"


def partial_of(final: S3Url) -> S3Url:
    return S3Url(final.bucket, final.key + PARTIAL_SUFFIX)


def store_verified(store: ObjectStore, final: S3Url, stream: IO[bytes],
                   metadata: dict[str, str], *, on_progress: Callable[[int], None],
                   sealed: Callable[[UploadedStream], dict[str, str]],
                   finished: Callable[[], None] = lambda: None) -> UploadedStream:
    """Upload `stream`, verify it, publish it under `final` with `metadata | sealed(uploaded)`.

    `finished()` runs once the stream is read to its end and before anything is completed: the
    producer says there whether it succeeded (raising aborts the upload)."""
    partial = partial_of(final)
    upload = MultipartUpload.begin(store, partial, metadata)
    try:
        uploaded = upload.send(stream, on_progress, store.on_wait)
        finished()
        if uploaded.size:
            upload.complete()
        else:  # S3 completes no upload without parts: an empty object is put whole
            upload.abort()
            store.client_call(partial, "put_object", Bucket=partial.bucket, Key=partial.key,
                              Body=b"", Metadata=metadata)
    except BaseException:
        upload.abort()
        raise
    try:
        _read_back(store, partial, uploaded)
        store.publish(partial, final, metadata | sealed(uploaded))
        if store.head(final).size != uploaded.size:
            store.delete(final)
            raise errors.MigrationFailed(f"the copy of the verified object to {final} has the "
                                         "wrong size", reason=reasons.BACKUP_VERIFY_FAILED)
    finally:
        store.discard(lambda: store.delete(partial))
    return uploaded


def _read_back(store: ObjectStore, partial: S3Url, uploaded: UploadedStream) -> None:
    digest = hashlib.sha256()
    size = 0

    def sink(chunk: bytes) -> None:
        nonlocal size
        digest.update(chunk)
        size += len(chunk)

    store.read(partial, sink)
    problems = []
    if size != uploaded.size:
        problems.append(f"{size} bytes read back, {uploaded.size} uploaded")
    if digest.hexdigest() != uploaded.sha256:
        problems.append("sha256 read back differs from the one computed while uploading")
    if problems:
        raise errors.MigrationFailed(
            f"{partial} failed verification: {'; '.join(problems)}",
            hint="check the object store's health; nothing was recorded",
            reason=reasons.BACKUP_VERIFY_FAILED)
