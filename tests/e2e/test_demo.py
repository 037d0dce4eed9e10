"""The README's demo command runs the whole story, local mode then the operator, to the end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.postgres import APP_PASSWORD

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_tells_the_whole_story() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    for milestone in (
        "Detected schema changes:",
        "Created migration file:",
        "state=Verified",
        "error: RolledBack (RolledBackByTransaction)",
        "ward_code columns left behind: 0",
        "hms-release-42   Succeeded",
        "hms-release-43   RolledBack",
        "Demo finished.",
    ):
        assert milestone in output, f"{milestone!r} missing:\n{output[-4000:]}"
    assert APP_PASSWORD not in output
