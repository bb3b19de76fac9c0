"""/v1/completions as evaluation harnesses use it: token-id prompts, echoed prompt log-probabilities
(first token null, correct text_offset), scoring without generating (max_tokens 0), and the bad
inputs around them. The numbers are checked against the backend's own scorer on the same ids."""

import httpx
import pytest
from openai import OpenAI

from lmforge.infer.llamacpp import LlamaCppBackend

URL = "/v1/completions"


@pytest.fixture(scope="module")
def client(live):
    return OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def reference(tiny_gguf):
    """The single-sequence llama.cpp scorer (logits for every position) on the same file."""
    b = LlamaCppBackend(tiny_gguf, model_name="ref", n_ctx=256, n_threads=2, logits_all=True)
    yield b
    b.close()


def post(live, body: dict) -> httpx.Response:
    return httpx.post(live.url + URL, json={"model": "tiny", **body}, timeout=120)


def test_token_id_prompts_score_like_the_backend(live, reference):
    ids = reference.tokenize("Once upon a time there was a little fox", add_special=False)
    r = post(live, {"prompt": ids, "max_tokens": 0, "echo": True, "logprobs": 1, "temperature": 0})
    assert r.status_code == 200, r.text
    c = r.json()["choices"][0]
    lp = c["logprobs"]
    assert c["text"] == reference.detokenize(ids) and c["finish_reason"] == "length"
    assert len(lp["tokens"]) == len(ids) and lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    want = reference.score(ids)  # log p(ids[i] | ids[:i]) from the other engine
    assert lp["token_logprobs"][1:] == pytest.approx(want, abs=1e-5)
    # top-1 alternative: its logprob is the maximum, so it is never below the chosen token's
    assert all(
        max(top.values()) >= t - 1e-6
        for top, t in zip(lp["top_logprobs"][1:], lp["token_logprobs"][1:], strict=True)
    )
    assert lp["text_offset"] == [len(reference.detokenize(ids[:k])) for k in range(len(ids))]
    assert r.json()["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 0, "total_tokens": len(ids)}


def test_list_of_token_lists_and_strings_in_one_request(live, reference):
    a = reference.tokenize("The little fox", add_special=False)
    b = reference.tokenize("The big river runs", add_special=False)
    r = post(live, {"prompt": [a, b], "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0}).json()
    assert [c["index"] for c in r["choices"]] == [0, 1]
    for c, ids in zip(r["choices"], (a, b), strict=True):
        # lm-evaluation-harness's rule: prompt tokens, then exactly one generated token
        assert len(c["logprobs"]["token_logprobs"]) == len(ids) + 1
        assert c["logprobs"]["token_logprobs"][1 : len(ids)] == pytest.approx(reference.score(ids), abs=1e-5)
        assert c["text"].startswith(reference.detokenize(ids))
    s = post(
        live, {"prompt": ["The little fox", "The big river runs"], "max_tokens": 3, "temperature": 0}
    ).json()
    assert len(s["choices"]) == 2 and all(c["text"] for c in s["choices"])


def test_echo_offsets_cover_prompt_and_answer(client):
    r = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=5, temperature=0, logprobs=2,
                                  echo=True)  # fmt: skip
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))]
    assert all(len(t) == 2 for t in lp.top_logprobs[1:])


def test_streamed_echo_sends_the_prompt_first(client):
    events = list(client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=4, temperature=0,
                                            echo=True, stream=True))  # fmt: skip
    text = "".join(e.choices[0].text for e in events if e.choices)
    assert events[0].choices[0].text == "Once upon a time"
    whole = client.completions.create(
        model="tiny", prompt="Once upon a time", max_tokens=4, temperature=0, echo=True
    )
    assert text == whole.choices[0].text


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"prompt": [1, 2, 999999], "max_tokens": 1}, "token id 999999"),
        ({"prompt": [[1, 2], [-5]], "max_tokens": 1}, "token id -5"),
        ({"prompt": [], "max_tokens": 1}, "non-empty"),
        ({"prompt": [[]], "max_tokens": 1}, "non-empty"),
        ({"prompt": "Once", "max_tokens": 0}, "echo"),
        ({"prompt": "Once", "max_tokens": -1}, "max_tokens"),
        ({"prompt": "Once", "logprobs": 21}, "logprobs"),
    ],
)
def test_bad_completion_requests(live, body, needle):
    r = post(live, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and needle in err["message"]
    assert post(live, {"prompt": "Once", "max_tokens": 2}).status_code == 200  # still serving


def test_an_answer_that_ends_at_once_still_lists_its_end_token(tmp_path, smollm2_registry):
    """lm-evaluation-harness reads `token_logprobs[ctxlen:-1]`: the one generated token must be listed
    even when it is the end-of-turn token (as OpenAI and vLLM do), or the last prompt token is lost.
    SmolLM2 (a real chat model) ends its answers with <|im_end|>; the tiny test model never does."""
    from conftest import LiveServer, make_server

    from lmforge.infer.chat import fit_messages, greedy_params

    gguf = smollm2_registry.model_path(smollm2_registry.get("smollm2-135m-instruct"))
    ref = LlamaCppBackend(gguf, n_ctx=2048, n_threads=2)
    try:
        ids = fit_messages(ref, [{"role": "user", "content": "Say hello."}], greedy_params(64)).ids
        chunks = list(ref.generate(ids, greedy_params(64)))
        assert chunks[-1].finish_reason == "stop"  # ended by the end-of-turn token
        ids += [c.token_id for c in chunks if c.token_id is not None]  # now its next token is <|im_end|>
        text = ref.detokenize(ids)
    finally:
        ref.close()
    with LiveServer(make_server(tmp_path / "home", gguf, ctx=2048)) as srv:
        r = httpx.post(srv.url + URL, timeout=120, json={"model": "tiny", "prompt": ids, "max_tokens": 1, "echo": True,
                                                         "logprobs": 1, "temperature": 0})  # fmt: skip
    c = r.json()["choices"][0]
    assert c["finish_reason"] == "stop" and c["text"] == text
    assert len(c["logprobs"]["token_logprobs"]) == len(ids) + 1 and c["logprobs"]["token_logprobs"][-1] < 0
