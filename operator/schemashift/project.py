"""What every command needs to know: database, models, script directory, environment."""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from sqlalchemy import MetaData

from schemashift import environments, errors
from schemashift.environments import ENVIRONMENTS, Environment

__all__ = ["ENVIRONMENTS", "Environment", "Project"]


@dataclass(frozen=True)
class Project:
    database_url: str | None = None
    metadata_ref: str | None = None
    migrations_dir: Path | None = None
    environment: Environment = environments.DEFAULT
    # detect/check/create-model-migration/verify: compare plain server defaults (DEFAULT ...).
    compare_server_defaults: bool = True
    _metadata_cache: dict[str, MetaData] = field(default_factory=dict, compare=False, repr=False)

    def require_database_url(self) -> str:
        if not self.database_url:
            raise errors.UsageError(
                "no database URL given",
                hint="pass --database-url or set SCHEMASHIFT_DATABASE_URL",
            )
        return self.database_url

    def require_migrations_dir(self) -> Path:
        if self.migrations_dir is None:
            raise errors.UsageError(
                "no migrations directory given",
                hint="pass --migrations DIR or set SCHEMASHIFT_MIGRATIONS",
            )
        return self.migrations_dir

    def metadata(self) -> MetaData:
        if not self.metadata_ref:
            raise errors.UsageError(
                "no model metadata given",
                hint="pass --metadata MODULE:ATTR or set SCHEMASHIFT_METADATA",
            )
        if self.metadata_ref not in self._metadata_cache:
            self._metadata_cache[self.metadata_ref] = load_metadata(self.metadata_ref)
        return self._metadata_cache[self.metadata_ref]


def parse_environment(value: str) -> Environment:
    if value not in ENVIRONMENTS:
        raise errors.UsageError(
            f"unknown environment {value!r}", hint=f"use one of: {', '.join(ENVIRONMENTS)}"
        )
    return cast(Environment, value)


def load_metadata(ref: str) -> MetaData:
    """Import `module:attr`; accept a MetaData or anything with a `.metadata` MetaData (a Base)."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise errors.UsageError(
            f"--metadata {ref!r} is not of the form MODULE:ATTR",
            hint="for example --metadata myapp.models:Base",
        )
    module = _import_module(module_name)
    target: object = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise errors.UsageError(
                f"module {module_name!r} has no attribute {attr!r}",
                hint="name the MetaData object or the declarative Base in MODULE:ATTR",
            )
        target = getattr(target, part)
    if isinstance(target, MetaData):
        return target
    metadata = getattr(target, "metadata", None)
    if isinstance(metadata, MetaData):
        return metadata
    raise errors.UsageError(
        f"{ref!r} is a {type(target).__name__}, not a SQLAlchemy MetaData or declarative Base",
        hint="point --metadata at `Base` (declarative) or at a `MetaData()` instance",
    )


def _import_module(name: str) -> object:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise errors.UsageError(
                f"cannot import model module {name!r}: {exc}",
                hint="run from the project root or add it to PYTHONPATH",
            ) from exc
        raise errors.UsageError(f"importing {name!r} failed: {exc}") from exc
    except Exception as exc:  # a broken models module must not become a traceback
        raise errors.UsageError(f"importing {name!r} failed: {type(exc).__name__}: {exc}") from exc
