"""The CRD's duration rules on the real API server say what the runner says of the same value."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from schemashift import errors
from schemashift.runner import options_table as table
from tests.e2e.testbed.controlplane import ControlPlane

pytestmark = pytest.mark.e2e

FIELDS = {"lockTimeout": table.LOCK_TIMEOUT, "statementTimeout": table.STATEMENT_TIMEOUT}
# (field, value, what the API server's refusal says; None: accepted)
CASES = [
    ("lockTimeout", "1.5s", None),
    ("lockTimeout", "500ms", None),
    ("lockTimeout", "10m", None),
    ("lockTimeout", "250us", None),
    ("statementTimeout", "1h30m", None),
    ("statementTimeout", "0", None),
    ("statementTimeout", "24h", None),
    ("lockTimeout", "10m1s", "safety.lockTimeout must be at most 10m"),
    ("lockTimeout", "5", "safety.lockTimeout must be a duration"),
    ("lockTimeout", "0s", "safety.lockTimeout must be greater than zero"),
    ("lockTimeout", "-5s", "safety.lockTimeout must be a duration"),
    ("statementTimeout", "1d", "safety.statementTimeout must be a duration"),
    ("statementTimeout", "25h", "safety.statementTimeout must be at most 24h"),
    ("statementTimeout", "1h 30m", "safety.statementTimeout must be a duration"),
    ("lockTimeout", "99999999999h", "safety.lockTimeout must be at most 10m"),  # past Go's range
]


def runner_accepts(field: str, value: str) -> bool:
    try:
        FIELDS[field].check(value)
    except errors.UsageError:
        return False
    return True


def manifest(namespace: str, field: str, value: str) -> str:
    spec: dict[str, Any] = {
        "database": {"urlSecretRef": {"name": "app-db"}},
        "migrations": {"image": "registry.example/app:1", "scriptLocation": "/app/migrations"},
        "safety": {field: value},
    }
    return yaml.safe_dump({"apiVersion": "schemashift.io/v1alpha1", "kind": "SchemaMigration",
                           "metadata": {"name": "durations", "namespace": namespace},
                           "spec": spec})


@pytest.mark.parametrize(("field", "value", "refusal"), CASES,
                         ids=[f"{field}={value}" for field, value, _ in CASES])
def test_the_api_server_and_the_runner_agree(
    control_plane: ControlPlane, smig_crd: Any, namespace: str, field: str, value: str,
    refusal: str | None,
) -> None:
    done = control_plane.kubectl("apply", "--dry-run=server", "-f", "-",
                                 input=manifest(namespace, field, value), check=False)
    assert (done.returncode == 0) is (refusal is None) is runner_accepts(field, value), \
        done.stdout + done.stderr
    if refusal is not None:
        assert refusal in done.stderr, done.stderr
