"""A remote model works everywhere a local one does: `chat`, `generate`, `kb ask`, `eval` (generation
suites) from the CLI, and chat/completions through our server. The remote is a second lmforge
server on loopback; what it cannot do (token ids, log-likelihoods) fails with one clear line."""

import io
import json

import httpx
import pytest
from conftest import LiveServer, make_server

from lmforge.cli import main
from lmforge.home import Registry, register_remote
from lmforge.infer.base import CapabilityError
from lmforge.infer.chat import greedy_text
from lmforge.infer.loader import load_backend

MSG = [{"role": "user", "content": "The capital of France is"}]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, tiny_gguf_long):
    # a 2048-token context: grounded answers carry their sources in the prompt
    with LiveServer(make_server(tmp_path_factory.mktemp("upstream"), tiny_gguf_long, ctx=2048)) as srv:
        yield srv


@pytest.fixture()
def home(tmp_path, monkeypatch, upstream):
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "home"))
    reg = Registry(tmp_path / "home")
    register_remote(reg, "far", upstream.url + "/v1", "tiny", context_length=2048)
    return reg


def upstream_greedy(upstream, messages, n: int) -> str:
    r = httpx.post(upstream.url + "/v1/chat/completions", timeout=60,
                   json={"model": "tiny", "messages": messages, "max_tokens": n, "temperature": 0, "seed": 0})  # fmt: skip
    return r.json()["choices"][0]["message"]["content"]


def test_backend_is_honest_about_what_it_can_do(home):
    b = load_backend(home, "far")
    assert b.capabilities.chat and not b.capabilities.tokens and not b.capabilities.score
    for call in (lambda: b.tokenize("x"), lambda: b.generate([1, 2], None), lambda: b.score([1, 2])):
        with pytest.raises(CapabilityError, match="remote model 'far'"):
            call()
    assert greedy_text(b, MSG, 8) != ""


def test_cli_generate_and_chat_on_a_remote_model(home, upstream, capsys, monkeypatch):
    want = upstream_greedy(upstream, MSG, 8)
    assert main(["generate", "far", MSG[0]["content"], "--temperature", "0", "--seed", "0", "-n", "8"]) == 0
    assert capsys.readouterr().out.strip() == want.strip()
    monkeypatch.setattr("sys.stdin", io.StringIO("The capital of France is\n/exit\n"))
    assert main(["chat", "far", "--temperature", "0", "--seed", "0", "-n", "8"]) == 0
    assert want.strip() in capsys.readouterr().out
    assert main(["generate", "far", "x", "--raw"]) == 2
    assert "cannot work on token ids" in capsys.readouterr().err


def test_cli_eval_generation_suite_on_a_remote_model(home, tmp_path, capsys):
    data = tmp_path / "s.jsonl"
    data.write_text(
        "".join(json.dumps({"q": q, "reference": "Paris"}) + "\n" for q in ("The capital of France is",))
    )
    (tmp_path / "s.yaml").write_text(
        "name: s\ntask: generation\nlang: en\ndata: s.jsonl\nprompt: '{q}'\nmetrics: [exact_match, f1]\n"
    )
    assert main(["eval", "far", "--suite", str(tmp_path / "s.yaml"), "--max-tokens", "8"]) == 0
    stored = home.get("far").metrics["eval:s"]
    assert stored["n"] == 1 and set(stored["metrics"]) == {"exact_match", "f1"}
    capsys.readouterr()
    assert main(["generate", "far", "x", "--raw"]) == 2  # token ids stay upstream
    assert "cannot work on token ids" in capsys.readouterr().err


