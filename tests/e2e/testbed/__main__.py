"""Run the test bed by hand: `python -m tests.e2e.testbed` (from the repository root).

Starts the control plane and the process kubelet, prints how to reach them, and keeps them up
until Ctrl-C — for poking at the operator with kubectl/helm outside pytest.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import tempfile
import threading
from pathlib import Path

from .binaries import BinariesMissing, locate
from .controlplane import ControlPlane
from .kubelet import ProcessKubelet


def main() -> int:
    try:
        found = locate()
    except BinariesMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    work_dir = Path(tempfile.mkdtemp(prefix="schemashift-testbed-"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with ControlPlane(work_dir, found) as plane, ProcessKubelet(plane):
        print(
            f"API server {plane.server} up in {plane.startup_seconds:.1f}s; logs in {plane.log_dir}"
        )
        print(f"export KUBECONFIG={plane.admin_kubeconfig}")
        print("Ctrl-C stops it.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
