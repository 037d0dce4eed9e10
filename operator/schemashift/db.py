"""Engines and connections to the target PostgreSQL, with errors a user can act on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from schemashift import dburl, errors, redact

CONNECT_TIMEOUT_SECONDS = 10
APPLICATION_NAME = "schemashift"
UNPARSEABLE = "(a database URL that does not parse)"


def parse_url(url: str) -> URL:
    """The URL for psycopg; any URL that cannot work is a usage error that shows none of it."""
    checked = dburl.check(url)
    if isinstance(checked, dburl.Problem):
        raise errors.UsageError(f"the database URL {checked.what}", hint=checked.hint)
    return checked.set(drivername="postgresql+psycopg")


def safe_url(url: str | URL) -> str:
    """The URL as it may be shown: password replaced by ***; a URL that does not parse is
    described, never shown (it may be a secret of another kind)."""
    checked = dburl.check(url) if isinstance(url, str) else url
    if isinstance(checked, dburl.Problem):
        return UNPARSEABLE
    return checked.set(drivername="postgresql").render_as_string(hide_password=True)


def make_engine(url: str) -> Engine:
    return sa.create_engine(
        parse_url(url),
        poolclass=NullPool,
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "application_name": APPLICATION_NAME,
        },
    )


@contextmanager
def connect(engine: Engine) -> Iterator[Connection]:
    """Connect, turning 'cannot reach the server' into exit code 3 with the host shown."""
    try:
        conn = engine.connect()
    except OperationalError as exc:
        raise unreachable(engine.url, exc) from None
    with conn:
        yield conn


def unreachable(url: URL, exc: BaseException) -> errors.InfrastructureError:
    detail = str(getattr(exc, "orig", exc) or exc).strip().splitlines()
    first = detail[0] if detail else type(exc).__name__
    where = f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"
    password = url.password if isinstance(url.password, str) else None
    return errors.InfrastructureError(
        f"cannot connect to PostgreSQL at {where}: {redact.redact(first, password)}",
        hint="check that the server is running and the URL, user and network are right",
        reason="DatabaseUnreachable",
    )


def server_version_num(conn: Connection) -> int:
    """e.g. 180001 for 18.1, 150018 for 15.18."""
    return int(conn.exec_driver_sql("SHOW server_version_num").scalar_one())


def describe_db_error(exc: DBAPIError, *secrets: str | None) -> str:
    """One line from a driver error, scrubbed: what the user needs, not a traceback."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return redact.redact(text[0] if text else type(exc).__name__, *secrets)
