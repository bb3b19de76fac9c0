"""A model served elsewhere behind an OpenAI-compatible API (vLLM, Ollama, llama.cpp, a cloud API).

Registered like any model (`lmforge models add-remote`), with its own key kept in a 0600 file
beside the manifest (never in manifest.json). The upstream applies its own chat template and
tokenizer, so this backend takes whole conversations (`chat`) rather than token ids; `generate`
on raw ids is not offered, and tokenization happens upstream.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.infer.base import Chunk
from lmforge.infer.sampling import SamplingParams

CONFIG_FILE = "remote.json"
KEY_FILE = "api_key"


class UpstreamError(LmforgeError):
    """The remote endpoint failed or could not be reached (HTTP 502 at our API)."""


def write_remote(folder: Path, base_url: str, model: str, api_key: str | None, context_length: int) -> None:
    (folder / CONFIG_FILE).write_text(
        json.dumps({"base_url": base_url, "model": model, "context_length": context_length})
    )
    if api_key:
        key = folder / KEY_FILE
        key.write_text(api_key)
        key.chmod(0o600)


class OpenAIRemoteBackend:
    kind = "openai"
    supports_grammar = False

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        model_name: str = "",
        context_length: int = 32768,
    ) -> None:
        from openai import OpenAI

        self.model_name = model_name or model
        self.upstream_model = model
        self._ctx = context_length
        self._client = OpenAI(base_url=base_url, api_key=api_key or "none", max_retries=1)

    @classmethod
    def from_folder(cls, folder: Path, *, model_name: str = "") -> OpenAIRemoteBackend:
        """The backend for a registered remote model (remote.json + optional 0600 api_key file)."""
        cfg = json.loads((folder / CONFIG_FILE).read_text())
        key_file = folder / KEY_FILE
        key = key_file.read_text().strip() if key_file.exists() else None
        ctx = int(cfg.get("context_length") or 32768)
        return cls(cfg["base_url"], cfg["model"], api_key=key, model_name=model_name, context_length=ctx)

    @property
    def context_length(self) -> int:
        return self._ctx

    @property
    def chat_template(self) -> str | None:
        return None

    @property
    def special_tokens(self) -> dict[str, str]:
        return {}

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        raise LmforgeError(f"{self.model_name} is remote: tokenization happens upstream")

    def detokenize(self, ids: list[int]) -> str:
        raise LmforgeError(f"{self.model_name} is remote: tokenization happens upstream")

    def generate(
        self, prompt: list[int], params: SamplingParams, cancel: threading.Event | None = None
    ) -> Iterator[Chunk]:
        raise LmforgeError(f"{self.model_name} is remote: send chat messages, not token ids")

    def _call(self, fn, **kw):
        import openai

        try:
            return fn(**kw)
        except openai.APIStatusError as e:
            if 400 <= e.status_code < 500 and e.status_code not in (401, 403, 429):
                raise LmforgeError(f"upstream rejected the request: {e.message}") from e
            raise UpstreamError(
                f"upstream {self._client.base_url} answered {e.status_code}: {e.message}"
            ) from e
        except openai.APIConnectionError as e:
            raise UpstreamError(f"cannot reach upstream {self._client.base_url}: {e}") from e

    def chat(
        self,
        messages: list[dict[str, Any]],
        params: SamplingParams,
        cancel: threading.Event | None = None,
        **extra: Any,
    ) -> Iterator[Chunk]:
        """Stream the upstream's answer to `messages` as Chunks (last one has finish_reason + usage)."""
        kw: dict[str, Any] = {"temperature": params.temperature, "top_p": params.top_p, "max_tokens": params.max_tokens,
                              "presence_penalty": params.presence_penalty, "frequency_penalty": params.frequency_penalty}  # fmt: skip
        if params.stop:
            kw["stop"] = params.stop
        if params.seed is not None:
            kw["seed"] = params.seed
        kw.update({k: v for k, v in extra.items() if v is not None})
        stream = self._call(
            self._client.chat.completions.create, model=self.upstream_model, messages=messages, stream=True,
            stream_options={"include_usage": True}, **kw,
        )  # fmt: skip
        n, finish, prompt_tokens = 0, "stop", 0
        try:
            for ev in stream:
                if cancel is not None and cancel.is_set():
                    finish = "cancelled"
                    break
                if ev.usage:
                    prompt_tokens, n = ev.usage.prompt_tokens, ev.usage.completion_tokens
                for ch in ev.choices:
                    if ch.delta and ch.delta.content:
                        yield Chunk(ch.delta.content, None, None, prompt_tokens, n)
                    if ch.finish_reason:
                        finish = ch.finish_reason
        except Exception as e:  # the SDK raises several transport error types mid-stream
            raise UpstreamError(f"upstream stream failed: {e}") from e
        finally:
            stream.close()
        yield Chunk(
            "", None, finish if finish in ("stop", "length", "cancelled") else "stop", prompt_tokens, n
        )  # type: ignore[arg-type]

    def embed(self, texts: list[str], *, is_query: bool = False) -> list[list[float]]:
        r = self._call(
            self._client.embeddings.create, model=self.upstream_model, input=texts, encoding_format="float"
        )
        return [d.embedding for d in r.data]

    def close(self) -> None:
        self._client.close()
