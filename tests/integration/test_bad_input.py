"""Bad input to detect / check / create-model-migration / sync-models-to-db: a clear message,
the documented exit code, and nothing written or changed."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from tests.fixtures.models import execute, invoke, run, snapshot, write_models
from tests.fixtures.postgres import APP_PASSWORD

pytestmark = pytest.mark.integration

MODELS = "t = sa.Table('t', metadata, sa.Column('id', sa.Integer, primary_key=True))\n"
COMMANDS = [
    ("detect-schema-changes",),
    ("check",),
    ("sync-models-to-db",),
    ("create-model-migration", "-m", "x"),
]


def tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): p.read_text() for p in sorted(path.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts} if path.exists() else {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    return tmp_path / "migrations"


def attempt(command: tuple[str, ...], url: str, ref: str, migrations: Path) -> tuple[int, str]:
    result = invoke(*command, "--database-url", url, "--metadata", ref,
                    "--migrations", str(migrations))
    return result.code, result.text


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_such_models_module:Base", "cannot import model module 'no_such_models_module'"),
        ("{module}:Nope", "has no attribute 'Nope'"),
        ("{module}:NOT_METADATA", "is a int, not a SQLAlchemy MetaData or declarative Base"),
        ("just_a_module", "is not of the form MODULE:ATTR"),
    ],
    ids=["unknown-module", "unknown-attribute", "not-metadata", "no-attribute"],
)
def test_bad_metadata_reference(
    tmp_path: Path, database_url: str, migrations: Path, command: tuple[str, ...], ref: str,
    message: str,
) -> None:
    module = write_models(tmp_path / "models", MODELS + "NOT_METADATA = 3\n").split(":")[0]
    before = snapshot(database_url)
    code, output = attempt(command, database_url, ref.format(module=module), migrations)
    assert code == 2, output
    assert message in output and "Traceback" not in output
    assert snapshot(database_url) == before and not migrations.exists()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_unreachable_database_exits_3_and_shows_the_host_never_the_password(
    tmp_path: Path, migrations: Path, command: tuple[str, ...]
) -> None:
    ref = write_models(tmp_path, MODELS)
    port = free_port()
    url = f"postgresql://app:{APP_PASSWORD}@127.0.0.1:{port}/hms"
    result = run(*command, "--database-url", url, "--metadata", ref,
                 "--migrations", str(migrations), pythonpath=tmp_path)
    assert result.code == 3, result
    assert f"cannot connect to PostgreSQL at 127.0.0.1:{port}/hms" in result.err
    assert APP_PASSWORD not in result.text
    assert not migrations.exists()


def test_wrong_password_is_not_echoed(tmp_path: Path, database_url: str) -> None:
    ref = write_models(tmp_path, MODELS)
    wrong = "Wr0ng-Passw0rd-x"
    result = invoke("detect", "--database-url", database_url.replace(APP_PASSWORD, wrong),
                    "--metadata", ref)
    assert result.code == 3, result
    assert "password authentication failed" in result.err
    assert wrong not in result.text and APP_PASSWORD not in result.text


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("url", ["sqlite:///hms.db", f"mysql://app:{APP_PASSWORD}@db/hms"])
def test_database_that_is_not_postgresql(
    tmp_path: Path, migrations: Path, command: tuple[str, ...], url: str
) -> None:
    ref = write_models(tmp_path, MODELS)
    code, output = attempt(command, url, ref, migrations)
    assert code == 2, output
    assert "not PostgreSQL" in output and APP_PASSWORD not in output
    assert not migrations.exists() and not (tmp_path / "hms.db").exists()


def broken_without_env(migrations: Path) -> None:
    (migrations / "versions").mkdir(parents=True)
    (migrations / "README").write_text("someone's directory\n")


def broken_revision(migrations: Path) -> None:
    (migrations / "versions").mkdir(parents=True)
    (migrations / "env.py").write_text("")
    (migrations / "versions" / "a1_x.py").write_text(
        "revision = 'a1'\ndown_revision = 'missing'\nbranch_labels = None\ndepends_on = None\n"
        "def upgrade(): pass\ndef downgrade(): pass\n")


@pytest.mark.parametrize(
    ("breakage", "message"),
    [(broken_without_env, "has no env.py"),
     (broken_revision, "is not a usable Alembic script directory")],
    ids=["no-env-py", "dangling-down-revision"],
)
def test_broken_script_directory(
    tmp_path: Path, database_url: str, migrations: Path, breakage: object, message: str
) -> None:
    breakage(migrations)  # type: ignore[operator]
    files, before = tree(migrations), snapshot(database_url)
    ref = write_models(tmp_path, MODELS)
    code, output = attempt(("create-model-migration", "-m", "x"), database_url, ref, migrations)
    assert code == 2, output
    assert message in output and "Traceback" not in output
    assert (tree(migrations), snapshot(database_url)) == (files, before)


def test_multiple_heads_are_refused(tmp_path: Path, database_url: str, migrations: Path) -> None:
    ref = write_models(tmp_path / "v1", MODELS)
    assert attempt(("create-model-migration", "-m", "one", "--apply"), database_url, ref,
                   migrations)[0] == 0
    first = next((migrations / "versions").glob("*.py"))
    source = first.read_text()
    revision = source.split("revision: str = '")[1].split("'")[0]
    for branch in ("b1", "b2"):
        (migrations / "versions" / f"{branch}.py").write_text(
            f"revision = '{branch}'\ndown_revision = '{revision}'\nbranch_labels = None\n"
            "depends_on = None\ndef upgrade(): pass\ndef downgrade(): pass\n")
    files, before = tree(migrations), snapshot(database_url)
    v2 = write_models(tmp_path / "v2", MODELS + "u = sa.Table('u', metadata, "
                                                "sa.Column('id', sa.Integer, primary_key=True))\n")
    code, output = attempt(("create-model-migration", "-m", "two"), database_url, v2, migrations)
    assert code == 2, output
    assert "the migration history has 2 heads: b1, b2" in output and "alembic merge" in output
    assert (tree(migrations), snapshot(database_url)) == (files, before)


@pytest.mark.parametrize("message", ["", "   "])
def test_empty_message_is_refused(
    tmp_path: Path, database_url: str, migrations: Path, message: str
) -> None:
    ref = write_models(tmp_path, MODELS)
    code, output = attempt(("create-model-migration", "-m", message), database_url, ref,
                           migrations)
    assert code == 2, output
    assert "the migration message is empty" in output
    assert not migrations.exists() and snapshot(database_url)["tables"] == {}


def test_never_stamped_database_with_a_history_is_refused(
    tmp_path: Path, database_url: str, migrations: Path, pg_server: object
) -> None:
    ref = write_models(tmp_path / "v1", MODELS)
    assert attempt(("create-model-migration", "-m", "one", "--apply"), database_url, ref,
                   migrations)[0] == 0
    execute(database_url, "DROP TABLE alembic_version")
    files, before = tree(migrations), snapshot(database_url)
    v2 = write_models(tmp_path / "v2", MODELS + "u = sa.Table('u', metadata, "
                                                "sa.Column('id', sa.Integer, primary_key=True))\n")
    code, output = attempt(("create-model-migration", "-m", "two"), database_url, v2, migrations)
    assert code == 2, output
    assert "the database was never stamped by Alembic" in output and "alembic stamp" in output
    assert (tree(migrations), snapshot(database_url)) == (files, before)
    detect = invoke("detect", "--database-url", database_url, "--metadata", v2)
    assert detect.code == 0 and "no alembic_version table" in detect.out, detect


def test_tables_without_any_history_are_refused(
    tmp_path: Path, database_url: str, migrations: Path
) -> None:
    execute(database_url, "CREATE TABLE t (id int PRIMARY KEY)")
    before = snapshot(database_url)
    v2 = write_models(tmp_path, MODELS + "u = sa.Table('u', metadata, "
                                         "sa.Column('id', sa.Integer, primary_key=True))\n")
    code, output = attempt(("create-model-migration", "-m", "two"), database_url, v2, migrations)
    assert code == 2, output
    assert "the database already has tables but the migration history is empty" in output
    assert not migrations.exists() and snapshot(database_url) == before


def test_missing_options_are_named(tmp_path: Path, database_url: str) -> None:
    ref = write_models(tmp_path, MODELS)
    no_url = invoke("detect", "--metadata", ref)
    assert no_url.code == 2 and "no database URL given" in no_url.err, no_url
    no_models = invoke("detect", "--database-url", database_url)
    assert no_models.code == 2 and "no model metadata given" in no_models.err, no_models
    no_dir = invoke("create-model-migration", "-m", "x", "--database-url", database_url,
                    "--metadata", ref)
    assert no_dir.code == 2 and "no migrations directory given" in no_dir.err, no_dir
    assert shutil.which("schemashift")
