"""A storage call that moves no data for `limit` seconds is abandoned, however botocore retries.

botocore's timeouts bound one socket operation and its retries multiply them: a frozen endpoint
(process stopped, its kernel still accepting connections) was noticed after 503 s. So each call
runs in a daemon thread while the calling thread waits: a chunk of data moving (an upload body
read by the HTTP layer, a downloaded chunk, a copied part) or the call ending counts as progress,
and `limit` seconds without any ends the wait. The abandoned thread is a daemon, so it cannot
keep the process alive; its socket times out on its own later, and `Activity.abandoned` stops it
from handing data to a caller that has moved on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
# How often the waiting thread looks at the clock (and may report that it is waiting).
POLL_SECONDS = 1.0
# Idle this long (or half the limit, if shorter), the waiting thread starts telling the caller
# (progress events while it waits).
NOTICE_SECONDS = 5.0


def notice_after(limit: float) -> float:
    return min(NOTICE_SECONDS, limit / 2)


class Stalled(Exception):
    """No data moved for `idle` seconds; the call was abandoned."""

    def __init__(self, idle: float):
        super().__init__(f"no data for {idle:.0f}s")
        self.idle = idle


class Activity:
    """Shared by the waiting thread and the worker: when data last moved."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.abandoned = False
        self._held = 0

    def touch(self, *_: object) -> None:
        self.last = time.monotonic()

    @contextmanager
    def holding(self) -> Iterator[None]:
        """The clock stops while the worker hands data on (a consumer being slow is no stall)."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            self.touch()

    def idle(self) -> float:
        return 0.0 if self._held else time.monotonic() - self.last


def run(work: Callable[[Activity], T], *, limit: float,
        on_wait: Callable[[float], None] | None = None) -> T:
    """`work(activity)` in a daemon thread; raises Stalled after `limit` seconds without
    progress, or whatever `work` raised."""
    activity = Activity()
    done = threading.Event()
    outcome: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            outcome.append(work(activity))
        except BaseException as exc:  # handed to the waiting thread, which re-raises it
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=body, name="s3-call", daemon=True).start()
    try:
        while not done.wait(min(POLL_SECONDS, limit)):
            idle = activity.idle()
            if idle >= limit:
                raise Stalled(idle)
            if on_wait is not None and idle >= notice_after(limit):
                on_wait(idle)
    except BaseException:  # stalled, or interrupted (SIGTERM, Ctrl-C) while waiting
        activity.abandoned = True
        raise
    if failure:
        raise failure[0]
    return outcome[0]
