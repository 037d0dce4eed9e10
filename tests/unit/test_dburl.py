"""Database URLs: what is refused (and told without a fragment of the input), what is accepted,
and the scrubbing that catches a URL in free text."""

from __future__ import annotations

import pytest

from schemashift import db, dburl, errors, redact

PASSWORD = "Pa@ssw0rd:2024!"


def fragments(value: str, size: int = 4) -> set[str]:
    """Every run of `size` characters of `value` that holds a letter or digit."""
    return {value[i:i + size] for i in range(len(value) - size + 1)
            if any(c.isalnum() for c in value[i:i + size])}


@pytest.mark.parametrize(
    ("url", "what", "secret"),
    [
        (f"postgresql://app:{PASSWORD}@db.internal:5432/app", "must be URL-encoded", PASSWORD),
        ("postgresql://app:p@ss/w0rd@db/app", "must be URL-encoded", "p@ss/w0rd"),
        ("postgresql://app:hunter22@db:54x2/app", "port that is not a number", "hunter22"),
        ("postgresql://app:hunter22@db:99999/app", "port out of range", "hunter22"),
        ("postgresql://app:hunter22@db:0/app", "port out of range", "hunter22"),
        ("mysql://app:hunter22@db/app", "is a mysql:// URL: not PostgreSQL", "hunter22"),
        ("zq9x://app:hunter22@db/app", "does not start with postgresql://", "zq9x"),
        ("", "is empty", ""),
        ("  \t", "is empty", ""),
        ("postgresql://app:hunter22@db/app\n", "trailing whitespace", "hunter22"),
        ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "is not a postgresql:// URL",
         "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
        ("postgresql://app:hunter22@db!x/app", "host name that is not valid", "hunter22"),
        ("postgresql://app:hunter22@db/app?sslmode=bogus", "sslmode that is not valid", "bogus"),
        ("postgresql://app:hunter22@db/app?passwrd=hunter22", "unknown connection parameter",
         "hunter22"),
    ],
)
def test_a_url_that_cannot_work_is_described_never_shown(url: str, what: str,
                                                         secret: str) -> None:
    with pytest.raises(errors.UsageError) as caught:
        db.parse_url(url)
    text = str(caught.value)
    assert caught.value.exit_code == 2 and what in text and caught.value.hint
    assert not {f for f in fragments(secret) if f in text}, text
    assert db.safe_url(url) == db.UNPARSEABLE


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:Pa%40ssw0rd%3A2024%21@db.internal:5432/app",
        "postgres://app:pw@db/app",
        "postgresql+psycopg2://app:pw@db/app",
        "postgresql://app:p/w#x?y@db/app",  # SQLAlchemy reads a password up to its @
        "postgresql://app:pw@[::1]:5432/app",
        "postgresql:///app?host=/var/run/postgresql",
        "postgresql://app:pw@db/app?sslmode=verify-full&connect_timeout=10",
        "postgresql://app:two words@db/app",  # how SQLAlchemy renders a password's space
    ],
)
def test_usable_urls_are_accepted(url: str) -> None:
    parsed = db.parse_url(url)
    assert parsed.drivername == "postgresql+psycopg" and parsed.database == "app"
    assert "***" in db.safe_url(parsed) or parsed.password is None


@pytest.mark.parametrize("url", ["postgresql://app:pw@db", "postgresql://app:pw@db:5432/"])
def test_a_url_without_a_database_name_is_libpqs_default_not_an_error(url: str) -> None:
    assert not db.parse_url(url).database  # libpq connects to the user's database


def test_the_hint_for_an_unencoded_password_lists_the_encodings() -> None:
    problem = dburl.check(f"postgresql://app:{PASSWORD}@db/app")
    assert isinstance(problem, dburl.Problem)
    for pair in ("@ → %40", ": → %3A", "/ → %2F", "? → %3F", "# → %23", "% → %25"):
        assert pair in problem.hint


def test_a_url_in_free_text_is_masked_whole_up_to_its_last_at() -> None:
    text = redact.redact(f"could not use postgresql://app:{PASSWORD}@db/app now")
    assert text == "could not use postgresql://app:***@db/app now"
    assert not {f for f in fragments(PASSWORD) if f in text}
