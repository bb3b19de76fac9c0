"""`lmforge plan`: the memory (and GPUs, threads, decode speed) that serving or training a model needs.

Input: a registered model (GGUF: its file size and metadata; HF: config.json + safetensors sizes), an
HF config.json, or a known architecture / bare size (`qwen2.5-7b`, `7b`: the small table below). Output:
a `Plan`: the breakdown in decimal GB, the total per device, a verdict for the device ("fits on 1× 24 GB
GPU: no") with each suggested change recomputed, the GPUs tensor parallel needs, and the users' guide
naive figure (16 × billions + 2 × batch + 2 × concurrency) beside ours with the difference in one line.

Serving (per device with tensor parallel N: weights and KV cache divided by N):

    weights     params × bits/8 at the precision (a registered file: its own size)
    KV cache    2 (K and V) × layers × kv_heads × head_dim × context × sequences × bytes (f16: 2)
    compute     CPU, llama.cpp without flash attention (as lmforge runs it): a 512-token prompt chunk's
                attention scores ub × n_kv × (heads + 1 mask) × 4 + its MLP scratch + the logits rows;
                GPU: a 2048-token prefill chunk's activations + logits
    runtime     CPU: the server process with llama.cpp loaded; GPU: CUDA context, workspaces, graphs
    CPU only    lmforge's server keeps a single-sequence context beside the batched one (KV for one more
                sequence of `context` tokens)

Training (per GPU; ZeRO-1 divides optimizer states by N, ZeRO-2 also gradients, ZeRO-3 also weights):

    peak = runtime + weights + optimizer + max(activations + logits, gradients + optimizer-step scratch)
           (on CPU × the heap retention measured for glibc, + QLoRA's mapped checkpoint pages)

because gradients are built while the saved activations are freed (`zero_grad(set_to_none=True)`, the
default of PyTorch, accelerate and transformers). Saved activations per token per layer, counted with
`torch.autograd.graph.saved_tensors_hooks` on SmolLM2-135M and Qwen2.5-0.5B (SDPA attention, so no
heads × seq² term): 6·hidden + 4·intermediate + 2·(heads + kv_heads)·head_dim elements; LoRA with
dropout adds 8·hidden + intermediate (a dropped copy and its mask per adapted projection); gradient
checkpointing keeps one hidden vector per layer plus one layer recomputed. The loss holds about three
batch × seq × vocab fp32 copies of the logits at its peak (logits, log-softmax, its gradient), which is
what dominates small models with big vocabularies. On CPU the plan is for `lmforge finetune`: weights
stay fp32 (bf16 is autocast, which saves a bf16 copy of every matmul weight for backward) and QLoRA's
fp32 checkpoint pages, read while quantizing, stay mapped (file-backed RSS). On GPU it is for the usual
stacks: weights in the precision, an fp32 master copy of trainable weights under mixed precision, and
QLoRA's non-quantized parameters (embeddings, lm_head, norms) upcast to fp32 by peft.

The constants marked "measured" come from benchmarks/plan_calibration.py on this machine class (2-core
AMD EPYC, llama.cpp 0.3.36, torch 2.13, transformers 5); its table is in benchmarks/README.md. The GPU
constants are not calibrated here (no GPU was lent); the script measures GPU memory where there is one.

Written here because no maintained library covers it: accelerate's `estimate-memory` counts weights
and Adam states of Hub models only; DeepSpeed's estimators count ZeRO model states only; neither has the
KV cache, llama.cpp's buffers, activations, the logits of a big vocabulary, or a calibration.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.home import Registry

GB = 1e9
"""Decimal gigabyte: every figure of the plan is in these."""

Precision = Literal[
    "fp32", "bf16", "fp16", "q8_0", "int8", "q6_k", "q5_k_m", "q4_k_m", "q4_1", "q4_0", "int4", "nf4"
]
KvPrecision = Literal["fp32", "f16", "bf16", "fp8", "q8_0", "q4_0"]
TrainMethod = Literal["full", "lora", "qlora"]
Optimizer = Literal["adamw", "adamw8bit", "sgd"]

BITS_PER_WEIGHT: dict[str, float] = {
    "fp32": 32.0, "bf16": 16.0, "fp16": 16.0,
    "q8_0": 8.5, "q6_k": 6.56, "q5_k_m": 5.7, "q4_k_m": 4.9, "q4_1": 5.1, "q4_0": 4.6,  # whole GGUF files
    "int8": 8.0, "int4": 4.25, "nf4": 4.13,  # transformer-layer matrices only (bnb, AWQ/GPTQ group 128)
}  # fmt: skip
"""Average bits per parameter. GGUF types are whole-file averages of llama.cpp's mixes (Qwen2.5-7B's
official files: Q4_K_M 4.68 GB = 4.9 bits, Q8_0 8.1 GB = 8.5); int8/int4/nf4 quantize the layers' linear
weights only, embeddings and lm_head stay 16-bit (bitsandbytes, AWQ, GPTQ)."""
LAYER_ONLY = ("int8", "int4", "nf4")
GGUF_TYPES = ("q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_1", "q4_0")
KV_BYTES: dict[str, float] = {"fp32": 4, "f16": 2, "bf16": 2, "fp8": 1, "q8_0": 34 / 32, "q4_0": 18 / 32}
"""Bytes per cached K or V element (llama.cpp --cache-type-k/-v, vLLM --kv-cache-dtype)."""
TRAIN_PRECISIONS = ("fp32", "bf16", "fp16")
OPTIMIZER_BYTES: dict[str, float] = {"adamw": 8, "adamw8bit": 2, "sgd": 4}
"""Optimizer state per trainable parameter: AdamW's two fp32 moments, bitsandbytes' 8-bit ones, SGD's
momentum buffer (0 without momentum)."""

# -- calibrated constants (benchmarks/plan_calibration.py; see the module docstring) ------------------
CPU_SERVE_RUNTIME = 0.14 * GB
"""measured: the server-side process (Python, lmforge, libllama, tokenizer, llama.cpp's output buffers and
repacked tensors) beyond weights, KV cache and compute buffer; Qwen2.5-Coder-0.5B Q4_K_M, 2048 tokens."""
LLAMACPP_BATCH = 512
"""llama.cpp's n_batch/n_ubatch in lmforge's engines: the prompt chunk its compute buffer is sized for."""
CPU_TRAIN_RUNTIME = 0.45 * GB
"""measured: a `lmforge finetune` process's imports (torch, transformers, peft, lmforge) before the model."""
TOKENIZER_BYTES_PER_TOKEN = 1200
"""measured: a loaded fast tokenizer's RSS per vocabulary entry (Qwen2.5's 152k: 0.18 GB)."""
CPU_HEAP_RETENTION: dict[str, float] = {"full": 1.45, "lora": 1.8, "qlora": 1.8}
"""measured: peak RSS of a CPU training step over its live max(activations + logits, gradients), from the
second step on (it plateaus there): glibc's heap keeps the activation memory a step frees, in pieces it
cannot hand back. Full fine-tuning places its gradients and AdamW states in those pieces."""
LOGITS_COPIES = 3
"""fp32 batch × seq × vocab tensors alive at the loss's peak: logits, log-softmax, its gradient."""
GPU_RUNTIME = 1.0 * GB
"""not calibrated here: CUDA context (~0.5 GB), cuBLAS/NCCL workspaces and CUDA graphs, per GPU."""
GPU_PREFILL_CHUNK = 2048
"""Tokens a GPU engine prefills at once (vLLM's chunked prefill budget is 2048-8192)."""
LORA_TARGETS = 7
"""q, k, v, o, gate, up, down: what `lmforge finetune` (and LLaMA-Factory's all-linear) adapts."""
TP_SIZES = (1, 2, 4, 8, 16)


