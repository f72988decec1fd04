"""The policy file's JSON Schema (for editors, via `# yaml-language-server: $schema=...`) and a Markdown
field reference, both generated from `policies.model`. Used by `burstctl policy schema`; the shipped
`deploy/policy.schema.json` and the reference in docs/policies.md are checked against them by tests.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from policies.checks import label_value
from policies.model import Policy
from policies.units import format_duration, parse_duration

__all__ = [
    "DURATION_PATTERN",
    "REFERENCE_BEGIN",
    "REFERENCE_END",
    "policy_json_schema",
    "policy_reference_markdown",
    "policy_schema_text",
    "with_reference",
]

DURATION_PATTERN = r"^\s*(\d+(\.\d+)?((ms|s|m|h|d|w)(\d+(\.\d+)?(ms|s|m|h|d|w))*)?)\s*$"
_DURATION_MARK = "x-duration"
REFERENCE_BEGIN = "<!-- policy-reference:begin (generated: burstctl policy schema --update-doc FILE; do not edit) -->"
REFERENCE_END = "<!-- policy-reference:end -->"
_BOUNDS = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}


class _PolicySchema(GenerateJsonSchema):
    """Durations are written as text (`90s`, `5m`) or seconds; label values may be unquoted numbers."""

    def function_before_schema(self, schema: core_schema.BeforeValidatorFunctionSchema) -> JsonSchemaValue:
        function = schema["function"].get("function")
        if function is parse_duration:
            return {"anyOf": [{"type": "string", "pattern": DURATION_PATTERN},
                              {"type": "number", "minimum": 0}], _DURATION_MARK: True}
        if function is label_value:
            return {"type": ["string", "number", "boolean"]}
        return super().function_before_schema(schema)


def _tidy(node: Any) -> Any:
    """Move pydantic's bounds on durations into the number branch and show duration defaults as text."""
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _tidy(value) for key, value in node.items()}
    if node.pop(_DURATION_MARK, False) or any("anyOf" in node and k in node for k in _BOUNDS):
        number = next((b for b in node.get("anyOf", []) if b.get("type") == "number"), None)
        for ours, theirs in _BOUNDS.items():
            if ours in node and number is not None:
                number[theirs] = node.pop(ours)
                if theirs == "exclusiveMinimum":
                    number.pop("minimum", None)
        if isinstance(node.get("default"), (int, float)):
            node["default"] = format_duration(float(node["default"]))
        node.setdefault("examples", ["90s", "5m", "1h30m"])
    return node


def policy_json_schema() -> dict[str, Any]:
    schema = _tidy(Policy.model_json_schema(schema_generator=_PolicySchema))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://burst-controller.invalid/policy.schema.json",
        "title": "burst-controller policy",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def policy_schema_text() -> str:
    """The schema as shipped in deploy/policy.schema.json (stable key order, trailing newline)."""
    return json.dumps(policy_json_schema(), indent=2, ensure_ascii=False) + "\n"


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _type_text(prop: dict[str, Any]) -> str:
    if _is_duration(prop):
        return "duration"
    if "$ref" in prop:
        return f"[{_ref_name(prop['$ref'])}](#{_ref_name(prop['$ref']).lower()})"
    if "const" in prop:
        return f"`{prop['const']}`"
    if "enum" in prop:
        return " | ".join(f"`{v}`" for v in prop["enum"])
    if "anyOf" in prop or "oneOf" in prop:
        parts = [_type_text(p) for p in prop.get("anyOf", prop.get("oneOf", [])) if p.get("type") != "null"]
        return " | ".join(parts) + (" or null" if any(p.get("type") == "null" for p in prop.get("anyOf", [])) else "")
    kind = prop.get("type")
    if kind == "array":
        return f"list of {_type_text(prop.get('items', {}))}"
    if kind == "object":
        values = prop.get("additionalProperties")
        return f"map of {_type_text(values)}" if isinstance(values, dict) else "map"
    if isinstance(kind, list):
        return " | ".join(kind)
    return {"integer": "integer", "number": "number", "string": "string", "boolean": "boolean"}.get(str(kind), "any")


def _is_duration(prop: dict[str, Any]) -> bool:
    return any(b.get("pattern") == DURATION_PATTERN for b in prop.get("anyOf", []))


def _limits(prop: dict[str, Any]) -> str:
    target = prop
    if _is_duration(prop):
        target = next(b for b in prop["anyOf"] if b.get("type") == "number")
    out = []
    for key, sign in (("exclusiveMinimum", ">"), ("minimum", ">="), ("exclusiveMaximum", "<"), ("maximum", "<=")):
        if key in target and not (_is_duration(prop) and key == "minimum" and target[key] == 0):
            out.append(f"{sign} {target[key]:g}")
    if "minItems" in prop:
        out.append("not empty" if prop["minItems"] == 1 else f"at least {prop['minItems']} items")
    return ", ".join(out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def policy_reference_markdown() -> str:
    """One table per block of the policy file: field, type, default, meaning. Stable output."""
    schema = policy_json_schema()
    defs: dict[str, Any] = schema.get("$defs", {})
    order: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and _ref_name(ref) not in order:
                order.append(_ref_name(ref))
                visit(defs.get(_ref_name(ref), {}))
            for key, value in node.items():
                if key != "$defs":
                    visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit({k: v for k, v in schema.items() if k != "$defs"})
    lines: list[str] = []
    for title, block in [("Policy", schema), *((name, defs[name]) for name in order)]:
        lines += [f"### {title}", ""]
        if block.get("description"):
            lines += [_cell(block["description"]), ""]
        lines += ["| field | type | default | meaning |", "|---|---|---|---|"]
        required = set(block.get("required", []))
        for field, prop in block.get("properties", {}).items():
            if field in required:
                default = "required"
            elif "default" in prop:
                default = json.dumps(prop["default"], ensure_ascii=False)
            else:  # a default_factory: a block of defaults, or an empty map
                default = "{}" if prop.get("type") == "object" else "(block defaults)"
            limits = _limits(prop)
            meaning = prop.get("description", "") + (f" ({limits})" if limits else "")
            lines.append(f"| `{field}` | {_cell(_type_text(prop))} | {_cell(default)} | {_cell(meaning)} |")
        lines.append("")
    return "\n".join(lines)


def with_reference(document: str) -> str:
    """``document`` (Markdown) with the text between the reference markers replaced by the current
    reference. Raises ValueError when the markers are missing."""
    begin, end = document.find(REFERENCE_BEGIN), document.find(REFERENCE_END)
    if begin < 0 or end < begin:
        raise ValueError(f"the markers {REFERENCE_BEGIN} and {REFERENCE_END} are missing")
    head = document[: begin + len(REFERENCE_BEGIN)]
    return f"{head}\n\n{policy_reference_markdown()}\n{document[end:]}"
