"""API keys: hashed storage, 401/403/429 in OpenAI's shape, revocation, audit, and the loopback rule."""

import sqlite3

import httpx
import pytest
from conftest import LiveServer, make_server
from openai import AuthenticationError, OpenAI, PermissionDeniedError, RateLimitError

from lmforge.errors import LmforgeError
from lmforge.serve.auth import KeyStore

OK = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "temperature": 0}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, tiny_gguf):
    home = tmp_path_factory.mktemp("keyed")
    keys = KeyStore(home / "keys.sqlite")
    secrets = {
        "alice": keys.create("alice", ("chat", "embed"), rpm=100, tpm=100000),
        "embedder": keys.create("embedder", ("embed",)),
        "slow": keys.create("slow", ("chat",), rpm=2),
        "gone": keys.create("gone", ("chat",)),
        "thrifty": keys.create("thrifty", ("chat",), rpm=1000, tpm=40),
    }
    keys.revoke("gone")
    with LiveServer(make_server(home, tiny_gguf, keys=keys)) as srv:
        yield srv, keys, secrets, home


def client(srv, key):
    return OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0)


def test_keys_are_stored_hashed(keyed):
    _, _, secrets, home = keyed
    dump = "\n".join(str(r) for r in sqlite3.connect(home / "keys.sqlite").execute("SELECT * FROM keys"))
    assert all(s not in dump for s in secrets.values())


def test_valid_key_works_and_is_audited_without_prompt(keyed):
    srv, keys, secrets, _ = keyed
    r = client(srv, secrets["alice"]).chat.completions.create(**OK)
    assert r.choices[0].message is not None
    row = next(r for r in keys.audit_rows() if r["key_name"] == "alice")
    assert row["route"] == "chat" and row["model"] == "tiny" and row["status"] == 200
    assert row["prompt_tokens"] > 0 and row["prompt"] is None


@pytest.mark.parametrize(
    "which, exc, code",
    [
        (None, AuthenticationError, "missing_api_key"),
        ("lmf-wrong", AuthenticationError, "invalid_api_key"),
        ("gone", AuthenticationError, "invalid_api_key"),
    ],
)
def test_missing_invalid_revoked(keyed, which, exc, code):
    srv, _, secrets, _ = keyed
    if which is None:
        r = httpx.post(srv.url + "/v1/chat/completions", json=OK)
        assert r.status_code == 401 and r.json()["error"]["code"] == code
        return
    key = secrets.get(which, which)
    with pytest.raises(exc) as e:
        client(srv, key).chat.completions.create(**OK)
    assert e.value.body["code"] == code


def test_scope_is_enforced(keyed):
    srv, _, secrets, _ = keyed
    with pytest.raises(PermissionDeniedError) as e:
        client(srv, secrets["embedder"]).chat.completions.create(**OK)
    assert "'chat' scope" in e.value.message


def test_rate_limit_429_with_retry_after(keyed):
    srv, _, secrets, _ = keyed
    c = client(srv, secrets["slow"])
    c.chat.completions.create(**OK)
    c.chat.completions.create(**OK)
    with pytest.raises(RateLimitError) as e:
        c.chat.completions.create(**OK)
    assert int(e.value.response.headers["retry-after"]) >= 1
    client(srv, secrets["alice"]).chat.completions.create(**OK)  # other keys are unaffected


def test_tokens_per_minute_429(keyed):
    """Requests run while the key's tokens of the last minute (prompt + completion, as reported in
    `usage`) are under its tpm; the next one is refused before it reaches the model."""
    srv, keys, secrets, _ = keyed
    c = client(srv, secrets["thrifty"])
    used, served = 0, 0
    while used < 40:
        used += c.chat.completions.create(**OK).usage.total_tokens
        served += 1
    assert served >= 2  # the limit is on tokens, not on one request
    with pytest.raises(RateLimitError) as e:
        c.chat.completions.create(**OK)
    assert e.value.body["code"] == "rate_limit_exceeded" and "thrifty" in e.value.message
    assert 1 <= int(e.value.response.headers["retry-after"]) <= 60
    assert [r["status"] for r in keys.audit_rows() if r["key_name"] == "thrifty"] == [200] * served
    client(srv, secrets["alice"]).chat.completions.create(**OK)  # other keys are unaffected


