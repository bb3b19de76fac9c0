"""Knowledge bases over HTTP (real uvicorn on loopback, multipart uploads) and through the CLI."""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import CiteModel, LiveServer, kb_ask_stream, make_server

from lmforge.cli import main
from lmforge.serve.auth import KeyStore

POEM = "# 唐诗\n\n## 登鹳雀楼 王之涣\n\n白日依山尽，黄河入海流。欲穷千里目，更上一层楼。\n"
SALARY = "Salary bands 2026: engineers earn between 90k and 140k. Managers earn between 120k and 180k.\n"
HANDBOOK = "The office opens at nine o'clock. Everyone gets twenty-five days of holiday per year.\n"
HIDDEN = ("Salary", "90k", "140k", "120k", "180k", "salary.txt")  # nothing of the hr document may reach staff


class EchoModel:
    """A chat model that answers with its whole prompt, so any text that reached the prompt shows
    up in the answer, the claims and the streamed deltas (the real engine underneath does the rest)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.kind, self.model_name = inner.kind, inner.model_name

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def chat(self, messages, params, cancel=None, options=None, **kw):
        from lmforge.infer.base import ChatStream, Chunk

        text = "\n".join(str(m.get("content") or "") for m in messages)
        return ChatStream(iter([Chunk(text, None, "stop", prompt_tokens=1, completion_tokens=1)]))

    def close(self) -> None:
        self.inner.close()


def echo_loader(reg, name, cfg):
    from lmforge.infer.pool import default_loader

    backend = default_loader(reg, name, cfg)
    return EchoModel(backend) if name == "echo" else CiteModel(backend) if name == "cite" else backend


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_gguf_long):
    home = tmp_path_factory.mktemp("kb-home")
    keys = KeyStore(home / "keys.sqlite")
    secrets = {
        "admin": keys.create("admin", ("admin",), 1000, 10**7, ()),
        "hr": keys.create("hr", ("kb:read", "kb:write", "chat"), 1000, 10**7, ("hr",)),
        "staff": keys.create("staff", ("kb:read", "chat"), 1000, 10**7, ("staff",)),
        "embed": keys.create("embed", ("embed",), 1000, 10**7, ()),
        # may write, but sees only the staff group: hr documents must look missing to it
        "writer": keys.create("writer", ("kb:read", "kb:write"), 1000, 10**7, ("staff",)),
    }
    app = make_server(
        home,
        tiny_gguf_long,
        keys=keys,
        ctx=2048,
        loader=echo_loader,
        extra_models=[(tiny_gguf_long, "echo"), (tiny_gguf_long, "cite")],
    )
    with LiveServer(app) as srv:
        srv.secrets = secrets
        srv.home = home
        yield srv


def _c(server, who: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.secrets[who]}"}, timeout=120
    )


def _upload(client, kb, files, groups=""):
    return client.post(f"/v1/kb/{kb}/documents", files=[("files", f) for f in files], data={"groups": groups})


def test_kb_lifecycle_acl_and_errors(server):
    admin, hr, staff = _c(server, "admin"), _c(server, "hr"), _c(server, "staff")
    assert admin.post("/v1/kb", json={"name": "company"}).status_code == 200
    assert admin.post("/v1/kb", json={"name": "company"}).status_code == 400  # exists
    r = _upload(hr, "company", [("salary.txt", SALARY.encode(), "text/plain")])  # tagged with hr's groups
    assert r.status_code == 200, r.text
    assert r.json()["added"] == ["salary.txt"]
    r = _upload(admin, "company", [("handbook.txt", HANDBOOK.encode()), ("poem.md", POEM.encode())])
    assert sorted(r.json()["added"]) == ["handbook.txt", "poem.md"]
    # a restricted writer cannot tag documents for groups it does not have
    assert _upload(hr, "company", [("x.txt", b"text")], groups="staff").status_code == 403
    # duplicate upload: unchanged, nothing re-indexed
    r = _upload(admin, "company", [("handbook.txt", HANDBOOK.encode())])
    assert r.json()["unchanged"] == ["handbook.txt"]
    # the hr document is invisible to staff everywhere: search, list, counts, passages, batch
    q = {"query": "engineers salary bands 140k", "k": 5}
    first = admin.post("/v1/kb/company/search", json=q).json()
    assert first["hits"][0]["document"] == "salary.txt"
    # this server has not pulled the English embedder: an English search says so (and how to pull it)
    assert first["notes"] == [n for n in first["notes"] if "lmforge pull all-minilm-l6-v2" in n] != []
    rules_off = {"cross_language": False, "names": False, "collapse_copies": False, "translate": False,
                 "second_opinion": False}  # fmt: skip
    off = admin.post("/v1/kb/company/search", json=q | rules_off).json()
    assert off["hits"][0]["document"] == "salary.txt" and "notes" not in off
    info = admin.get("/v1/kb/company").json()
    assert info["context"] == "title" and info["upgrade"] is None
    # a question in a language the KB does not hold is searched, and named
    r = admin.post("/v1/kb/company/search", json={"query": "Сколько зарабатывают инженеры?"}).json()
    assert r["hits"] and "the question is in Russian" in r["notes"][0]
    assert hr.post("/v1/kb/company/search", json=q).json()["hits"][0]["document"] == "salary.txt"
    for mode in ("hybrid", "dense", "lexical"):
        hits = staff.post("/v1/kb/company/search", json=q | {"mode": mode}).json()["hits"]
        assert all(h["document"] != "salary.txt" and "140k" not in h["text"] for h in hits)
    assert sorted(d["name"] for d in staff.get("/v1/kb/company/documents").json()["data"]) == [
        "handbook.txt",
        "poem.md",
    ]
    assert (
        staff.get("/v1/kb/company").json()["documents"] == 2
        and admin.get("/v1/kb/company").json()["documents"] == 3
    )
    # the KB list counts documents and chunks the caller can see, nothing more
    staff_docs = staff.get("/v1/kb/company/documents").json()["data"]
    admin_docs = admin.get("/v1/kb/company/documents").json()["data"]
    salary_chunks = next(d["chunks"] for d in admin_docs if d["name"] == "salary.txt")
    assert salary_chunks > 0
    listed = {k["name"]: k for k in staff.get("/v1/kb").json()["data"]}["company"]
    assert (listed["documents"], listed["chunks"]) == (2, sum(d["chunks"] for d in staff_docs))
    listed = {k["name"]: k for k in admin.get("/v1/kb").json()["data"]}["company"]
    assert (listed["documents"], listed["chunks"]) == (
        3,
        sum(d["chunks"] for d in staff_docs) + salary_chunks,
    )
    assert staff.get("/v1/kb/company").json()["chunks"] == sum(d["chunks"] for d in staff_docs)
    assert staff.get("/v1/kb/company/documents/salary.txt").status_code == 404
    assert (
        hr.get("/v1/kb/company/documents/salary.txt").json()["chunks"][0]["text"].startswith("Salary bands")
    )
    batch = staff.post("/v1/kb/search", json={"queries": ["salary 140k", "黄河"], "kbs": ["company"]}).json()
    assert all(h["document"] != "salary.txt" for h in batch["results"][0]["hits"])
    assert batch["results"][1]["hits"][0]["document"] == "poem.md"
    # scopes and keys
    assert _upload(staff, "company", [("y.txt", b"y")]).status_code == 403
    assert _c(server, "embed").post("/v1/kb/company/search", json=q).status_code == 403
    anon = httpx.post(f"{server.url}/v1/kb/company/search", json=q)
    assert anon.status_code == 401 and anon.json()["error"]["code"] == "missing_api_key"
    # bad input: traversal, unknown KB, unsupported type, corrupt file, bad params
    r = _upload(admin, "company", [("../../etc/passwd.txt", b"root:x:0:0")])
    assert r.status_code == 400 and "invalid document name" in r.json()["error"]["message"]
    assert admin.post("/v1/kb/nope/search", json=q).status_code == 404
    r = _upload(
        admin, "company", [("a.exe", b"MZ"), ("bad.pdf", b"%PDF-1.4 broken"), ("ok.txt", b"fine text here")]
    )
    body = r.json()
    assert body["added"] == ["ok.txt"] and {f["document"] for f in body["failed"]} == {"a.exe", "bad.pdf"}
    assert admin.post("/v1/kb/company/search", json={"query": "", "k": 5}).status_code == 400
    assert admin.post("/v1/kb/company/search", json={"query": "x", "k": 0}).status_code == 400
    assert (
        admin.post(
            "/v1/kb/company/search", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 400
    )
    # remove: gone from every index; version moves on; nobody removes what it cannot see
    assert staff.delete("/v1/kb/company/documents/handbook.txt").status_code == 403  # no kb:write
    writer = _c(server, "writer")  # kb:write, but not in the hr group
    hidden = writer.delete("/v1/kb/company/documents/salary.txt")
    missing = writer.delete("/v1/kb/company/documents/nothing.txt")
    assert hidden.status_code == missing.status_code == 404  # a hidden document looks missing
    assert hidden.json()["error"] == {
        **missing.json()["error"],
        "message": missing.json()["error"]["message"].replace("nothing.txt", "salary.txt"),
    }
    assert hr.get("/v1/kb/company/documents/salary.txt").status_code == 200  # still there
    # dropping a whole KB (hidden documents included) needs an unrestricted key
    for who in (writer, hr):
        r = who.delete("/v1/kb/company")
        assert r.status_code == 403 and "unrestricted" in r.json()["error"]["message"]
    assert "salary.txt" in {d["name"] for d in admin.get("/v1/kb/company/documents").json()["data"]}
    v = admin.delete("/v1/kb/company/documents/ok.txt").json()["version"]
    assert admin.get("/v1/kb/company").json()["version"] == v
    assert all(
        h["document"] != "ok.txt"
        for h in admin.post("/v1/kb/company/search", json={"query": "fine text"}).json()["hits"]
    )
    r = admin.post("/v1/kb/company/search", json=q | {"rerank": "tiny", "k": 2})  # LLM listwise rerank
    assert r.status_code == 200 and len(r.json()["hits"]) == 2, r.text
    assert admin.post("/v1/kb/company/search", json=q | {"rerank": "no-such-model"}).status_code == 404
    assert "/v1/kb/{name}/search" in httpx.get(f"{server.url}/openapi.json").json()["paths"]


def test_ask_with_sources_stream_and_not(server):
    admin, staff = _c(server, "admin"), _c(server, "staff")
    admin.post("/v1/kb", json={"name": "askme"})
    _upload(admin, "askme", [("handbook.txt", HANDBOOK.encode())])
    _upload(admin, "askme", [("salary.txt", SALARY.encode())], groups="hr")
    r = staff.post(
        "/v1/kb/askme/ask", json={"question": "When does the office open?", "model": "tiny", "max_tokens": 8}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sources"][0]["document"] == "handbook.txt" and "nine" in body["sources"][0]["snippet"]
    assert body["answerable"] and body["model"] == "tiny"
    assert body["rewrite"]["queries"][0] == "When does the office open?"  # rewritten by the answering model
    plain = staff.post("/v1/kb/askme/ask", json={"question": "When does the office open?", "model": "tiny",
                                                 "max_tokens": 8, "rewrite": False}).json()  # fmt: skip
    assert "rewrite" not in plain and plain["sources"][0]["document"] == "handbook.txt"
    # the restricted caller's question about the hidden document: no source reveals it
    r = staff.post(
        "/v1/kb/askme/ask", json={"question": "What do managers earn?", "model": "tiny", "max_tokens": 8}
    ).json()
    assert all(s["document"] != "salary.txt" for s in r["sources"])
    # nothing relevant: "don't know", no model call needed
    r = staff.post("/v1/kb/askme/ask", json={"question": "明朝的开国皇帝是谁？", "model": "tiny"}).json()
    assert r["answer"].startswith("我不知道") and r["sources"] == []
    # streaming: sources first, then deltas, then the checked answer
    events = kb_ask_stream(
        staff, "askme", {"question": "When does the office open?", "model": "tiny", "max_tokens": 8}
    )
    assert events[0]["type"] == "sources" and events[0]["sources"][0]["document"] == "handbook.txt"
    assert events[0]["rewrite"]["queries"][0] == "When does the office open?"
    after_retry = events[max(i for i, e in enumerate(events) if e["type"] in ("sources", "retry")) :]
    streamed = "".join(e["content"] for e in after_retry if e["type"] == "delta").strip()
    done = events[-1]
    assert done["type"] == "done"
    # the checked answer is what was streamed, or — when it does not address the question (the tiny model's
    # babble does not) — "I don't know" with the streamed text kept as off_topic_answer
    assert done["answer"] == streamed or (
        done["answer"].startswith("I don't know") and done["off_topic_answer"] == streamed
        and done["addresses_question"]["addresses"] is False
    )  # fmt: skip
    # both ways run the same greedy request: the same answer, checked the same way
    assert body["answer"] and body["answer"] == events[-1]["answer"]
    assert body["claims"] == events[-1]["claims"] and body["unsupported"] == events[-1]["unsupported"]
    # rewrite: the answering model writes the search queries (the echo model repeats its prompt), fused by RRF
    r = staff.post("/v1/kb/askme/ask", json={"question": "When does the office open?", "model": "echo",
                                             "max_tokens": 8, "rewrite": True}).json()  # fmt: skip
    assert r["rewrite"]["queries"][0] == "When does the office open?" and len(r["rewrite"]["queries"]) > 1
    assert r["sources"][0]["document"] == "handbook.txt"
    # an unknown model is named in a 404 once the model is needed (a relevant question)
    r = staff.post(
        "/v1/kb/askme/ask", json={"question": "When does the office open?", "model": "no-such-model"}
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert "no-such-model" in r.json()["error"]["message"]
    assert (
        _c(server, "embed").post("/v1/kb/askme/ask", json={"question": "x", "model": "tiny"}).status_code
        == 403
    )


def test_a_bare_citation_is_asked_again_over_http(server):
    """The model answers "[1]" alone: the server asks it once more for the answer itself. Streaming, the client
    sees the sources, a retry event, the second attempt's deltas and the checked answer."""
    admin, staff = _c(server, "admin"), _c(server, "staff")
    admin.post("/v1/kb", json={"name": "cites"})
    _upload(admin, "cites", [("handbook.txt", HANDBOOK.encode())])
    ask = {"question": "When does the office open?", "model": "cite", "rewrite": False}
    body = staff.post("/v1/kb/cites/ask", json=ask).json()
    assert body["answer"] == "The office opens at nine o'clock [1]." and body["claims"][0]["supported"]
    assert body["retried"] == {"reason": "citation only", "first_answer": "[1]"}
    events = kb_ask_stream(staff, "cites", ask)
    # the bare citation is held back, never sent: a client that only joins deltas shows the real answer alone
    assert [e["type"] for e in events[:2]] == ["sources", "retry"] and events[-1]["type"] == "done"
    assert {e["type"] for e in events[2:-1]} == {"delta"}  # "[", "1", "]" were never sent
    streamed = "".join(e["content"] for e in events[2:-1])
    assert events[1]["first_answer"] == "[1]" and streamed == events[-1]["answer"] == body["answer"]
    assert events[-1]["retried"] == body["retried"] and events[-1]["claims"] == body["claims"]
    kept = staff.post("/v1/kb/cites/ask", json={**ask, "retry": False}).json()
    assert kept["answer"] == "[1]" and "retried" not in kept and kept["addresses_question"]["bare_citation"]
    events = kb_ask_stream(staff, "cites", {**ask, "retry": False})
    assert "".join(e["content"] for e in events if e["type"] == "delta") == events[-1]["answer"] == "[1]"
    assert "retry" not in {e["type"] for e in events}


