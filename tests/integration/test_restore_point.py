"""`--backup-method restorePoint` on a real PostgreSQL 18 cluster archiving its WAL into a local
directory: a real point-in-time recovery to the recorded point, and every refusal changing
nothing (archiving off, failing or too slow; a role without the right; restore policy)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from schemashift.runner import restore_point
from tests.fixtures.histories import write_history
from tests.fixtures.postgres import APP_ROLE, ArchivingServer, PgServer, archive_command
from tests.fixtures.runner_cli import run_apply, scalar
from tests.fixtures.wal_recovery import base_backup, recovered, scratch
from tests.integration.test_runner_apply import ADD_EMAIL, CREATE_PATIENTS, CREATE_VISITS
from tests.integration.test_runner_rollback import FAILS_ON_DATA

pytestmark = pytest.mark.integration

RP = ("--backup-method", "restorePoint")
GRANT = ("GRANT EXECUTE ON FUNCTION pg_create_restore_point(text), pg_switch_wal() "
         f"TO {APP_ROLE}")


@pytest.fixture
def archiving_db(archiving_pg_server: ArchivingServer) -> Iterator[str]:
    """A fresh database on the archiving cluster; the superuser's URL (restore points need
    superuser or a grant: the restricted-role test covers the grant)."""
    name = archiving_pg_server.create_database()
    try:
        yield name
    finally:
        archiving_pg_server.drop_database(name)


def wait_archiver_healthy(server: ArchivingServer) -> None:
    """Until a segment is archived after the last failure (a test left the archiver sound)."""
    deadline = time.monotonic() + 60
    with server.admin() as conn:
        conn.execute("CREATE TEMP TABLE nudge (x int)")
        while True:
            conn.execute("INSERT INTO nudge VALUES (1)")
            conn.execute("SELECT pg_switch_wal()")
            row = conn.execute("SELECT last_archived_time, last_failed_time "
                               "FROM pg_stat_archiver").fetchone()
            assert row is not None
            if row[0] is not None and (row[1] is None or row[0] > row[1]):
                return
            assert time.monotonic() < deadline, f"the archiver did not recover: {row}"
            time.sleep(0.3)


def test_recovery_to_the_recorded_restore_point_gives_the_from_revision_with_every_row(
    archiving_pg_server: ArchivingServer, archiving_db: str, tmp_path: Path
) -> None:
    server = archiving_pg_server
    url = server.admin_url(archiving_db)
    migrations = write_history(tmp_path / "ok", [CREATE_PATIENTS, ADD_EMAIL])
    assert run_apply(url, migrations, "--target", "a1").exit_code == 0
    with scratch(server) as pitr:
        check_recovery(server, archiving_db, url, migrations, tmp_path,
                       base_backup(server, pitr / "base"), pitr)


def check_recovery(server: ArchivingServer, archiving_db: str, url: str, migrations: Path,
                   tmp_path: Path, backup: Path, pitr: Path) -> None:
    with psycopg.connect(url, autocommit=True) as conn:  # after the base backup: WAL only
        conn.execute("INSERT INTO patients SELECT g, 'patient ' || g "
                     "FROM generate_series(3, 5002) g")

    first = run_apply(url, migrations, *RP, "--env", "production")

    assert first.exit_code == 0, first
    point = first.result["backup"]
    assert point["method"] == "restorePoint" and point["verified"] is True
    assert point["restorePoint"].startswith(f"{archiving_db}-a1-")
    assert len(point["restorePoint"].encode()) <= 63
    assert f"restore point {point['restorePoint']} at LSN {point['lsn']}" in (
        first.result["message"])
    phases = [e["phase"] for e in first.of("phase")]
    assert phases.index("BackingUp") < phases.index("Migrating")
    segment = next(e["segment"] for e in first.of("backup") if e.get("segment"))
    assert (server.archive / segment).is_file()  # archived before the first change
    with psycopg.connect(url, autocommit=True) as conn:  # written after the point
        conn.execute("UPDATE patients SET email = name || '@example.org'")
        conn.execute("DELETE FROM patients WHERE id > 4000")

    failing = write_history(tmp_path / "failing", [CREATE_PATIENTS, ADD_EMAIL, FAILS_ON_DATA])
    second = run_apply(url, failing, *RP)

    assert second.exit_code == 1, second
    assert (second.result["outcome"], second.result["reason"]) == (
        "RolledBack", "RolledBackByTransaction")
    second_point = second.result["backup"]["restorePoint"]
    assert second_point.startswith(f"{archiving_db}-b2-")
    assert second_point in second.result["message"]

    with recovered(server, backup, pitr / "at-first", point["restorePoint"]) as at:
        recovered_url = at.format(archiving_db)
        assert scalar(recovered_url, "SELECT version_num FROM alembic_version") == "a1"
        assert scalar(recovered_url, "SELECT count(*) FROM patients") == 5002
        assert scalar(recovered_url, "SELECT count(*) FROM information_schema.columns "
                                     "WHERE table_name = 'patients' AND column_name = 'email'"
                      ) == 0
    with recovered(server, backup, pitr / "at-second", second_point) as at:
        recovered_url = at.format(archiving_db)
        assert scalar(recovered_url, "SELECT version_num FROM alembic_version") == "b2"
        assert scalar(recovered_url, "SELECT count(*) FROM patients") == 4000
        assert scalar(recovered_url, "SELECT count(email) FROM patients") == 4000


def test_archiving_off_is_refused_and_nothing_changes(
    database_url: str, pg_server: PgServer, tmp_path: Path
) -> None:
    migrations = write_history(tmp_path, [CREATE_PATIENTS, ADD_EMAIL])
    assert run_apply(database_url, migrations, "--target", "a1").exit_code == 0

    run = run_apply(database_url, migrations, *RP)

    assert run.exit_code == 2, run
    assert (run.result["outcome"], run.result["reason"]) == ("Failed", "WalArchivingUnavailable")
    assert "archive_mode = off" in run.result["message"]
    assert "Nothing was changed" in run.result["message"]
    assert "--backup-method pgDump" in run.result["message"]
    assert run.result["backup"] is None
    assert scalar(database_url, "SELECT version_num FROM alembic_version") == "a1"


def test_a_failing_archiver_is_refused_and_nothing_changes(
    archiving_pg_server: ArchivingServer, archiving_db: str, tmp_path: Path
) -> None:
    server = archiving_pg_server
    url = server.admin_url(archiving_db)
    migrations = write_history(tmp_path, [CREATE_PATIENTS, ADD_EMAIL])
    assert run_apply(url, migrations, "--target", "a1").exit_code == 0
    server.set_archive_command("exit 1")
    try:
        with server.admin(archiving_db) as conn:
            conn.execute("INSERT INTO patients VALUES (3, 'Linus')")
            conn.execute("SELECT pg_switch_wal()")
        deadline = time.monotonic() + 60
        while scalar(server.admin_url(), "SELECT last_failed_time > coalesce("
                     "last_archived_time, '-infinity') FROM pg_stat_archiver") is not True:
            assert time.monotonic() < deadline, "the archiver never failed"
            time.sleep(0.2)
        segments = sorted(path.name for path in server.archive.iterdir())

        run = run_apply(url, migrations, *RP)

        assert run.exit_code == 3, run
        assert (run.result["outcome"], run.result["reason"]) == (
            "Failed", "WalArchivingUnavailable")
        assert "the WAL archiver is failing" in run.result["message"]
        assert "Nothing was changed" in run.result["message"]
        assert scalar(url, "SELECT version_num FROM alembic_version") == "a1"
        assert scalar(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name "
                           "LIKE 'schemashift%'") == 0
        assert sorted(path.name for path in server.archive.iterdir()) == segments
    finally:
        server.set_archive_command(archive_command(server.archive))
        wait_archiver_healthy(server)


def test_an_archiver_too_slow_for_the_wait_stops_the_run_before_any_change(
    archiving_pg_server: ArchivingServer, archiving_db: str, tmp_path: Path
) -> None:
    server = archiving_pg_server
    url = server.admin_url(archiving_db)
    migrations = write_history(tmp_path, [CREATE_PATIENTS, ADD_EMAIL])
    assert run_apply(url, migrations, "--target", "a1").exit_code == 0
    server.set_archive_command(f"sleep 4 && {archive_command(server.archive)}")
    try:
        run = run_apply(url, migrations, *RP, "--archive-wait", "1s")
    finally:
        server.set_archive_command(archive_command(server.archive))
        wait_archiver_healthy(server)

    assert run.exit_code == 3, run
    assert run.result["reason"] == "WalArchivingUnavailable"
    assert "was not archived within archive wait 1s" in run.result["message"]
    assert "--archive-wait" in run.result["message"]
    assert scalar(url, "SELECT version_num FROM alembic_version") == "a1"


def test_a_role_without_the_right_is_told_which_grant_it_needs(
    archiving_pg_server: ArchivingServer, tmp_path: Path
) -> None:
    server = archiving_pg_server
    name = server.create_database()
    url = server.app_url(name)  # `app`: no superuser, owns the database
    migrations = write_history(tmp_path, [CREATE_PATIENTS, ADD_EMAIL, CREATE_VISITS])
    try:
        assert run_apply(url, migrations, "--target", "a1").exit_code == 0

        refused = run_apply(url, migrations, *RP)

        assert refused.exit_code == 2, refused
        assert refused.result["reason"] == "RestorePointNotPermitted"
        message = refused.result["message"]
        assert f"role '{APP_ROLE}' may not create a restore point" in message
        assert ("GRANT EXECUTE ON FUNCTION pg_create_restore_point(text), pg_switch_wal() TO "
                f'"{APP_ROLE}"') in message
        assert scalar(url, "SELECT version_num FROM alembic_version") == "a1"

        with server.admin(name) as conn:  # function rights are per database
            conn.execute(GRANT)
        granted = run_apply(url, migrations, *RP, "--target", "b2")

        assert granted.exit_code == 0, granted
        assert granted.result["backup"]["restorePoint"].startswith(f"{name}-a1-")
        assert scalar(url, "SELECT version_num FROM alembic_version") == "b2"
    finally:
        server.drop_database(name)


def test_restore_policy_with_a_restore_point_is_refused_before_connecting(
    tmp_path: Path
) -> None:
    migrations = write_history(tmp_path, [CREATE_PATIENTS])
    unreachable = "postgresql://app:pw@127.0.0.1:9/none"

    run = run_apply(unreachable, migrations, *RP, "--rollback-policy", "restore")

    assert run.exit_code == 2, run
    assert run.result["reason"] == "RestorePointNotRestorable"
    assert "only be recovered into a new data directory" in run.result["message"]


def test_dry_run_checks_archiving_without_creating_a_point(
    archiving_pg_server: ArchivingServer, archiving_db: str, tmp_path: Path
) -> None:
    url = archiving_pg_server.admin_url(archiving_db)
    migrations = write_history(tmp_path, [CREATE_PATIENTS])
    before = scalar(archiving_pg_server.admin_url(), "SELECT pg_current_wal_lsn()::text")

    run = run_apply(url, migrations, *RP, "--dry-run")

    assert run.exit_code == 0, run
    assert run.result["reason"] == "DryRunCompleted" and run.result["backup"] is None
    assert scalar(archiving_pg_server.admin_url(),
                  "SELECT pg_walfile_name(pg_current_wal_lsn())") == scalar(
        archiving_pg_server.admin_url(), f"SELECT pg_walfile_name('{before}')")


@pytest.mark.parametrize(("database", "revision"), [
    ("hms", "c3a9f1e2b4d5"),
    ("d" * 63, "0123456789abcdef0123456789abcdef"),
    ("ünïcode db", None),
])
def test_restore_point_names_fit_postgresql_and_identify_the_run(
    database: str, revision: str | None
) -> None:
    from datetime import UTC, datetime

    when = datetime(2026, 11, 25, 17, 50, 45, 646000, tzinfo=UTC)
    name = restore_point.restore_point_name(database, revision, when)

    assert len(name.encode()) <= restore_point.NAME_LIMIT
    assert name.endswith("-20261125T175045.646Z")
    assert name.isascii()
    assert (revision or "base")[:12] in name
    other = restore_point.restore_point_name(database + "x", revision, when)
    assert other != name
