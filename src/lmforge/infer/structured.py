"""Structured output: an OpenAI `response_format` turned into a GBNF grammar for llama.cpp.

The grammar constrains sampling, so the text always parses. The JSON-schema converter is
llama-cpp-python's own (`json_schema_to_gbnf`); it asserts on schemas it does not understand, so
every failure it can raise is turned into one LmforgeError that names the problem (HTTP 400),
and the schema is first checked against its JSON-Schema meta-schema (`jsonschema`), so a typo
such as `{"type": "nonsense"}` is reported as the schema's fault.
"""

from __future__ import annotations

import json
from typing import Any

from lmforge.errors import LmforgeError


def check_json_schema(schema: Any, problem: str) -> None:
    """LmforgeError "<problem> at <where>: <why>" unless `schema` is a valid JSON Schema (checked
    against its meta-schema)."""
    import jsonschema

    if not isinstance(schema, dict):
        raise LmforgeError(f"{problem}: it must be a JSON object")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        where = "/".join(str(x) for x in e.absolute_path) or "/"
        raise LmforgeError(f"{problem} at {where}: {e.message}") from e
    except (TypeError, ValueError, LookupError, RecursionError) as e:  # odd $schema dialects and the like
        raise LmforgeError(f"{problem}: {e}") from e


def schema_grammar(schema: dict[str, Any]) -> str:
    """GBNF for a JSON schema; LmforgeError (one line) if the schema is invalid or unsupported."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    check_json_schema(schema, "response_format schema is invalid")
    try:
        grammar = json_schema_to_gbnf(json.dumps(schema))
    except (AssertionError, ValueError, KeyError, TypeError, IndexError, AttributeError,
            NotImplementedError, RecursionError, json.JSONDecodeError) as e:  # fmt: skip
        detail = str(e) or type(e).__name__
        raise LmforgeError(f"response_format json_schema is not supported: {detail}") from e
    # llama-cpp-python's converter lets raw control characters into strings, which JSON forbids
    return grammar.replace('char ::= [^"\\\\] |', 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |')


def response_format_grammar(response_format: dict[str, Any] | None) -> str | None:
    """GBNF for an OpenAI response_format dict (None for text / absent)."""
    if not response_format:
        return None
    kind = response_format.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        from llama_cpp.llama_grammar import JSON_GBNF

        return JSON_GBNF
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema")
        if not schema:
            raise LmforgeError("response_format json_schema needs json_schema.schema")
        return schema_grammar(schema)
    raise LmforgeError(
        f"response_format type {kind!r} is not supported; use text, json_object or json_schema"
    )
