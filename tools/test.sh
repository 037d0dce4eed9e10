#!/usr/bin/env bash
# The one test command (README, .ci/run): install, build/reuse the Kubernetes test bed, run checks and tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[dev]'
python3 tools/build_testbed.py
# The e2e tests must run, never skip, once the build step has passed.
export SCHEMASHIFT_REQUIRE_TESTBED=1
python3 -m ruff check operator tests bench tools
python3 -m mypy
lint-imports
status=0
python3 -m pytest "$@" || status=$?
# The oldest Alembic/SQLAlchemy pyproject allows (the main environment has the newest); run after
# the main suite so a failure of either shows both results.
python3 tools/matrix.py || status=$?
exit "$status"
