"""vLLM backend: launch and supervise `vllm serve` for a registered HF checkpoint, route requests to it.

For GPU hosts and models that outgrow one CPU: vLLM brings paged attention, continuous batching
and tensor/pipeline parallelism (`--tensor-parallel-size`). lmforge starts it as a child process
on a free loopback port, waits for its /health, forwards chat and embeddings through the
OpenAI-compatible remote backend, reports it dead if the process exits (the model pool then
reloads it on the next request), and stops it with the model. vLLM itself is not a dependency:
install it on the GPU host (`pip install vllm`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.infer.base import DEFAULT_CTX, Capabilities, ChatOptions, ChatStream, Chunk
from lmforge.infer.remote import OpenAIRemoteBackend
from lmforge.infer.sampling import SamplingParams


@dataclass
class VllmConfig:
    tensor_parallel_size: int = 1
    """GPUs to shard each layer across (vLLM --tensor-parallel-size)."""
    pipeline_parallel_size: int = 1
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    extra_args: list[str] = field(default_factory=list)
    """More `vllm serve` flags, passed through."""
    startup_timeout_s: float = 900.0
    command: list[str] | None = None
    """Override the launcher (tests use a stand-in); `{port}`, `{model}`, `{name}` are filled in."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VllmBackend:
    kind = "vllm"
    active = 0

    def __init__(self, model_dir: Path, *, model_name: str, cfg: VllmConfig | None = None) -> None:
        import httpx

        cfg = cfg or VllmConfig()
        self.model_name = model_name
        self.port = _free_port()
        if cfg.command:
            cmd = [a.format(port=self.port, model=model_dir, name=model_name) for a in cfg.command]
        else:
            if shutil.which("vllm") is None:
                raise LmforgeError("vllm is not installed here; on a GPU host run `pip install vllm`")
            cmd = ["vllm", "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(self.port),
                   "--served-model-name", model_name, "--tensor-parallel-size", str(cfg.tensor_parallel_size),
                   "--pipeline-parallel-size", str(cfg.pipeline_parallel_size),
                   "--gpu-memory-utilization", str(cfg.gpu_memory_utilization)]  # fmt: skip
            if cfg.max_model_len:
                cmd += ["--max-model-len", str(cfg.max_model_len)]
            cmd += cfg.extra_args
        self.log_path = Path(tempfile.gettempdir()) / f"lmforge-vllm-{model_name}-{self.port}.log"
        self._proc = subprocess.Popen(
            cmd, stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
        )
        base = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + cfg.startup_timeout_s
        while True:
            if self._proc.poll() is not None:
                raise LmforgeError(f"vllm exited with code {self._proc.returncode}: {self._log_tail()}")
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                self.close()
                raise LmforgeError(
                    f"vllm did not become healthy within {cfg.startup_timeout_s:.0f} s: {self._log_tail()}"
                )
            time.sleep(1)
        info = httpx.get(base + "/v1/models", timeout=10).json()["data"][0]
        self._remote = OpenAIRemoteBackend(
            base + "/v1",
            info["id"],
            model_name=model_name,
            context_length=int(info.get("max_model_len") or cfg.max_model_len or DEFAULT_CTX),
            kind=self.kind,
        )
        self._stopped = threading.Event()

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-3:])
        except OSError:
            return "(no log)"

    @property
    def alive(self) -> bool:
        """False once the vllm process has exited: the pool then reloads the model."""
        return self._proc.poll() is None

    @property
    def capabilities(self) -> Capabilities:
        return self._remote.capabilities

    @property
    def context_length(self) -> int:
        return self._remote.context_length

    @property
    def chat_template(self) -> str | None:
        return None

    @property
    def special_tokens(self) -> dict[str, str]:
        return {}

    def chat(
        self, messages: list[dict[str, Any]], params: SamplingParams, cancel: threading.Event | None = None,
        options: ChatOptions | None = None,
    ) -> ChatStream:  # fmt: skip
        return self._remote.chat(messages, params, cancel, options)

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return self._remote.tokenize(text, add_special=add_special)

    def detokenize(self, ids: list[int]) -> str:
        return self._remote.detokenize(ids)

    def generate(
        self, prompt: list[int], params: SamplingParams, cancel: threading.Event | None = None, **kw: Any
    ) -> Iterator[Chunk]:
        return self._remote.generate(prompt, params, cancel, **kw)

    def score(self, ids: list[int]) -> list[float]:
        return self._remote.score(ids)

    def prompt_logprobs(self, ids: list[int], top: int = 0) -> list[dict | None]:
        return self._remote.prompt_logprobs(ids, top)

    def embed(self, texts: list[str], *, is_query: bool = False) -> list[list[float]]:
        return self._remote.embed(texts, is_query=is_query)

    def score_text(self, text: str, start: int = 0) -> tuple[float, int]:
        return self._remote.score_text(text, start)

    def forward_completions(self, body: dict[str, Any]) -> dict[str, Any] | Iterator[dict[str, Any]]:
        return self._remote.forward_completions(body)

    def close(self) -> None:
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