def test_documented_key_defaults(tmp_path):
    ks = KeyStore(tmp_path / "k.sqlite")
    ks.create("d")
    [key] = ks.list()
    assert (key.scopes, key.rpm, key.tpm, key.groups) == (("chat", "embed"), 60, 20000, ())  # docs/serve.md


def test_audit_prompts_stores_prompt_text_only_when_on(keyed, tmp_path, tiny_gguf):
    from lmforge.serve.app import ServerSettings

    secret_prompt = "Remember the zebra password 7731"
    msg = {**OK, "messages": [{"role": "user", "content": secret_prompt}]}
    # off (the default): counts and latency, never the text
    srv, keys, secrets, home = keyed
    client(srv, secrets["alice"]).chat.completions.create(**msg)
    client(srv, secrets["alice"]).completions.create(model="tiny", prompt=secret_prompt, max_tokens=2)
    dump = "\n".join(str(r) for r in sqlite3.connect(home / "keys.sqlite").execute("SELECT * FROM audit"))
    assert "zebra" not in dump and "chat" in dump and "completions" in dump
    # on (`lmforge serve --audit-prompts`): the last user message / the prompt is stored
    on_keys = KeyStore(tmp_path / "keys.sqlite")
    bob = on_keys.create("bob", ("chat",), rpm=100, tpm=100000)
    app = make_server(tmp_path / "home", tiny_gguf, keys=on_keys, settings=ServerSettings(audit_prompts=True))
    with LiveServer(app) as on:
        client(on, bob).chat.completions.create(**msg)
        client(on, bob).completions.create(model="tiny", prompt=secret_prompt + " (completion)", max_tokens=2)
    rows = {r["route"]: r for r in on_keys.audit_rows()}
    assert rows["chat"]["prompt"] == secret_prompt and rows["chat"]["key_name"] == "bob"
    assert rows["completions"]["prompt"] == secret_prompt + " (completion)"


def test_health_and_console_stay_open(keyed):
    srv, *_ = keyed
    assert httpx.get(srv.url + "/health").status_code == 200
    assert httpx.get(srv.url + "/v1/models").status_code == 401


def test_non_loopback_without_keys_refuses_to_start(tmp_path, tiny_gguf):
    with pytest.raises(LmforgeError, match="without API keys"):
        make_server(tmp_path / "home", tiny_gguf, host="0.0.0.0")


def test_keystore_errors(tmp_path):
    ks = KeyStore(tmp_path / "k.sqlite")
    ks.create("a")
    with pytest.raises(LmforgeError, match="already exists"):
        ks.create("a")
    with pytest.raises(LmforgeError, match="unknown scope"):
        ks.create("b", ("root",))
    with pytest.raises(LmforgeError, match="no active key"):
        ks.revoke("zzz")


def test_keys_cli(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "LMFORGE_HOME": str(tmp_path / "home")}

    def run(*a):
        return subprocess.run(
            [sys.executable, "-m", "lmforge", "keys", *a], capture_output=True, text=True, env=env
        )  # noqa: E731

    made = run("create", "--name", "ci", "--scopes", "chat,kb:read", "--groups", "hr,eng", "--rpm", "5")
    assert made.returncode == 0 and made.stdout.strip().startswith("lmf-")
    ls = run("ls")
    assert (
        "ci" in ls.stdout
        and "chat,kb:read" in ls.stdout
        and "hr,eng" in ls.stdout
        and made.stdout.strip() not in ls.stdout
    )
    assert run("revoke", "ci").returncode == 0 and "revoked" in run("ls").stdout
    bad = run("create", "--name", "x", "--scopes", "god")
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown scope")