def test_ask_never_shows_hidden_text(server):
    """The echo model answers with its whole prompt: whatever retrieval let through would show in
    the answer, the claims and the streamed events. The admin sees the hr document there (the
    check can fail); staff never does."""
    admin, hr, staff = _c(server, "admin"), _c(server, "hr"), _c(server, "staff")
    admin.post("/v1/kb", json={"name": "acl-ask"})
    _upload(admin, "acl-ask", [("handbook.txt", HANDBOOK.encode())])
    _upload(admin, "acl-ask", [("salary.txt", SALARY.encode())], groups="hr")
    q = {"question": "When does the office open, and what do engineers and managers earn?", "model": "echo"}
    for who in (admin, hr):
        full = who.post("/v1/kb/acl-ask/ask", json=q).json()
        assert "140k" in full["answer"] and any("140k" in c["text"] for c in full["claims"]), full
        done = kb_ask_stream(who, "acl-ask", q)[-1]
        assert done["type"] == "done" and "140k" in done["answer"]
    r = staff.post("/v1/kb/acl-ask/ask", json=q)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answerable"] and "nine o'clock" in body["answer"] and q["question"] in body["answer"]
    assert body["claims"] and [s["document"] for s in body["sources"]] == ["handbook.txt"]
    dumped = json.dumps(body)
    assert not [h for h in HIDDEN if h in dumped], body
    events = kb_ask_stream(staff, "acl-ask", q)
    assert [e["type"] for e in events][0] == "sources" and events[-1]["type"] == "done"
    assert any(e["type"] == "delta" and "nine o'clock" in e["content"] for e in events)
    assert events[-1]["answer"] == body["answer"]
    dumped = json.dumps(events)
    assert not [h for h in HIDDEN if h in dumped], events