# -- architectures ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Architecture:
    """A decoder-only transformer (Llama / Qwen2 / Mistral family: RMSNorm, gated MLP, GQA)."""

    name: str
    layers: int
    """num_hidden_layers"""
    hidden: int
    """hidden_size"""
    heads: int
    """num_attention_heads"""
    kv_heads: int
    """num_key_value_heads (= heads without grouped-query attention)"""
    head_dim: int
    """hidden / heads unless the config says otherwise"""
    intermediate: int
    """intermediate_size of the gated MLP (gate, up, down)"""
    vocab: int
    """vocab_size"""
    tied_embeddings: bool
    """lm_head shares the token-embedding matrix"""
    context_length: int
    """the longest context it was trained for (max_position_embeddings)"""
    qkv_bias: bool = False
    """Qwen2 has biases on q, k, v"""

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def layer_linear_params(self) -> int:
        """Weights of one layer's seven projections (what int4/nf4 quantize and LoRA adapts)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return self.hidden * (2 * q + 2 * kv) + 3 * self.hidden * self.intermediate

    @property
    def params(self) -> int:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        per_layer = self.layer_linear_params + 2 * self.hidden + ((q + 2 * kv) if self.qkv_bias else 0)
        return self.embedding_params + self.layers * per_layer + self.hidden

    def lora_params(self, rank: int) -> int:
        """Adapter parameters of rank-r LoRA on all seven projections of every layer."""
        q, kv, h, i = (
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
            self.hidden,
            self.intermediate,
        )
        return self.layers * rank * ((h + q) * 2 + (h + kv) * 2 + (h + i) * 3)

    def kv_bytes_per_token(self, kv: str = "f16") -> float:
        """K and V of one token in every layer."""
        return 2 * self.layers * self.kv_heads * self.head_dim * KV_BYTES[kv]

    def summary(self) -> str:
        return (f"{self.params / 1e9:.3g}B params, {self.layers} layers, hidden {self.hidden}, {self.heads} heads "
                f"({self.kv_heads} KV) × {self.head_dim}, MLP {self.intermediate}, vocab {self.vocab:,}"
                f"{', tied embeddings' if self.tied_embeddings else ''}, context {self.context_length:,}")  # fmt: skip


def _arch(name: str, layers: int, hidden: int, heads: int, kv: int, hd: int, inter: int, vocab: int, tied: bool,
          ctx: int, bias: bool = False) -> Architecture:  # fmt: skip
    return Architecture(name, layers, hidden, heads, kv, hd, inter, vocab, tied, ctx, bias)


KNOWN_ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    _arch("qwen2.5-0.5b", 24, 896, 14, 2, 64, 4864, 151936, True, 32768, True),
    _arch("qwen2.5-1.5b", 28, 1536, 12, 2, 128, 8960, 151936, True, 32768, True),
    _arch("qwen2.5-3b", 36, 2048, 16, 2, 128, 11008, 151936, True, 32768, True),
    _arch("qwen2.5-7b", 28, 3584, 28, 4, 128, 18944, 152064, False, 32768, True),
    _arch("qwen2.5-14b", 48, 5120, 40, 8, 128, 13824, 152064, False, 32768, True),
    _arch("qwen2.5-32b", 64, 5120, 40, 8, 128, 27648, 152064, False, 32768, True),
    _arch("qwen2.5-72b", 80, 8192, 64, 8, 128, 29568, 152064, False, 32768, True),
    _arch("llama-3.2-1b", 16, 2048, 32, 8, 64, 8192, 128256, True, 131072),
    _arch("llama-3.2-3b", 28, 3072, 24, 8, 128, 8192, 128256, True, 131072),
    _arch("llama-3.1-8b", 32, 4096, 32, 8, 128, 14336, 128256, False, 131072),
    _arch("llama-3.1-70b", 80, 8192, 64, 8, 128, 28672, 128256, False, 131072),
    _arch("mistral-7b", 32, 4096, 32, 8, 128, 14336, 32768, False, 32768),
    _arch("smollm2-135m", 30, 576, 9, 3, 64, 1536, 49152, True, 8192),
    _arch("smollm2-360m", 32, 960, 15, 5, 64, 2560, 49152, True, 8192),
    _arch("smollm2-1.7b", 24, 2048, 32, 32, 64, 8192, 49152, True, 8192),
)}  # fmt: skip
"""Real config.json numbers of well-known models (Qwen2.5-Coder shares Qwen2.5's; Mistral is v0.3)."""
ALIASES: dict[str, str] = {
    **{f"qwen2.5-coder-{s}": f"qwen2.5-{s}" for s in ("0.5b", "1.5b", "3b", "7b", "14b", "32b")},
    "llama-3-8b": "llama-3.1-8b", "llama-3-70b": "llama-3.1-70b", "llama-3.3-70b": "llama-3.1-70b",
    "mistral-7b-v0.3": "mistral-7b",
}  # fmt: skip
SIZES: dict[str, str] = {
    "135m": "smollm2-135m", "360m": "smollm2-360m", "0.5b": "qwen2.5-0.5b", "1b": "llama-3.2-1b",
    "1.5b": "qwen2.5-1.5b", "1.7b": "smollm2-1.7b", "3b": "qwen2.5-3b", "7b": "qwen2.5-7b", "8b": "llama-3.1-8b",
    "14b": "qwen2.5-14b", "32b": "qwen2.5-32b", "70b": "llama-3.1-70b", "72b": "qwen2.5-72b",
}  # fmt: skip
"""A bare size stands for one representative architecture."""
CONFIG_FIELDS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
                 "intermediate_size", "vocab_size")  # fmt: skip
