"""A model served elsewhere behind an OpenAI-compatible API (vLLM, Ollama, llama.cpp, a cloud API).

Registered like any model (`lmforge models add-remote`), with its own key kept in a 0600 file
beside the manifest (never in manifest.json). The upstream applies its own chat template and
tokenizer, so this backend takes whole conversations (`chat`) rather than token ids; `generate`
on raw ids is not offered, and tokenization happens upstream.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.infer.base import Capabilities, CapabilityError, ChatOptions, ChatStream, Chunk
from lmforge.infer.sampling import SamplingParams

CONFIG_FILE = "remote.json"
KEY_FILE = "api_key"
REMOTE_CTX = 32768
"""Context window assumed for a remote model when its registration does not say."""


class UpstreamError(LmforgeError):
    """The remote endpoint failed or could not be reached (HTTP 502 at our API)."""


def write_remote(folder: Path, base_url: str, model: str, api_key: str | None, context_length: int) -> None:
    (folder / CONFIG_FILE).write_text(
        json.dumps({"base_url": base_url, "model": model, "context_length": context_length})
    )
    if api_key:  # created 0600: never readable by others, not even for a moment
        fd = os.open(folder / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(api_key)


class OpenAIRemoteBackend:
    kind = "openai"
    alive = True
    active = 0

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        model_name: str = "",
        context_length: int = REMOTE_CTX,
        embedding: bool = False,
        kind: str = "openai",
    ) -> None:
        from openai import OpenAI

        self.kind = kind
        self.capabilities = (
            Capabilities(embed=True)
            if embedding
            else Capabilities(
                chat=True, grammar=True, tools=True, multimodal=True, upstream=True, score_text=True
            )
        )
        self.model_name = model_name or model
        self.upstream_model = model
        self._ctx = context_length
        self._client = OpenAI(base_url=base_url, api_key=api_key or "none", max_retries=1)

    @classmethod
    def from_folder(
        cls, folder: Path, *, model_name: str = "", embedding: bool = False
    ) -> OpenAIRemoteBackend:
        """The backend for a registered remote model (remote.json + optional 0600 api_key file)."""
        cfg = json.loads((folder / CONFIG_FILE).read_text())
        key_file = folder / KEY_FILE
        key = key_file.read_text().strip() if key_file.exists() else None
        ctx = int(cfg.get("context_length") or REMOTE_CTX)
        return cls(cfg["base_url"], cfg["model"], api_key=key, model_name=model_name, context_length=ctx,
                   embedding=embedding)  # fmt: skip

    @property
    def context_length(self) -> int:
        return self._ctx

    @property
    def chat_template(self) -> str | None:
        return None

    @property
    def special_tokens(self) -> dict[str, str]:
        return {}

    def _no(self, capability: str, hint: str = "") -> CapabilityError:
        return CapabilityError(self.kind, self.model_name, capability, hint)

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        raise self._no("tokens", "tokenization happens upstream; send chat messages")

    def detokenize(self, ids: list[int]) -> str:
        raise self._no("tokens", "tokenization happens upstream")

    def generate(
        self, prompt: list[int], params: SamplingParams, cancel: threading.Event | None = None, **kw: Any
    ) -> Iterator[Chunk]:
        raise self._no("tokens", "send chat messages instead of token ids")

    def score(self, ids: list[int]) -> list[float]:
        raise self._no("score", "serve it from a local file or use generation suites")

    def prompt_logprobs(self, ids: list[int], top: int = 0) -> list[dict | None]:
        raise self._no("score", "serve it from a local file or use generation suites")

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
        options: ChatOptions | None = None,
    ) -> ChatStream:
        """The upstream's answer to `messages` (the request is sent now; chunks stream as they come)."""
        if not self.capabilities.chat:
            raise self._no("chat")
        params.validate()
        opts = options or ChatOptions()
        if opts.logprobs is not None:
            raise self._no("logprobs")
        kw: dict[str, Any] = {"temperature": params.temperature, "top_p": params.top_p, "max_tokens": params.max_tokens,
                              "presence_penalty": params.presence_penalty, "frequency_penalty": params.frequency_penalty}  # fmt: skip
        if params.stop:
            kw["stop"] = params.stop
        if params.seed is not None:
            kw["seed"] = params.seed
        if opts.response_format:
            kw["response_format"] = opts.response_format
        if opts.tools:
            kw["tools"] = opts.tools
        stream = self._call(
            self._client.chat.completions.create, model=self.upstream_model, messages=messages, stream=True,
            stream_options={"include_usage": True}, **kw,
        )  # fmt: skip
        return ChatStream(self._chunks(stream, cancel))

    def _chunks(self, stream: Any, cancel: threading.Event | None) -> Iterator[Chunk]:
        n, finish, prompt_tokens = 0, "stop", 0
        calls: dict[int, dict[str, Any]] = {}  # streamed tool calls, assembled by index
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
                    for tc in (ch.delta.tool_calls if ch.delta else None) or []:
                        call = calls.setdefault(tc.index, {"id": None, "type": "function",
                                                           "function": {"name": "", "arguments": ""}})  # fmt: skip
                        call["id"] = tc.id or call["id"]
                        if tc.function is not None:
                            call["function"]["name"] += tc.function.name or ""
                            call["function"]["arguments"] += tc.function.arguments or ""
                    if ch.finish_reason:
                        finish = ch.finish_reason
        except Exception as e:  # the SDK raises several transport error types mid-stream
            raise UpstreamError(f"upstream stream failed: {e}") from e
        finally:
            stream.close()
        reason = finish if finish in ("stop", "length", "cancelled", "tool_calls") else "stop"
        last = Chunk("", None, reason, prompt_tokens, n)  # type: ignore[arg-type]
        last.tool_calls = [calls[i] for i in sorted(calls)] or None
        yield last

    def score_text(self, text: str, start: int = 0) -> tuple[float, int]:
        """Log-likelihood through the upstream's /v1/completions: `echo` + `logprobs` with
        `max_tokens` 0 (vLLM and lmforge accept it), tokens counted by their `text_offset`."""
        if not self.capabilities.score_text:
            raise self._no("score_text")
        why = "its upstream returns no prompt log-probabilities (completions with echo and logprobs)"
        try:
            r = self._call(self._client.completions.create, model=self.upstream_model, prompt=text, max_tokens=0,
                           echo=True, logprobs=0, temperature=0)  # fmt: skip
        except UpstreamError:
            raise
        except LmforgeError as e:  # the upstream refused the request
            raise self._no("score", f"{why}: {e}") from e
        lp = r.choices[0].logprobs if r.choices else None
        if lp is None or not lp.token_logprobs or lp.text_offset is None:
            raise self._no("score", why)
        total, n = 0.0, 0
        for k, (value, offset) in enumerate(zip(lp.token_logprobs, lp.text_offset, strict=False)):
            if k > 0 and value is not None and offset >= start:
                total += value
                n += 1
        return total, n

    def forward_completions(self, body: dict[str, Any]) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """/v1/completions at the upstream, as-is (our model name swapped for the upstream's; fields the
        SDK does not know travel in `body['extra_body']`)."""
        kw = {k: v for k, v in body.items() if k != "model"}
        result = self._call(self._client.completions.create, model=self.upstream_model, **kw)
        if not body.get("stream"):
            return {**result.model_dump(exclude_none=True), "model": self.model_name}

        def events() -> Iterator[dict[str, Any]]:
            try:
                for ev in result:
                    yield {**ev.model_dump(exclude_none=True), "model": self.model_name}
            except Exception as e:  # the SDK raises several transport error types mid-stream
                raise UpstreamError(f"upstream stream failed: {e}") from e
            finally:
                result.close()

        return events()

    def embed(self, texts: list[str], *, is_query: bool = False) -> list[list[float]]:
        if not self.capabilities.embed:
            raise self._no("embed", "it is registered as a chat model")
        r = self._call(
            self._client.embeddings.create, model=self.upstream_model, input=texts, encoding_format="float"
        )
        return [d.embedding for d in r.data]

    def close(self) -> None:
        self._client.close()
