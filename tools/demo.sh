#!/usr/bin/env bash
# The one demo command (README): install, then run the whole story on embedded servers.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
exec python3 tools/demo.py "$@"