"""What an unknown architecture must say (config.json names); head_dim, tie_word_embeddings and
max_position_embeddings are read when present."""


def _table_name(text: str) -> str | None:
    """`Qwen/Qwen2.5-7B-Instruct`, `qwen2.5-coder-7b`, `7B` → a KNOWN_ARCHITECTURES key, or None."""
    parts = text.strip().lower().rsplit("/", 1)[-1].split("-")
    key = "-".join(p for p in parts if p not in ("meta", "instruct", "chat", "it", "base", "hf", "gguf"))
    key = ALIASES.get(key, key)
    if key in KNOWN_ARCHITECTURES:
        return key
    return SIZES.get(key)


def unknown_architecture(text: str) -> LmforgeError:
    sizes = ", ".join(SIZES)
    return LmforgeError(
        f"unknown model or architecture {text!r}: not registered, not a config.json, not in the table "
        f"({', '.join(KNOWN_ARCHITECTURES)}; sizes {sizes}); pass its config.json with these fields: "
        f"{', '.join(CONFIG_FIELDS)}"
    )


def architecture_from_config(cfg: dict[str, Any], name: str) -> Architecture:
    """An HF config.json (a multimodal one's `text_config`) → Architecture; missing fields → one error."""
    if isinstance(cfg.get("text_config"), dict) and "num_hidden_layers" not in cfg:
        cfg = cfg["text_config"]
    if any(k in cfg for k in ("num_local_experts", "num_experts", "n_routed_experts")):
        raise LmforgeError(f"{name} is a mixture-of-experts model; the planner covers dense decoders only")
    need = [k for k in CONFIG_FIELDS if k != "num_key_value_heads" and not isinstance(cfg.get(k), int)]
    if need:
        raise LmforgeError(f"{name} lacks {', '.join(need)}; the planner needs {', '.join(CONFIG_FIELDS)} "
                           f"(num_key_value_heads defaults to num_attention_heads)")  # fmt: skip
    heads = cfg["num_attention_heads"]
    return Architecture(
        name=name, layers=cfg["num_hidden_layers"], hidden=cfg["hidden_size"], heads=heads,
        kv_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=int(cfg.get("head_dim") or cfg["hidden_size"] // heads),
        intermediate=cfg["intermediate_size"], vocab=cfg["vocab_size"],
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        context_length=int(cfg.get("max_position_embeddings") or 4096),
        qkv_bias=bool(cfg.get("attention_bias", cfg.get("model_type") == "qwen2")),
    )  # fmt: skip


def architecture_from_gguf(path: Path, name: str) -> tuple[Architecture, str]:
    """(architecture, file type like 'q4_k_m') from a GGUF's metadata (`qwen2.block_count`, ...)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, IndexError, OSError, KeyError) as e:
        raise LmforgeError(f"{path} is not a readable GGUF file ({type(e).__name__}: {e})") from e

    def value(key: str) -> Any:
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    arch = str(value("general.architecture") or "")
    keys = {"layers": "block_count", "hidden": "embedding_length", "heads": "attention.head_count",
            "kv_heads": "attention.head_count_kv", "intermediate": "feed_forward_length"}  # fmt: skip
    got = {k: value(f"{arch}.{v}") for k, v in keys.items()}
    got = {k: (max(v) if isinstance(v, list) else v) for k, v in got.items()}  # per-layer lists: the largest
    missing = [f"{arch}.{keys[k]}" for k, v in got.items() if v is None and k != "kv_heads"]
    if missing:
        raise LmforgeError(f"{path.name} ({arch or 'unknown architecture'}) does not say {', '.join(missing)}; "
                           f"pass the model's config.json instead ({', '.join(CONFIG_FIELDS)})")  # fmt: skip
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    names = {t.name for t in reader.tensors}
    vocab = value(f"{arch}.vocab_size") or (len(tokens.data) if tokens is not None else 0)
    heads = int(got["heads"])
    ftype = value("general.file_type")
    try:
        ftype_name = (
            gguf.LlamaFileType(int(ftype)).name.removeprefix("MOSTLY_").lower() if ftype is not None else ""
        )
    except ValueError:
        ftype_name = ""
    a = Architecture(
        name=name, layers=int(got["layers"]), hidden=int(got["hidden"]), heads=heads,
        kv_heads=int(got["kv_heads"] or heads),
        head_dim=int(value(f"{arch}.attention.key_length") or int(got["hidden"]) // heads),
        intermediate=int(got["intermediate"]), vocab=int(vocab), tied_embeddings="output.weight" not in names,
        context_length=int(value(f"{arch}.context_length") or 4096),
        qkv_bias="blk.0.attn_q.bias" in names,
    )  # fmt: skip
    return a, {"all_f32": "fp32", "f16": "fp16", "bf16": "bf16"}.get(ftype_name, ftype_name)


# -- the model being planned -------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """What `lmforge plan MODEL` resolved MODEL to."""

    label: str
    """What the user asked for."""
    arch: Architecture
    source: str
    """'registry:NAME (gguf, q4_k_m)', 'config:PATH', 'table:qwen2.5-7b'."""
    file_bytes: int | None = None
    """Bytes of the registered weights (GGUF file, safetensors files)."""
    file_precision: str | None = None
    """The registered file's precision ('q4_k_m', 'fp32'), when known."""
    checkpoint_bytes_per_param: float = 2.0
    """What an HF checkpoint of it stores per parameter: 2 (bf16 on the Hub), 4 for lmforge's fp32 ones
    (a GGUF is dequantized to fp32 once for training)."""


def resolve_model(text: str, registry: Registry | None = None) -> ModelSpec:
    """A config.json (or a folder with one), a registered model, or a table name / size, in that order."""
    path = Path(text).expanduser()
    if text.endswith(".json") or (path.is_dir() and (path / "config.json").is_file()):
        cfg_path = path / "config.json" if path.is_dir() else path
        if not cfg_path.is_file():
            raise LmforgeError(f"no such file: {cfg_path}")
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LmforgeError(f"{cfg_path} is not valid JSON ({e})") from e
        if not isinstance(cfg, dict):
            raise LmforgeError(f"{cfg_path} is not a config object")
        return ModelSpec(
            text, architecture_from_config(cfg, cfg_path.parent.name or text), f"config:{cfg_path}"
        )
    if registry is not None and _registry_name(text) and registry.exists(text):
        return _from_registry(registry, text)
    key = _table_name(text)
    if key is None:
        raise unknown_architecture(text)
    return ModelSpec(text, KNOWN_ARCHITECTURES[key], f"table:{key}")


def _registry_name(text: str) -> bool:
    from lmforge.home import NAME_RE

    return bool(NAME_RE.match(text))


def _from_registry(registry: Registry, name: str) -> ModelSpec:
    m = registry.get(name)
    if m.kind == "adapter" and m.config.get("base"):
        base = _from_registry(registry, str(m.config["base"]))
        return replace(
            base, label=name, source=f"registry:{name} (adapter on {base.source.removeprefix('registry:')})"
        )
    if m.format == "openai":
        raise LmforgeError(f"{name} is served by a remote endpoint; there is nothing to plan on this machine")
    if m.format not in ("gguf", "hf"):
        raise LmforgeError(f"{name} is a {m.kind} ({m.format}), not a language model the planner can size")
    path = registry.model_path(m)
    if m.format == "gguf":
        arch, ftype = architecture_from_gguf(path, name)
        return ModelSpec(name, arch, f"registry:{name} (gguf, {ftype or 'unknown type'})", path.stat().st_size,
                         ftype or None, checkpoint_bytes_per_param=4.0)  # fmt: skip
    cfg_path = path / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise LmforgeError(f"{name}: cannot read {cfg_path} ({e})") from e
    arch = architecture_from_config(cfg, name)
    st = sum(p.stat().st_size for p in path.glob("*.safetensors"))
    dtype = str(cfg.get("dtype") or cfg.get("torch_dtype") or "")
    prec = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(dtype)
    per_param = st / arch.params if st else BITS_PER_WEIGHT.get(prec or "bf16", 16) / 8
    return ModelSpec(name, arch, f"registry:{name} (hf, {prec or dtype or 'unknown dtype'})", st or None, prec,
                     checkpoint_bytes_per_param=round(per_param * 2) / 2)  # fmt: skip


# -- settings ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlanConfig:
    """Everything `lmforge plan` can be asked; None = a default that depends on the model or device."""

    train: TrainMethod | None = None
    """None plans serving; full / lora / qlora plan a fine-tune."""
    precision: Precision | None = None
    """Weights. Default: a registered model's own; else serving bf16 on GPU, q4_k_m on CPU (llama.cpp);
    training bf16 on GPU, fp32 on CPU."""
    context: int | None = None
    """Serving: tokens per sequence (default: `lmforge serve`'s, min(4096, the model's))."""
    concurrency: int = 4
    """Serving: sequences decoded together (`lmforge serve --slots`, vLLM's running sequences)."""
    prompt_tokens: int | None = None
    """Serving: the longest prompt prefilled at once (default: the whole context, the worst case)."""
    kv_cache: KvPrecision = "f16"
    """Serving: KV cache element type."""
    batch: int = 4
    """Training: sequences per micro-batch per device (`lmforge finetune --batch-size`)."""
    seq_len: int = 512
    """Training: tokens per sequence (`lmforge finetune --max-length`)."""
    optimizer: Optimizer = "adamw"
    grad_checkpointing: bool = False
    zero: int = 0
    """DeepSpeed ZeRO stage across `gpus`: 1 optimizer states, 2 + gradients, 3 + weights partitioned."""
    rank: int = 8
    """LoRA / QLoRA rank."""
    cpu: bool = False
    """Plan for this machine's CPU and RAM (llama.cpp serving, `lmforge finetune`) instead of GPUs."""
    gpu_memory_gb: float = 24.0
    """Memory of one GPU."""
    gpus: int = 1
    """GPUs available (tensor parallel for serving, data parallel / ZeRO for training)."""
    ram_gb: float | None = None
    """With cpu: the RAM to check against (default: this machine's)."""

    @property
    def mode(self) -> Literal["serve", "train"]:
        return "serve" if self.train is None else "train"


def validate(cfg: PlanConfig) -> None:
    """Every problem with the settings at once, as one error."""
    bad = []
    for name in ("concurrency", "batch", "seq_len", "rank", "gpus"):
        if getattr(cfg, name) < 1:
            bad.append(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("context", "prompt_tokens"):
        v = getattr(cfg, name)
        if v is not None and v < 1:
            bad.append(f"--{name.replace('_', '-')} must be at least 1")
    if cfg.gpu_memory_gb <= 0 or (cfg.ram_gb is not None and cfg.ram_gb <= 0):
        bad.append("device memory must be positive")
    if cfg.zero not in (0, 1, 2, 3):
        bad.append("--zero must be 0, 1, 2 or 3")
    if cfg.train is not None and cfg.precision is not None and cfg.precision not in TRAIN_PRECISIONS:
        bad.append(
            f"training precision must be one of {', '.join(TRAIN_PRECISIONS)} (QLoRA's NF4 base is --train qlora)"
        )
    if cfg.train is None and (cfg.zero or cfg.grad_checkpointing):
        bad.append("--zero and --grad-checkpointing are training settings (add --train full|lora|qlora)")
    if cfg.cpu and cfg.zero:
        bad.append("ZeRO partitions across GPUs; drop --zero with --cpu")
    if bad:
        raise LmforgeError("; ".join(bad))


# -- this machine -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CpuFacts:
    ram_gb: float
    physical_cores: int
    memory_bandwidth_gbs: float | None
    """Measured once (a full read of a 512 MiB tensor on all cores), cached in LMFORGE_HOME/hardware.json."""


BANDWIDTH_KEY = "memory_bandwidth_gbs"


def measure_memory_bandwidth(mib: int = 512, repeats: int = 5) -> float:
    """Read bandwidth in GB/s: the best of `repeats` sums of a `mib` float32 tensor on all threads (decode
    reads every weight once per token the same way)."""
    import torch

    x = torch.ones(mib * (1 << 20) // 4, dtype=torch.float32)
    x.sum()  # fault the pages in
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t)
    return round(x.numel() * 4 / best / GB, 1)


def cpu_facts(registry: Registry, *, measure: bool = True) -> CpuFacts:
    """RAM, physical cores and memory bandwidth (measured and remembered on first use when `measure`)."""
    import psutil

    path = registry.root / "hardware.json"
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        known = {}
    bw = known.get(BANDWIDTH_KEY)
    if bw is None and measure:
        bw = measure_memory_bandwidth()
        try:  # re-read: pretraining's precision cache shares the file
            known = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            known = {}
        known[BANDWIDTH_KEY] = bw
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=2), encoding="utf-8")
        os.replace(tmp, path)
    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    return CpuFacts(
        round(psutil.virtual_memory().total / GB, 1), cores, float(bw) if bw is not None else None
    )


