"""A new Alembic script directory: env.py wired to schemashift, script.py.mako, versions/."""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

from alembic.script import ScriptDirectory

TEMPLATES = {"env.py": "env.py.mako", "script.py.mako": "script.py.mako"}
REVISION_TEMPLATE = "script.py.mako"
# The package ships as files on disk (an editable or a wheel install), never zipped.
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def needs_scaffold(migrations_dir: Path) -> bool:
    """Only a missing or empty directory is initialised; anything else is the user's own."""
    if not migrations_dir.exists():
        return True
    return migrations_dir.is_dir() and not any(migrations_dir.iterdir())


def scaffold(migrations_dir: Path) -> None:
    (migrations_dir / "versions").mkdir(parents=True, exist_ok=True)
    templates = resources.files("schemashift.generate") / "templates"
    for target, source in TEMPLATES.items():
        (migrations_dir / target).write_text((templates / source).read_text())


def with_template(script: ScriptDirectory) -> ScriptDirectory:
    """The script directory, or — when it has no script.py.mako, as many real projects (and
    package-shipped histories) do not — the same history rendered with ours.

    Alembic reads the template from `<dir>/script.py.mako` and nothing else from `dir` when it
    writes a revision, so a copy pointing `dir` at our templates, with the project's version
    locations made explicit, writes into the project's versions and adds nothing beside them.
    """
    if (Path(script.dir) / REVISION_TEMPLATE).is_file():
        return script
    fallback = copy.copy(script)
    fallback.version_locations = list(script.version_locations or [
        str(Path(script.dir, "versions").absolute())])
    fallback.dir = str(TEMPLATES_DIR)
    return fallback
