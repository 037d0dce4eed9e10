"""The Argo CD health check in gopher-lua (tools/argocd-health/), on the SchemaMigration objects
the e2e suite recorded from the real API server (tests/fixtures/argocd/, refreshed by
SCHEMASHIFT_RECORD_ARGOCD_FIXTURES=1 python -m pytest tests/e2e/test_argocd_health.py); the e2e
test itself judges every version it sees. Here: each recorded kind of status, the VM's
restrictions as Argo CD has them, and the docs carrying the very same script.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures import argocd_health

ROOT = Path(__file__).resolve().parents[2]
RECORDED = sorted((ROOT / "tests" / "fixtures" / "argocd").glob("*.json"))
DOC = ROOT / "docs" / "argocd.md"


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def test_every_phase_was_recorded() -> None:
    phases = {(load(p).get("status") or {}).get("phase") for p in RECORDED}
    assert {None, "Pending", "Planning", "AwaitingApproval", "BackingUp", "Migrating",
            "Verifying", "Succeeded", "Failed", "RollingBack", "RolledBack"} <= phases
    names = {p.stem.split("-", 1)[1] for p in RECORDED}
    assert {"Migrating-OlderGeneration", "Failed-Invalid", "Succeeded-ContractPending"} <= names


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
def test_recorded_status_gets_the_right_health(path: Path) -> None:
    obj = load(path)
    status = obj.get("status") or {}
    verdict = argocd_health.check_one(obj)
    assert verdict.get("status") == argocd_health.expected(obj), verdict
    message = verdict.get("message", "")
    if verdict["status"] in ("Degraded", "Progressing") and status.get("message"):
        assert status["message"] in message or "generation" in message, message
    if verdict["status"] == "Suspended":
        assert f"--plan-hash {status['plan']['hash']}" in message
    contract = [c for c in status.get("conditions", []) if c["type"] == "ContractPending"]
    if verdict["status"] == "Healthy" and contract and contract[0]["status"] == "True":
        assert "contract pending" in message and contract[0]["message"] in message


def test_an_expand_that_left_contract_work_is_healthy_and_says_so() -> None:
    succeeded = next(load(p) for p in RECORDED if p.stem.endswith("-Succeeded"))
    status = succeeded["status"]
    others = [c for c in status["conditions"] if c["type"] != "ContractPending"]
    status["conditions"] = [*others, {
        "type": "ContractPending", "status": "True", "reason": "ContractPending",
        "message": "contract revisions not applied yet: c3drop"}]
    verdict = argocd_health.check_one(succeeded)
    assert verdict["status"] == "Healthy"
    assert verdict["message"].startswith(
        "Expand succeeded; contract pending: contract revisions not applied yet: c3drop")


def test_the_vm_is_as_restricted_as_argo_cds(tmp_path: Path) -> None:
    """argocd-cm scripts run without the string and os libraries; a bad status is Unknown; a
    non-table result is an error: the script is tested under the same rules."""
    script = tmp_path / "probe.lua"
    cases = {
        'return {status = string.upper("healthy")}': "error",
        'return {status = os.getenv("HOME")}': "error",
        'return {status = "Fine"}': "Unknown",
        'return "Healthy"': "error",
        'local t = {}; table.insert(t, obj.kind); return {status = "Healthy", message = t[1]}':
            "Healthy",
    }
    for source, outcome in cases.items():
        script.write_text(source)
        verdict = argocd_health.check([{"kind": "SchemaMigration"}], script)[0]
        assert ("error" if "error" in verdict else verdict["status"]) == outcome, (source,
                                                                                 verdict)


def test_the_docs_carry_the_shipped_script() -> None:
    """docs/argocd.md's argocd-cm entry is the file, byte for byte (indentation aside)."""
    text = DOC.read_text()
    block = re.search(r"```yaml\n(apiVersion: v1\nkind: ConfigMap\n.*?)```", text, re.S)
    assert block, "docs/argocd.md has no argocd-cm ConfigMap block"
    config = yaml.safe_load(block.group(1))
    assert config["metadata"]["name"] == "argocd-cm"
    key = "resource.customizations.health.schemashift.io_SchemaMigration"
    assert config["data"][key] == argocd_health.HEALTH_LUA.read_text()
