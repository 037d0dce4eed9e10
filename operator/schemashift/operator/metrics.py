"""Prometheus metrics of the operator (served by prometheus_client on --metrics-port)."""

from __future__ import annotations

import prometheus_client

MIGRATIONS = prometheus_client.Counter(
    "schemashift_migrations", "SchemaMigrations finished, by outcome.", ["outcome"])
DURATION = prometheus_client.Histogram(
    "schemashift_migration_duration_seconds", "From Job start to final status, by outcome.",
    ["outcome"], buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200))
BACKUP_BYTES = prometheus_client.Counter(
    "schemashift_backup_bytes", "Bytes of verified backups taken before migrations.")
LAST_BACKUP_BYTES = prometheus_client.Gauge(
    "schemashift_last_backup_bytes", "Size of the most recent verified backup.")

LEADER = prometheus_client.Gauge(
    "schemashift_operator_leader", "1 while this replica holds the leader Lease and runs.")


class PrometheusMetrics:
    def finished(self, outcome: str, seconds: float | None, backup_bytes: int) -> None:
        MIGRATIONS.labels(outcome=outcome).inc()
        if seconds is not None:
            DURATION.labels(outcome=outcome).observe(seconds)
        if backup_bytes:
            BACKUP_BYTES.inc(backup_bytes)
            LAST_BACKUP_BYTES.set(backup_bytes)


def serve(port: int) -> None:
    prometheus_client.start_http_server(port)
