"""Where a project's Alembic script directory and alembic.ini are, resolved as Alembic does.

`--migrations` names the script directory (the one holding env.py), an alembic.ini, the
directory holding the ini, or a `package:path` resource. An explicit script directory wins over
the ini's `script_location`; every other ini option is honoured. Relative paths in the ini
(`script_location`, `version_locations`, `prepend_sys_path`) mean what they mean to `alembic`
run beside its ini — Alembic reads them against the working directory, and its default ini is
the one in the working directory — so they are anchored at the ini's directory, then tried
against the working directory as Alembic would. `%(here)s` and `package:path` are Alembic's own
(`Config` interpolation, `alembic.util.coerce_resource_to_filename`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from alembic import util as alembic_util
from alembic.config import Config
from alembic.script import ScriptDirectory

from schemashift import errors

INI_NAME = "alembic.ini"
ENV_PY = "env.py"


@dataclass(frozen=True)
class Location:
    script_dir: Path
    ini: Path | None


def locate(migrations: Path) -> Location:
    """The script directory and the ini that configures it (None: Alembic's defaults)."""
    if migrations.is_file():
        ini = migrations.resolve()
        return Location(ini_script_location(ini), ini)
    if migrations.is_dir():
        directory = migrations.resolve()
        if not (directory / ENV_PY).is_file() and (directory / INI_NAME).is_file():
            return Location(ini_script_location(directory / INI_NAME), directory / INI_NAME)
        return Location(directory, find_ini(directory))
    if is_resource(str(migrations)):
        directory = resource_dir(str(migrations), "--migrations")
        return Location(directory, find_ini(directory))
    return Location(migrations.resolve(), None)


def find_ini(script_dir: Path) -> Path | None:
    """The alembic.ini inside the script directory or beside it (the usual two layouts)."""
    for candidate in (script_dir / INI_NAME, script_dir.parent / INI_NAME):
        if candidate.is_file():
            return candidate
    return None


def is_resource(value: str) -> bool:
    return not os.path.isabs(value) and ":" in value


def resource_dir(value: str, origin: str) -> Path:
    """`package:path` → the directory, by Alembic's own resolution of the notation."""
    package = value.split(":", 1)[0]
    try:
        path = Path(alembic_util.coerce_resource_to_filename(value))
    except ImportError as exc:
        raise errors.UsageError(
            f"{origin} {value!r} names package {package!r}, which cannot be imported: {exc}",
            hint="install the package that ships the migrations (in this environment), or "
                 "correct the package name before the colon",
        ) from None
    if not path.is_dir():
        raise errors.UsageError(
            f"{origin} {value!r}: package {package!r} has no directory {path}",
            hint="correct the path after the colon (it is relative to the package, "
                 "for example mypackage:migrations)",
        )
    return path


def ini_script_location(ini: Path) -> Path:
    raw = _read_option(ini, "script_location")
    origin = f"script_location in {ini}"
    if not raw:
        raise errors.UsageError(
            f"{ini} has no script_location in its [alembic] section",
            hint="add script_location = %(here)s/<directory holding env.py>, or pass "
                 "--migrations <that directory>",
        )
    if is_resource(raw):
        return resource_dir(raw, origin)
    candidates = anchored(raw, ini.parent)
    for candidate in candidates:
        if (candidate / ENV_PY).is_file():
            return candidate
    looked = " and ".join(str(c) for c in candidates)
    raise errors.UsageError(
        f"{origin} is {raw!r}, and no Alembic script directory (a directory holding env.py) "
        f"is there: looked at {looked}",
        hint="pass --migrations <the directory holding env.py> (it wins over the ini), or set "
             "script_location = %(here)s/<directory> or package:path in the ini",
    )


def _read_option(ini: Path, name: str) -> str | None:
    try:
        return Config(str(ini)).get_main_option(name)
    except Exception as exc:  # configparser errors: a malformed ini must not be a traceback
        raise errors.UsageError(
            f"{ini} cannot be read as an Alembic config: {type(exc).__name__}: {exc}",
            hint="fix the ini, or pass --migrations <the directory holding env.py>",
        ) from None


def anchored(value: str, base: Path) -> list[Path]:
    """A relative path against the ini's directory, then the working directory (Alembic's)."""
    path = Path(value)
    if path.is_absolute():
        return [path]
    return list(dict.fromkeys([base / path, Path.cwd() / path]))


def _first_existing(value: str, base: Path) -> str:
    if is_resource(value):
        return value  # Alembic resolves package:path itself
    candidates = anchored(value, base)
    return str(next((c for c in candidates if c.exists()), candidates[0]))


def escape(value: str) -> str:
    return value.replace("%", "%%")


def anchor_paths(config: Config, base: Path) -> None:
    """Rewrite the ini's relative version_locations and prepend_sys_path as absolute paths.

    The lists are split by Alembic itself (its separator rules differ between versions):
    `ScriptDirectory.from_config` exposes the version locations and prepends the sys.path
    entries, which are replaced in place by their anchored forms.
    """
    before = len(sys.path)
    script = ScriptDirectory.from_config(config)
    added = len(sys.path) - before
    prepended = [_first_existing(entry, base) for entry in sys.path[:added]]
    sys.path[:added] = prepended
    if prepended:
        config.set_main_option("prepend_sys_path", escape(os.pathsep.join(prepended)))
    if script.version_locations:
        locations = [_first_existing(str(p), base) for p in script.version_locations]
        config.set_main_option("version_locations", escape(os.pathsep.join(locations)))
        config.set_main_option("version_path_separator", "os")  # Alembic < 1.16
    if prepended or script.version_locations:
        config.set_main_option("path_separator", "os")  # Alembic >= 1.16
