"""Restoring a directory-format backup: its parts downloaded and checked, then pg_restore.

The manifest (runner/dump_manifest.py) is read and checked against the sha256 recorded when it
was verified; every part is downloaded (several at once) and must have the size and sha256 the
manifest lists, before pg_restore touches the database. So a damaged or incomplete backup
changes nothing, as with a single archive (runner/pgrestore.py restores the local copy).
"""

from __future__ import annotations

import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from schemashift import errors, reasons
from schemashift.runner import pgrestore, pgtools
from schemashift.runner.dump_manifest import PARTS, Manifest, Part
from schemashift.storage import s3

DOWNLOADS = 4


def restore(store: s3.ObjectStore, info: s3.ObjectInfo, *, expected_sha256: str,
            database_url: str, clean: bool, jobs: int, meter: pgrestore.Meter,
            pg_bin_dir: Path | None) -> None:
    body = bytearray()
    store.read(info.url, body.extend)
    manifest = Manifest.parse(bytes(body), expected_sha256, str(info.url))
    prefix = s3.S3Url(info.url.bucket, info.url.key + PARTS)
    meter.emit("InProgress", 0)
    with tempfile.TemporaryDirectory(prefix="schemashift-restore-") as scratch:
        directory = Path(scratch)
        _download(store, prefix, manifest, directory, meter)
        pgrestore.restore_directory(directory, info, database_url=database_url, clean=clean,
                                    jobs=jobs, meter=meter, pg_bin_dir=pg_bin_dir)


def _download(store: s3.ObjectStore, prefix: s3.S3Url, manifest: Manifest, directory: Path,
              meter: pgrestore.Meter) -> None:
    lock = threading.Lock()
    done = [0]

    def fetch(part: Part) -> str | None:
        feed = pgtools.DigestingFeed(None)

        def sink(chunk: bytes) -> None:
            feed.update(chunk)
            with lock:
                done[0] += len(chunk)
                meter(done[0])

        try:
            store.download(prefix.child(part.name), directory / part.name, sink)
        except errors.UsageError as missing:
            if missing.reason == reasons.BACKUP_NOT_FOUND:
                return f"{part.name} is missing"
            raise
        if (feed.size, feed.hexdigest()) != (part.size, part.sha256):
            return f"{part.name} has {feed.size} bytes or a sha256 other than the manifest's"
        return None

    with ThreadPoolExecutor(DOWNLOADS, thread_name_prefix="restore-part") as pool:
        problems = [problem for problem in pool.map(fetch, manifest.parts) if problem]
    if problems:
        raise errors.MigrationFailed(
            f"backup {prefix.key.removesuffix(PARTS)} does not match its manifest "
            f"({'; '.join(problems[:5])}): the database was not changed",
            hint="the parts were altered or damaged in storage; restore another backup",
            reason=reasons.BACKUP_VERIFY_FAILED)
