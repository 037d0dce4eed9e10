"""The Alembic script directory: config, heads, and the revision a database is at."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection

from schemashift import errors, locations


def alembic_config(migrations: Path, database_url: str | None = None) -> Config:
    """Config for `--migrations` as Alembic resolves it (see `schemashift.locations`)."""
    location = locations.locate(migrations)
    config = Config(str(location.ini)) if location.ini else Config()
    config.set_main_option("script_location", locations.escape(str(location.script_dir)))
    if location.ini and location.script_dir.is_dir():
        _anchor(config, location.ini)
    if database_url:
        config.set_main_option("sqlalchemy.url", locations.escape(database_url))
    return config


def _anchor(config: Config, ini: Path) -> None:
    try:
        locations.anchor_paths(config, ini.parent)
    except errors.SchemashiftError:
        raise
    except Exception as exc:  # an invalid separator or option value in the user's ini
        raise errors.UsageError(
            f"the Alembic config {ini} is not usable: {type(exc).__name__}: {exc}",
            hint="fix the option named above in the ini",
        ) from None


def script_directory(config: Config) -> ScriptDirectory:
    location = config.get_main_option("script_location") or "?"
    if not Path(location).is_dir():
        raise errors.UsageError(
            f"migrations directory {location} does not exist",
            hint="create it with `schemashift create-model-migration -m 'initial'`",
        )
    try:
        script = ScriptDirectory.from_config(config)
        script.get_heads()
    except CommandError as exc:
        raise errors.UsageError(
            f"migrations directory {location} is not a usable Alembic script directory: {exc}",
            hint="it needs env.py, script.py.mako and versions/; recreate it or fix the revision",
        ) from None
    except Exception as exc:  # a revision file that does not import (SyntaxError, ImportError…)
        raise errors.UsageError(
            f"migrations directory {location} is not a usable Alembic script directory: "
            f"a revision file does not load: {type(exc).__name__}: {exc}",
            hint="fix or remove the revision file named above",
        ) from None
    if not (Path(script.dir) / "env.py").is_file():
        raise errors.UsageError(
            f"migrations directory {location} has no env.py",
            hint="restore env.py, or remove the directory and rerun create-model-migration",
        )
    return script


def single_head(script: ScriptDirectory) -> str | None:
    """The one head revision (None for an empty history); refuses a branched history."""
    heads = script.get_heads()
    if len(heads) > 1:
        raise errors.UsageError(
            f"the migration history has {len(heads)} heads: {', '.join(sorted(heads))}",
            hint="merge them with `alembic merge heads -m 'merge'` before migrating",
            reason="MultipleHeads",
        )
    return heads[0] if heads else None


def current_revisions(conn: Connection) -> tuple[str, ...]:
    """Revisions recorded in alembic_version; empty when the database was never stamped."""
    return tuple(MigrationContext.configure(conn).get_current_heads())


def current_revision(conn: Connection) -> str | None:
    revisions = current_revisions(conn)
    if len(revisions) > 1:
        raise errors.UsageError(
            f"the database records {len(revisions)} revisions at once: {', '.join(revisions)}",
            hint="merge the branches in the history and upgrade to the merge revision",
            reason="MultipleHeads",
        )
    return revisions[0] if revisions else None


def resolve_target(script: ScriptDirectory, target: str) -> str | None:
    """A revision id (or prefix), 'head' or 'base' → full id; unknown ones are refused."""
    if target == "base":
        return None
    if target == "head":
        return single_head(script)
    try:
        revision = script.get_revision(target)
    except CommandError as exc:
        raise errors.UsageError(
            f"unknown target revision {target!r}: {exc}",
            hint="run `schemashift plan` to list revisions, or use 'head'",
            reason="UnknownRevision",
        ) from None
    if revision is None:
        raise errors.UsageError(f"unknown target revision {target!r}", reason="UnknownRevision")
    return revision.revision
