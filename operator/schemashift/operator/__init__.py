"""The schemashift operator: kopf watches SchemaMigrations and their Jobs (`schemashift operator`).

Runs standalone (no kopf peering): deploy one replica with the Recreate strategy.
"""

from __future__ import annotations

import os
from typing import Any


def run(namespaces: list[str], liveness: str | None, metrics_port: int,
        job_image: str | None) -> None:
    """Serve metrics, then run kopf until SIGTERM/SIGINT (watching `namespaces`, else all)."""
    import kopf

    from schemashift.kube import client, policy
    from schemashift.operator import handlers, metrics, reconcile

    kopf.configure(log_format=kopf.LogFormat.JSON, log_refkey="object")
    handlers.CONTEXT = reconcile.Context(api=client.KubeApi(), job_image=job_image,
                                         metrics=metrics.PrometheusMetrics(),
                                         policy=policy.from_env(os.environ))
    if metrics_port:
        metrics.serve(metrics_port)

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
