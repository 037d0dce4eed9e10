"""Revision files from a diff (upgrade + downgrade), and the development-only direct sync."""

from schemashift.generate.revision import create_model_migration
from schemashift.generate.sync import sync_models_to_db

__all__ = ["create_model_migration", "sync_models_to_db"]
