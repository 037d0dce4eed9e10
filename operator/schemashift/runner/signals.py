"""SIGTERM (Job deadline, pod deletion) stops a run the way Ctrl-C does.

psycopg cancels the running statement, the pipeline rolls back per policy and still reports.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from schemashift import errors, reasons


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Only the first SIGTERM interrupts: the rollback that follows must not be cut short by a
    repeat. Signal handlers exist only in the main thread (tests run the pipeline in others)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def interrupt(signum: int, frame: object) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted(exc: KeyboardInterrupt) -> errors.MigrationFailed:
    """The failure an interruption (Ctrl-C or SIGTERM) amounts to."""
    how = str(exc) or "interrupted (Ctrl-C)"
    return errors.MigrationFailed(how, reason=reasons.INTERRUPTED)
