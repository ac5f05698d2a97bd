"""Tool input schemas are self-contained JSON Schema 2020-12 that every MCP client reads (no $ref/$defs, no
generated titles, hints where a model would guess)."""

from __future__ import annotations

import json

import jsonschema
import pytest
from pydantic import BaseModel

from commhub_lib.mcp.schema import self_contained
from commhub_lib.mcp.tools import TOOLS
from commhub_lib.models import ALIAS_RE


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_every_tool_schema_is_valid_2020_12_and_self_contained(name: str) -> None:
    schema = TOOLS[name].descriptor()["inputSchema"]
    jsonschema.Draft202012Validator.check_schema(schema)  # the 2020-12 meta-schema
    text = json.dumps(schema)
    assert "$ref" not in text and "$defs" not in text
    assert schema["type"] == "object"

    def titles(node: object, path: str) -> list[str]:
        found = []
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "title" and not path.endswith("/properties"):
                    found.append(path)
                found += titles(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                found += titles(value, f"{path}/{i}")
        return found

    assert titles(schema, "") == []
    # Every example given is valid for its property.
    for prop in schema.get("properties", {}).values():
        for example in prop.get("examples", []):
            jsonschema.Draft202012Validator(prop).validate(example)


def test_nested_models_are_inlined_and_a_property_named_title_is_kept() -> None:
    class Inner(BaseModel):
        hostname: str

    class Outer(BaseModel):
        title: str | None = None
        node: Inner | str | None = None
        nodes: list[Inner] = []

    raw = Outer.model_json_schema()
    assert "$defs" in raw  # what pydantic gives
    clean = self_contained(raw)
    assert "title" in clean["properties"]  # a field called "title" is not a generated title
    assert clean["properties"]["node"]["anyOf"][0]["properties"]["hostname"] == {"type": "string"}
    assert clean["properties"]["nodes"]["items"]["required"] == ["hostname"]
    jsonschema.Draft202012Validator.check_schema(clean)
    jsonschema.validate({"node": {"hostname": "box"}, "nodes": [{"hostname": "a"}]}, clean)


def test_alias_fields_carry_the_alias_rule_and_examples() -> None:
    alias = TOOLS["report_status"].descriptor()["inputSchema"]["properties"]["alias"]
    to = TOOLS["send_task"].descriptor()["inputSchema"]["properties"]["to"]
    for prop in (alias, to):
        assert prop["pattern"] == ALIAS_RE.pattern and prop["examples"]
        validator = jsonschema.Draft202012Validator(prop)
        validator.validate("backend-dev")
        with pytest.raises(jsonschema.ValidationError):
            validator.validate("-bad alias")
