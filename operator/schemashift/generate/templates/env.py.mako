"""Alembic environment written by schemashift (Alembic cookbook layout).

Connection: `config.attributes["connection"]` when a caller passes one (schemashift does), else
an engine for `sqlalchemy.url` or SCHEMASHIFT_DATABASE_URL. Models: `config.attributes
["target_metadata"]`, else SCHEMASHIFT_METADATA, else the `schemashift.metadata` option
(MODULE:ATTR naming a MetaData or a declarative Base).
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from schemashift import db, project

config = context.config


def target_metadata() -> MetaData | None:
    given = config.attributes.get("target_metadata")
    if given is not None:
        return given  # type: ignore[no-any-return]
    ref = os.environ.get("SCHEMASHIFT_METADATA") or config.get_main_option("schemashift.metadata")
    return project.load_metadata(ref) if ref else None


def database_url() -> str | None:
    return config.get_main_option("sqlalchemy.url") or os.environ.get("SCHEMASHIFT_DATABASE_URL")


OPTIONS = {
    "compare_type": True,
    "compare_server_default": True,
    "transaction_per_migration": True,
}


def run_migrations_offline() -> None:
    url = database_url()
    if url:
        context.configure(url=db.parse_url(url), **OPTIONS, target_metadata=target_metadata(),
                          literal_binds=True, dialect_opts={"paramstyle": "named"})
    else:
        context.configure(dialect_name="postgresql", **OPTIONS,
                          target_metadata=target_metadata(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_with(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata(), **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_with(connection)
        return
    url = database_url()
    if not url:
        raise SystemExit("no database URL: set SCHEMASHIFT_DATABASE_URL or sqlalchemy.url")
    with db.connect(db.make_engine(url)) as connection:
        run_with(connection)
        connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
