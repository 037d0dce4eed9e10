"""The SchemaMigration resource: its names, and its spec read with the contract's defaults.

The API server applies the CRD's defaults; reading them again here keeps the operator correct for
objects stored before a default existed and lets unit tests use small literal specs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

GROUP = "schemashift.io"
VERSION = "v1alpha1"
PLURAL = "schemamigrations"
KIND = "SchemaMigration"
API_VERSION = f"{GROUP}/{VERSION}"

APPROVED_ANNOTATION = "schemashift.io/approved"
MIGRATION_LABEL = "schemashift.io/migration"
PURPOSE_LABEL = "schemashift.io/purpose"
GENERATION_LABEL = "schemashift.io/generation"
MANAGED_BY = {"app.kubernetes.io/managed-by": "schemashift"}
DEFAULT_JOB_SERVICE_ACCOUNT = "schemashift-migration"

ACTIVE_PHASES = frozenset({"Planning", "BackingUp", "Migrating", "Verifying", "RollingBack"})
TERMINAL_PHASES = frozenset({"Succeeded", "Failed", "RolledBack"})

Body = Mapping[str, Any]


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True)
class MigrationSpec:
    database_url: SecretKeyRef
    script_location: str
    image: str = ""
    target: str = "head"
    environment: str = "development"
    backup_enabled: bool = False
    backup_url: str = ""
    backup_endpoint: str = ""
    backup_credentials: str = ""
    rollback_policy: str = "downgrade"
    lock_timeout: str = "5s"
    statement_timeout: str = "0s"
    lock_retries: int = 10
    lint: str = "block"
    allow: tuple[str, ...] = ()
    dry_run: bool = False
    approval_required: bool = False
    deadline_seconds: int = 1800
    service_account: str = ""
    resources: Mapping[str, Any] = field(default_factory=dict)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    image_pull_secrets: tuple[str, ...] = ()
    priority_class: str = ""
    ttl_seconds_after_finished: int = 86400

    @classmethod
    def from_body(cls, spec: Body) -> MigrationSpec:
        database = spec.get("database") or {}
        url_ref = database.get("urlSecretRef") or {}
        migrations = spec.get("migrations") or {}
        backup = spec.get("backup") or {}
        safety = spec.get("safety") or {}
        job = spec.get("job") or {}
        return cls(
            database_url=SecretKeyRef(url_ref.get("name", ""), url_ref.get("key") or "url"),
            script_location=migrations.get("scriptLocation", ""),
            image=migrations.get("image") or "",
            target=spec.get("target") or "head",
            environment=spec.get("environment") or "development",
            backup_enabled=bool(backup.get("enabled", False)),
            backup_url=backup.get("url") or "",
            backup_endpoint=backup.get("endpoint") or "",
            backup_credentials=(backup.get("credentialsSecretRef") or {}).get("name", ""),
            rollback_policy=(spec.get("rollback") or {}).get("policy") or "downgrade",
            lock_timeout=safety.get("lockTimeout") or "5s",
            statement_timeout=safety.get("statementTimeout") or "0s",
            lock_retries=int(safety.get("lockRetries", 10)),
            lint=safety.get("lint") or "block",
            allow=tuple(safety.get("allow") or ()),
            dry_run=bool(spec.get("dryRun", False)),
            approval_required=bool((spec.get("approval") or {}).get("required", False)),
            deadline_seconds=int(spec.get("deadlineSeconds", 1800)),
            service_account=job.get("serviceAccountName") or "",
            resources=job.get("resources") or {},
            node_selector=job.get("nodeSelector") or {},
            tolerations=tuple(job.get("tolerations") or ()),
            image_pull_secrets=tuple(s["name"] for s in job.get("imagePullSecrets") or ()),
            priority_class=job.get("priorityClassName") or "",
            ttl_seconds_after_finished=int(job.get("ttlSecondsAfterFinished", 86400)),
        )

    def database_key(self, namespace: str) -> str:
        """Two resources with the same key migrate the same database (serialised)."""
        return f"{namespace}/{self.database_url.name}/{self.database_url.key}"

    def secret_keys(self) -> dict[str, tuple[str, ...]]:
        """Secrets the Job reads, with the keys each must hold."""
        needed: dict[str, tuple[str, ...]] = {self.database_url.name: (self.database_url.key,)}
        if self.backup_enabled and self.backup_credentials:
            keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
            needed[self.backup_credentials] = (
                *needed.get(self.backup_credentials, ()), *keys)
        return needed


def ref(body: Body) -> str:
    """"namespace/name" of a resource."""
    meta = body["metadata"]
    return f"{meta['namespace']}/{meta['name']}"
