"""Rows that violate a new constraint appear after the integrity pre-check, before VALIDATE.

The pre-check (see test_generate_safe) stops a run whose data already violates the constraint.
Here an application transaction writes the violating rows while the run waits to add the
constraint NOT VALID: the pre-check saw clean data, the NOT VALID constraint does not look at
existing rows, and VALIDATE finds them. The revision's helper drops the constraint it added,
the stage fails, the run is rolled back, and the result says which rows and constraint.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.fixtures.models import query, snapshot, write_models
from tests.fixtures.runner_cli import revision, wait_until
from tests.integration.test_generate import create
from tests.integration.test_generate_safe import (
    V1,
    invalid_indexes,
    models,
    populated,
    unvalidated_constraints,
)
from tests.integration.test_generate_safe_kill import _start, _waiting_on

pytestmark = pytest.mark.integration

CASES = [  # (kind, what the models add, the application's write, the constraint)
    ("not-null", None, "UPDATE patients SET name = NULL WHERE id <= 3",
     "patients_name_not_null_check"),
    ("foreign-key", 'sa.ForeignKeyConstraint(["ward_id"], ["wards.id"]),',
     "UPDATE patients SET ward_id = 99 WHERE id <= 3", "fk_patients_ward_id_wards"),
    ("check", 'sa.CheckConstraint("length(name) > 1", name="name_length"),',
     "UPDATE patients SET name = 'x' WHERE id <= 3", "ck_patients_name_length"),
]


@pytest.mark.parametrize(("kind", "extra", "write", "constraint"), CASES,
                         ids=[c[0] for c in CASES])
def test_a_violation_that_appears_before_validate_rolls_back_and_says_so(
    tmp_path: Path, database_url: str, kind: str, extra: str | None, write: str,
    constraint: str,
) -> None:
    migrations = tmp_path / "migrations"
    populated(database_url, migrations, tmp_path)
    if extra is None:
        v2 = write_models(tmp_path / "v2", V1.replace(
            'sa.Column("name", sa.Text),', 'sa.Column("name", sa.Text, nullable=False),'
        ).format(extra="", extra_column=""))
    else:
        v2 = models(tmp_path / "v2", extra)
    code, output = create(database_url, migrations, v2, kind)
    assert code == 0, output
    start, before = revision(database_url), snapshot(database_url)
    gate = psycopg.connect(database_url, autocommit=True)
    application = psycopg.connect(database_url)
    try:
        application.execute(write)  # not committed yet: the pre-check sees clean rows
        live = _start(database_url, migrations, v2, tmp_path)
        wait_until(lambda: _waiting_on(gate, "ADD CONSTRAINT"), "the runner to wait to add")
        application.commit()
        run = live.finish()
    finally:
        application.close()
        gate.close()

    assert run.exit_code == 1, run
    assert run.result["outcome"] == "RolledBack", run
    message = run.result["message"]
    assert (f"rows of patients violate {constraint}, so VALIDATE CONSTRAINT failed; the "
            "constraint this revision added NOT VALID was dropped again") in message, run
    assert f"The database is at revision {start}" in message, run
    assert revision(database_url) == start
    assert snapshot(database_url) == before
    assert query(database_url, f"SELECT count(*) FROM pg_constraint WHERE conname = "
                               f"'{constraint}'") == [(0,)]
    assert invalid_indexes(database_url) == [] and unvalidated_constraints(database_url) == []
