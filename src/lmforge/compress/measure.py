"""The three numbers every compressed model carries, measured on this machine: size on disk, decode
tokens/s, and perplexity + bits per byte on a held-out zh+en text (compress/heldout.txt unless
another is given).

- Size: the bytes of the weight files in the model's folder (GGUF, safetensors, bin), not the
  manifest or reports.
- Decode tokens/s: greedy generation of `decode_tokens` tokens after a short prompt; the clock runs
  from the first generated token to the last, so prompt processing is not counted (tokens/s of the
  steady state, what a chat user feels after the first token).
- Quality: the text's first `max_tokens` tokens scored in one window; perplexity = exp(mean NLL per
  token), bits per byte = total NLL / ln 2 / UTF-8 bytes of the scored tokens (comparable across
  tokenizers). A compressed model and its parent share the tokenizer, so their perplexities are
  compared directly; `delta` gives the relative change.

The same engine the model is served with does the measuring: llama.cpp for GGUF, transformers for
HF folders (bitsandbytes / torchao weights included).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.home import WEIGHT_SUFFIXES, Manifest, Registry

PROMPT = "The history of the printing press"


@dataclass
class MeasureConfig:
    eval_text: Path | None = None
    """Held-out text; default compress/heldout.txt (zh + en)."""
    max_tokens: int = 512
    """Tokens of the text scored (one window)."""
    decode_tokens: int = 64
    """Tokens generated for the speed figure."""
    threads: int | None = None

    def text(self) -> str:
        from lmforge.compress.export import default_eval_text

        if self.eval_text is None:
            return default_eval_text()
        if not self.eval_text.is_file():
            raise LmforgeError(f"--eval-text {self.eval_text}: no such file")
        return self.eval_text.read_text(encoding="utf-8")


@dataclass
class Measurement:
    size_bytes: int
    decode_tps: float
    perplexity: float
    bits_per_byte: float
    eval_tokens: int
    engine: str
    threads: int
    text_sha: str
    """First 16 hex digits of the held-out text's sha256: results on different texts do not compare."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def weight_bytes(path: Path) -> int:
    """Bytes of the weight files of a model file or folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.suffix in WEIGHT_SUFFIXES)


def open_backend(path: Path, fmt: str, threads: int | None) -> Any:
    """A backend on a model file/folder that may not be registered yet (a staged result)."""
    if fmt == "gguf":
        from lmforge.infer.llamacpp import LlamaCppBackend

        return LlamaCppBackend(path, n_threads=threads, logits_all=True, n_ctx=None)
    if fmt == "hf":
        from lmforge.infer.hf import TransformersBackend

        return TransformersBackend(path, n_threads=threads)
    raise LmforgeError(f"cannot measure a {fmt} model (GGUF or Hugging Face folders only)")


def measure_path(path: Path, fmt: str, cfg: MeasureConfig) -> Measurement:
    from lmforge.infer.sampling import SamplingParams

    text = cfg.text()
    backend = open_backend(path, fmt, cfg.threads)
    try:
        ids = backend.tokenize(text)[: min(cfg.max_tokens, backend.context_length)]
        if len(ids) < 16:
            raise LmforgeError("the held-out text is too short: it needs at least 16 tokens")
        logps = backend.score(ids)
        nll = -sum(logps)
        scored_bytes = len(backend.detokenize(ids[1:]).encode("utf-8"))
        greedy = SamplingParams(temperature=0.0, max_tokens=cfg.decode_tokens, top_k=0, top_p=1.0)
        stamps = []
        for chunk in backend.generate(backend.tokenize(PROMPT), greedy):
            if chunk.token_id is not None:
                stamps.append(time.perf_counter())
        tps = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 2 else 0.0
    finally:
        backend.close()
    return Measurement(size_bytes=weight_bytes(path), decode_tps=round(tps, 2),
                       perplexity=round(math.exp(nll / len(logps)), 4),
                       bits_per_byte=round(nll / math.log(2) / max(1, scored_bytes), 4), eval_tokens=len(ids),
                       engine=backend.kind, threads=cfg.threads or os.cpu_count() or 1,
                       text_sha=hashlib.sha256(text.encode()).hexdigest()[:16])  # fmt: skip


def measure_model(registry: Registry, name: str, cfg: MeasureConfig, *, refresh: bool = False) -> Measurement:
    """The registered model's numbers, from its manifest (metrics.compress) when they were measured on
    the same text with the same threads, else measured now and stored there."""
    m = registry.get(name)
    check_measurable(m)
    stored = m.metrics.get("compress")
    text_sha = hashlib.sha256(cfg.text().encode()).hexdigest()[:16]
    threads = cfg.threads or os.cpu_count() or 1
    if not refresh and stored and stored.get("text_sha") == text_sha and stored.get("threads") == threads:
        return Measurement(**{k: stored[k] for k in Measurement.__dataclass_fields__})
    got = measure_path(registry.model_path(m), m.format, cfg)
    registry.update(name, metrics={"compress": (stored or {}) | got.as_dict()})
    return got


def begin(registry: Registry, model: str, out: str) -> Manifest:
    """The checks every compression command starts with: `model` is a local language model and `out`
    is a free, valid name. Returns the model's manifest."""
    from lmforge.home import check_name

    m = registry.get(model)
    check_measurable(m)
    check_name(out)
    if registry.exists(out):
        raise LmforgeError(f"model {out!r} already exists; pass --out or remove it first")
    return m


def check_measurable(m: Manifest) -> None:
    if m.format == "openai":
        raise LmforgeError(f"{m.name} is a remote model: its weights are on another server, so lmforge cannot "
                           f"quantize, prune or measure them")  # fmt: skip
    if m.kind not in ("chat", "base"):
        raise LmforgeError(f"{m.name} is a {m.kind}; compression works on language models (chat or base)")
    if m.format not in ("gguf", "hf"):
        raise LmforgeError(f"{m.name} is a {m.format} model; compression takes GGUF or Hugging Face models")


def delta(parent: Measurement, child: Measurement) -> dict[str, float]:
    """Relative changes from parent to child (perplexity increase > 0 is a loss of quality)."""
    return {"ppl_increase": round(child.perplexity / parent.perplexity - 1, 5),
            "bpb_delta": round(child.bits_per_byte - parent.bits_per_byte, 5),
            "size_ratio": round(child.size_bytes / max(1, parent.size_bytes), 4),
            "speed_ratio": round(child.decode_tps / parent.decode_tps, 3) if parent.decode_tps else 0.0}  # fmt: skip
