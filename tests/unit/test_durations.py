"""One duration grammar (Go's): the runner, `schemashift wait` and the CRD's CEL rules agree."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemashift import durations, errors
from schemashift.runner import options_table as table

CRD_FILE = Path(__file__).resolve().parents[2] / "manifests" / "crd" / "schemamigrations.yaml"
_MATCHES = re.compile(r"^self\.matches\('(?P<pattern>[^']+)'\)$")

ACCEPTED = ["1h30m", "1.5s", "500ms", ".5s", "1.s", "1µs", "1us", "2h45m30.5s", "10m", "7ns"]
REFUSED = ["5", "1.5x", "1d", "-5s", "+5s", "5 m", "1h-5m", "", "s", "1e3s", "5S", "1h 30m"]


def crd_grammar(field: str) -> re.Pattern[str]:
    """The committed CRD's grammar rule of a safety field (what the API server checks)."""
    (version,) = yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"]
    node: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    node = node["properties"]["safety"]["properties"][field]
    found = [m for rule in node["x-kubernetes-validations"]
             if (m := _MATCHES.match(rule["rule"]))]
    assert len(found) == 1
    return re.compile(found[0]["pattern"])


def accepts(check: Any, value: str) -> bool:
    try:
        check(value)
    except errors.UsageError:
        return False
    return True


@pytest.mark.parametrize("value", ACCEPTED + REFUSED)
def test_runner_wait_and_crd_accept_the_same_durations(value: str) -> None:
    verdicts = {
        "runner": accepts(table.STATEMENT_TIMEOUT.check, value),
        "wait": accepts(table.WAIT_TIMEOUT.seconds, value),
        "crd": crd_grammar("statementTimeout").fullmatch(value) is not None,
        "crd lockTimeout": crd_grammar("lockTimeout").fullmatch(value) is not None,
    }
    assert verdicts == dict.fromkeys(verdicts, value in ACCEPTED)


def test_the_crd_grammar_is_the_one_declared() -> None:
    assert crd_grammar("lockTimeout").pattern == durations.PATTERN


@pytest.mark.parametrize(("value", "seconds"), [
    ("1h30m", 5400.0), ("1.5s", 1.5), ("500ms", 0.5), ("0", 0.0), ("1µs", 1e-6), ("2m3s", 123.0),
])
def test_seconds(value: str, seconds: float) -> None:
    assert durations.seconds(value, name="x") == pytest.approx(seconds)


def test_bounds_are_written_as_go_would() -> None:
    assert [durations.text(s) for s in (0, 0.5, 300, 5400, 600)] == [
        "0s", "500ms", "5m", "1h30m", "10m"]


@pytest.mark.parametrize(("option", "too_long"), [
    (table.LOCK_TIMEOUT, "10m1s"), (table.STATEMENT_TIMEOUT, "24h0m1s"),
    (table.LOCK_WAIT, "25h"), (table.WAIT_TIMEOUT, "721h"),
])
def test_each_bound_is_refused_one_step_past_it(option: table.Duration, too_long: str) -> None:
    limit = durations.text(option.maximum)
    assert option.seconds(limit) == option.maximum
    with pytest.raises(errors.UsageError, match=f"longer than the {limit} allowed"):
        option.seconds(too_long)
