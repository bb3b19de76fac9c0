"""Structured output and request parts that a text model cannot take: a clear 400, never a 500.

The schemathesis run (test_serve_fuzz.py) cannot reach inside free-form schema objects, so the
`response_format` and `tools[].function.parameters` schemas are fuzzed here with hypothesis:
valid, odd and broken JSON schemas, each answered with a 2xx or a 4xx in OpenAI's shape.
"""

import json

import pytest
from conftest import make_server
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "Describe the little fox as JSON."}]


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_gguf):
    with TestClient(make_server(tmp_path_factory.mktemp("structured"), tiny_gguf)) as c:
        yield c


def error_of(r, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["message"]
    return body["message"]


def test_unknown_schema_type_is_400_naming_it(api):
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}
    msg = error_of(api.post(CHAT, json={"model": "tiny", "messages": MSG, "response_format": fmt}), 400)
    assert "nonsense" in msg and "schema" in msg


def test_schema_that_parses_constrains_the_output(api):
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}}, "required": ["name"],
              "additionalProperties": False}  # fmt: skip
    fmt = {"type": "json_schema", "json_schema": {"name": "fox", "schema": schema}}
    r = api.post(CHAT, json={"model": "tiny", "messages": MSG, "response_format": fmt, "max_tokens": 40,
                             "temperature": 0})  # fmt: skip
    assert r.status_code == 200, r.text
    content = r.json()["choices"][0]
    if content["finish_reason"] == "stop":  # a complete object: valid against the schema
        obj = json.loads(content["message"]["content"])
        assert set(obj) == {"name"} and isinstance(obj["name"], str) and len(obj["name"]) <= 8


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ],
)
def test_non_text_part_to_a_text_model_is_400(api, part):
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}]
    msg = error_of(api.post(CHAT, json={"model": "tiny", "messages": messages, "max_tokens": 2}), 400)
    assert "'tiny'" in msg and part["type"] in msg
    assert api.post(CHAT, json={"model": "tiny", "messages": MSG, "max_tokens": 2}).status_code == 200


def test_text_parts_are_joined(api):
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "The capital of "}, {"type": "text", "text": "France is"}],
        }
    ]
    joined = [{"role": "user", "content": "The capital of France is"}]
    a = api.post(CHAT, json={"model": "tiny", "messages": messages, "max_tokens": 6, "temperature": 0}).json()
    b = api.post(CHAT, json={"model": "tiny", "messages": joined, "max_tokens": 6, "temperature": 0}).json()
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
    assert a["usage"]["prompt_tokens"] == b["usage"]["prompt_tokens"]


def test_body_that_is_not_utf8_keeps_openai_shape(api):
    r = api.post(CHAT, content=b'{"model": "tiny", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
                 headers={"content-type": "application/json"})  # fmt: skip
    assert "UTF-8" in error_of(r, 400)
    assert "detail" not in r.json()


def test_unknown_route_and_method_keep_openai_shape(api):
    error_of(api.get("/v1/nope"), 404)
    error_of(api.get(CHAT), 405)


NAMES = st.sampled_from(["a", "name", "x y", "数字", "$ref", "type"])
LEAF = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(
            st.sampled_from(
                ["object", "array", "string", "number", "integer", "boolean", "null", "nonsense", ""]
            ),
            st.lists(st.sampled_from(["string", "null", "integer", "bogus"]), max_size=3),
            st.integers(),
            st.none(),
        ),
        "enum": st.lists(st.one_of(st.integers(-3, 3), st.text(max_size=4), st.none()), max_size=4),
        "const": st.one_of(st.integers(), st.text(max_size=3)),
        "minLength": st.integers(-2, 4),
        "maxLength": st.integers(-1, 6),
        "minimum": st.one_of(st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False, width=16)),
        "pattern": st.sampled_from(["^a+$", "[", "\\d{2}", "(a|b)*", ""]),
        "format": st.sampled_from(["date", "date-time", "email", "uuid", "time", "bogus"]),
        "$ref": st.sampled_from(["#/$defs/x", "#/nope", "http://127.0.0.1:9/schema.json", "#"]),
        "minItems": st.integers(-1, 3),
        "maxItems": st.integers(-1, 3),
    },
)


def _nest(children):
    return st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["object", "array"]),
            "properties": st.dictionaries(NAMES, children, max_size=3),
            "required": st.lists(NAMES, max_size=3),
            "items": st.one_of(children, st.lists(children, max_size=2), st.booleans()),
            "anyOf": st.lists(children, max_size=2),
            "oneOf": st.lists(children, max_size=2),
            "allOf": st.lists(children, max_size=2),
            "additionalProperties": st.one_of(st.booleans(), children),
            "$defs": st.dictionaries(st.just("x"), children, max_size=1),
        },
    )


SCHEMAS = st.recursive(LEAF, _nest, max_leaves=6)
RELAXED = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@RELAXED
@given(schema=st.one_of(SCHEMAS, st.lists(st.integers(), max_size=2), st.text(max_size=5)))
def test_fuzzed_response_format_schemas_never_5xx(api, schema):
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    r = api.post(CHAT, json={"model": "tiny", "messages": MSG, "response_format": fmt, "max_tokens": 3})
    assert r.status_code < 500, (schema, r.text)
    if r.status_code >= 400:
        error_of(r, r.status_code)


@RELAXED
@given(params=st.one_of(SCHEMAS, st.none()))
def test_fuzzed_tool_parameter_schemas_never_5xx(api, params):
    tool = {"type": "function", "function": {"name": "lookup", "description": "look it up"}}
    if params is not None:
        tool["function"]["parameters"] = params
    r = api.post(CHAT, json={"model": "tiny", "messages": MSG, "tools": [tool], "max_tokens": 3})
    assert r.status_code < 500, (params, r.text)
    if r.status_code >= 400:
        error_of(r, r.status_code)
