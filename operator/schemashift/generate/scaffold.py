"""A new Alembic script directory: env.py wired to schemashift, script.py.mako, versions/."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

TEMPLATES = {"env.py": "env.py.mako", "script.py.mako": "script.py.mako"}


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