# -- the plan ---------------------------------------------------------------------------------------
@dataclass
class Row:
    key: str
    """Stable name: JSON carries it as `<key>_gb`."""
    label: str
    gb: float
    """The whole job (every device together)."""
    per_device_gb: float
    """What one device holds."""
    note: str = ""


@dataclass
class Suggestion:
    change: str
    """The flags to change, e.g. '--precision q4_k_m'."""
    per_device_gb: float
    fits: bool
    devices: int = 1


@dataclass
class Plan:
    mode: Literal["serve", "train"]
    spec: ModelSpec
    cfg: PlanConfig
    """Resolved: precision, context and prompt tokens filled in."""
    rows: list[Row]
    total_gb: float
    """Peak of the whole job, every device together."""
    per_device_gb: float
    """Peak on one device: what must fit."""
    devices: int
    """Devices the plan is computed for (the tensor-parallel size when serving on GPUs)."""
    fits: bool
    device: str
    """'1× 24 GB GPU', "this machine's 23.4 GB RAM"."""
    devices_needed: int | None
    """Serving on GPUs: the smallest tensor-parallel size that fits (None: none up to 16)."""
    naive_gb: float
    naive_note: str
    peak_rule: str
    suggestions: list[Suggestion] = field(default_factory=list)
    cpu: dict[str, Any] | None = None
    """CPU serving: threads, memory bandwidth, decode tokens/s (memory-bandwidth ceilings)."""
    notes: list[str] = field(default_factory=list)

    def row(self, key: str) -> float:
        return next((r.gb for r in self.rows if r.key == key), 0.0)

    @property
    def verdict(self) -> str:
        need = f"{self.per_device_gb:.1f} GB" + (" per GPU" if self.devices > 1 else "")
        return (
            f"fits on {self.device}: {'yes' if self.fits else 'no'} ({'' if self.fits else 'needs '}{need})"
        )

    def to_json(self) -> dict[str, Any]:
        """Stable keys: every row as `<key>_gb` (absent rows 0), the totals, the verdict, the suggestions."""
        keys = SERVE_KEYS if self.mode == "serve" else TRAIN_KEYS
        out: dict[str, Any] = {"mode": self.mode, "model": self.spec.label, "source": self.spec.source,
                               "architecture": asdict(self.spec.arch) | {"params": self.spec.arch.params},
                               "settings": asdict(self.cfg)}  # fmt: skip
        out |= {f"{k}_gb": round(self.row(k), 6) for k in keys}
        out |= {"overhead_gb": round(sum(self.row(k) for k in OVERHEAD_KEYS), 6), "total_gb": round(self.total_gb, 6),
                "per_device_gb": round(self.per_device_gb, 6), "devices": self.devices, "device": self.device,
                "fits": self.fits, "verdict": self.verdict, "devices_needed": self.devices_needed,
                "suggestions": [asdict(s) for s in self.suggestions], "naive_gb": round(self.naive_gb, 2),
                "naive_note": self.naive_note, "peak_rule": self.peak_rule,
                "breakdown": [asdict(r) | {"gb": round(r.gb, 6), "per_device_gb": round(r.per_device_gb, 6)}
                              for r in self.rows],
                "cpu": self.cpu, "notes": self.notes}  # fmt: skip
        if self.mode == "train":
            out["trainable_params"] = trainable_params(self.spec.arch, self.cfg)
        return out


