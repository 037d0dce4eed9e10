"""Engines and connections to the target PostgreSQL, with errors a user can act on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from schemashift import errors, redact

CONNECT_TIMEOUT_SECONDS = 10
APPLICATION_NAME = "schemashift"


def parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise errors.UsageError(
            f"database URL is not valid: {redact.redact(str(exc), url)}",
            hint="use postgresql://user:password@host:5432/dbname",
        ) from None
    if parsed.get_backend_name() != "postgresql":
        raise errors.UsageError(
            f"database {safe_url(parsed)} is {parsed.get_backend_name()!r}, not PostgreSQL",
            hint="schemashift manages PostgreSQL databases only (postgresql://…)",
        )
    return parsed.set(drivername="postgresql+psycopg")


def safe_url(url: str | URL) -> str:
    """The URL as it may be shown: password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return redact.redact(str(url))


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
