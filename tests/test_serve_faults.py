"""Bad input and faults: every one gets an OpenAI-shaped error, and the server keeps serving."""

import json
import threading
import time

import httpx
import pytest
from conftest import LiveServer, Wrapped, make_server, slow_loader

CHAT = "/v1/chat/completions"
OK = {
    "model": "tiny",
    "messages": [{"role": "user", "content": "The capital of France is"}],
    "max_tokens": 4,
    "temperature": 0,
}


def err(resp, status: int, code: str | None = None) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["message"]
    if code:
        assert body["code"] == code, body
    return body["message"]


@pytest.mark.parametrize(
    "payload, status, code, needle",
    [
        ({**OK, "model": "nope"}, 404, "model_not_found", "unknown model 'nope'"),
        ({**OK, "messages": []}, 400, "invalid_value", "messages"),
        ({**OK, "max_tokens": -1}, 400, "invalid_value", "max_tokens"),
        ({**OK, "temperature": 3}, 400, "invalid_value", "temperature"),
        ({**OK, "temperature": "hot"}, 400, "invalid_value", "temperature"),
        ({**OK, "top_p": 0}, 400, "invalid_value", "top_p"),
        ({**OK, "n": 50}, 400, "invalid_value", "n"),
        ({**OK, "messages": [{"role": "wizard", "content": "x"}]}, 400, "invalid_value", "role"),
        ({"messages": OK["messages"]}, 400, "invalid_value", "model"),
        (
            {**OK, "messages": [{"role": "user", "content": "fox " * 2000}]},
            400,
            "context_length_exceeded",
            "truncate=true",
        ),
        (
            {**OK, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            400,
            None,
            "json_schema",
        ),
    ],
)
def test_bad_requests(live, payload, status, code, needle):
    assert needle in err(httpx.post(live.url + CHAT, json=payload, timeout=60), status, code)


def test_malformed_json_and_wrong_content_type(live):
    assert "JSON" in err(
        httpx.post(
            live.url + CHAT,
            content=b'{"model": "tiny", "messages": [',
            headers={"content-type": "application/json"},
        ),
        400,
    )
    err(httpx.post(live.url + CHAT, content=b"model=tiny"), 400)


def test_huge_body_is_413(live):
    big = {**OK, "messages": [{"role": "user", "content": "x" * (2 << 20)}]}
    err(httpx.post(live.url + CHAT, json=big, timeout=60), 413, "body_too_large")
    assert httpx.post(live.url + CHAT, json=OK, timeout=60).status_code == 200


def test_truncate_opt_in_reports_dropped_turns(live):
    history = []
    for i in range(10):
        history += [{"role": "user", "content": f"Question {i}: tell me about the little fox and the river."},
                    {"role": "assistant", "content": "The fox counted the boats every morning."}]  # fmt: skip
    payload = {
        **OK,
        "messages": [
            {"role": "system", "content": "Be brief."},
            *history,
            {"role": "user", "content": "And now?"},
        ],
    }
    err(httpx.post(live.url + CHAT, json=payload, timeout=60), 400, "context_length_exceeded")
    r = httpx.post(live.url + CHAT, json={**payload, "truncate": True}, timeout=60)
    assert r.status_code == 200
    info = r.json()["lmforge"]
    assert info["dropped_messages"] > 0 and "oldest message(s)" in info["notice"]


def test_client_disconnect_mid_stream_frees_the_slot(live):
    with (
        httpx.Client(timeout=60) as c,
        c.stream("POST", live.url + CHAT, json={**OK, "max_tokens": 200, "stream": True}) as r,
    ):
        lines = r.iter_lines()
        got = [next(lines) for _ in range(4)]
        assert any(g.startswith("data: ") for g in got)
    deadline = time.time() + 10
    while time.time() < deadline:
        ps = httpx.get(live.url + "/api/ps").json()
        if all((m["active_sequences"] or 0) == 0 for m in ps["models"]) and not any(ps["queue"].values()):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"slot not freed after disconnect: {ps}")
    assert httpx.post(live.url + CHAT, json=OK, timeout=60).status_code == 200


