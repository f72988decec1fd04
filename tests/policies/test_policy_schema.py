"""The JSON Schema editors use: generated from the model, shipped fresh in deploy/, described field by
field, and in agreement with the loader on the shipped examples; the Markdown reference in docs/ too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from ruamel.yaml import YAML

from policies.loader import load_policies, load_policy_text
from policies.schema import REFERENCE_BEGIN, policy_json_schema, policy_schema_text, with_reference

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "deploy" / "policies.d").glob("*.yaml"))


def _documents(path: Path) -> list[Any]:
    return list(YAML(typ="safe", pure=True).load_all(path.read_text()))


def test_shipped_schema_is_the_generated_one() -> None:
    shipped = (ROOT / "deploy" / "policy.schema.json").read_text()
    assert shipped == policy_schema_text(), (
        "deploy/policy.schema.json is stale: run burstctl policy schema -o deploy/policy.schema.json")


def _properties(node: Any, where: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        for name, prop in node.get("properties", {}).items():
            found.append((f"{where}.{name}", prop))
        for key, value in node.items():
            found += _properties(value, f"{where}/{key}" if key != "properties" else where)
    elif isinstance(node, list):
        for item in node:
            found += _properties(item, where)
    return found


def test_every_field_has_a_description_for_editors() -> None:
    properties = _properties(policy_json_schema())
    assert len(properties) > 60
    undocumented = [where for where, prop in properties if not prop.get("description") and where != ".type"
                    and not where.endswith(".type")]
    assert undocumented == [], (
        "fields without a description (editors show nothing on hover); add Field(description=...) in "
        "policies/model.py or policies/strategy_config.py, then run "
        "burstctl policy schema -o deploy/policy.schema.json --update-doc docs/policies.md")


def test_durations_accept_text_and_numbers() -> None:
    validator = jsonschema_rs.validator_for(policy_json_schema())
    drain = policy_json_schema()["$defs"]["Drain"]["properties"]["timeout"]
    assert drain["default"] == "5m"
    document = _documents(ROOT / "deploy" / "policies.d" / "web.yaml")[0]
    for value, ok in (("90s", True), ("1h30m", True), (45, True), ("5 minutes", False), (-1, False)):
        document["drain"]["timeout"] = value
        assert validator.is_valid(document) is ok, value


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_reference_the_schema_and_pass_both_checks(example: Path) -> None:
    assert example.read_text().splitlines()[0] == "# yaml-language-server: $schema=../policy.schema.json"
    result = load_policies([example])
    assert result.problems == [] and result.policies
    validator = jsonschema_rs.validator_for(policy_json_schema())
    for document in _documents(example):
        assert [e.message for e in validator.iter_errors(document)] == []


def test_examples_together(tmp_path: Path) -> None:
    result = load_policies([ROOT / "deploy" / "policies.d"])
    assert result.problems == []
    assert {"web", "api", "batch"} <= set(result.policies)
    web = result.policies["web"]
    assert web.traffic.haproxy is not None and web.metric.source == "workload_cpu"
    api = result.policies["api"]
    assert api.metric.prometheus is not None and api.traffic.slb is not None
    assert api.cloud.spot.strategy != "NoSpot" and api.cloud.spot.fallback_on_demand and api.schedule
    assert result.policies["batch"].strategy.type == "target"


def test_schema_rejects_what_the_loader_rejects() -> None:
    validator = jsonschema_rs.validator_for(policy_json_schema())
    base = _documents(ROOT / "deploy" / "policies.d" / "web.yaml")[0]
    for edit in ({"bogus": 1}, {"name": "Web"}, {"replicas": {"max": -1}}, {"metric": {"source": "cpu"}},
                 {"strategy": {"type": "magic"}}):
        document = json.loads(json.dumps(base)) | edit
        assert not validator.is_valid(document), edit


def test_docs_reference_is_fresh() -> None:
    document = (ROOT / "docs" / "policies.md").read_text()
    assert REFERENCE_BEGIN in document
    assert with_reference(document) == document, (
        "the generated reference in docs/policies.md is stale: run "
        "burstctl policy schema --update-doc docs/policies.md")


def test_batch_example_commented_predictive_alternative_is_valid() -> None:
    """batch.yaml says `type: predictive` works with the commented lines: keep that true."""
    text = (ROOT / "deploy" / "policies.d" / "batch.yaml").read_text().replace("  type: target\n", "")
    for key in ("type", "season", "cycles", "lookahead"):
        assert f"  # {key}: " in text, key
        text = text.replace(f"  # {key}: ", f"  {key}: ")
    result = load_policy_text(text)
    assert result.problems == []
    assert result.policies["batch"].strategy.type == "predictive"
