"""The server through the official openai SDK (sync, async, streaming) and LangChain, on loopback."""

import asyncio
import json

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

MSG = [{"role": "user", "content": "The capital of France is"}]


@pytest.fixture(scope="module")
def client(live):
    return OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)


def test_models_list(client):
    ids = {m.id for m in client.models.list().data}
    assert {"tiny", "tiny-embed"} <= ids


def test_chat_non_streaming(client):
    r = client.chat.completions.create(model="tiny", messages=MSG, temperature=0, max_tokens=12)
    c = r.choices[0]
    assert c.message.role == "assistant" and c.message.content
    assert c.finish_reason == ("length" if r.usage.completion_tokens == 12 else "stop")
    assert (
        r.usage.prompt_tokens > 0
        and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    )


def test_streaming_equals_non_streaming(client):
    full = (
        client.chat.completions.create(model="tiny", messages=MSG, temperature=0, max_tokens=16)
        .choices[0]
        .message.content
    )
    parts, usage, finish = [], None, None
    for ch in client.chat.completions.create(
        model="tiny",
        messages=MSG,
        temperature=0,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if ch.usage:
            usage = ch.usage
        for choice in ch.choices:
            parts.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(parts) == full and usage.completion_tokens > 0
    assert finish == ("length" if usage.completion_tokens == 16 else "stop")


def test_async_client_concurrent_requests(live):
    async def main():
        ac = AsyncOpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
        rs = await asyncio.gather(
            *[
                ac.chat.completions.create(model="tiny", messages=MSG, temperature=0, max_tokens=8)
                for _ in range(4)
            ]
        )
        stream = await ac.chat.completions.create(
            model="tiny", messages=MSG, temperature=0, max_tokens=8, stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        return [r.choices[0].message.content for r in rs], text

    outs, streamed = asyncio.run(main())
    assert len(set(outs)) == 1 and outs[0] and streamed == outs[0]  # batched decoding is still deterministic


def test_n_choices_and_seed_reproducible(client):
    kw = dict(model="tiny", messages=MSG, temperature=1.0, max_tokens=10, n=3, seed=5)
    a = client.chat.completions.create(**kw)
    b = client.chat.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1, 2]
    texts = [c.message.content for c in a.choices]
    assert texts == [c.message.content for c in b.choices]  # reproducible with the seed
    assert len(set(texts)) == 3, texts  # each choice samples its own stream (seed, seed+1, seed+2)
    # choice i is the single request with seed 5 + i: the same streams, not just any three
    one = client.chat.completions.create(**{**kw, "n": 1, "seed": 6}).choices[0].message.content
    assert one == texts[1]


def test_stop_sequence(client):
    full = (
        client.chat.completions.create(model="tiny", messages=MSG, temperature=0, max_tokens=16)
        .choices[0]
        .message.content
    )
    word = full.split()[0]
    r = client.chat.completions.create(model="tiny", messages=MSG, temperature=0, max_tokens=16, stop=[word])
    assert word not in r.choices[0].message.content and r.choices[0].finish_reason == "stop"


def test_json_schema_output_always_parses(client):
    def cities(max_length: int) -> list[str]:
        schema = {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": max_length}, "ok": {"type": "boolean"}},
            "required": ["city", "ok"],
            "additionalProperties": False,
        }
        out = []
        for seed in range(3):
            r = client.chat.completions.create(
                model="tiny", messages=MSG, temperature=0.8, seed=seed, max_tokens=64,
                response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
            )  # fmt: skip
            obj = json.loads(r.choices[0].message.content)
            assert list(obj) == ["city", "ok"] and type(obj["ok"]) is bool and type(obj["city"]) is str
            out.append(obj["city"])
        return out

    # given room, the model writes more than 3 characters (not checked against 12: the tiny model can
    # emit a broken UTF-8 sequence, which the grammar counts as fewer characters than Python does)
    assert max(len(c) for c in cities(12)) > 3
    assert all(len(c) <= 3 for c in cities(3))  # maxLength is enforced while sampling


def test_logprobs(client):
    r = client.chat.completions.create(
        model="tiny", messages=MSG, temperature=0, max_tokens=4, logprobs=True, top_logprobs=3
    )
    lp = r.choices[0].logprobs.content
    assert len(lp) == r.usage.completion_tokens and all(len(t.top_logprobs) == 3 for t in lp)
    assert all(
        t.logprob <= 0 and t.logprob == pytest.approx(t.top_logprobs[0].logprob) for t in lp
    )  # greedy picks the top


def test_completions_with_logprobs_and_echo(client):
    r = client.completions.create(
        model="tiny", prompt="Once upon a time", max_tokens=6, temperature=0, logprobs=2, echo=True
    )
    c = r.choices[0]
    # echo + logprobs: the prompt's tokens first (the first has no logprob, as OpenAI and vLLM), then the answer's
    assert c.text.startswith("Once upon a time")
    assert len(c.logprobs.tokens) == r.usage.prompt_tokens + r.usage.completion_tokens
    assert c.logprobs.token_logprobs[0] is None and c.logprobs.top_logprobs[0] is None
    assert all(lp is not None and lp <= 0 for lp in c.logprobs.token_logprobs[1:])
    assert "".join(c.logprobs.tokens) == c.text
    assert c.logprobs.text_offset == [
        len("".join(c.logprobs.tokens[:i])) for i in range(len(c.logprobs.tokens))
    ]
    s = "".join(
        ch.choices[0].text
        for ch in client.completions.create(
            model="tiny", prompt="Once upon a time", max_tokens=6, temperature=0, stream=True
        )
    )
    assert c.text == "Once upon a time" + s


def test_embeddings(client):
    r = client.embeddings.create(model="tiny-embed", input=["hello fox", "今天天气很好"])
    assert [d.index for d in r.data] == [0, 1] and len(r.data[0].embedding) == 32
    assert sum(x * x for x in r.data[0].embedding) == pytest.approx(1.0, rel=1e-4)


def test_tool_call_parsing_from_model_output():
    from lmforge.serve.service import parse_tool_calls

    content, calls = parse_tool_calls(
        'Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "巴黎"}}\n</tool_call>',
        {"get_weather"},
    )
    assert content == "Sure." and calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "巴黎"}
    assert parse_tool_calls(
        '```json\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n```', {"get_weather"}
    )[1]
    assert parse_tool_calls('{"name": "rm_rf", "arguments": {}}', {"get_weather"}) == (
        '{"name": "rm_rf", "arguments": {}}',
        [],
    )
    assert parse_tool_calls("<tool_call>{broken json</tool_call>", {"get_weather"})[1] == []


