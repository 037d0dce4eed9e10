"""The CRD on the real API server: defaults applied, invalid specs refused, readably."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from schemashift.runner import options_table as table
from tests.e2e.testbed.controlplane import ControlPlane

pytestmark = pytest.mark.e2e

VALID: dict[str, Any] = {
    "database": {"urlSecretRef": {"name": "app-db"}},
    "migrations": {"image": "registry.example/app:1", "scriptLocation": "/app/migrations"},
}
PRODUCTION_BACKUP = {"enabled": True, "url": "s3://backups/app/"}


def with_(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = copy.deepcopy(base or VALID)
    *parents, leaf = path.split(".")
    node = spec
    for key in parents:
        node = node.setdefault(key, {})
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return spec


_DELETE = object()

INVALID = [
    ("production-without-backup", with_("environment", "production"),
     "environment production requires backup.enabled"),
    ("production-backup-disabled", with_("backup", {"enabled": False},
                                         with_("environment", "production")),
     "environment production requires backup.enabled"),
    ("restore-without-backup", with_("rollback.policy", "restore"),
     "rollback.policy restore needs a backup"),
    ("backup-without-url", with_("backup", {"enabled": True}),
     "backup.enabled: true needs backup.url"),
    ("backup-url-not-s3", with_("backup", {"enabled": True, "url": "https://b/p"}),
     "backup.url must start with s3://"),
    ("backup-url-bad-bucket", with_("backup", {"enabled": True, "url": "s3://B_/p"}),
     "backup.url must name a bucket"),
    ("backup-endpoint-not-url", with_("backup", {**PRODUCTION_BACKUP, "endpoint": "seaweedfs"}),
     "backup.endpoint must be an http:// or https:// URL"),
    ("lock-timeout-not-duration", with_("safety.lockTimeout", "five seconds"),
     "safety.lockTimeout must be a duration"),
    ("lock-timeout-zero", with_("safety.lockTimeout", "0s"), "means wait forever"),
    ("statement-timeout-not-duration", with_("safety.statementTimeout", "10"),
     "safety.statementTimeout must be a duration"),
    ("url-secret-missing", with_("database.urlSecretRef", _DELETE),
     "spec.database.urlSecretRef: Required value"),
    ("lint-unknown", with_("safety.lint", "strict"), 'Unsupported value: "strict"'),
    ("environment-unknown", with_("environment", "prod"), 'Unsupported value: "prod"'),
    ("rollback-unknown", with_("rollback.policy", "yolo"), 'Unsupported value: "yolo"'),
    ("dry-run-with-approval", with_("approval", {"required": True}, with_("dryRun", True)),
     "approval.required: true would wait forever"),
    ("script-location-relative", with_("migrations.scriptLocation", "migrations"),
     "must be an absolute path"),
    ("target-with-space", with_("target", "head; drop"), "target must be an Alembic revision id"),
    ("deadline-too-short", with_("deadlineSeconds", 5), "spec.deadlineSeconds"),
    ("lock-retries-negative", with_("safety.lockRetries", -1), "spec.safety.lockRetries"),
    ("allow-not-a-rule", with_("safety.allow", ["Drop Table"]), "lint rule names"),
    ("restore-with-restore-point", with_("backup", {**PRODUCTION_BACKUP,
                                                    "method": "restorePoint"},
                                         with_("rollback.policy", "restore")),
     "backup.method restorePoint can only be recovered into a new cluster"),
    ("backup-method-unknown", with_("backup", {**PRODUCTION_BACKUP, "method": "snapshot"}),
     'Unsupported value: "snapshot"'),
    ("archive-wait-not-duration", with_("backup", {"enabled": True, "method": "restorePoint",
                                                   "archiveWait": "soon"}),
     "backup.archiveWait must be a duration"),
]


def manifest(namespace: str, name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump({"apiVersion": "schemashift.io/v1alpha1", "kind": "SchemaMigration",
                           "metadata": {"name": name, "namespace": namespace}, "spec": spec})


@pytest.mark.parametrize("name,spec,expected", INVALID, ids=[case[0] for case in INVALID])
def test_invalid_spec_is_refused_with_a_readable_message(
    control_plane: ControlPlane, smig_crd: Any, namespace: str, name: str,
    spec: dict[str, Any], expected: str,
) -> None:
    done = control_plane.kubectl("apply", "-f", "-", input=manifest(namespace, name, spec),
                                 check=False)
    assert done.returncode != 0, done.stdout
    assert expected in done.stderr, done.stderr
    found = control_plane.kubectl("get", "smig", "-n", namespace, "-o", "name").stdout
    assert found.strip() == ""


def test_valid_spec_gets_the_contract_defaults(
    control_plane: ControlPlane, smig_crd: Any, namespace: str
) -> None:
    spec = with_("backup", {**PRODUCTION_BACKUP, "credentialsSecretRef": {"name": "s3"},
                            "endpoint": "http://seaweedfs:8333"},
                 with_("environment", "production"))
    control_plane.kubectl("apply", "-f", "-", input=manifest(namespace, "ok", spec))
    stored = yaml.safe_load(control_plane.kubectl(
        "get", "smig", "ok", "-n", namespace, "-o", "yaml").stdout)["spec"]
    assert stored["target"] == "head"
    assert stored["database"]["urlSecretRef"]["key"] == "url"
    assert stored["rollback"] == {"policy": "downgrade"}
    assert stored["safety"] == {option.cr.removeprefix("safety."): option.crd_default()
                                for option in table.SPEC_OPTIONS
                                if option.cr and option.cr.startswith("safety.")}
    assert stored["dryRun"] is False and stored["approval"] == {"required": False}
    assert stored["deadlineSeconds"] == 1800
    assert stored["job"] == {"ttlSecondsAfterFinished": 86400}
    columns = control_plane.kubectl("get", "smig", "-n", namespace).stdout.splitlines()[0].split()
    assert columns == ["NAME", "PHASE", "FROM", "TARGET", "CURRENT", "CONTRACTPENDING", "BACKUP",
                       "AGE"]
    short = control_plane.kubectl("get", "smig", "-n", namespace, "-o", "name").stdout
    assert short.strip() == "schemamigration.schemashift.io/ok"


def test_production_accepts_a_restore_point_without_a_backup_url(
    control_plane: ControlPlane, smig_crd: Any, namespace: str
) -> None:
    spec = with_("backup", {"enabled": True, "method": "restorePoint"},
                 with_("environment", "production"))
    control_plane.kubectl("apply", "-f", "-", input=manifest(namespace, "rp", spec))
    stored = yaml.safe_load(control_plane.kubectl(
        "get", "smig", "rp", "-n", namespace, "-o", "yaml").stdout)["spec"]
    defaults: dict[str, Any] = {}
    for option in table.SPEC_OPTIONS:  # the CRD's defaults under backup., nested as the CR is
        if option.cr and option.cr.startswith("backup.") and option.crd_default() is not None:
            *parents, leaf = option.cr.removeprefix("backup.").split(".")
            node = defaults
            for parent in parents:
                node = node.setdefault(parent, {})
            node[leaf] = option.crd_default()
    assert stored["backup"] == {**defaults, "enabled": True, "method": "restorePoint"}
    assert stored["backup"]["archiveWait"] == table.ARCHIVE_WAIT.default
    assert stored["rollback"] == {"policy": "downgrade"}
