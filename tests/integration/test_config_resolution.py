"""`--migrations` and alembic.ini resolved as Alembic resolves them: an explicit script directory
wins over the ini, relative paths are read against the ini's directory, `%(here)s` and
`package:path` work, `version_locations` and `prepend_sys_path` too — on real inis shipped in
the optuna and mlflow-skinny wheels as well as on small projects written here."""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow.store.db_migrations
import optuna.storages._rdb
import pytest
from alembic.script import ScriptDirectory

from schemashift import errors, scripts
from tests.fixtures.models import invoke

pytestmark = pytest.mark.integration

OPTUNA = Path(optuna.storages._rdb.__file__).parent
MLFLOW = Path(mlflow.store.db_migrations.__file__).parent


def heads(migrations: Path | str) -> tuple[str, ...]:
    config = scripts.alembic_config(Path(migrations))
    return tuple(scripts.script_directory(config).get_heads())


def own_heads(directory: Path) -> tuple[str, ...]:
    """What Alembic itself finds in the directory, given its absolute path."""
    return tuple(ScriptDirectory(str(directory)).get_heads())


def history(directory: Path, revision: str, versions: str = "versions") -> Path:
    (directory / versions).mkdir(parents=True)
    (directory / "env.py").write_text("")
    (directory / versions / f"{revision}_x.py").write_text(
        f"revision = {revision!r}\ndown_revision = None\nbranch_labels = None\n"
        "depends_on = None\ndef upgrade(): pass\ndef downgrade(): pass\n")
    return directory


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from a directory that is not the ini's, as CI jobs and the operator's Jobs do."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return cwd


def test_explicit_script_directory_wins_over_the_ini(tmp_path: Path, elsewhere: Path) -> None:
    mine = history(tmp_path / "project" / "migrations", "aaa111")
    history(tmp_path / "project" / "other", "bbb222")
    (tmp_path / "project" / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/other\n")
    assert heads(mine) == ("aaa111",)


@pytest.mark.parametrize("location", ["migrations", "%(here)s/migrations", "./migrations"])
@pytest.mark.parametrize("given", ["ini", "ini-directory", "script-directory"])
def test_relative_and_here_script_locations_are_read_against_the_ini(
    tmp_path: Path, elsewhere: Path, location: str, given: str
) -> None:
    project = tmp_path / "project"
    history(project / "migrations", "aaa111")
    (project / "alembic.ini").write_text(f"[alembic]\nscript_location = {location}\n")
    migrations = {"ini": project / "alembic.ini", "ini-directory": project,
                  "script-directory": project / "migrations"}[given]
    assert heads(migrations) == ("aaa111",)


def test_optuna_wheel_ini_relative_to_its_directory(elsewhere: Path) -> None:
    # optuna's ini says `script_location = alembic`; optuna itself rewrites it to the path
    # beside the ini before calling Alembic (RDBStorage._create_alembic_config).
    expected = own_heads(OPTUNA / "alembic")
    assert expected
    assert heads(OPTUNA / "alembic.ini") == expected
    assert heads(OPTUNA / "alembic") == expected


def test_mlflow_wheel_ini_with_a_package_root_relative_location(elsewhere: Path) -> None:
    # mlflow's ini (inside the script directory) says `script_location =
    # mlflow/store/db_migrations`, relative to the source tree's root; mlflow overrides it.
    expected = own_heads(MLFLOW)
    assert expected
    assert heads(MLFLOW) == expected
    assert heads("mlflow.store:db_migrations") == expected


def test_package_notation_in_the_ini(tmp_path: Path, elsewhere: Path) -> None:
    (tmp_path / "alembic.ini").write_text(
        "[alembic]\nscript_location = optuna.storages._rdb:alembic\n")
    assert heads(tmp_path / "alembic.ini") == own_heads(OPTUNA / "alembic")
    assert heads(tmp_path) == own_heads(OPTUNA / "alembic")


@pytest.mark.parametrize("separator", ["path_separator = os\n", ""])
def test_relative_version_locations_are_read_against_the_ini(
    tmp_path: Path, elsewhere: Path, separator: str
) -> None:
    project = tmp_path / "project"
    history(project / "migrations", "ccc333", versions="more")
    (project / "alembic.ini").write_text(
        f"[alembic]\nscript_location = migrations\n{separator}"
        "version_locations = migrations/more\n")
    assert heads(project / "migrations") == ("ccc333",)
    assert heads(project / "alembic.ini") == ("ccc333",)


def test_relative_prepend_sys_path_is_the_ini_directory(tmp_path: Path, elsewhere: Path) -> None:
    project = tmp_path / "project"
    history(project / "migrations", "aaa111")
    (project / "alembic.ini").write_text(
        "[alembic]\nscript_location = migrations\nprepend_sys_path = .\npath_separator = os\n")
    heads(project)
    assert str(project) in sys.path
    assert "." not in sys.path and str(elsewhere) not in sys.path


def plan_output(database_url: str, migrations: str) -> tuple[int, str]:
    result = invoke("plan", "--database-url", database_url, "--migrations", migrations)
    return result.code, result.text


@pytest.mark.parametrize(
    ("ini", "named"),
    [("script_location = nowhere\n", ["script_location in", "'nowhere'", "looked at",
                                      "project/nowhere", "elsewhere/nowhere"]),
     ("sqlalchemy.url = x\n", ["has no script_location"]),
     ("script_location = no_such_package_x:migrations\n",
      ["'no_such_package_x'", "cannot be imported"]),
     ("script_location = optuna:no_such_directory\n",
      ["package 'optuna' has no directory"])],
    ids=["missing-relative", "no-script-location", "unknown-package", "missing-resource"],
)
def test_unresolvable_locations_name_what_was_looked_at(
    tmp_path: Path, elsewhere: Path, database_url: str, ini: str, named: list[str]
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "alembic.ini").write_text(f"[alembic]\n{ini}")
    code, output = plan_output(database_url, str(project / "alembic.ini"))
    assert code == 2, output
    assert all(part in output for part in named), output
    assert "create-model-migration" not in output and "Traceback" not in output
    assert sorted(p.name for p in project.iterdir()) == ["alembic.ini"]


def test_unknown_package_given_as_migrations(elsewhere: Path, database_url: str) -> None:
    code, output = plan_output(database_url, "no_such_package_x:migrations")
    assert code == 2, output
    assert "--migrations 'no_such_package_x:migrations'" in output
    assert "cannot be imported" in output and "create-model-migration" not in output


def test_malformed_ini_is_a_usage_error(tmp_path: Path, elsewhere: Path) -> None:
    (tmp_path / "alembic.ini").write_text("this is not an ini\n")
    with pytest.raises(errors.UsageError, match="cannot be read as an Alembic config"):
        scripts.alembic_config(tmp_path / "alembic.ini")
