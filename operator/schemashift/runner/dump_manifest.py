"""The manifest of a directory-format backup: what makes its parts one verified backup.

    <prefix><database>/<stamp>-<from-revision>.dumpdir             the backup: this manifest
    <prefix><database>/<stamp>-<from-revision>.dumpdir.parts/<file>  pg_dump -Fd's files

Each part is uploaded as pg_dump writes it and read back (size + sha256) at once; the manifest
lists every part with its size and sha256 and is written last, once all parts were read back
and `pg_restore --list` parsed the table of contents read back from storage. Its own sha256
(the backup's digest, in its metadata and in status) therefore covers every byte. Parts without
a manifest are not a backup: listing and restore ignore them (a killed run leaves only those).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from schemashift import errors, reasons

SUFFIX = ".dumpdir"
PARTS = ".parts/"
FORMAT = "directory"
VERSION = 1


@dataclass(frozen=True)
class Part:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    parts: tuple[Part, ...]
    toc_entries: int

    @property
    def size(self) -> int:
        return sum(part.size for part in self.parts)

    def body(self) -> bytes:
        data = {"format": FORMAT, "version": VERSION, "tocEntries": self.toc_entries,
                "parts": [asdict(part) for part in sorted(self.parts, key=lambda p: p.name)]}
        return json.dumps(data, indent=1, sort_keys=True).encode()

    def digest(self) -> str:
        return hashlib.sha256(self.body()).hexdigest()

    @classmethod
    def parse(cls, body: bytes, expected_sha256: str, where: str) -> Manifest:
        if hashlib.sha256(body).hexdigest() != expected_sha256:
            raise errors.MigrationFailed(
                f"the manifest of {where} does not match its recorded sha256: the database was "
                "not changed", hint="the object was altered or damaged in storage; restore "
                "another backup", reason=reasons.BACKUP_VERIFY_FAILED)
        data = json.loads(body)
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise errors.UsageError(f"{where} is not a manifest this schemashift reads",
                                    reason=reasons.BACKUP_NOT_VERIFIED)
        parts = tuple(Part(str(p["name"]), int(p["size"]), str(p["sha256"]))
                      for p in data["parts"])
        return cls(parts, int(data["tocEntries"]))
