"""The OpenAPI schema made exact: what it calls valid, the server accepts, and the reverse.

Pydantic writes the request models' field types; the rules that span fields (exactly one of
``text``/``texts``) and the limits that come from ``Settings`` (``max_text_chars``,
``max_texts_per_request``, ``max_explain_texts``) are added here, once, when the schema is built.
A client generated from the schema, or a fuzzer (tests/reliability/test_fuzz.py), then never
sends a request the schema promises and the server refuses with a 422 for its shape.

What JSON Schema cannot say stays a documented refusal: names that must exist at run time (a
model, a policy, a route's models: 404/422), the token count of a text (413 with truncate=false or
past max_windows_per_text), and the V2 tensor's ``shape[0]`` equal to its element count.
"""

from __future__ import annotations

import copy
from typing import Any

from kdserve.serve.config import Settings


def _nonblank() -> str:
    """A pattern for "at least one character that ``str.strip`` keeps". Spelt out, not ``\\S``:
    Python's whitespace includes U+001C..U+001F and U+0085, which other regex engines' ``\\s``
    (ECMAScript's, the fuzzer's) do not, and ECMAScript's includes U+FEFF, which Python's does not."""
    spaces = [c for c in map(chr, range(0x110000)) if c.isspace()]
    return "[^" + "".join(f"\\u{ord(c):04x}" for c in spaces) + "]"


#: a text the server reads (kdserve.serve.service.Service.validate_texts: not empty or whitespace-only)
NONBLANK = _nonblank()


def text_schema(settings: Settings) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": settings.max_text_chars, "pattern": NONBLANK}


def texts_schema(settings: Settings) -> dict[str, Any]:
    return {"type": "array", "items": text_schema(settings), "minItems": 1, "maxItems": settings.max_texts_per_request}


def _classify(schema: dict[str, Any], settings: Settings) -> None:
    props = schema["properties"]
    props["text"]["anyOf"] = [text_schema(settings), {"type": "null"}]
    props["texts"]["anyOf"] = [texts_schema(settings), {"type": "null"}]
    # exactly one of text (a string) and texts (a list); null counts as absent, as the model reads it
    schema["oneOf"] = [
        {"required": ["text"], "properties": {"text": {"type": "string"}}},
        {"required": ["texts"], "properties": {"texts": {"type": "array"}}},
    ]
    schema["allOf"] = [
        # at most one of top_k (a number) and all_scores: true
        {
            "not": {
                "required": ["top_k", "all_scores"],
                "properties": {"top_k": {"type": "integer"}, "all_scores": {"const": True}},
            }
        },
        # explain reads at most max_explain_texts texts
        {
            "not": {
                "required": ["explain", "texts"],
                "properties": {
                    "explain": {"const": True},
                    "texts": {"type": "array", "minItems": settings.max_explain_texts + 1},
                },
            }
        },
    ]


def _one_or_many(schema: dict[str, Any], field: str, settings: Settings) -> None:
    schema["properties"][field]["anyOf"] = [text_schema(settings), texts_schema(settings)]


def v2_request_schema(settings: Settings) -> dict[str, Any]:
    """The JSON form of a V2 inference request as ``kdserve.serve.protocols.parse_v2`` accepts it:
    one BYTES input ``text`` of shape [N] or [N, 1] with its N strings in ``data``. (The binary
    extension is not JSON and is not described here.)"""
    boolean_flag = {"type": "object", "properties": {"binary_data": {"type": "boolean"}}}
    texts = texts_schema(settings)
    count = {"type": "integer", "minimum": 1, "maximum": settings.max_texts_per_request}
    tensor = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"const": "text"},
            "shape": {"type": "array", "minItems": 1, "maxItems": 2, "prefixItems": [count, {"const": 1}]},
            "datatype": {"const": "BYTES"},
            # binary_data_size says the data follows the JSON header: not a JSON body
            "parameters": {"anyOf": [{"type": "object", "not": {"required": ["binary_data_size"]}}, {"type": "null"}]},
            # [N] strings, or [N, 1] as N lists of one string
            "data": {
                "anyOf": [
                    texts,
                    {"type": "array", "items": {**texts, "minItems": 1, "maxItems": 1}, **_counts(settings)},
                ]
            },
        },
    }
    output = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {"enum": ["probabilities", "label"]},
            "parameters": {"anyOf": [boolean_flag, {"type": "null"}]},
        },
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["inputs"],
        "properties": {
            "id": {"anyOf": [{"type": "string", "maxLength": 128}, {"type": "null"}]},
            "parameters": {
                "anyOf": [
                    {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
                    {"type": "null"},
                ]
            },
            "inputs": {"type": "array", "items": tensor, "minItems": 1, "maxItems": 1},
            "outputs": {"anyOf": [{"type": "array", "items": output}, {"type": "null"}]},
        },
    }


def _counts(settings: Settings) -> dict[str, int]:
    return {"minItems": 1, "maxItems": settings.max_texts_per_request}


def refine(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A copy of FastAPI's OpenAPI ``schema`` with the cross-field rules and the settings' limits."""
    schema = copy.deepcopy(schema)
    components = schema.get("components", {}).get("schemas", {})
    if "ClassifyRequest" in components:
        _classify(components["ClassifyRequest"], settings)
    if "HFRequest" in components:
        _one_or_many(components["HFRequest"], "inputs", settings)
    if "ModerationRequest" in components:
        _one_or_many(components["ModerationRequest"], "input", settings)
    return schema
