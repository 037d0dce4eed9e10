"""The schemashift operator: kopf watches SchemaMigrations and their Jobs (`schemashift operator`).

Replicas elect a leader over a Lease (on by default): only the holder runs kopf, the others stand
by and take over when it stops renewing. kopf itself runs standalone (no peering).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("schemashift.operator")


@dataclass(frozen=True)
class LeaderElection:
    lease_name: str
    lease_namespace: str | None  # None: the pod's namespace, else the kubeconfig's


def identity() -> str:
    """Unique per process, readable in `kubectl get lease`: the pod (host) name and a nonce."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def run(namespaces: list[str], liveness: str | None, metrics_port: int,
        job_image: str | None, leader: LeaderElection | None = None) -> None:
    """Serve metrics, wait for the Lease, then run kopf until SIGTERM/SIGINT (watching
    `namespaces`, else all)."""
    import kopf

    from schemashift.kube import leader as kleader
    from schemashift.operator import metrics, standby

    kopf.configure(log_format=kopf.LogFormat.JSON, log_refkey="object")  # standbys log too
    if metrics_port:
        metrics.serve(metrics_port)
    if leader is None:
        _run_kopf(namespaces, liveness, job_image)
        return
    elector = kleader.elector(leader.lease_namespace, leader.lease_name, identity())
    with standby.serving_liveness(liveness):
        elector.acquire()
    metrics.LEADER.set(1)
    elector.keep_renewing(on_lost=_lost_lease)
    try:
        _run_kopf(namespaces, liveness, job_image)
    finally:
        elector.release()


def _lost_lease() -> None:
    # What client-go's controllers do: stop acting at once; the restarted process stands by.
    log.error("lost the leader Lease (not renewed within the renew deadline); exiting so that "
              "exactly one replica runs migrations")
    logging.shutdown()
    os._exit(1)


def _run_kopf(namespaces: list[str], liveness: str | None, job_image: str | None) -> None:
    import kopf

    from schemashift.kube import client, policy
    from schemashift.operator import handlers, metrics, reconcile

    handlers.CONTEXT = reconcile.Context(api=client.KubeApi(), peers=handlers.IndexPeers(),
                                         job_image=job_image,
                                         metrics=metrics.PrometheusMetrics(),
                                         policy=policy.from_env(os.environ))

    @kopf.on.startup()
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # our own events carry reasons; kopf's are noise
        settings.persistence.finalizer = "schemashift.io/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix="kopf.schemashift.io")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="kopf.schemashift.io", key="last-handled-configuration")
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.execution.max_workers = 8

    kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces,
             liveness_endpoint=liveness or None)
