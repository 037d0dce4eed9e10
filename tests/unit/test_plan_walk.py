"""What the plan's own SQL may have done to a table's rows (the integrity checks trust this)."""

from __future__ import annotations

import pytest

from schemashift.plan.walk import Seen

ROWLESS = [
    "ALTER TABLE patients VALIDATE CONSTRAINT patients_name_not_null",
    'ALTER TABLE ONLY "patients" VALIDATE CONSTRAINT "fk_patients_ward_id_wards"',
    "ALTER TABLE patients ADD CONSTRAINT uq_patients_email UNIQUE USING INDEX uq_patients_email",
    "CREATE UNIQUE INDEX CONCURRENTLY uq_patients_email ON patients (email)",
    "DROP INDEX CONCURRENTLY ix_patients_name",
]

WRITES = [
    "UPDATE patients SET name = '' WHERE name IS NULL",
    "INSERT INTO patients (name) VALUES ('x')",
    # Catalog-only in form, but followed by a write in the same text.
    "ALTER TABLE patients VALIDATE CONSTRAINT c; UPDATE patients SET name = 'y'",
    "ALTER TABLE patients ADD COLUMN note text DEFAULT 'x'",
]


@pytest.mark.parametrize("sql", ROWLESS)
def test_catalog_only_statements_do_not_count_as_writes(sql: str) -> None:
    seen = Seen(raw_sql=[sql])
    assert not seen.may_have_written("patients")
    assert not seen.may_have_added_rows("patients")


@pytest.mark.parametrize("sql", WRITES)
def test_statements_that_may_change_rows_count_as_writes(sql: str) -> None:
    assert Seen(raw_sql=[sql]).may_have_written("patients")


def test_a_write_to_another_table_is_not_a_write_to_this_one() -> None:
    assert not Seen(raw_sql=["UPDATE wards SET name = 'x'"]).may_have_written("patients")
