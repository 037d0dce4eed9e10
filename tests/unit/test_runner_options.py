"""Run options, lock keys, retry waits and the runner's outputs (no servers needed)."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path

import click
import pytest

from schemashift import cli, errors, events
from schemashift.progress import RunResult, StageStatus
from schemashift.runner import lock, pipeline, stages
from schemashift.runner import options_table as table
from schemashift.runner.options import RunOptions, parse_duration, postgres_ms


@pytest.mark.parametrize(("text", "seconds"), [
    ("5s", 5.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), ("0s", 0.0), ("1.5s", 1.5),
    ("1h30m", 5400.0), (3, 3.0),
])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text, name="x") == seconds


@pytest.mark.parametrize("text", ["soon", "5 parsecs", "-1s", "", "1d", "s", "7"])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(errors.UsageError) as caught:
        parse_duration(text, name="lock timeout")
    assert "lock timeout" in str(caught.value)


def test_postgres_ms_never_rounds_a_duration_to_none() -> None:
    assert (postgres_ms(0), postgres_ms(0.0001), postgres_ms(5)) == ("0", "1ms", "5000ms")


def parse(command: click.Command) -> dict[str, object]:
    """The command's parameters from its env and defaults, in a context under `schemashift` (a
    context of its own would give click's help option other names, for every later use)."""
    parent = cli.cli.make_context("schemashift", [command.name or ""])
    return dict(command.make_context(command.name, [], parent=parent).params)


def test_options_defaults_are_the_tables() -> None:
    options = RunOptions()
    assert {f.name for f in dataclasses.fields(RunOptions)} == set(table.BY_NAME)
    for option in table.RUN_OPTIONS:
        assert getattr(options, option.name) == option.default, option.name
    durations_ = (table.LOCK_TIMEOUT, table.STATEMENT_TIMEOUT, table.LOCK_WAIT)
    assert (options.lock_timeout_s, options.statement_timeout_s, options.lock_wait_s) == tuple(
        parse_duration(option.default, name=option.title) for option in durations_)
    assert (options.policy(), options.lint(), options.lock_retries) == (
        table.ROLLBACK_POLICY.default, table.LINT_MODE.default, table.LOCK_RETRIES.default)


