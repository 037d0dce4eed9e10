"""Safe generation on a real third-party project: optuna 5.0.0's models and Alembic history.

The database reaches head through optuna's own history and gets its rows from optuna itself
(a study optimised through its RDB storage). The models then gain an index and a CHECK, on top
of optuna's real drift between its models and its history (trial_values.trial_id made NOT NULL
by the models only; the trials.study_id index under another name). `create-model-migration`
writes it all against optuna's own script directory and template, in the lock-safe form;
`schemashift apply` runs it under `lint: block`; `check` is clean; optuna's plain `alembic
downgrade -1` returns the schema and the rows.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config

from tests.fixtures.corpus import (
    OPTUNA,
    copy_scripts,
    schema_dump,
    schemashift,
    sqlalchemy_url,
    start_and_upgrade,
)
from tests.fixtures.postgres import PgServer
from tests.integration.test_generate import created_paths

pytestmark = pytest.mark.integration

NEXT_MODELS = '''
"""optuna's models, next release: trials looked up by start time, trial numbers never negative."""
import sqlalchemy as sa
from optuna.storages._rdb.models import BaseModel

metadata = BaseModel.metadata
trials = metadata.tables["trials"]
sa.Index(None, trials.c.datetime_start)
trials.append_constraint(sa.CheckConstraint("number >= 0", name="ck_trials_number_nonnegative"))
'''
TRIALS = 30
COUNTS = ("SELECT (SELECT count(*) FROM studies), (SELECT count(*) FROM trials), "
          "(SELECT count(*) FROM trial_params), (SELECT count(*) FROM trial_values)")


def optimise(database_url: str) -> None:
    """Rows written by optuna itself, through its RDB storage."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(sqlalchemy_url(database_url))
    try:
        study = optuna.create_study(storage=storage, study_name="safe-generation")
        study.optimize(lambda trial: trial.suggest_float("x", -1, 1) ** 2, n_trials=TRIALS)
    finally:
        storage.engine.dispose()


def one(database_url: str, sql: str) -> tuple[object, ...]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(sql).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return tuple(row)


def test_optuna_at_head_with_rows_gets_a_safe_revision_that_applies_and_reverses(
    tmp_path: Path, pg_server: PgServer, database_url: str
) -> None:
    start_and_upgrade(OPTUNA, database_url)
    optimise(database_url)
    rows = one(database_url, COUNTS)
    assert rows == (1, TRIALS, TRIALS, TRIALS)
    scripts = copy_scripts(OPTUNA, tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "optuna_next.py").write_text(textwrap.dedent(NEXT_MODELS))
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "models"),
                                                       os.environ.get("PYTHONPATH")]))}
    common = ("--database-url", database_url, "--migrations", str(scripts))
    before = schema_dump(pg_server, database_url)

    made = schemashift("create-model-migration", "-m", "trials by start", "--metadata",
                       "optuna_next:metadata", *common, env=env)

    assert made.exit_code == 0, made
    paths = created_paths(made.stdout)  # an expand and a contract revision (issue 13)
    upgrade = "".join(path.read_text().split("def downgrade", 1)[0] for path in paths)
    for safe in ("with op.get_context().autocommit_block():",
                 "op.create_index(op.f('ix_trials_datetime_start'), 'trials', "
                 "['datetime_start'], unique=False, postgresql_concurrently=True)",
                 "op.drop_index(op.f('trials_study_id_key'), table_name='trials', "
                 "postgresql_concurrently=True)",
                 "_validate('trials', 'ck_trials_number_nonnegative')",
                 "_validate('trial_values', 'trial_values_trial_id_not_null_check')"):
        assert safe in upgrade or safe.replace("op.f('trials_study_id_key')",
                                                "'trials_study_id_key'") in upgrade, upgrade

    run = schemashift("apply", "--json", *common, env=env)  # the default --lint block

    assert run.exit_code == 0, run
    assert one(database_url, "SELECT count(*) FROM pg_index WHERE NOT indisvalid") == (0,)
    assert one(database_url, "SELECT count(*) FROM pg_constraint WHERE NOT convalidated") == (0,)
    assert one(database_url, "SELECT attnotnull FROM pg_attribute WHERE attrelid = "
                             "'trial_values'::regclass AND attname = 'trial_id'") == (True,)
    checked = schemashift("check", "--metadata", "optuna_next:metadata", *common, env=env)
    assert checked.exit_code == 0, checked
    assert one(database_url, COUNTS) == rows

    config = Config(str(scripts.parent / OPTUNA.ini))  # optuna's own, as its users run it
    config.set_main_option("script_location", str(scripts))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    command.downgrade(config, f"-{len(paths)}")

    assert schema_dump(pg_server, database_url) == before
    assert one(database_url, COUNTS) == rows