SERVE_KEYS = ("weights", "kv_cache", "server_context", "compute", "runtime")
TRAIN_KEYS = ("weights", "gradients", "optimizer", "activations", "logits", "step_scratch", "checkpoint_pages",
              "allocator", "runtime")  # fmt: skip
OVERHEAD_KEYS = ("server_context", "compute", "runtime", "step_scratch", "checkpoint_pages", "allocator")
"""Rows that are neither the model's own state nor the KV cache / activations (JSON `overhead_gb`)."""


def resolve(spec: ModelSpec, cfg: PlanConfig) -> PlanConfig:
    """Fill the model- and device-dependent defaults in."""
    if cfg.precision is None:
        own = spec.file_precision if spec.file_precision in BITS_PER_WEIGHT else None
        if cfg.train is not None:
            prec = "fp32" if cfg.cpu else "bf16"
        elif own is not None and (cfg.cpu or own not in GGUF_TYPES):
            prec = own
        else:
            prec = "q4_k_m" if cfg.cpu else "bf16"
        cfg = replace(cfg, precision=prec)  # type: ignore[arg-type]
    if cfg.train is None:
        ctx = cfg.context or min(4096, spec.arch.context_length)
        cfg = replace(cfg, context=ctx, prompt_tokens=min(cfg.prompt_tokens or ctx, ctx))
    return cfg


