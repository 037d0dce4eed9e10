"""The leader's renewal never waits on the API server past its renew deadline (a slow API
server must not keep a replica acting after another one may have taken over)."""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client

from schemashift.kube.leader import LeaseElector, Timings


class SlowLeases:
    """A Lease API that answers after `delay_s`, recording each call's HTTP timeout."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.timeouts: list[float] = []
        self.lease = client.V1Lease(
            metadata=client.V1ObjectMeta(name="l", namespace="ns", resource_version="1"),
            spec=client.V1LeaseSpec(holder_identity="me", lease_duration_seconds=15))

    def _answer(self, timeout: float) -> client.V1Lease:
        self.timeouts.append(timeout)
        time.sleep(self.delay_s)
        return self.lease

    def read_namespaced_lease(self, name: str, namespace: str, **kw: Any) -> client.V1Lease:
        return self._answer(kw["_request_timeout"])

    def replace_namespaced_lease(self, name: str, namespace: str, body: client.V1Lease,
                                 **kw: Any) -> client.V1Lease:
        return self._answer(kw["_request_timeout"])


def test_a_renewal_spends_at_most_the_time_left_until_the_renew_deadline() -> None:
    api = SlowLeases(delay_s=0.2)
    elector = LeaseElector("ns", "l", "me", Timings(), api)  # type: ignore[arg-type]
    assert elector.try_acquire_or_renew(within_s=0.3)
    first, second = api.timeouts
    assert first <= 0.3 and second <= 0.3 - 0.2 + 0.01  # the second call gets what is left
    assert elector.try_acquire_or_renew()
    assert Timings().renew_deadline_s - 0.1 < api.timeouts[2] <= Timings().renew_deadline_s
    assert api.timeouts[3] <= api.timeouts[2] - 0.2 + 0.01
