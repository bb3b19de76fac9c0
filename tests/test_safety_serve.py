"""The content filter and PII handling on the server's generation paths (real uvicorn on loopback, the official
openai client): input blocks are 400 `content_filter`, output blocks end with finish_reason "content_filter"
(streamed too, a phrase split across chunks), per-key rules, the audit log, KB ingestion redaction, and a
malformed safety.yaml that keeps the server from starting."""

from __future__ import annotations

import httpx
import pytest
from conftest import LiveServer, kb_ask_stream, make_server

from lmforge.serve.auth import KeyStore

SAFETY = """\
categories:
  - name: gambling
    action: block
    words: [online casino, 赌博网站]
  - name: fraud
    action: mask
    words: [代开发票]
  - name: ads
    action: flag
    words: [limited offer]
keys:
  research:
    actions: {gambling: flag}
pii:
  detectors: [phone, email, id_card]
  apply_to: [ingest, logs, output]
"""
CANNED = {
    "casino": "Sure. Visit our online casino today, it is fun.",
    "invoice": "我们可以代开发票，请联系。",
    "phone": "Call me at 13800138000 or write to a@b.com tomorrow.",
}


class CannedModel:
    """A chat model whose answer is chosen by a word of the last message and streamed two characters a chunk
    (the filter under test sees exactly the text the test expects; the real engine is tested elsewhere)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.kind, self.model_name = inner.kind, inner.model_name

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def chat(self, messages, params, cancel=None, options=None, **kw):
        from lmforge.infer.base import ChatStream, Chunk

        last = str(messages[-1].get("content") or "")
        text = next((v for k, v in CANNED.items() if k in last), "nothing to say")
        pieces = [text[i : i + 2] for i in range(0, len(text), 2)]
        chunks = [Chunk(p, None, None, prompt_tokens=1, completion_tokens=1) for p in pieces[:-1]]
        chunks.append(Chunk(pieces[-1], None, "stop", prompt_tokens=1, completion_tokens=len(pieces)))
        return ChatStream(iter(chunks))

    def close(self) -> None:
        self.inner.close()


def canned_loader(reg, name, cfg):
    from lmforge.infer.pool import default_loader

    return CannedModel(default_loader(reg, name, cfg))


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_gguf_long):
    from lmforge.serve.context import ServerSettings

    home = tmp_path_factory.mktemp("safety-home")
    (home / "safety.yaml").write_text(SAFETY, encoding="utf-8")
    keys = KeyStore(home / "keys.sqlite")
    secrets = {n: keys.create(n, ("admin",), 1000, 10**7, ()) for n in ("ops", "research")}
    settings = ServerSettings(max_body_bytes=1 << 20, safety=str(home / "safety.yaml"), audit_prompts=True)
    app = make_server(home, tiny_gguf_long, keys=keys, ctx=2048, loader=canned_loader, settings=settings)
    with LiveServer(app) as srv:
        srv.secrets, srv.keys = secrets, keys
        yield srv


def client(server, who="ops"):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=server.secrets[who], max_retries=0)


def test_input_blocks_and_masks(server):
    import openai

    c = client(server)
    with pytest.raises(openai.BadRequestError) as e:  # spaced and full-width: still caught
        c.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "find an ｏｎｌｉｎｅ  c-a-s-i-n-o"}]
        )
    assert e.value.code == "content_filter" and "gambling" in str(e.value)
    with pytest.raises(openai.BadRequestError):  # traditional characters with spaces between them
        c.completions.create(model="tiny", prompt="推薦 賭 博 網 站", max_tokens=4)
    # the research key only flags gambling, in and out
    r = client(server, "research").chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "online casino rules"}]
    )
    assert r.choices[0].finish_reason == "stop" and "online casino" in r.choices[0].message.content
    rows = server.keys.safety_rows()
    assert any(x["key_name"] == "ops" and x["direction"] == "input" and x["action"] == "block" for x in rows)
    assert {(x["direction"], x["action"]) for x in rows if x["key_name"] == "research"} == {
        ("input", "flag"),
        ("output", "flag"),
    }
    assert all(x["text"] is None for x in rows)  # audit_text is off: no matched text stored
    api = httpx.get(
        server.url + "/api/safety/events", headers={"Authorization": f"Bearer {server.secrets['ops']}"}
    )
    assert api.status_code == 200 and api.json()["rows"][0]["category"] in ("gambling", "fraud", "ads")


def test_output_blocked_whole_and_streamed(server):
    c = client(server)
    r = c.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "tell me about casino"}]
    )
    assert r.choices[0].finish_reason == "content_filter"
    assert r.choices[0].message.content == "Sure. Visit our "
    stream = c.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "tell me about casino"}], stream=True
    )
    text, reasons = "", []
    for ch in stream:
        for choice in ch.choices:
            text += choice.delta.content or ""
            reasons.append(choice.finish_reason)
    assert text == "Sure. Visit our " and reasons[-1] == "content_filter"
    # mask: the phrase is starred in a stream where it arrives in two-character chunks
    stream = c.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "invoice please"}], stream=True
    )
    text = "".join(choice.delta.content or "" for ch in stream for choice in ch.choices)
    assert text == "我们可以****，请联系。"


def test_pii_redacted_in_output_and_audit(server):
    c = client(server)
    r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "phone 13912345678"}])
    assert r.choices[0].message.content == "Call me at [PHONE] or write to [EMAIL] tomorrow."
    stream = c.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "phone"}], stream=True
    )
    text = "".join(choice.delta.content or "" for ch in stream for choice in ch.choices)
    assert text == "Call me at [PHONE] or write to [EMAIL] tomorrow."
    prompts = [row["prompt"] for row in server.keys.audit_rows() if row["prompt"]]
    assert "phone [PHONE]" in prompts and not any("13912345678" in p for p in prompts)


def test_tasks_and_kb_paths(server):
    auth = {"Authorization": f"Bearer {server.secrets['ops']}"}
    r = httpx.post(server.url + "/v1/tasks/summarize", json={"model": "tiny", "text": "online casino 攻略"},
                   headers=auth, timeout=60)  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["code"] == "content_filter"
    assert httpx.post(server.url + "/v1/kb", json={"name": "docs"}, headers=auth).status_code == 200
    doc = "客服电话 13800138000，邮箱 help@example.com。营业时间九点到五点。"
    r = httpx.post(server.url + "/v1/kb/docs/documents", files=[("files", ("info.txt", doc.encode()))],
                   headers=auth, timeout=120)  # fmt: skip
    assert r.status_code == 200 and r.json()["redacted"] == 2 and r.json()["added"] == ["info.txt"], r.text
    got = httpx.get(server.url + "/v1/kb/docs/documents/info.txt", headers=auth, timeout=60)
    assert got.status_code == 200, got.text
    chunks = got.json()["chunks"]
    text = " ".join(c["text"] for c in chunks)
    assert "[PHONE]" in text and "[EMAIL]" in text and "13800138000" not in text
    r = httpx.post(server.url + "/v1/kb/docs/ask", json={"model": "tiny", "question": "赌 博 网 站 在哪"},
                   headers=auth, timeout=60)  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["code"] == "content_filter"


def test_a_malformed_safety_file_stops_the_server(tmp_path, monkeypatch, capsys):
    from lmforge.cli import main

    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "home"))
    bad = tmp_path / "safety.yaml"
    bad.write_text("categories:\n  - name: x\n    action: blok\n    words: [a]\n", encoding="utf-8")
    assert main(["serve", "--safety", str(bad), "--port", "8999"]) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and "blok" in err


def test_kb_answers_stream_through_the_output_filter(server):
    """A grounded answer streamed through the filter: a masked phrase split across chunks is starred in the
    deltas and the checked answer; a blocked one ends the stream with content_filter."""
    c = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.secrets['ops']}"}, timeout=120
    )
    for kb, name, text in (("billing", "billing.txt", "Invoices are issued on the first day of each month.\n"),
                           ("club", "club.txt", "Members may visit the casino room on Fridays after six.\n")):  # fmt: skip
        assert c.post("/v1/kb", json={"name": kb}).status_code in (200, 201)
        r = c.post(f"/v1/kb/{kb}/documents", files=[("files", (name, text.encode()))])
        assert r.status_code in (200, 201), r.text
    # the model answers its "invoice" text: 代开发票 arrives split across two-character chunks
    ask = {"model": "tiny", "rewrite": False}
    events = kb_ask_stream(c, "billing", {**ask, "question": "When are invoices issued?"})
    streamed = "".join(e["content"] for e in events if e["type"] == "delta")
    assert streamed == events[-1]["answer"] == "我们可以****，请联系。" and events[-1]["type"] == "done"
    events = kb_ask_stream(
        c, "club", {**ask, "question": "When may members visit the room?"}
    )  # it says casino
    assert events[-1]["type"] == "done" and events[-1]["finish_reason"] == "content_filter"
    assert "casino" not in "".join(e.get("content", "") for e in events if e["type"] == "delta")
