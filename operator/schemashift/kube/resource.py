"""The SchemaMigration resource: its names, and its spec read with the contract's defaults.

The run options' defaults come from their one declaration (runner/options_table.py).

The API server applies the CRD's defaults; reading them again here keeps the operator correct for
objects stored before a default existed and lets unit tests use small literal specs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from schemashift.runner import options_table as table

GROUP = "schemashift.io"
VERSION = "v1alpha1"
PLURAL = "schemamigrations"
KIND = "SchemaMigration"
API_VERSION = f"{GROUP}/{VERSION}"

APPROVED_ANNOTATION = "schemashift.io/approved"
# Who approved: the approval admission policy admits it only as the requester's own user name.
APPROVED_BY_ANNOTATION = "schemashift.io/approved-by"
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
    environment: str = table.ENVIRONMENT.default
    backup_enabled: bool = False
    backup_endpoint: str = ""
    backup_credentials: str = ""
    # The run options' fields (runner/options_table.py SPEC_OPTIONS), one per row:
    target: str = cast(str, table.TARGET.default)
    backup_url: str | None = table.BACKUP_URL.default
    rollback_policy: str = table.ROLLBACK_POLICY.default
    dry_run: bool = table.DRY_RUN.default
    lock_timeout: str = table.LOCK_TIMEOUT.default
    statement_timeout: str = table.STATEMENT_TIMEOUT.default
    lock_retries: int = table.LOCK_RETRIES.default
    lint_mode: str = table.LINT_MODE.default
    allow: tuple[str, ...] = table.ALLOW.default
    phase: str = table.PHASE.default
    backup_method: str = table.BACKUP_METHOD.default
    backup_keep: int = table.BACKUP_KEEP.default
    backup_max_age: str = table.BACKUP_MAX_AGE.default
    archive_wait: str = table.ARCHIVE_WAIT.default
    deadline_seconds: int = table.DEADLINE_SECONDS.job_default
    approval_required: bool = False
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
        job = spec.get("job") or {}
        return cls(
            database_url=SecretKeyRef(url_ref.get("name", ""), url_ref.get("key") or "url"),
            script_location=migrations.get("scriptLocation", ""),
            image=migrations.get("image") or "",
            environment=table.ENVIRONMENT.from_spec(spec),
            backup_enabled=bool(backup.get("enabled", False)),
            backup_endpoint=backup.get("endpoint") or "",
            backup_credentials=(backup.get("credentialsSecretRef") or {}).get("name", ""),
            **{option.name: option.from_spec(spec) for option in table.SPEC_OPTIONS},
            approval_required=bool((spec.get("approval") or {}).get("required", False)),
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