def weight_bytes(spec: ModelSpec, precision: str) -> float:
    """The weights at `precision`; a registered file at its own precision is its size."""
    if spec.file_bytes and precision == spec.file_precision:
        return float(spec.file_bytes)
    a = spec.arch
    if precision in LAYER_ONLY:
        linear = a.layers * a.layer_linear_params
        return linear * BITS_PER_WEIGHT[precision] / 8 + (a.params - linear) * 2
    return a.params * BITS_PER_WEIGHT[precision] / 8


def trainable_params(a: Architecture, cfg: PlanConfig) -> int:
    return a.params if cfg.train == "full" else a.lora_params(cfg.rank)


def estimate(spec: ModelSpec, cfg: PlanConfig, cpu: CpuFacts | None = None, *, suggest: bool = True) -> Plan:
    """The plan for `spec` under `cfg` (validated, defaults resolved); `cpu` supplies the RAM, cores and
    bandwidth when planning for this machine."""
    validate(cfg)
    cfg = resolve(spec, cfg)
    memory = (cfg.ram_gb or (cpu.ram_gb if cpu else 0.0)) if cfg.cpu else cfg.gpu_memory_gb
    plan = _serve(spec, cfg, memory, cpu) if cfg.train is None else _train(spec, cfg, memory)
    if suggest and not plan.fits:
        plan.suggestions = _suggestions(spec, cfg, cpu)
    return plan


def _device_label(cfg: PlanConfig, devices: int, memory: float) -> str:
    if cfg.cpu:
        return f"this machine's {memory:.1f} GB RAM" if cfg.ram_gb is None else f"{memory:g} GB RAM"
    return f"{devices}× {memory:g} GB GPU"


def _serve(spec: ModelSpec, cfg: PlanConfig, memory: float, cpu: CpuFacts | None) -> Plan:
    a, prec = spec.arch, str(cfg.precision)
    ctx, conc, prompt = int(cfg.context or 0), cfg.concurrency, int(cfg.prompt_tokens or 0)
    kv_tok = a.kv_bytes_per_token(cfg.kv_cache)
    weights, kv = weight_bytes(spec, prec), kv_tok * ctx * conc
    bits = weights * 8 / a.params
    tp = 1 if cfg.cpu else max(n for n in TP_SIZES if n <= cfg.gpus and a.heads % n == 0)
    own = " (the registered file)" if spec.file_bytes and prec == spec.file_precision else ""
    rows = [Row("weights", f"weights ({prec})", weights / GB, weights / tp / GB,
                f"{a.params / 1e9:.3g}B params × {bits:.2f} bits{own}"),
            Row("kv_cache", f"KV cache ({cfg.kv_cache})", kv / GB, kv / tp / GB,
                f"2 × {a.layers} layers × {a.kv_heads} KV heads × {a.head_dim} × {KV_BYTES[cfg.kv_cache]:g} B "
                f"= {kv_tok / 1e6:.4f} MB/token × {ctx:,} tokens × {conc} seq")]  # fmt: skip
    if cfg.cpu:
        ub = min(LLAMACPP_BATCH, prompt * conc)
        n_kv = math.ceil(prompt / 256) * 256
        compute = ub * n_kv * (a.heads + 1) * 4 + ub * (3 * a.intermediate + 4 * a.hidden) * 4 + conc * a.vocab * 4  # fmt: skip
        rows += [Row("server_context", "single-sequence context", kv_tok * ctx / GB, kv_tok * ctx / GB,
                     "lmforge's server keeps one beside the batched engine: KV for 1 more sequence"),
                 Row("compute", "llama.cpp compute buffer", compute / GB, compute / GB,
                     f"a {ub}-token prompt chunk attending {n_kv:,} positions (flash attention off) + logits"),
                 Row("runtime", "process", CPU_SERVE_RUNTIME / GB, CPU_SERVE_RUNTIME / GB,
                     "Python, lmforge, llama.cpp (measured)")]  # fmt: skip
    else:
        chunk = min(GPU_PREFILL_CHUNK, prompt * conc)
        compute = chunk * (4 * a.hidden + 3 * a.intermediate) * 2 + 2 * conc * a.vocab * 4
        rows += [Row("compute", "activations", compute * tp / GB, compute / GB, f"a {chunk}-token prefill chunk + logits"),
                 Row("runtime", "CUDA context, workspaces", GPU_RUNTIME * tp / GB, GPU_RUNTIME / GB,
                     "per GPU (not calibrated here)")]  # fmt: skip
    per_device = sum(r.per_device_gb for r in rows)
    notes = []
    if ctx > a.context_length:
        notes.append(f"context {ctx:,} is beyond what {a.name} was trained for ({a.context_length:,}): RoPE scaling")  # fmt: skip
    needed: int | None = 1
    if not cfg.cpu:
        needed = next((n for n in TP_SIZES if a.heads % n == 0
                       and (weights + kv) / n / GB + (compute + GPU_RUNTIME) / GB <= memory), None)  # fmt: skip
        if a.kv_heads < tp:
            notes.append(f"{a.kv_heads} KV heads on {tp} GPUs: engines replicate KV heads, the KV cache per GPU is larger")  # fmt: skip
    b, kv_seq = a.params / 1e9, kv_tok * ctx / GB
    naive = 16 * b + 2 * conc
    naive_note = (f"16 × {b:.3g}B + 2 × {conc} sequences = {naive:.1f} GB: it charges 16 bytes per parameter "
                  f"(weights + gradients + Adam states: a training figure) where {prec} weights take {bits / 8:.2f}, "
                  f"and a flat 2 GB per sequence where its KV cache at {ctx:,} tokens takes {kv_seq:.2f} GB")  # fmt: skip
    rule = "peak = the sum of the rows" + ("; weights and KV cache split over the tensor-parallel GPUs" if tp > 1 else "")  # fmt: skip
    return Plan("serve", spec, cfg, rows, sum(r.gb for r in rows), per_device, tp, per_device <= memory,
                _device_label(cfg, tp, memory), needed, naive, naive_note, rule,
                cpu=_cpu_estimate(spec, cfg, weights, kv_tok, cpu) if cfg.cpu else None, notes=notes)  # fmt: skip


