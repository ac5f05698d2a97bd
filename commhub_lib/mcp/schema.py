"""Tool input schemas every MCP client can read: self-contained JSON Schema (2020-12).

pydantic emits `$defs`/`$ref` for nested models (Gemini CLI and some desktop clients reject them: "reference
to undefined schema") and a generated `title` on every field (noise for a model). This inlines the first and
drops the second, and adds a pattern and examples where a model would otherwise guess a format.
"""

from __future__ import annotations

import copy
from typing import Any

from ..models import ALIAS_RE, ALIAS_RULE

# Keywords whose value is one schema, a list of schemas, or a mapping of names to schemas (JSON Schema 2020-12).
ONE_SCHEMA = ("items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else",
              "unevaluatedItems", "unevaluatedProperties")
SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
SCHEMA_MAPS = ("properties", "patternProperties", "dependentSchemas")
MAX_DEPTH = 32  # a recursive model would otherwise inline for ever

ALIAS_HINT = {"pattern": ALIAS_RE.pattern, "examples": ["backend-dev", "claude.reviewer"]}
# Property name -> what to add when the generated schema has none of it.
HINTS: dict[str, dict[str, Any]] = {
    "alias": {**ALIAS_HINT, "description": f"your alias: {ALIAS_RULE}"},
    "to": ALIAS_HINT,
    "progress": {"examples": [40, "3/5 tests pass"]},  # the number only where the schema takes numbers
    "to_name": {"examples": ["backend-dev"]},
    "from_name": {"examples": ["backend-dev"]},
}


def self_contained(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of a pydantic JSON schema with every `$ref` inlined, no `$defs`, no generated titles, and hints."""
    schema = copy.deepcopy(schema)
    defs = schema.pop("$defs", {})
    clean = _walk(schema, defs, 0)
    for name, prop in clean.get("properties", {}).items():
        for key, value in HINTS.get(name, {}).items():
            if key == "description" and "description" in prop:
                continue
            if key == "examples":
                value = [v for v in value if _json_type(v) in _types(prop)]
            prop.setdefault(key, value)
    return clean


def _json_type(value: Any) -> str:
    return "string" if isinstance(value, str) else "integer" if isinstance(value, int) else "number"


def _types(schema: dict[str, Any]) -> set[str]:
    """The JSON types a (property) schema admits, looking through anyOf/oneOf; "number" admits integers."""
    found: set[str] = set()
    kind = schema.get("type")
    found.update([kind] if isinstance(kind, str) else kind or [])
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key, []):
            found |= _types(option)
    if "number" in found:
        found.add("integer")
    return found


def _walk(node: Any, defs: dict[str, Any], depth: int) -> Any:
    if not isinstance(node, dict):
        return node
    if depth > MAX_DEPTH:
        return {}  # accept anything below this depth rather than loop
    if "$ref" in node:
        name = str(node["$ref"]).rsplit("/", 1)[-1]
        target = _walk(defs.get(name, {}), defs, depth + 1)
        rest = {k: v for k, v in node.items() if k != "$ref"}
        node = {**target, **rest}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title":
            continue
        if key in ONE_SCHEMA:
            out[key] = _walk(value, defs, depth + 1)
        elif key in SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_walk(v, defs, depth + 1) for v in value]
        elif key in SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _walk(v, defs, depth + 1) for name, v in value.items()}
        else:
            out[key] = value
    return out
