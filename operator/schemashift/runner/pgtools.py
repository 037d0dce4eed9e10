"""The PostgreSQL client programs (pg_dump, pg_restore): where they are, which version, how to call.

The password never goes on a command line (visible in `ps`): it is passed in PGPASSWORD.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import IO

from sqlalchemy.engine import URL

from schemashift import db, errors, reasons, redact

BINDIR_ENV = "SCHEMASHIFT_PG_BINDIR"
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
STDERR_LIMIT = 16 * 1024


# Where distributions install each major version side by side (Debian/Ubuntu; RHEL/PGDG).
DISTRO_ROOTS: tuple[str, ...] = ("/usr/lib/postgresql/{major}/bin", "/usr/pgsql-{major}/bin")


def find_pg_tool(name: str, pg_bin_dir: Path | None = None, *, server_major: int | None = None,
                 roots: tuple[str, ...] = DISTRO_ROOTS) -> Path:
    """`name` from `pg_bin_dir`, else $SCHEMASHIFT_PG_BINDIR, else PATH; with `server_major`,
    a PATH tool older than the server gives way to one in `roots` (the server's major first)."""
    directory = pg_bin_dir or explicit_bin_dir()
    if directory is not None:
        return _in_directory(name, directory)
    found = shutil.which(name)
    if server_major is None:
        if found is None:
            raise errors.UsageError(
                f"{name} not found on PATH",
                hint=f"install the PostgreSQL client tools (at least the server's major "
                     f"version) or set {BINDIR_ENV} to their bin directory")
        return Path(found)
    on_path = (Path(found), major_version(tool_version(Path(found)))) if found else None
    if on_path is not None and on_path[1] >= server_major:
        return on_path[0]
    return _from_roots(name, server_major, roots, on_path)


def explicit_bin_dir() -> Path | None:
    value = os.environ.get(BINDIR_ENV)
    return Path(value) if value else None


def _in_directory(name: str, directory: Path) -> Path:
    path = directory / name
    if path.is_file() and os.access(path, os.X_OK):
        return path
    raise errors.UsageError(
        f"{name} not found in {directory}",
        hint=f"point {BINDIR_ENV} at the bin directory of the PostgreSQL client tools")


def installed_majors(name: str, roots: tuple[str, ...]) -> list[tuple[int, Path]]:
    """(major, path) of `name` in every versioned directory of `roots`, in the roots' order."""
    found: list[tuple[int, Path]] = []
    for root in roots:
        head, _, tail = root.partition("{major}")
        pattern = re.compile(re.escape(head) + r"(\d+)" + re.escape(tail))
        parent = Path(head) if head.endswith("/") else Path(head).parent
        entries = list(parent.iterdir()) if parent.is_dir() else []
        in_root = []
        for directory in (Path(f"{entry}{tail}") for entry in entries):
            match = pattern.fullmatch(str(directory))
            tool = directory / name
            if match and tool.is_file() and os.access(tool, os.X_OK):
                in_root.append((int(match.group(1)), tool))
        found += sorted(in_root)
    return found


def _from_roots(name: str, server_major: int, roots: tuple[str, ...],
                on_path: tuple[Path, int] | None) -> Path:
    usable = [(major, tool) for major, tool in installed_majors(name, roots)
              if major >= server_major and major_version(tool_version(tool)) >= server_major]
    if usable:
        return min(usable, key=lambda item: item[0])[1]  # the server's own major, else closest
    raise _none_fits(name, server_major, roots, on_path)


def _none_fits(name: str, server_major: int, roots: tuple[str, ...],
               on_path: tuple[Path, int] | None) -> errors.PolicyRefused:
    seen = [f"{name} {major} at {tool}" for major, tool in installed_majors(name, roots)]
    if on_path is not None:
        seen.insert(0, f"{name} {on_path[1]} at {on_path[0]} (PATH)")
    looked = ", ".join(["PATH", *(root.replace("{major}", "<major>") for root in roots)])
    return errors.PolicyRefused(
        f"no {name} of PostgreSQL {server_major} or newer: found "
        f"{'; '.join(seen) or 'none'}; looked in {looked}",
        hint=f"{name} must be at least the server's major version ({server_major}): install "
             f"the PostgreSQL {server_major} client tools (Debian/Ubuntu: postgresql-client-"
             f"{server_major}; RHEL: postgresql{server_major}) or set {BINDIR_ENV} to their "
             "bin directory",
        reason=reasons.PG_DUMP_TOO_OLD)


def tool_version(path: Path) -> str:
    """e.g. 'pg_dump (PostgreSQL) 18.1'."""
    try:
        done = subprocess.run([str(path), "--version"], capture_output=True, text=True,
                              timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise errors.UsageError(f"cannot run {path} --version: {exc}",
                                hint=f"check the PostgreSQL client tools ({BINDIR_ENV})") from None
    return done.stdout.strip()


def major_version(version: str) -> int:
    match = _VERSION.search(version)
    if match is None:
        raise errors.UsageError(f"cannot tell the version of {version!r}",
                                hint="use the PostgreSQL client tools (pg_dump --version)")
    return int(match.group(1))


def server_version_text(server_version_num: int) -> str:
    """180001 -> '18.1'; 90624 -> '9.6.24'."""
    major, rest = divmod(server_version_num, 10000)
    if major >= 10:
        return f"{major}.{rest}"
    return f"{server_version_num // 10000}.{rest // 100}.{rest % 100}"


def tools_dir(server_version_num: int, pg_bin_dir: Path | None = None,
              roots: tuple[str, ...] = DISTRO_ROOTS) -> Path | None:
    """The bin directory every tool of one run comes from (pg_dump's), None for PATH."""
    if pg_bin_dir or explicit_bin_dir():
        return pg_bin_dir or explicit_bin_dir()
    path = find_pg_tool("pg_dump", server_major=server_version_num // 10000, roots=roots)
    found = shutil.which("pg_dump")
    return None if found is not None and Path(found) == path else path.parent


def tools_for_archive(pg_dump_version: str | None, pg_bin_dir: Path | None = None,
                      roots: tuple[str, ...] = DISTRO_ROOTS) -> Path | None:
    """The bin directory for restoring an archive: pg_restore reads only archives of its own
    major or older ones."""
    match = _VERSION.search(pg_dump_version or "")
    if match is None:
        return pg_bin_dir or explicit_bin_dir()
    return tools_dir(int(match.group(1)) * 10000, pg_bin_dir, roots)


def check_pg_dump_version(server_version_num: int, pg_bin_dir: Path | None = None,
                          roots: tuple[str, ...] = DISTRO_ROOTS) -> str:
    """pg_dump's version string; refused when pg_dump is older than the server (it cannot dump)."""
    server_major = server_version_num // 10000
    path = find_pg_tool("pg_dump", pg_bin_dir, server_major=server_major, roots=roots)
    version = tool_version(path)
    if major_version(version) < server_major:
        server = server_version_text(server_version_num)
        raise errors.PolicyRefused(
            f"{version} ({path}) cannot dump the PostgreSQL {server} server: pg_dump must be at "
            f"least the server's major version ({server_major})",
            hint=f"install PostgreSQL {server_major} (or newer) client tools and put them on "
                 f"PATH or set {BINDIR_ENV} to their bin directory",
            reason=reasons.PG_DUMP_TOO_OLD)
    return version


def connection_args(database_url: str) -> tuple[str, dict[str, str]]:
    """(--dbname value without the password, environment for the tool with PGPASSWORD)."""
    url = db.parse_url(database_url)
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    dbname = URL.create("postgresql", username=url.username, host=url.host, port=url.port,
                        database=url.database, query=url.query).render_as_string()
    return dbname, env


def password_of(database_url: str) -> str | None:
    password = db.parse_url(database_url).password
    return str(password) if password is not None else None


class OutputTail:
    """Drains a child's pipe on a thread (so the child never blocks on it), keeps the tail."""

    def __init__(self, pipe: IO[bytes], limit: int = STDERR_LIMIT):
        self.lines = 0
        self._tail = b""
        self._limit = limit
        self._thread = threading.Thread(target=self._drain, args=(pipe,), daemon=True)
        self._thread.start()

    def _drain(self, pipe: IO[bytes]) -> None:
        with pipe:
            for line in pipe:
                if line.strip() and not line.startswith(b";"):  # pg_restore --list comments
                    self.lines += 1
                self._tail = (self._tail + line)[-self._limit:]

    def wait(self, timeout: float = 10) -> None:
        """Until the child closed the pipe (call after the child exited)."""
        self._thread.join(timeout)

    def text(self, *secrets: str | None) -> str:
        self.wait()
        return redact.redact(self._tail.decode(errors="replace").strip(), *secrets)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Kill a child that is still running and reap it."""
    if process.poll() is None:
        process.kill()
    process.wait()


class DigestingFeed:
    """Hashes and counts chunks and writes them to a child's stdin.

    A child that stops reading early (`pg_restore --list` needs only the TOC) is not an error:
    the rest is still hashed.
    """

    def __init__(self, stdin: IO[bytes] | None):
        self.stdin = stdin
        self.size = 0
        self._hasher = hashlib.sha256()
        self._open = True

    def feed(self, chunk: bytes) -> None:
        self.update(chunk)
        self.write(chunk)

    def update(self, chunk: bytes) -> None:
        """Hash and count without writing (the caller writes it later)."""
        self._hasher.update(chunk)
        self.size += len(chunk)

    def write(self, chunk: bytes) -> None:
        if not self._open or self.stdin is None:
            return
        try:
            self.stdin.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self._open = False

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()

    def close(self) -> None:
        try:
            if self.stdin is not None:
                self.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self._open = False
