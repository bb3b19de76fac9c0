"""Typed configs for training: model size presets, optimiser and schedule, the pretraining run.

Every default lives here once. `PretrainConfig.semantic()` is what a checkpoint remembers: resuming
with any of those fields changed is refused, naming the field (a changed learning rate, batch or
dataset would silently make a different model than the one the checkpoint started).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from lmforge.errors import LmforgeError

Objective = Literal["clm", "mlm"]
Schedule = Literal["cosine", "linear", "constant", "cyclic"]
Precision = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True)
class ModelSize:
    """Shape of a Transformer. clm: Llama architecture (RMSNorm, RoPE, SwiGLU, grouped-query
    attention); mlm: BERT encoder (kv_heads unused)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    context: int
    """Longest sequence (RoPE positions / BERT position embeddings); the default training length."""

    @classmethod
    def from_json(cls, path: Path) -> ModelSize:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise LmforgeError(f"cannot read size config {path}: {e}") from e
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        missing = [n for n in names if n not in data and n != "kv_heads"]
        if unknown or missing or not isinstance(data, dict):
            raise LmforgeError(f"size config {path}: unknown fields {unknown}, missing fields {missing}; "
                               f"expected {names}")  # fmt: skip
        data.setdefault("kv_heads", data["heads"])
        size = cls(**{k: int(v) for k, v in data.items()})
        if size.hidden % size.heads or size.heads % size.kv_heads:
            raise LmforgeError(f"size config {path}: hidden ({size.hidden}) must divide by heads ({size.heads}) "
                               f"and heads by kv_heads ({size.kv_heads})")  # fmt: skip
        return size


SIZES: dict[str, dict[str, ModelSize]] = {
    "clm": {
        "tiny": ModelSize(hidden=256, layers=4, heads=4, kv_heads=2, intermediate=688, context=256),
        "mini": ModelSize(hidden=512, layers=8, heads=8, kv_heads=4, intermediate=1376, context=512),
        "small": ModelSize(hidden=768, layers=12, heads=12, kv_heads=4, intermediate=2048, context=1024),
    },
    "mlm": {
        "tiny": ModelSize(hidden=256, layers=4, heads=4, kv_heads=4, intermediate=1024, context=256),
        "mini": ModelSize(hidden=512, layers=8, heads=8, kv_heads=8, intermediate=2048, context=512),
        "small": ModelSize(hidden=768, layers=12, heads=12, kv_heads=12, intermediate=3072, context=512),
    },
}


def resolve_size(objective: str, size: str) -> ModelSize:
    """A preset name (tiny | mini | small) or a JSON file with ModelSize's fields."""
    if size in SIZES[objective]:
        return SIZES[objective][size]
    path = Path(size)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise LmforgeError(f"size config {size} does not exist")
        return ModelSize.from_json(path)
    raise LmforgeError(f"unknown size {size!r}: use one of {', '.join(SIZES[objective])} or a CONFIG.json")


@dataclass
class PretrainConfig:
    objective: Objective = "clm"
    """clm: next-token prediction (decoder); mlm: masked-token prediction (encoder, 15% masked 80/10/10)."""
    size: str = "tiny"
    """tiny | mini | small, or a JSON file with hidden, layers, heads, kv_heads, intermediate, context."""
    tokenizer: str | None = None
    """Registered tokenizer (or model whose tokenizer to use); default with --init: the model's own."""
    data: str = ""
    """Registered dataset (from `lmforge data prepare`)."""
    steps: int | None = None
    """Optimizer steps; default from --tokens, else 1000."""
    tokens: int | None = None
    """Train on this many tokens instead of a step count (steps = tokens / tokens per step)."""
    batch_size: int = 8
    """Sequences per micro-batch per process."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (effective batch = batch_size x grad_accum x processes)."""
    seq_len: int | None = None
    """Tokens per sequence; default: the size's context."""
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    """The decaying schedules end at lr x this."""
    schedule: Schedule = "cosine"
    warmup: int | None = None
    """Warm-up steps (linear from 0); default 5% of the steps."""
    cycle_steps: int = 200
    """Length of one triangle of the cyclic schedule."""
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = off)."""
    dropout: float = 0.0
    """Dropout (mlm: hidden and attention; clm: attention — Llama has no hidden dropout)."""
    mlm_prob: float = 0.15
    eval_every: int = 100
    """Validation loss and perplexity every N steps (and at the end)."""
    eval_batches: int = 8
    """Validation micro-batches per evaluation (the same sequences every time)."""
    early_stop: int = 0
    """Stop after this many evaluations without a better validation loss, keeping the best (0 = off)."""
    save_every: int = 100
    """Checkpoint every N steps (a killed run resumes from the last one)."""
    seed: int = 0
    precision: Precision = "auto"
    """auto: time fp32 and bf16 autocast on this machine once and use the faster."""
    init: str | None = None
    """Continue pretraining this registered HF model instead of starting from random weights."""
    replay: str | None = None
    """A general dataset mixed into continued pretraining to limit forgetting."""
    replay_frac: float = 0.2
    """Share of training sequences drawn from --replay."""
    threads: int | None = None
    """Torch threads per process; default: the cores divided among the processes."""

    # Fields that do not change what is computed; everything else must match to resume.
    NON_SEMANTIC = ("save_every", "threads")

    def semantic(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in self.NON_SEMANTIC}

    def validate(self) -> None:
        problems = []
        if self.steps is not None and self.steps <= 0:
            problems.append("--steps must be positive")
        if self.tokens is not None and self.tokens <= 0:
            problems.append("--tokens must be positive")
        if self.steps is not None and self.tokens is not None:
            problems.append("give --steps or --tokens, not both")
        for name in ("batch_size", "grad_accum", "eval_every", "save_every", "eval_batches", "cycle_steps"):
            if getattr(self, name) <= 0:
                problems.append(f"--{name.replace('_', '-')} must be positive")
        if self.lr <= 0:
            problems.append("--lr must be positive")
        if not 0 <= self.dropout < 1:
            problems.append("--dropout must be in [0, 1)")
        if not 0 < self.mlm_prob < 1:
            problems.append("--mlm-prob must be in (0, 1)")
        if not 0 <= self.replay_frac < 1:
            problems.append("--replay-frac must be in [0, 1)")
        if self.replay and not self.init:
            problems.append("--replay mixes general text into continued pretraining: give --init MODEL too")
        if self.seq_len is not None and self.seq_len < 4:
            problems.append("--seq-len must be at least 4")
        if not self.data:
            problems.append("--data is required")
        if not self.tokenizer and not self.init:
            problems.append("--tokenizer is required (or --init MODEL to use its tokenizer)")
        if problems:
            raise LmforgeError("; ".join(problems))


def changed_fields(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Names of fields whose value differs between a checkpoint's config and this run's."""
    return [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]


def lr_factor(step: int, total: int, warmup: int, schedule: Schedule, min_ratio: float, cycle: int) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based). Pure, so resume is exact."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "cyclic":  # triangular: peak -> min -> peak every `cycle` steps
        pos = ((step - warmup) % cycle) / cycle
        return min_ratio + (1 - min_ratio) * abs(1 - 2 * pos)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return 1 - (1 - min_ratio) * progress
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
