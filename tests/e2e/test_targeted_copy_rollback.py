"""The targeted copy through the real operator: what a failed run dropped is copied to S3 first
and put back by the rollback's downgrade (issue 14)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import psycopg
import pytest

from schemashift import reasons
from schemashift.generate import preserve
from schemashift.kube import conditions
from schemashift.kube.resource import TERMINAL_PHASES
from tests.e2e.operator_fixtures import Migrations
from tests.e2e.test_operator import FAILING_C3, at_a1, backup_spec, spec
from tests.fixtures import runner_cli
from tests.fixtures.histories import Revision

pytestmark = pytest.mark.e2e

CREATE_WITH_NOTES = Revision("a1", "create patients with notes", """
    op.create_table("patients", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.Text, nullable=False), sa.Column("notes", sa.Text))
""", 'op.drop_table("patients")')
# As create-model-migration writes a dropping revision (generate/preserve.py): its downgrade
# re-adds the column, then puts the values back from the run's targeted copy.
DROP_NOTES = Revision("b2", "drop notes", 'op.drop_column("patients", "notes")', "\n".join(
    ('op.add_column("patients", sa.Column("notes", sa.Text))', *preserve.CALL)))
# Besides Ada's NULL: what COPY's text format escapes, non-ASCII, and the empty string.
NOTES = ("tab\there, newline\nthere, backslash \\ and \\N", "ünïcødé 🐘 日本語", "",
         "'single' \"double\"")


def notes_of(database_url: str) -> list[tuple[Any, ...]]:
    """Each note as text and in its binary send form: the stored bytes themselves."""
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT id, notes, textsend(notes) FROM patients ORDER BY id"
                            ).fetchall()


def test_what_a_failed_run_dropped_is_copied_first_and_put_back_by_the_rollback(
    migrations: Migrations, database_url: str, tmp_path: Path, s3_server: Any, s3_bucket: str,
) -> None:
    history = at_a1(database_url, tmp_path, [CREATE_WITH_NOTES, DROP_NOTES, FAILING_C3])
    with psycopg.connect(database_url) as conn:
        for note in NOTES:
            conn.execute("INSERT INTO patients (name, notes) VALUES ('Bo', %s)", (note,))
    inserted = [(1, None, None), *((i, n, n.encode()) for i, n in enumerate(NOTES, 2))]
    assert notes_of(database_url) == inserted
    migrations.apply("app", spec(history, rollback={"policy": "downgrade"},
                                 safety={"allow": ["drop-column"]},
                                 backup=backup_spec(migrations, s3_server, s3_bucket)))
    status = migrations.wait_phase("app", *TERMINAL_PHASES)
    assert (status["phase"], status["currentRevision"], status["undone"]) == (
        "RolledBack", "a1", ["b2"]), status
    ready = migrations.condition("app", conditions.READY)
    assert ready["reason"] == reasons.ROLLED_BACK_DOWNGRADE, ready
    [copy] = status["targetedCopies"]
    assert (copy["revision"], copy["rule"], copy["table"], copy["columns"], copy["keyColumns"],
            copy["rows"], copy["verified"]) == (
        "b2", "drop-column", "public.patients", ["notes"], ["id"], len(inserted), True), copy
    assert copy["url"].startswith(f"s3://{s3_bucket}/app/"), copy
    body = s3_server.client().get_object(
        Bucket=s3_bucket, Key=copy["url"].removeprefix(f"s3://{s3_bucket}/"))["Body"].read()
    assert (len(body), hashlib.sha256(body).hexdigest()) == (copy["sizeBytes"], copy["sha256"])
    assert body.count(b"\n") == len(inserted)  # COPY's text format: one line per row
    # The revision's own downgrade put the values back; the runner found none left to put back.
    assert (f"put back {len(inserted)} row(s) of public.patients.notes from {copy['url']}"
            in migrations.pod_log(status["jobName"]))
    assert "put back the targeted copies" not in status["message"], status["message"]
    assert runner_cli.revision(database_url) == "a1"
    assert runner_cli.columns(database_url, "patients") == ["id", "name", "notes"]
    assert notes_of(database_url) == inserted