def _cpu_estimate(
    spec: ModelSpec, cfg: PlanConfig, weights: float, kv_tok: float, cpu: CpuFacts | None
) -> dict[str, Any]:
    """Threads and decode-speed ceilings: bandwidth / bytes read per step (every weight once, of the
    token-embedding table one row unless lm_head shares it, plus each sequence's KV cache)."""
    a = spec.arch
    read = weights - (0.0 if a.tied_embeddings else a.vocab * a.hidden * weights / a.params)
    bw = cpu.memory_bandwidth_gbs if cpu else None
    out: dict[str, Any] = {"threads": cpu.physical_cores if cpu else None, "memory_bandwidth_gbs": bw,
                           "bytes_per_token_gb": round(read / GB, 3)}  # fmt: skip
    if bw:
        full = read + cfg.concurrency * kv_tok * int(cfg.context or 0)
        out |= {"decode_tokens_per_s": round(bw * GB / read, 1),
                "decode_tokens_per_s_full_context": round(bw * GB / full, 1),
                "aggregate_tokens_per_s_full_context": round(cfg.concurrency * bw * GB / full, 1)}  # fmt: skip
    return out


def _train(spec: ModelSpec, cfg: PlanConfig, memory: float) -> Plan:
    a, prec, method, gpus = spec.arch, str(cfg.precision), str(cfg.train), cfg.gpus
    mixed, trainable = prec != "fp32", trainable_params(a, cfg)
    linear = a.layers * a.layer_linear_params
    tokens, h, i = cfg.batch * cfg.seq_len, a.hidden, a.intermediate
    rows: list[Row] = []

    def add(key: str, label: str, per_device: float, note: str) -> None:
        rows.append(Row(key, label, per_device * gpus / GB, per_device / GB, note))

    if method == "qlora":
        w = linear * BITS_PER_WEIGHT["nf4"] / 8 + (a.params - linear) * 4 + trainable * 4
        wnote = "layer matrices NF4 (double quant); embeddings, lm_head, norms fp32 (peft); adapter fp32"
    elif cfg.cpu:
        w = a.params * 4 + (trainable * 4 if method == "lora" else 0)
        wnote = "fp32 (`lmforge finetune` keeps fp32 weights on CPU)"
        if mixed:  # autocast saves a half-precision copy of every matmul weight (lm_head too) for backward
            w += (linear + a.vocab * h) * 2
            wnote += f" + the {prec} copies of the matmul weights autocast keeps for backward"
    elif method == "lora":
        w = a.params * BITS_PER_WEIGHT[prec] / 8 + trainable * 4
        wnote = f"frozen base {prec} + adapter fp32"
    else:
        w = a.params * (BITS_PER_WEIGHT[prec] / 8 + (4 if mixed else 0))
        wnote = f"{prec} + fp32 master copy" if mixed else "fp32"
    zw, zg, zo = (gpus if cfg.zero >= s else 1 for s in (3, 2, 1))
    add("weights", "weights", w / zw, wnote + (f"; ZeRO-3 splits them over {gpus} GPUs" if zw > 1 else ""))
    gbytes = 2 if (mixed and method == "full" and not cfg.cpu) else 4
    add("gradients", "gradients", trainable * gbytes / zg,
        f"{trainable / 1e6:,.1f}M trainable × {gbytes} B" + (f"; ZeRO-2 splits them over {gpus}" if zg > 1 else ""))  # fmt: skip
    ob = OPTIMIZER_BYTES[cfg.optimizer]
    add("optimizer", f"optimizer ({cfg.optimizer})", trainable * ob / zo,
        f"{ob:g} B per trainable parameter" + (f"; ZeRO-1 splits them over {gpus}" if zo > 1 else ""))  # fmt: skip
    per_layer = 6 * h + 4 * i + 2 * (a.heads + a.kv_heads) * a.head_dim  # saved values per token per layer
    if method != "full":
        per_layer += 8 * h + i + LORA_TARGETS * cfg.rank  # LoRA dropout: a dropped copy + mask per projection
    abytes, norm_fp32 = (2, 8 * h) if mixed else (4, 0)  # autocast keeps RMSNorm's saves in fp32
    if cfg.grad_checkpointing:
        act = tokens * (a.layers * h * abytes + per_layer * abytes + norm_fp32)
        anote = f"one hidden vector per layer + one layer recomputed, {tokens:,} tokens"
    else:
        act = tokens * a.layers * (per_layer * abytes + norm_fp32)
        anote = f"{per_layer:,} values/token/layer × {a.layers} layers × {tokens:,} tokens × {abytes} B"
    add("activations", "activations", act, anote)
    logits = LOGITS_COPIES * tokens * a.vocab * 4
    add("logits", "logits + loss", logits, f"{LOGITS_COPIES} fp32 copies of {cfg.batch} × {cfg.seq_len} × {a.vocab:,}")  # fmt: skip
    scratch = 2 * max(a.vocab * h, h * i) * 4 if (cfg.cpu and method == "full") else 0.0
    if scratch:
        add("step_scratch", "optimizer-step scratch", scratch, "AdamW temporaries of the largest tensor")
    pages = linear * spec.checkpoint_bytes_per_param if (cfg.cpu and method == "qlora") else 0.0
    if pages:
        add("checkpoint_pages", "checkpoint pages", pages,
            "the checkpoint read while quantizing stays mapped (file-backed RSS, reclaimable)")  # fmt: skip
    fwd, bwd = act + logits, trainable * gbytes / zg + scratch
    heap = (CPU_HEAP_RETENTION[method] - 1) * max(fwd, bwd) if cfg.cpu else 0.0
    if heap:
        add("allocator", "heap retention", heap, "freed activation memory glibc keeps (measured)")
    runtime = CPU_TRAIN_RUNTIME + a.vocab * TOKENIZER_BYTES_PER_TOKEN if cfg.cpu else GPU_RUNTIME
    add("runtime", "process" if cfg.cpu else "CUDA context, allocator", runtime,
        "torch, transformers, peft, the tokenizer (measured)" if cfg.cpu else "per GPU (not calibrated here)")  # fmt: skip
    per_device = (runtime + pages + w / zw + trainable * ob / zo + max(fwd, bwd) + heap) / GB
    b, states = a.params / 1e9, (w + trainable * (gbytes + ob)) / GB
    naive = 16 * b + 2 * cfg.batch
    naive_note = (f"16 × {b:.3g}B + 2 × {cfg.batch} sequences = {naive:.1f} GB: 16 bytes per parameter is full "
                  f"training's weights + gradients + Adam ({method} here: {states:.1f} GB), and 2 GB per sequence "
                  f"ignores its length and the vocabulary (activations + logits at {cfg.seq_len} tokens: "
                  f"{fwd / cfg.batch / GB:.2f} GB per sequence)")  # fmt: skip
    notes = ["on CPU bf16 is autocast over fp32 weights: smaller activations, extra weight copies"] if (
        cfg.cpu and mixed) else []  # fmt: skip
    rule = ("peak = weights + optimizer + max(activations + logits, gradients) + the rest: gradients are built "
            "as the saved activations are freed")  # fmt: skip
    return Plan("train", spec, cfg, rows, per_device * gpus, per_device, gpus, per_device <= memory,
                _device_label(cfg, gpus, memory), None, naive, naive_note, rule, notes=notes)  # fmt: skip