def test_cli_eval_loglikelihood_suites_through_the_upstream(home, tmp_path, tiny_gguf_long, capsys):
    """Multiple choice and perplexity on a remote model: scored by the upstream's completions API
    (echo + logprobs), the same numbers as the same file evaluated here."""
    from lmforge.home import register_local

    rows = [{"question": q, "choices": c, "answer": 0} for q, c in (
        ("The little fox counted the", ["boats", "stars"]), ("Once upon a time there was a", ["little fox", "big river"]),
        ("The river ran past the", ["old mill", "new moon"]))]  # fmt: skip
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "mc.yaml").write_text(
        "name: mc\ntask: multiple_choice\ndata: mc.jsonl\nprompt: '{question}'\n"
    )
    register_local(home, tiny_gguf_long, "near")  # the upstream's file, here
    for model in ("far", "near"):
        assert main(["eval", model, "--suite", str(tmp_path / "mc.yaml")]) == 0
    far = [
        json.loads(x)["loglik"] for x in (home.root / "eval" / "far" / "mc.jsonl").read_text().splitlines()
    ]
    near = [
        json.loads(x)["loglik"] for x in (home.root / "eval" / "near" / "mc.jsonl").read_text().splitlines()
    ]
    assert [x for row in far for x in row] == pytest.approx([x for row in near for x in row], abs=1e-4)
    assert home.get("far").metrics["eval:mc"]["metrics"] == home.get("near").metrics["eval:mc"]["metrics"]
    (tmp_path / "ppl.jsonl").write_text(
        json.dumps({"text": "The little fox counted the boats by the river."}) + "\n"
    )
    (tmp_path / "ppl.yaml").write_text("name: ppl\ntask: perplexity\ndata: ppl.jsonl\n")
    assert main(["eval", "far", "--suite", str(tmp_path / "ppl.yaml")]) == 0
    ppl = home.get("far").metrics["eval:ppl"]
    n_tokens = len(
        load_backend(home, "near").tokenize(
            "The little fox counted the boats by the river.", add_special=False
        )
    )
    assert ppl["config"]["tokens"] == n_tokens - 1 and 1 < ppl["metrics"]["perplexity"] < 1e4
    # an upstream that refuses (here: it has no such model) is named in one line
    register_remote(home, "lost", home.get("far").config["base_url"], "no-such-model", context_length=2048)
    capsys.readouterr()
    assert main(["eval", "lost", "--suite", str(tmp_path / "mc.yaml")]) == 2
    err = capsys.readouterr().err
    assert "cannot score log-likelihoods" in err and "no-such-model" in err


def test_cli_kb_ask_with_a_remote_model(home, tmp_path, capsys):
    doc = tmp_path / "office.txt"
    doc.write_text("The office opens at nine in the morning and closes at five.\n", encoding="utf-8")
    assert main(["kb", "create", "notes"]) == 0
    assert main(["kb", "add", "notes", str(doc)]) == 0
    capsys.readouterr()
    assert main(["kb", "ask", "notes", "When does the office open?", "-m", "far", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "far" and out["answerable"] and out["sources"][0]["document"] == "office.txt"
    assert out["answer"]  # the upstream's greedy answer, checked against the sources


def test_server_forwards_completions_and_upstream_refusals(home, upstream, tiny_gguf):
    app = make_server(home.root, tiny_gguf)
    with LiveServer(app) as gw:
        body = {"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0}
        direct = httpx.post(
            upstream.url + "/v1/completions", json={"model": "tiny", **body}, timeout=60
        ).json()
        via = httpx.post(gw.url + "/v1/completions", json={"model": "far", **body}, timeout=60).json()
        assert via["model"] == "far" and via["choices"][0]["text"] == direct["choices"][0]["text"]
        # our sampling extensions travel to the upstream too (the OpenAI SDK does not know them)
        body = {**body, "top_k": 1, "repetition_penalty": 1.3}
        direct = httpx.post(
            upstream.url + "/v1/completions", json={"model": "tiny", **body}, timeout=60
        ).json()
        via = httpx.post(gw.url + "/v1/completions", json={"model": "far", **body}, timeout=60).json()
        assert via["choices"][0]["text"] == direct["choices"][0]["text"]
        scored = httpx.post(gw.url + "/v1/completions", timeout=60, json={
            "model": "far", "prompt": "Once upon a time", "max_tokens": 0, "echo": True, "logprobs": 1})  # fmt: skip
        assert (
            scored.status_code == 200 and scored.json()["choices"][0]["logprobs"]["token_logprobs"][0] is None
        )
        # the upstream refuses (its logprobs limit is 20 but ours is too: use a token id it does not have)
        refused = httpx.post(gw.url + "/v1/completions", timeout=60,
                             json={"model": "far", "prompt": [1, 10**8], "max_tokens": 1})  # fmt: skip
        assert refused.status_code == 400 and "upstream rejected" in refused.json()["error"]["message"]
        streamed = httpx.post(gw.url + "/v1/chat/completions", timeout=60,
                              json={"model": "far", "messages": MSG, "max_tokens": 8, "temperature": 0, "seed": 0})  # fmt: skip
        assert streamed.json()["choices"][0]["message"]["content"] == upstream_greedy(upstream, MSG, 8)
