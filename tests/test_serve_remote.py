"""Hybrid deployment: a model served by another OpenAI-compatible server, forwarded through ours."""

import os
import stat

import httpx
import pytest
from conftest import LiveServer, make_server
from openai import OpenAI

from lmforge.home import Registry, register_remote
from lmforge.infer.remote import CONFIG_FILE, KEY_FILE
from lmforge.serve.auth import KeyStore

MSG = [{"role": "user", "content": "The capital of France is"}]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, tiny_gguf):
    home = tmp_path_factory.mktemp("upstream")
    keys = KeyStore(home / "keys.sqlite")
    secret = keys.create("gateway", ("chat",), rpm=1000)
    with LiveServer(make_server(home, tiny_gguf, keys=keys)) as srv:
        yield srv, secret


def test_remote_model_forwards_chat_with_its_own_key(tmp_path, tiny_gguf, upstream):
    up, secret = upstream
    home = tmp_path / "gateway"
    app = make_server(home, tiny_gguf)
    old_umask = os.umask(0o022)  # a usual umask: without the chmod the key file would be 0644
    try:
        register_remote(Registry(home), "far-tiny", up.url + "/v1", "tiny", api_key=secret)
    finally:
        os.umask(old_umask)
    folder = home / "models" / "far-tiny"
    assert (
        secret not in (folder / "manifest.json").read_text()
        and secret not in (folder / CONFIG_FILE).read_text()
    )
    # the key lives in a 0600 file beside the manifest (docs/serve.md), readable by its owner only
    assert (folder / KEY_FILE).read_text() == secret
    assert stat.S_IMODE((folder / KEY_FILE).stat().st_mode) == 0o600
    with LiveServer(app) as gw:
        local = OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
        direct = OpenAI(base_url=up.url + "/v1", api_key=secret, max_retries=0)
        want = direct.chat.completions.create(model="tiny", messages=MSG, temperature=0, max_tokens=8)
        got = local.chat.completions.create(model="far-tiny", messages=MSG, temperature=0, max_tokens=8)
        assert got.choices[0].message.content == want.choices[0].message.content
        assert got.usage.prompt_tokens == want.usage.prompt_tokens
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in local.chat.completions.create(
                model="far-tiny", messages=MSG, temperature=0, max_tokens=8, stream=True
            )
            if c.choices
        )
        assert streamed == want.choices[0].message.content


def test_unreachable_or_unauthorised_upstream_is_502(tmp_path, tiny_gguf, upstream):
    up, _ = upstream
    home = tmp_path / "gateway"
    app = make_server(home, tiny_gguf)
    register_remote(Registry(home), "dead", "http://127.0.0.1:9/v1", "tiny")
    register_remote(Registry(home), "nokey", up.url + "/v1", "tiny", api_key="lmf-wrong")
    with LiveServer(app) as gw:
        for name in ("dead", "nokey"):
            r = httpx.post(
                gw.url + "/v1/chat/completions",
                json={"model": name, "messages": MSG, "max_tokens": 4},
                timeout=60,
            )
            assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error"
        assert (
            httpx.post(
                gw.url + "/v1/chat/completions",
                json={"model": "tiny", "messages": MSG, "max_tokens": 2},
                timeout=60,
            ).status_code
            == 200
        )