def test_queue_full_gets_429_with_retry_after(tmp_path, tiny_gguf):
    app = make_server(tmp_path / "home", tiny_gguf, slots=1, max_queue=0, loader=slow_loader(0.5))
    with LiveServer(app) as srv, httpx.Client(timeout=60) as c:
        with c.stream("POST", srv.url + CHAT, json={**OK, "max_tokens": 200, "stream": True}) as r:
            lines = r.iter_lines()  # keep the iterator: dropping it closes the response
            next(lines)  # the first request now holds the only slot
            busy = c.post(srv.url + CHAT, json=OK)
            err(busy, 429, "queue_full")
            assert int(busy.headers["retry-after"]) > 0
        time.sleep(0.5)
        assert c.post(srv.url + CHAT, json=OK).status_code == 200


def test_request_timeout(tmp_path, tiny_gguf):
    """A backend that takes 1 s per token against a 0.2 s limit: the deadline always passes before
    the first token, so the request is cancelled and answered 504, whatever the machine's speed."""
    app = make_server(tmp_path / "home", tiny_gguf, timeout_s=0.2, loader=slow_loader(1.0))
    with LiveServer(app) as srv:
        for _ in range(2):  # and again: the server keeps serving
            r = httpx.post(srv.url + CHAT, json=OK, timeout=60)
            assert "time limit" in err(r, 504, "timeout")
        ps = httpx.get(srv.url + "/api/ps").json()  # the timed-out requests gave their slots back
        assert all((m["active_sequences"] or 0) == 0 for m in ps["models"]) and not any(ps["queue"].values())


def test_default_body_limit_is_8_mib(tmp_path, tiny_gguf):
    """The documented 8 MiB at its real value (make_server uses 1 MiB): a body of exactly 8 MiB is
    served, one byte more is 413, declared or streamed without a content-length."""
    from lmforge.serve.app import ServerSettings

    settings = ServerSettings()
    assert settings.max_body_bytes == 8 * 2**20
    app = make_server(tmp_path / "home", tiny_gguf, settings=settings)

    def body(size: int) -> bytes:
        head = json.dumps({**OK, "max_tokens": 1, "user": ""}).encode()
        return head.replace(b'"user": ""', b'"user": "' + b"u" * (size - len(head)) + b'"')

    with LiveServer(app) as srv, httpx.Client(timeout=120) as c:
        h = {"content-type": "application/json"}
        exact = body(8 * 2**20)
        assert len(exact) == 8 * 2**20
        assert c.post(srv.url + CHAT, content=exact, headers=h).status_code == 200
        over = body(8 * 2**20 + 1)
        assert "exceeds 8388608 bytes" in err(
            c.post(srv.url + CHAT, content=over, headers=h), 413, "body_too_large"
        )
        chunks = (over[i : i + 2**20] for i in range(0, len(over), 2**20))  # chunked: no content-length
        err(c.post(srv.url + CHAT, content=chunks, headers=h), 413, "body_too_large")
        assert c.post(srv.url + CHAT, json=OK).status_code == 200


def test_backend_crash_is_500_then_model_reloads(tmp_path, tiny_gguf):
    from lmforge.infer.pool import default_loader

    loads = []

    def loader(reg, name, cfg):
        loads.append(name)
        return Wrapped(default_loader(reg, name, cfg), crash=len(loads) == 1)

    app = make_server(tmp_path / "home", tiny_gguf, loader=loader)
    with LiveServer(app) as srv:
        r = httpx.post(srv.url + CHAT, json={**OK, "max_tokens": 8}, timeout=60)
        assert "simulated engine crash" in err(r, 500, "engine_failure")
        streamed = httpx.post(srv.url + CHAT, json={**OK, "stream": True}, timeout=60)
        assert streamed.status_code == 200 and "data: [DONE]" in streamed.text
        r2 = httpx.post(srv.url + CHAT, json=OK, timeout=60)
        assert r2.status_code == 200 and len(loads) == 2


def test_concurrent_streams_all_complete(live):
    results = []

    def one(i):
        r = httpx.post(
            live.url + CHAT,
            json={**OK, "max_tokens": 12, "stream": True, "seed": i, "temperature": 0.9},
            timeout=120,
        )
        results.append((r.status_code, r.text.count("data: "), r.text.rstrip().endswith("data: [DONE]")))

    ts = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert len(results) == 6 and all(s == 200 and done for s, _, done in results)
