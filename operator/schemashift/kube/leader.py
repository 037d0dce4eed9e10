"""Leader election over a coordination.k8s.io Lease, the way client-go's leaderelection does it.

One replica holds the Lease and runs the operator; the others wait. A holder that cannot renew
within `renew_deadline_s` stops before anyone else may take over (`lease_s` after the last
renewal *they observed* — local clocks only, so clock skew between nodes cannot shorten it).
The kubernetes Python client ships only a ConfigMap lock, which Kubernetes itself retired.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from schemashift.kube.wait import load_api

log = logging.getLogger("schemashift.operator.leader")


@dataclass(frozen=True)
class Timings:
    """client-go's defaults (controller-runtime uses the same)."""

    lease_s: int = 15
    renew_deadline_s: float = 10.0
    retry_s: float = 2.0


def elector(namespace: str | None, name: str, identity: str) -> LeaseElector:
    """With client-go's timings, in `namespace` or else the pod's (else the kubeconfig's)."""
    api, found = load_api(namespace)
    return LeaseElector(found, name, identity, Timings(), client.CoordinationV1Api(api))


class LeaseElector:
    """Try to acquire or renew one Lease; who holds it is the Lease's `holderIdentity`."""

    def __init__(self, namespace: str, name: str, identity: str, timings: Timings,
                 api: client.CoordinationV1Api,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.namespace, self.name, self.identity, self.timings = namespace, name, identity, timings
        self._api = api
        self._clock = clock
        self._observed_version: str | None = None
        self._observed_at = 0.0

    def try_acquire_or_renew(self, within_s: float | None = None) -> bool:
        """One attempt; False when another holder's lease is still live or the write lost.
        Its API calls together take at most `within_s` (default: the renew deadline): a slow
        API server delays a renewal, but never past the deadline the holder answers for."""
        until = time.monotonic() + (within_s or self.timings.renew_deadline_s)
        now = datetime.now(UTC)
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace,
                                                    _request_timeout=_left(until))
        except ApiException as exc:
            if exc.status != 404:
                raise
            return self._create(now, until)
        spec = lease.spec or client.V1LeaseSpec()
        if lease.metadata.resource_version != self._observed_version:
            self._observed_version = lease.metadata.resource_version
            self._observed_at = self._clock()
        holder = spec.holder_identity
        duration = spec.lease_duration_seconds or self.timings.lease_s
        if holder and holder != self.identity and self._clock() < self._observed_at + duration:
            return False
        ours = holder == self.identity
        lease.spec = self._spec(acquired=spec.acquire_time if ours else now, renewed=now,
                                transitions=(spec.lease_transitions or 0) + (0 if ours else 1))
        try:
            updated = self._api.replace_namespaced_lease(self.name, self.namespace, lease,
                                                         _request_timeout=_left(until))
        except ApiException as exc:
            if exc.status == 409:  # someone else wrote first
                return False
            raise
        self._observe(updated)
        if not ours:
            log.info("acquired Lease %s/%s as %s (previous holder: %s)", self.namespace,
                     self.name, self.identity, holder or "none")
        return True

    def release(self) -> None:
        """On a clean stop: hand over at once instead of making the next leader wait `lease_s`."""
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace,
                                                    _request_timeout=self.timings.retry_s)
            if (lease.spec and lease.spec.holder_identity) != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            lease.spec.renew_time = datetime.now(UTC)
            self._api.replace_namespaced_lease(self.name, self.namespace, lease,
                                               _request_timeout=self.timings.retry_s)
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            log.warning("could not release Lease %s/%s: %s", self.namespace, self.name, exc)

    def _create(self, now: datetime, until: float) -> bool:
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=self._spec(acquired=now, renewed=now, transitions=0))
        try:
            created = self._api.create_namespaced_lease(self.namespace, body,
                                                        _request_timeout=_left(until))
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        self._observe(created)
        log.info("created and acquired Lease %s/%s as %s", self.namespace, self.name,
                 self.identity)
        return True

    def _spec(self, acquired: datetime | None, renewed: datetime,
              transitions: int) -> client.V1LeaseSpec:
        return client.V1LeaseSpec(holder_identity=self.identity, acquire_time=acquired,
                                  renew_time=renewed, lease_transitions=transitions,
                                  lease_duration_seconds=self.timings.lease_s)

    def _observe(self, lease: client.V1Lease) -> None:
        self._observed_version = lease.metadata.resource_version
        self._observed_at = self._clock()

    def attempt(self, within_s: float | None = None) -> bool:
        """`try_acquire_or_renew`, with an unreachable or refusing API server as a failed try."""
        try:
            return self.try_acquire_or_renew(within_s)
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            log.warning("Lease %s/%s: %s", self.namespace, self.name,
                        getattr(exc, "reason", None) or type(exc).__name__)
            return False

    def acquire(self) -> None:
        """Block until this replica holds the Lease."""
        log.info("waiting for Lease %s/%s as %s", self.namespace, self.name, self.identity)
        while not self.attempt():
            time.sleep(self.timings.retry_s)

    def keep_renewing(self, on_lost: Callable[[], None]) -> threading.Thread:
        """Renew every `retry_s` in a daemon thread; `on_lost` once none succeeded for
        `renew_deadline_s` (before any other replica may take over)."""
        def loop() -> None:
            renewed = self._clock()
            while True:
                time.sleep(self.timings.retry_s)
                begun = self._clock()  # the renewal others observe is no older than this
                left = self.timings.renew_deadline_s - (begun - renewed)
                if left > 0 and self.attempt(left):
                    renewed = begun
                elif self._clock() - renewed >= self.timings.renew_deadline_s:
                    on_lost()
                    return

        thread = threading.Thread(target=loop, name="lease-renewal", daemon=True)
        thread.start()
        return thread


def _left(until: float) -> float:
    """The time left until `until` (monotonic), as an HTTP timeout (never zero: urllib3 would
    read that as no timeout)."""
    return max(until - time.monotonic(), 0.05)