def test_admin_only_routes(server):
    """The audit log and the arena's DPO export are for admin keys only."""
    admin = _c(server, "admin")
    assert admin.get("/api/audit").status_code == 200 and "rows" in admin.get("/api/audit").json()
    r = admin.get("/api/arena/export")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    for who in ("hr", "staff", "writer", "embed"):
        for route in ("/api/audit", "/api/arena/export"):
            r = _c(server, who).get(route)
            assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error", (
                who,
                route,
                r.text,
            )
            assert "'admin' scope" in r.json()["error"]["message"]
    for route in ("/api/audit", "/api/arena/export"):
        assert httpx.get(server.url + route).status_code == 401


def test_kb_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "home"))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "poem.md").write_text(POEM, encoding="utf-8")
    (docs / "handbook.txt").write_text(HANDBOOK)
    assert main(["kb", "create", "k"]) == 0
    assert main(["kb", "add", "k", str(docs)]) == 0
    assert "2 added" in capsys.readouterr().out
    assert main(["kb", "search", "k", "黄河", "-k", "1"]) == 0
    assert "docs/poem.md" in capsys.readouterr().out
    assert main(["kb", "ls", "k"]) == 0 and "docs/handbook.txt" in capsys.readouterr().out
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "黄河流向哪里", "answer": "海", "doc": "poem.md", "evidence": "黄河入海流"}) + "\n"
                  + json.dumps({"question": "When does the office open?", "answer": "nine", "doc": "handbook.txt"}) + "\n")  # fmt: skip
    assert main(["kb", "eval", "k", "--qa", str(qa), "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "hybrid" in out and "1.000" in out
    assert main(["kb", "rm", "k", "docs/poem.md"]) == 0
    assert main(["kb", "rm", "k", "docs/poem.md"]) == 2
    assert "no document" in capsys.readouterr().err
    assert main(["kb", "add", "k", str(tmp_path / "missing")]) == 2
    assert main(["kb", "search", "nope", "x"]) == 2
    (tmp_path / "bad.jsonl").write_text('{"question": "q"}\n')
    assert main(["kb", "eval", "k", "--qa", str(tmp_path / "bad.jsonl")]) == 2
    assert "missing answer, doc" in capsys.readouterr().err
    assert main(["kb", "drop", "k"]) == 0 and main(["kb", "ls", "k"]) == 2


def test_cli_kb_add_a_renamed_copy_is_a_skipped_duplicate(tmp_path, monkeypatch, capsys):
    """Re-syncing a folder where a file was copied under a new name: skipped and reported, exit 0."""
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "home"))
    (tmp_path / "a.md").write_text(POEM, encoding="utf-8")
    (tmp_path / "b.md").write_text(POEM, encoding="utf-8")
    assert main(["kb", "create", "k"]) == 0
    assert main(["kb", "add", "k", str(tmp_path / "a.md")]) == 0
    capsys.readouterr()
    assert main(["kb", "add", "k", str(tmp_path / "b.md")]) == 0
    out = capsys.readouterr()
    assert "skipped b.md: duplicate of 'a.md'" in out.err and "1 duplicates skipped, 0 failed" in out.out