@pytest.mark.parametrize("command", [cli.apply, cli.run_job])
def test_the_runner_commands_options_are_the_tables_rows(
    command: click.Command, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = {param.name: param for param in command.params}
    for option in table.RUN_OPTIONS:
        param = params[option.name]
        assert isinstance(param, click.Option)
        assert (param.opts, param.envvar, param.help) == ([option.flag], option.env, option.help)
        assert param.multiple is isinstance(option, table.RuleNames)
        assert param.is_flag is isinstance(option, table.Flag)
        if isinstance(option, table.Choice):
            assert isinstance(param.type, click.Choice)
            assert tuple(param.type.choices) == option.choices
        monkeypatch.delenv(option.env, raising=False)
    parsed = parse(command)
    assert RunOptions(**{name: parsed[name] for name in table.BY_NAME}) == RunOptions()


def test_the_other_commands_take_their_options_from_the_table_too() -> None:
    def param(command: click.Command, name: str) -> click.Parameter:
        return next(p for p in command.params if p.name == name)

    assert param(cli.plan_command, "target").default == table.TARGET.default
    assert param(cli.backup, "backup_url").envvar == table.BACKUP_URL.env
    timeout = param(cli.wait, "timeout")
    assert (timeout.default, timeout.opts) == (table.WAIT_TIMEOUT.default, ["--timeout"])


@pytest.mark.parametrize("kwargs", [
    {"rollback_policy": "pray"}, {"lint_mode": "loud"}, {"lock_timeout": "0s"},
    {"lock_retries": -1}, {"statement_timeout": "later"}, {"lock_wait": "x"},
    {"lock_timeout": "99999999999h"}, {"lock_timeout": "1h"}, {"lock_retries": 101},
])
def test_bad_options_are_refused_at_once(kwargs: dict[str, object]) -> None:
    with pytest.raises(errors.UsageError):
        RunOptions(**kwargs)  # type: ignore[arg-type]


def test_allow_accepts_repeats_lists_and_comma_separated_env_values() -> None:
    assert RunOptions(allow=("drop-column", "rename-table,set-not-null")).allow == (
        "drop-column", "rename-table", "set-not-null")
    assert RunOptions(allow="drop-table set-not-null").allow == (  # type: ignore[arg-type]
        "drop-table", "set-not-null")


def test_unknown_rule_names_the_closest_one() -> None:
    with pytest.raises(errors.UsageError, match="did you mean 'drop-column'"):
        RunOptions(allow=("drop-colum",))


def test_lock_key_is_stable_per_database_and_fits_a_bigint() -> None:
    key = lock.lock_key("shop")
    assert key == lock.lock_key("shop") != lock.lock_key("shop2")
    assert -(2**63) <= key < 2**63
    # Pinned: a changed key would let an old and a new runner migrate one database at once.
    assert key == 5874618554002731354


def test_retry_waits_grow_and_are_capped() -> None:
    waits = [stages.retry_wait(n) for n in range(1, 10)]
    assert waits[:4] == [0.25, 0.5, 1.0, 2.0]
    assert waits == sorted(waits)
    assert max(waits) == stages.MAX_RETRY_WAIT_SECONDS


def test_the_default_lock_timeout_and_retries_are_what_their_docs_say() -> None:
    """The defaults' reasoning (docs/crd.md, from the rows' descriptions): an attempt stalls the
    app's queries for less than a typical app statement_timeout (1s at the low end), the pauses
    are the runner's, and the retries outlast a conflicting transaction for the time stated."""
    timeout_s = table.LOCK_TIMEOUT.seconds(table.LOCK_TIMEOUT.default)
    retries = table.LOCK_RETRIES.default
    assert timeout_s < 1.0
    gives_up_after = (retries + 1) * timeout_s + sum(
        stages.retry_wait(n) for n in range(1, retries + 1))
    text = table.LOCK_RETRIES.description
    stated = re.search(r"about (\d+) minutes", text)
    assert stated is not None and round(gives_up_after / 60) == int(stated[1]), gives_up_after
    assert f"pausing {stages.FIRST_RETRY_WAIT_SECONDS:g}s" in text
    assert f"up to {stages.MAX_RETRY_WAIT_SECONDS:g}s" in text


def _result() -> RunResult:
    return RunResult(outcome="RolledBack", reason="RolledBackByDowngrade", message="undone",
                     exitCode=1, fromRevision="a1", currentRevision="a1",
                     stages=[StageStatus(name="1-b2", revision="b2", state="RolledBack")])


def test_termination_message_is_the_result(tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    pipeline.write_termination_message(_result(), path)
    assert RunResult.from_dict(json.loads(path.read_text())) == _result()


def test_termination_message_without_its_directory_only_notes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline.write_termination_message(_result(), tmp_path / "missing" / "termination-log")
    assert "could not write the termination message" in capsys.readouterr().err


def test_human_reporter_writes_one_line_per_event_and_failures_to_stderr() -> None:
    out, err = io.StringIO(), io.StringIO()
    reporter = pipeline.HumanReporter(out, err)
    reporter.emit(events.PhaseEntered(phase="Migrating", message="applying 1 stage(s)"))
    reporter.emit(events.PhaseEntered(phase="RolledBack", message="said by the result"))
    reporter.emit(events.StageChanged(
        stage=StageStatus(name="1-b2", revision="b2", state="Succeeded", attempts=3)))
    reporter.emit(events.LockRetried(stage="1-b2", attempt=1, wait_seconds=2.0, retries=3,
                                     message="lock timeout"))
    reporter.emit(events.CopySkipped(revision="b2", table="public.t", message="not copied"))
    reporter.emit(events.Finished(result=_result()))
    assert out.getvalue().splitlines() == [
        "[Migrating] applying 1 stage(s)", "  stage 1-b2 → b2: Succeeded after 3 attempts",
        "  lock timeout (attempt 1), retrying in 2.0s: lock timeout",
        "  targeted_copy: state=Skipped revision=b2 table=public.t message=not copied"]
    assert err.getvalue() == "error: RolledBack (RolledBackByDowngrade): undone\n"
