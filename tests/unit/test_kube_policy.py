"""The admin's policy for what a SchemaMigration may run: parsing, each rule, and the operator
refusing a spec (Failed/PolicyDenied, a Warning event, no Job) before it looks at any Secret."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemashift import errors, reasons
from schemashift.kube import policy, resource
from schemashift.operator import reconcile
from tests.unit.test_operator_reconcile import FakeApi, run

DEFAULT_IMAGE = "ghcr.io/schemashift/schemashift:1.0"


def spec(image: str = "", **job: Any) -> resource.MigrationSpec:
    return resource.MigrationSpec.from_body({
        "database": {"urlSecretRef": {"name": "app-db"}},
        "migrations": {"image": image, "scriptLocation": "/m"}, "job": job})


def refused(found: list[policy.Denial]) -> list[tuple[str, str]]:
    return [(d.rule, d.value) for d in found]


STRICT = policy.Policy()


def test_strict_default_allows_only_the_operators_image_and_account() -> None:
    assert policy.check(STRICT, spec(), DEFAULT_IMAGE) == []
    assert policy.check(STRICT, spec(DEFAULT_IMAGE), DEFAULT_IMAGE) == []
    assert policy.check(STRICT, spec(serviceAccountName="schemashift-migration"),
                        DEFAULT_IMAGE) == []
    found = policy.check(STRICT, spec("evil.example/miner:1", serviceAccountName="ci",
                                      priorityClassName="system-cluster-critical"), DEFAULT_IMAGE)
    assert refused(found) == [("allowedImages", "evil.example/miner:1"),
                              ("allowedServiceAccounts", "ci"),
                              ("allowedPriorityClasses", "system-cluster-critical")]


def test_image_globs_match_the_whole_reference() -> None:
    allowing = policy.Policy(allowed_images=("registry.example/app:*", "registry.example/m?g:1"))
    for ok in ("registry.example/app:1.2", "registry.example/mig:1"):
        assert policy.check(allowing, spec(ok), None) == [], ok
    for bad in ("registry.example/app-evil:1", "evil/registry.example/app:1",
                "registry.example.evil/app:1", "registry.example/app", "registry.example/mg:1"):
        assert refused(policy.check(allowing, spec(bad), None)) == [("allowedImages", bad)], bad


def test_glob_characters_other_than_star_and_question_mark_are_literal() -> None:
    assert policy.matches("a.b[1]", ["a.b[1]"])
    assert not policy.matches("axb1", ["a.b[1]"])
    assert policy.glob_regex("r.example/app:*") == r"^r\.example/app:.*$"


def test_tolerations_need_listed_keys_and_keyless_exists_needs_its_own_switch() -> None:
    keyless = {"operator": "Exists"}
    batch = {"key": "batch", "operator": "Exists"}
    plane = {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}
    assert refused(policy.check(STRICT, spec(tolerations=[keyless, batch]), DEFAULT_IMAGE)) == [
        ("allowTolerateAll", "a toleration without key (tolerates every taint)"),
        ("allowedTolerationKeys", "batch")]
    everything = policy.Policy(allowed_toleration_keys=("*",))
    assert policy.check(everything, spec(tolerations=[batch]), DEFAULT_IMAGE) == []
    assert refused(policy.check(everything, spec(tolerations=[keyless, plane]), DEFAULT_IMAGE)) \
        == [("allowTolerateAll", "a toleration without key (tolerates every taint)"),
            ("allowedTolerationKeys", "node-role.kubernetes.io/control-plane")]
    explicit = policy.Policy(allow_tolerate_all=True,
                             allowed_toleration_keys=("node-role.kubernetes.io/control-plane",))
    assert policy.check(explicit, spec(tolerations=[keyless, plane]), DEFAULT_IMAGE) == []


def test_node_selector_keys_and_control_plane_keys() -> None:
    selector = {"pool": "batch", "node-role.kubernetes.io/control-plane": ""}
    assert refused(policy.check(STRICT, spec(nodeSelector=selector), DEFAULT_IMAGE)) == [
        ("allowedNodeSelectorKeys", "pool"),
        ("allowedNodeSelectorKeys", "node-role.kubernetes.io/control-plane")]
    globbed = policy.Policy(allowed_node_selector_keys=("*",))
    assert refused(policy.check(globbed, spec(nodeSelector=selector), DEFAULT_IMAGE)) == [
        ("allowedNodeSelectorKeys", "node-role.kubernetes.io/control-plane")]
    listed = policy.Policy(allowed_node_selector_keys=(
        "pool", "node-role.kubernetes.io/control-plane"))
    assert policy.check(listed, spec(nodeSelector=selector), DEFAULT_IMAGE) == []


def test_listed_service_accounts_and_priority_classes() -> None:
    relaxed = policy.Policy(allowed_service_accounts=("workload-identity",),
                            allowed_priority_classes=("batch-low",))
    ok = spec(serviceAccountName="workload-identity", priorityClassName="batch-low")
    assert policy.check(relaxed, ok, DEFAULT_IMAGE) == []
    assert refused(policy.check(relaxed, spec(serviceAccountName="workload"), DEFAULT_IMAGE)) == [
        ("allowedServiceAccounts", "workload")]


def test_message_says_what_which_rule_and_who_changes_it() -> None:
    text = policy.describe(policy.check(STRICT, spec("evil:1"), DEFAULT_IMAGE))
    assert text == (
        "no Job created: spec.migrations.image 'evil:1' is refused by policy.allowedImages "
        f"(allowed: the operator's job image {DEFAULT_IMAGE}); an admin sets "
        "policy.allowedImages in the schemashift chart values")


def test_from_env_reads_the_chart_values_as_json() -> None:
    values = {"allowedImages": ["r/app:*"], "allowedServiceAccounts": ["wi"],
              "allowedTolerationKeys": ["batch"], "allowTolerateAll": False,
              "allowedNodeSelectorKeys": ["pool"], "allowedPriorityClasses": None}
    assert policy.from_env({policy.ENV: json.dumps(values)}) == policy.Policy(
        allowed_images=("r/app:*",), allowed_service_accounts=("wi",),
        allowed_toleration_keys=("batch",), allowed_node_selector_keys=("pool",))
    assert policy.from_env({}) == STRICT
    assert policy.from_env({policy.ENV: " "}) == STRICT


@pytest.mark.parametrize(("text", "says"), [
    ('{"allowedImage": ["x"]}', "unknown policy setting(s) allowedImage"),
    ('{"allowedImages": "x"}', "policy.allowedImages must be a list of non-empty strings"),
    ('{"allowedImages": [""]}', "policy.allowedImages must be a list of non-empty strings"),
    ('{"allowTolerateAll": "yes"}', "policy.allowTolerateAll must be true or false"),
    ('["x"]', "must be a JSON object"),
    ("{", "SCHEMASHIFT_POLICY is not JSON"),
])
def test_a_broken_policy_stops_the_operator_with_a_usage_error(text: str, says: str) -> None:
    with pytest.raises(errors.UsageError) as caught:
        policy.from_env({policy.ENV: text})
    assert says in str(caught.value)
    assert caught.value.exit_code == errors.EXIT_USAGE


def test_operator_refuses_before_reading_secrets_and_creates_no_job() -> None:
    api = FakeApi()
    api.secrets.clear()  # a refused spec must fail on the policy, not on the missing Secret
    api.add("evil", job={"serviceAccountName": "ci",
                         "tolerations": [{"operator": "Exists"}],
                         "nodeSelector": {"node-role.kubernetes.io/control-plane": ""}})
    run(reconcile.Context(api=api, peers=api, job_image="img", policy=STRICT), "evil")
    status = api.status("evil")
    assert status["phase"] == "Failed" and api.created == []
    assert api.condition("evil", "Ready")["reason"] == reasons.POLICY_DENIED
    for rule in ("allowedServiceAccounts", "allowTolerateAll", "allowedNodeSelectorKeys"):
        assert f"policy.{rule}" in status["message"]
    assert [(t, r) for _, t, r, _ in api.events] == [("Warning", reasons.POLICY_DENIED)]


def test_operator_runs_an_allowed_spec() -> None:
    api = FakeApi()
    api.add("ok")
    run(reconcile.Context(api=api, peers=api, job_image="other", policy=policy.Policy(
        allowed_images=("im?",))), "ok")
    assert len(api.created) == 1
