import psycopg
import pytest

from tests.fixtures.postgres import PgServer

pytestmark = pytest.mark.integration


def test_database_is_fresh_and_needs_the_password(database_url: str, pg_server: PgServer) -> None:
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
        assert tables == (0,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(database_url.replace("app-Secr3t-pw", "wrong"))
    assert pg_server.major == 18
