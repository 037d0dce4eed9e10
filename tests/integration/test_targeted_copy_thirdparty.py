"""Targeted copy on a real third-party history (optuna 5.0.0 from its wheel) and data optuna
itself wrote: what optuna's own revisions drop is never seen by the plan (each of them runs ORM
queries, so it cannot be previewed offline); a drop added after optuna's head, on optuna's real
tables and rows, is copied and put back byte for byte by the rollback."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests.fixtures.corpus import (
    FAILING_REVISION,
    OPTUNA,
    add_failing_revision,
    copy_scripts,
    sqlalchemy_url,
    start_and_upgrade,
)
from tests.fixtures.models import execute, query
from tests.fixtures.postgres import PgServer
from tests.fixtures.runner_cli import cli_env, revision, run_apply
from tests.fixtures.s3 import S3Server

pytestmark = pytest.mark.integration

DROPS = "d0c0ffee0001"
DROPPED = {  # optuna's table -> (its primary key, the dropped column, how to re-add it)
    "trial_values": ("trial_value_id", "value", "sa.Float(precision=53)"),
    "trial_params": ("param_id", "param_value", "sa.Float(precision=53)"),
    "trials": ("trial_id", "datetime_complete", "sa.DateTime()"),
}
SENT = {"trial_values": "float8send(value)", "trial_params": "float8send(param_value)",
        "trials": "timestamp_send(datetime_complete)"}


def optuna_writes_its_own_rows(database_url: str) -> None:
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = optuna.storages.RDBStorage(sqlalchemy_url(database_url))
    try:
        study = optuna.create_study(storage=storage, study_name="quadratic",
                                    sampler=optuna.samplers.RandomSampler(seed=14))

        def objective(trial: object) -> float:
            x = trial.suggest_float("x", -10, 10)  # type: ignore[attr-defined]
            return x * x / 3

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study.optimize(objective, n_trials=12)
    finally:
        storage.engine.dispose()


def add_drops(scripts: Path) -> None:
    up = "\n".join(f"    op.drop_column({table!r}, {column!r})"
                   for table, (_, column, _) in DROPPED.items())
    down = "\n".join(f"    op.add_column({table!r}, sa.Column({column!r}, {kind}))"
                     for table, (_, column, kind) in DROPPED.items())
    (scripts / "versions" / f"{DROPS}_drops.py").write_text(
        f'"""drop columns optuna filled\n\nRevision ID: {DROPS}\nRevises: {OPTUNA.head}\n"""\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f"revision = {DROPS!r}\ndown_revision = {OPTUNA.head!r}\n"
        "branch_labels = None\ndepends_on = None\n\n\n"
        f"def upgrade():\n{up}\n\n\ndef downgrade():\n{down}\n")


def sent(database_url: str) -> dict[str, list[tuple[object, ...]]]:
    return {table: query(database_url, f"SELECT {key}, {SENT[table]} FROM {table} ORDER BY 1")
            for table, (key, _, _) in DROPPED.items()}


def test_drops_after_optunas_head_are_copied_and_put_back_by_the_rollback(
    database_url: str, tmp_path: Path, pg_server: PgServer, s3_server: S3Server, s3_bucket: str
) -> None:
    start_and_upgrade(OPTUNA, database_url)
    optuna_writes_its_own_rows(database_url)
    before = sent(database_url)
    assert len(before["trial_values"]) == 12
    assert all(value is not None for rows in before.values() for _, value in rows)
    scripts = copy_scripts(OPTUNA, tmp_path)
    add_drops(scripts)
    add_failing_revision(scripts, DROPS)

    run = run_apply(database_url, scripts, "--backup-url", f"s3://{s3_bucket}/optuna/",
                    "--allow", "drop-column", pg_bin_dir=pg_server.bin_dir, env=s3_server.env())

    assert run.exit_code == 1, run
    assert run.result["reason"] == "RolledBackByDowngrade", run
    assert [s["revision"] for s in run.result["stages"] if s["state"] == "Failed"] == [
        FAILING_REVISION]
    copies = {c["table"]: c for c in run.result["targetedCopies"]}
    assert set(copies) == {f"public.{table}" for table in DROPPED}
    for table, (key, column, _) in DROPPED.items():
        assert (copies[f"public.{table}"]["keyColumns"], copies[f"public.{table}"]["columns"]) \
            == ([key], [column])
    assert copies["public.trial_values"]["rows"] == 12
    assert revision(database_url) == OPTUNA.head
    assert sent(database_url) == before


def test_optunas_own_drops_cannot_be_previewed_so_no_copy_is_planned_and_it_says_why(
    database_url: str,
) -> None:
    start_and_upgrade(OPTUNA, database_url, "v1.3.0.a")
    execute(database_url, "INSERT INTO studies (study_name, direction) VALUES ('s', 'MINIMIZE')")

    done = subprocess.run(
        [sys.executable, "-m", "schemashift.cli", "plan", "--database-url", database_url,
         "--migrations", str(OPTUNA.script_dir())],
        capture_output=True, text=True, timeout=300, env=cli_env())

    assert done.returncode == 0, done.stderr
    # v2.4.0.a drops studies.direction, trial_values.step and trials.value after ORM queries:
    # offline its upgrade() stops at the first query, so the plan never sees the drops.
    assert "unrenderable-revision [v2.4.0.a]" in done.stdout
    assert "Copied before the change" not in done.stdout
