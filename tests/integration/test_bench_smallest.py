"""Every benchmark runs as the README says (`python bench/<script>.py`, no `python -P`), at its
smallest size (`--smallest`): it exits 0 and prints a ratio against its baseline.

The benchmarks are found by glob (bench/*.py, helpers named `_*.py` excepted), so a new one is
covered without editing this file. Only the exit code and the presence of a ratio are checked:
the numbers themselves belong to the benchmarks' full runs, not to tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.testbed import binaries
from tests.e2e.testbed.fixtures import REQUIRE_ENV

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))
# A computed ratio as the benchmarks print it, e.g. "0.87x" (a target such as "2x" has no
# decimals, so it does not count).
RATIO = re.compile(r"\b\d+\.\d+x\b")
TIMEOUT_S = 300


def needs_testbed(script: Path) -> bool:
    return "tests.e2e.testbed" in script.read_text()


def require_testbed() -> None:
    try:
        binaries.locate()
    except binaries.BinariesMissing as exc:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def test_the_glob_finds_the_benchmarks() -> None:
    assert {"backup.py", "history.py", "operator_latency.py"} <= {p.name for p in SCRIPTS}


@pytest.mark.parametrize("module", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_no_bench_module_shadows_a_standard_module(module: Path) -> None:
    """`python bench/x.py` puts bench/ first on sys.path: a bench/operator.py once hid the
    standard `operator` module from every import made by every script there."""
    assert module.stem not in sys.stdlib_module_names


def test_the_readme_names_every_benchmark() -> None:
    readme = (REPO / "README.md").read_text()
    named = set(re.findall(r"python bench/(\w+\.py)", readme))
    assert named == {p.name for p in SCRIPTS}


@pytest.mark.integration
@pytest.mark.parametrize("script", [
    pytest.param(p, id=p.stem, marks=[pytest.mark.e2e] if needs_testbed(p) else [])
    for p in SCRIPTS])
def test_smallest_run(script: Path) -> None:
    if needs_testbed(script):
        require_testbed()
    done = subprocess.run([sys.executable, f"bench/{script.name}", "--smallest"], cwd=REPO,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    report = f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    assert done.returncode == 0, report
    assert RATIO.search(done.stdout), f"no ratio printed\n{report}"