def _suggestions(spec: ModelSpec, cfg: PlanConfig, cpu: CpuFacts | None) -> list[Suggestion]:
    """Changes that lower the peak, each recomputed; those that fit first."""
    tries: list[tuple[str, PlanConfig]] = []
    if cfg.train is None:
        ladder = ("q8_0", "q5_k_m", "q4_k_m", "q4_0") if cfg.cpu else ("bf16", "int8", "int4")
        bits = weight_bytes(spec, str(cfg.precision)) * 8 / spec.arch.params
        lower = [replace(cfg, precision=p) for p in ladder if BITS_PER_WEIGHT[p] < bits - 0.05]  # type: ignore[arg-type]
        c = next((c for c in lower if estimate(spec, c, cpu, suggest=False).fits), lower[-1] if lower else None)  # fmt: skip
        if c:  # the least aggressive precision that fits (or the smallest there is)
            tries.append((f"--precision {c.precision}", c))
        if KV_BYTES[cfg.kv_cache] >= 2:
            kv = "q8_0" if cfg.cpu else "fp8"
            tries.append((f"--kv-cache {kv}", replace(cfg, kv_cache=kv)))  # type: ignore[arg-type]
        conc = _largest(lambda n: replace(cfg, concurrency=n), cfg.concurrency - 1, spec, cpu)
        if conc:
            tries.append((f"--concurrency {conc}", replace(cfg, concurrency=conc)))
        at = lambda n: replace(cfg, context=n * 256, prompt_tokens=None)  # noqa: E731
        blocks = _largest(at, (cfg.context or 0) // 256 - 1, spec, cpu)
        if blocks:
            tries.append((f"--context {blocks * 256}", at(blocks)))
        n = None if cfg.cpu else estimate(spec, replace(cfg, gpus=1), cpu, suggest=False).devices_needed
        if n and n > cfg.gpus:
            tries.append((f"--gpus {n} (tensor parallel)", replace(cfg, gpus=n)))
    else:
        if cfg.train == "full":
            tries.append(("--train lora", replace(cfg, train="lora")))
        if cfg.train in ("full", "lora"):
            tries.append(("--train qlora", replace(cfg, train="qlora")))
        if not cfg.grad_checkpointing:
            tries.append(("--grad-checkpointing", replace(cfg, grad_checkpointing=True)))
        if cfg.batch > 1:
            tries.append((f"--batch 1 (gradient accumulation {cfg.batch})", replace(cfg, batch=1)))
        if cfg.optimizer == "adamw" and cfg.train == "full":
            tries.append(("--optimizer adamw8bit", replace(cfg, optimizer="adamw8bit")))
        if cfg.precision == "fp32" and not cfg.cpu:
            tries.append(("--precision bf16", replace(cfg, precision="bf16")))
        if not cfg.cpu and cfg.train == "full":
            for ckpt in sorted({cfg.grad_checkpointing, True}):  # ZeRO-3 alone, else with checkpointing
                zero3 = [replace(cfg, zero=3, gpus=n, grad_checkpointing=ckpt) for n in (2, 4, 8, 16, 32, 64)]
                c = next((c for c in zero3 if estimate(spec, c, cpu, suggest=False).fits), None)
                if c:
                    flag = " --grad-checkpointing" if ckpt and not cfg.grad_checkpointing else ""
                    tries.append((f"--zero 3 --gpus {c.gpus}{flag}", c))
                    break
    out = []
    for change, c in tries:
        p = estimate(spec, c, cpu, suggest=False)
        out.append(Suggestion(change, round(p.per_device_gb, 2), p.fits, p.devices))
    if cfg.train is not None and out and not any(s.fits for s in out):  # no one change is enough: stack them
        gentlest = (
            "--grad-checkpointing",
            "--batch",
            "--optimizer",
            "--precision",
            "--train lora",
            "--train qlora",
        )
        combined, done = cfg, []
        for change, c in [t for key in gentlest for t in tries if t[0].startswith(key)]:
            combined = replace(combined, **{k: v for k, v in asdict(c).items() if v != getattr(cfg, k)})
            done.append(change.split(" (")[0])
            p = estimate(spec, combined, cpu, suggest=False)
            if p.fits:
                out.append(Suggestion(" ".join(done), round(p.per_device_gb, 2), True, p.devices))
                break
    return sorted(out, key=lambda s: not s.fits)


def _largest(make: Callable[[int], PlanConfig], hi: int, spec: ModelSpec, cpu: CpuFacts | None) -> int | None:
    """The largest n in [1, hi] whose plan fits (plans grow with n), or None."""
    lo = 1
    if hi < lo or not estimate(spec, make(lo), cpu, suggest=False).fits:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if estimate(spec, make(mid), cpu, suggest=False).fits else (lo, mid - 1)
    return lo


def main(registry: Registry | None, model: str, cfg: PlanConfig, *, measure: bool = True) -> Plan:
    """`lmforge plan`: resolve MODEL, gather this machine's facts when planning for its CPU (the memory
    bandwidth is measured once when serving), estimate."""
    validate(cfg)
    spec = resolve_model(model, registry)
    cpu = None
    if cfg.cpu and registry is not None:
        cpu = cpu_facts(registry, measure=measure and cfg.train is None)
    if cfg.cpu and cpu is None and cfg.ram_gb is None:
        raise LmforgeError("--cpu needs this machine's facts (a registry) or --ram GB")
    return estimate(spec, cfg, cpu)
