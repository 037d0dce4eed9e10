"""The one CRD source: structural, described, its option fields generated from the options table,
the other defaults matching what the operator assumes."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from schemashift.kube import resource
from schemashift.runner import options_table as table

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "manifests" / "crd" / "schemamigrations.yaml"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return dict(yaml.safe_load(CRD_FILE.read_text()))


def _version(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    return dict(version)


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


def test_names_match_the_contract(crd: dict[str, Any]) -> None:
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == f"{resource.PLURAL}.{resource.GROUP}"
    assert (crd["spec"]["group"], names["kind"], names["plural"]) == (
        resource.GROUP, resource.KIND, resource.PLURAL)
    assert names["shortNames"] == ["smig"]
    assert crd["spec"]["scope"] == "Namespaced"
    assert _version(crd)["name"] == resource.VERSION
    assert _version(crd)["subresources"] == {"status": {}}


def test_printer_columns(crd: dict[str, Any]) -> None:
    columns = [c["name"] for c in _version(crd)["additionalPrinterColumns"]]
    assert columns == ["Phase", "From", "Target", "Current", "ContractPending", "Backup", "Age"]
    contract = _version(crd)["additionalPrinterColumns"][4]
    assert contract["jsonPath"] == '.status.conditions[?(@.type=="ContractPending")].status'


def test_every_field_has_a_type_and_a_description(crd: dict[str, Any]) -> None:
    """(metadata excepted: the API server refuses anything there but its type)"""
    schema = _version(crd)["schema"]["openAPIV3Schema"]
    missing = [path or "<root>" for path, node in _nodes(schema)
               if not node.get("description") and path != ".metadata"]
    untyped = [path for path, node in _nodes(schema)
               if "type" not in node and not node.get("x-kubernetes-int-or-string")]
    assert missing == []
    assert untyped == []


def test_every_cel_rule_explains_itself(crd: dict[str, Any]) -> None:
    schema = _version(crd)["schema"]["openAPIV3Schema"]
    rules = [rule for _, node in _nodes(schema)
             for rule in node.get("x-kubernetes-validations", [])]
    assert len(rules) >= 10
    for rule in rules:
        assert len(rule.get("message", "")) > 30, rule


def load_gen_crd() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_crd", ROOT / "tools" / "gen_crd.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_option_fields_are_generated_from_the_options_table() -> None:
    """A hand edit of an option's field (its default, grammar, bounds) fails here."""
    assert load_gen_crd().stale() == [], "run: python tools/gen_crd.py"


def test_the_generator_rewrites_a_hand_edited_field_and_keeps_the_rest() -> None:
    gen_crd = load_gen_crd()
    committed = CRD_FILE.read_text()
    default = f"default: {table.LOCK_TIMEOUT.default}\n"
    edited = committed.replace(default, "default: 7s\n", 1)
    assert edited != committed
    assert gen_crd.generate(edited) == committed
    untouched = committed.replace("Where the migration stands.", "Where it stands.")
    assert gen_crd.generate(untouched) == untouched


def test_each_option_field_is_declared_by_its_row(crd: dict[str, Any]) -> None:
    spec_schema = _version(crd)["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for option in table.SPEC_OPTIONS:
        node = spec_schema
        for key in (option.cr or "").split("."):
            node = node["properties"][key]
        assert node.get("default") == option.crd_default(), option.name
        assert node == (option.crd_schema() or node), option.name


def test_defaults_outside_the_table_are_the_ones_the_operator_assumes(
    crd: dict[str, Any],
) -> None:
    spec_schema = _version(crd)["schema"]["openAPIV3Schema"]["properties"]["spec"]
    defaults = {path: node["default"] for path, node in _nodes(spec_schema) if "default" in node}
    assumed = resource.MigrationSpec.from_body({})
    assert defaults[".environment"] == assumed.environment == "development"
    assert defaults[".approval.required"] is assumed.approval_required is False
    assert defaults[".deadlineSeconds"] == assumed.deadline_seconds == 1800
    assert defaults[".job.ttlSecondsAfterFinished"] == assumed.ttl_seconds_after_finished
    assert defaults[".database.urlSecretRef.key"] == assumed.database_url.key
    # Objects holding defaults default to {} themselves, or their defaults would never apply.
    for parent in (".rollback", ".safety", ".approval", ".job"):
        assert defaults[parent] == {}


def test_spec_reads_each_option_from_its_field_or_the_rows_default() -> None:
    assumed = resource.MigrationSpec.from_body({})
    for option in table.SPEC_OPTIONS:
        assert getattr(assumed, option.name) == (option.from_spec({})), option.name
    spec = resource.MigrationSpec.from_body(
        {"safety": {"lockTimeout": "1.5s", "lockRetries": "3", "allow": ["drop-table"]},
         "rollback": {"policy": "none"}, "target": ""})
    assert (spec.lock_timeout, spec.lock_retries, spec.allow) == ("1.5s", 3, ("drop-table",))
    assert (spec.rollback_policy, spec.target) == ("none", table.TARGET.default)


def test_status_phases_are_the_contracts(crd: dict[str, Any]) -> None:
    from typing import get_args

    from schemashift import progress

    status = _version(crd)["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert set(status["properties"]["phase"]["enum"]) == set(get_args(progress.Phase))
    assert status["x-kubernetes-preserve-unknown-fields"] is True
