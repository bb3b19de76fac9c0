"""Architectures for `lmforge plan`: the units and precisions, the table of known models, and reading
an HF config.json, a GGUF's metadata or a registered model into an Architecture (lmforge.plan's
docstring has the whole picture)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
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