# A Qwen2.5-style template, shortened to fit the tiny model's 256 tokens (tools in a system block, calls as <tool_call> JSON, results as
# <tool_response>), so that every part of a tool round trip shows in the prompt.
TOOLS_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n<tools>{% for tool in tools %}{{ tool.function.name }}("
    "{{ tool.function.parameters.properties | list | join(', ') }}){% endfor %}</tools><|im_end|>\n{% endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant\n"
    "{% for call in message.tool_calls %}<tool_call>\n"
    '{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}\n'
    "</tool_call>{% endfor %}<|im_end|>\n"
    "{% elif message.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message.content }}\n"
    "</tool_response><|im_end|>\n"
    "{% else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tools_server(tmp_path_factory, tiny_qwen2_dir):
    """The tiny Qwen2 exported to GGUF with TOOLS_TEMPLATE as its chat template."""
    import shutil

    from conftest import LiveServer, make_server

    from lmforge.compress.export import ExportConfig, export_gguf
    from lmforge.home import Registry, register_local

    tmp = tmp_path_factory.mktemp("tools")
    hf = tmp / "hf"
    shutil.copytree(tiny_qwen2_dir, hf)
    (hf / "chat_template.jinja").write_text(TOOLS_TEMPLATE)
    reg = Registry(tmp / "build")
    register_local(reg, hf, "tools-hf")
    gguf = reg.model_path(export_gguf(reg, "tools-hf", ExportConfig(quant="f16", parity=False)))
    with LiveServer(make_server(tmp / "serve", gguf)) as srv:
        srv.gguf = gguf
        yield srv


def test_tools_round_trip_through_template(tools_server):
    """A tool call and its result sent back: the model sees exactly the template's rendering of the
    tool definitions, the call (arguments as an object) and the result, and answers from there."""
    from lmforge.data.chat_template import render
    from lmforge.infer.llamacpp import LlamaCppBackend

    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    msgs = MSG + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    client = OpenAI(base_url=tools_server.url + "/v1", api_key="unused", max_retries=0)
    r = client.chat.completions.create(model="tiny", messages=msgs, tools=tools, temperature=0, max_tokens=8)
    # what the template must have been given: the call's arguments parsed, the result as content
    expected = render(
        TOOLS_TEMPLATE,
        [MSG[0], {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
          "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
         {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
        tools=tools,
    )  # fmt: skip
    assert '"name": "get_weather", "arguments": {"city": "Paris"}}' in expected
    assert (
        "<tool_response>\nsunny\n</tool_response>" in expected
        and "<tools>get_weather(city)</tools>" in expected
    )
    local = LlamaCppBackend(tools_server.gguf, model_name="tools", n_ctx=256, n_threads=2)
    try:
        ids = local.tokenize(expected, add_special=False)
    finally:
        local.close()
    assert r.usage.prompt_tokens == len(ids)
    # the answer is the greedy continuation of exactly that prompt
    same = client.completions.create(model="tiny", prompt=ids, temperature=0, max_tokens=8)
    assert r.choices[0].message.content == same.choices[0].text
    assert r.choices[0].finish_reason == same.choices[0].finish_reason
    assert r.choices[0].message.tool_calls is None  # the tiny model writes no <tool_call> of its own


def test_langchain_chat_openai(live):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        base_url=live.url + "/v1", api_key="unused", model="tiny", temperature=0, max_tokens=8, max_retries=0
    )
    a = llm.invoke("The capital of France is").content
    b = "".join(c.content for c in llm.stream("The capital of France is"))
    assert a and a == b


def test_health_metrics_ps_and_models_page(live, client):
    client.chat.completions.create(model="tiny", messages=MSG, temperature=0, max_tokens=2)
    assert httpx.get(live.url + "/health").json()["status"] == "ok"
    metrics = httpx.get(live.url + "/metrics").text
    assert 'lmforge_requests_total{model="tiny",route="chat",status="200"}' in metrics
    assert "lmforge_request_latency_seconds_bucket" in metrics and "lmforge_queue_depth" in metrics
    ps = httpx.get(live.url + "/api/ps").json()
    assert ps["models"][0]["name"] == "tiny" and ps["models"][0]["backend"] == "llamacpp"
    models = httpx.get(live.url + "/api/models").json()["models"]
    assert any(m["name"] == "tiny" and m["lineage"][0]["name"] == "tiny" for m in models)
    assert "<html" in httpx.get(live.url + "/").text.lower()


def test_lmforge_ps_cli(live, client):
    import subprocess
    import sys

    client.chat.completions.create(model="tiny", messages=MSG, temperature=0, max_tokens=2)
    out = subprocess.run(
        [sys.executable, "-m", "lmforge", "ps", "--url", live.url], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "tiny" in out.stdout and "llamacpp" in out.stdout
    down = subprocess.run(
        [sys.executable, "-m", "lmforge", "ps", "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 2 and down.stderr.startswith("error: no lmforge server")
