"""Which backups retention keeps: keep N, maxAge, the newest verified one and the run's own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemashift import durations, errors
from schemashift.runner import backup, retention
from schemashift.runner import options_table as table
from schemashift.runner.retention import Limits, StoredBackup

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def stored(database: str, hours_ago: float, *, verified: bool = True) -> StoredBackup:
    when = (NOW - timedelta(hours=hours_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return StoredBackup(url=f"s3://b/p/{database}/{when}.dump", database=database,
                        fromRevision="r", time=when, sizeBytes=1, verified=verified)


def deleted(decisions: list[retention.Decision]) -> list[str]:
    return [d.url for d in decisions if d.action == "delete"]


def test_keep_keeps_exactly_the_newest_n_per_database() -> None:
    app = [stored("app", h) for h in (5, 1, 3, 2, 4)]
    other = [stored("other", h) for h in (10, 20)]

    decisions = retention.choose(app + other, Limits(keep=2, max_age_s=0), NOW)

    assert sorted(deleted(decisions)) == sorted(b.url for b in app if b not in app[1:4:2])
    assert {d.url for d in decisions if d.action == "keep"} >= {app[1].url, app[3].url}
    assert not [u for u in deleted(decisions) if "/other/" in u]


def test_max_age_deletes_older_backups_but_never_the_newest_verified_one() -> None:
    old = [stored("app", h) for h in (30, 40, 50)]

    decisions = retention.choose(old, Limits(keep=0, max_age_s=3600), NOW)

    assert deleted(decisions) == [old[1].url, old[2].url]
    assert decisions[0].why == "the newest verified backup"


def test_either_limit_deletes_and_the_run_s_backup_is_protected() -> None:
    items = [stored("app", h) for h in (1, 2, 3, 100)]

    decisions = retention.choose(items, Limits(keep=3, max_age_s=10 * 3600), NOW,
                                 protect=[items[3].url])

    assert deleted(decisions) == []  # item 3 is beyond keep and too old, but protected
    stricter = retention.choose(items, Limits(keep=3, max_age_s=2.5 * 3600), NOW)
    assert deleted(stricter) == [items[2].url, items[3].url]


def test_unverified_objects_are_never_candidates_nor_count_as_newest() -> None:
    unverified = stored("app", 0, verified=False)
    items = [unverified, stored("app", 1), stored("app", 2)]

    decisions = retention.choose(items, Limits(keep=1, max_age_s=0), NOW)

    assert deleted(decisions) == [items[2].url]
    assert next(d for d in decisions if d.url == unverified.url).action == "keep"


def test_no_limits_delete_nothing() -> None:
    items = [stored("app", h) for h in range(1, 20)]
    assert deleted(retention.choose(items, Limits(0, 0), NOW)) == []
    assert not Limits(0, 0).active


@pytest.mark.parametrize(("keep", "max_age", "says"), [
    (-1, "0s", "backup keep must be a whole number from 0 to 100000, got '-1'"),
    ("3", "0s", "backup keep must be a whole number"),
    (1, "30d", "backup max age '30d' is not a duration"),
    (1, "-5m", "backup max age must not be negative"),
    (1, "10", "backup max age '10' is not a duration"),
])
def test_bad_limits_are_refused_with_what_to_write(keep: object, max_age: str,
                                                   says: str) -> None:
    with pytest.raises(errors.UsageError) as caught:
        Limits.checked(keep, max_age)
    assert says in str(caught.value)


def test_the_prune_safety_age_is_the_backup_s_own() -> None:
    assert durations.seconds(table.STALE_AFTER.default, name="stale after") == \
        backup.ABANDONED_AFTER.total_seconds()
