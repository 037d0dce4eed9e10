"""`schemashift wait-for-schema` as an initContainer runs it (a subprocess, environment as in a
pod), against real PostgreSQL under a role that may only SELECT alembic_version, on histories
written here and on optuna's and mlflow's real ones.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.fixtures import corpus
from tests.fixtures.histories import Revision, write_history
from tests.fixtures.postgres import PgServer
from tests.fixtures.runner_cli import cli_env, run_apply

pytestmark = pytest.mark.integration

A1 = Revision("a1", "patients", 'op.create_table("patients", '
              'sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text))',
              'op.drop_table("patients")')
B2 = Revision("b2", "email", 'op.add_column("patients", sa.Column("email", sa.Text))',
              'op.drop_column("patients", "email")')
C3 = Revision("c3", "phone", 'op.add_column("patients", sa.Column("phone", sa.Text))',
              'op.drop_column("patients", "phone")')
_roles = itertools.count()


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "schemashift.cli", "wait-for-schema", *args]


def wait(url: str, migrations: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """As in a pod: the URL and the script directory from the environment."""
    env = cli_env(extra={"SCHEMASHIFT_DATABASE_URL": url,
                         "SCHEMASHIFT_MIGRATIONS": str(migrations)})
    return subprocess.run(command("--interval", "100ms", *args), env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def reader(pg_server: PgServer, database_url: str) -> Iterator[str]:
    """A login role with CONNECT on the database and USAGE on its schema, nothing else yet;
    `grant_version_table` lets it read alembic_version. Its URL."""
    role = f"reader_{os.getpid()}_{next(_roles)}"
    database = database_url.rsplit("/", 1)[1]
    with pg_server.admin() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'r3ad-only'")
        conn.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
    with pg_server.admin(database) as conn:
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
    try:
        yield f"postgresql://{role}:r3ad-only@{pg_server.host}:{pg_server.port}/{database}"
    finally:
        with pg_server.admin(database) as conn:
            conn.execute(f"DROP OWNED BY {role}")
        with pg_server.admin() as conn:
            conn.execute(f"DROP ROLE {role}")


def grant_version_table(database_url: str, reader_url: str) -> None:
    role = reader_url.split("//", 1)[1].split(":", 1)[0]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"GRANT SELECT ON alembic_version TO {role}")


def at(database_url: str, migrations: Path, target: str) -> None:
    done = run_apply(database_url, migrations, "--target", target)
    assert done.exit_code == 0, done


def test_at_the_image_head_it_returns_at_once_with_only_select_on_alembic_version(
    database_url: str, reader: str, tmp_path: Path
) -> None:
    history = write_history(tmp_path, [A1, B2])
    at(database_url, history, "b2")
    grant_version_table(database_url, reader)
    # The least rights: nothing but the revision.
    with psycopg.connect(reader) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM patients")
    with psycopg.connect(reader) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE alembic_version SET version_num = 'a1'")
    done = wait(reader, history)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "schema ready: the database is at b2, at or after b2" in done.stdout
    assert "r3ad-only" not in done.stdout + done.stderr


def test_it_waits_until_the_migration_has_run(
    database_url: str, reader: str, tmp_path: Path
) -> None:
    history = write_history(tmp_path, [A1, B2])
    at(database_url, history, "a1")
    grant_version_table(database_url, reader)
    env = cli_env(extra={"SCHEMASHIFT_DATABASE_URL": reader,
                         "SCHEMASHIFT_MIGRATIONS": str(history)})
    with subprocess.Popen(command("--interval", "100ms", "--timeout", "2m"), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as waiting:
        assert waiting.stdout is not None
        first = [waiting.stdout.readline(), waiting.stdout.readline()]
        assert "the database is at a1; waiting for b2" in first[1], first
        assert waiting.poll() is None  # still behind: still waiting
        at(database_url, history, "b2")
        out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, out + err
    assert "schema ready: the database is at b2" in out


def test_a_later_revision_satisfies_an_earlier_one(
    database_url: str, reader: str, tmp_path: Path
) -> None:
    history = write_history(tmp_path, [A1, B2, C3])
    at(database_url, history, "c3")
    grant_version_table(database_url, reader)
    done = wait(reader, history, "--revision", "b2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "at c3, at or after b2" in done.stdout


def test_a_timeout_says_where_the_database_is(
    database_url: str, reader: str, tmp_path: Path
) -> None:
    history = write_history(tmp_path, [A1, B2])
    at(database_url, history, "a1")
    grant_version_table(database_url, reader)
    done = wait(reader, history, "--timeout", "500ms")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "error: timed out after 500ms: the database is at a1, not yet at b2" in done.stdout


def test_a_never_migrated_database_is_waited_for(
    database_url: str, reader: str, tmp_path: Path
) -> None:
    history = write_history(tmp_path, [A1])
    done = wait(reader, history, "--timeout", "300ms")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the database is at no revision (never migrated)" in done.stdout


def test_a_revision_the_image_does_not_know_is_an_error_at_once(
    database_url: str, reader: str, tmp_path: Path
) -> None:
    newer = write_history(tmp_path / "newer", [A1, B2, C3])
    at(database_url, newer, "c3")
    grant_version_table(database_url, reader)
    older_image = write_history(tmp_path / "older", [A1, B2])
    done = wait(reader, older_image, "--timeout", "1h")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "the database is at revision c3, which this image's migrations" in done.stderr
    assert "hint:" in done.stderr


def test_a_role_that_cannot_read_the_revision_is_told_what_to_grant(
    database_url: str, reader: str, tmp_path: Path
) -> None:
    history = write_history(tmp_path, [A1])
    at(database_url, history, "a1")
    done = wait(reader, history)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "permission denied" in done.stderr and "SELECT on alembic_version" in done.stderr


def test_an_unreachable_database_is_retried_then_exit_3(tmp_path: Path) -> None:
    history = write_history(tmp_path, [A1])
    done = wait("postgresql://app:secret-pw@127.0.0.1:9/app", history, "--timeout", "300ms")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "unreachable" in done.stdout and "secret-pw" not in done.stdout + done.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--timeout", "0"], "timeout '0' must be greater than zero"),
    (["--interval", "soon"], "interval 'soon' is not a duration"),
    (["--revision", "zz9"], "unknown target revision 'zz9'"),
])
def test_bad_input_changes_nothing_and_says_what_to_do(
    database_url: str, tmp_path: Path, args: list[str], message: str
) -> None:
    history = write_history(tmp_path, [A1])
    done = wait(database_url, history, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr, done.stderr


def test_a_branched_history_needs_a_revision(database_url: str, tmp_path: Path) -> None:
    branched = write_history(tmp_path, [A1, B2, Revision("x2", "other branch", down_revision="a1")])
    done = wait(database_url, branched)
    assert done.returncode == 2 and "heads" in done.stderr, done.stderr


@pytest.mark.parametrize("project", [corpus.OPTUNA, corpus.MLFLOW], ids=lambda p: p.name)
def test_real_histories_from_their_wheels(
    project: corpus.CorpusProject, database_url: str, reader: str, tmp_path: Path
) -> None:
    """Each project's own way to an older revision, then to head, with plain Alembic."""
    scripts = corpus.copy_scripts(project, tmp_path)
    corpus.start_and_upgrade(project, database_url, target=project.rollback_from)
    grant_version_table(database_url, reader)
    behind = wait(reader, scripts, "--timeout", "300ms")
    assert behind.returncode == 1, behind.stdout + behind.stderr
    assert f"the database is at {project.rollback_from}, not yet at {project.head}" in (
        behind.stdout)
    earlier = wait(reader, scripts, "--revision", project.rollback_from)
    assert earlier.returncode == 0, earlier.stdout + earlier.stderr
    corpus.start_and_upgrade(project, database_url)
    done = wait(reader, scripts)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"at or after {project.head}" in done.stdout
