"""A model to explain: a registered name or an HF folder → (tokenizer, model, kind), eager attention.

transformers 5.x computes attention with SDPA by default, which returns no attention weights; the
explanations need `attn_implementation="eager"`, which `infer.hf.load_pretrained` (the inference
loader) does not take and should not: inference wants the fast kernels. So this module calls
`from_pretrained` itself, with the head the checkpoint was saved with (config.json `architectures`):
a causal LM, a masked LM (BERT), a sequence classifier (reward models, classifiers) or a bare encoder.

GGUF weights are quantized llama.cpp tensors with no attention probabilities to read: they are
refused with the name of the dequantized copy (`NAME-hf`, the one `lmforge finetune` makes), or made
into that copy when the caller asks (`--dequantize`, through `train.finetune.hf_base`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lmforge.errors import LmforgeError
from lmforge.home import NAME_RE, Manifest, Registry

ModelKind = Literal["causal", "masked", "classifier", "encoder"]

_NOT_LOCAL_WEIGHTS = {
    "openai": "a remote model (an OpenAI-compatible upstream): its weights are not here",
    "pip": "a packaged embedder run by its own engine, not a transformers checkpoint",
}
_NOT_MODELS = {
    "dataset": "a dataset",
    "tokenizer": "a tokenizer",
    "kb": "a knowledge base",
}


@dataclass
class ExplainModel:
    """A loaded model ready to explain (eval mode, float32, eager attention)."""

    name: str
    """Registry name, or the folder name for a path."""
    path: Path
    kind: ModelKind
    tokenizer: Any
    model: Any


def kind_of(config: dict[str, Any]) -> ModelKind:
    """The head a checkpoint was saved with, from config.json `architectures`."""
    archs = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "classifier"
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return "causal"
    if any(a.endswith("ForMaskedLM") for a in archs):
        return "masked"
    return "encoder"


def registered_hf(
    registry: Registry, name: str, dequantize: bool = False, say: Callable[[str], Any] = print
) -> Manifest:
    """The HF checkpoint to explain for registered `name`: the model itself, or for a GGUF model its
    dequantized copy `NAME-hf` (made now only when `dequantize`; otherwise the error says how)."""
    m = registry.get(name)
    if m.kind in _NOT_MODELS:
        raise LmforgeError(f"{name} is {_NOT_MODELS[m.kind]}, not a model: explain takes a model")
    if m.kind == "adapter":
        raise LmforgeError(f"{name} is an adapter: merge it into its base first (`lmforge merge {name}`) and "
                           "explain the merged model")  # fmt: skip
    if m.format in _NOT_LOCAL_WEIGHTS:
        raise LmforgeError(f"{name} is {_NOT_LOCAL_WEIGHTS[m.format]}; explain needs an HF checkpoint")
    if m.format == "hf":
        return m
    if m.format != "gguf":
        raise LmforgeError(
            f"{name} is a {m.format} model; explain needs an HF checkpoint (config.json + weights)"
        )
    return gguf_copy(registry, m, dequantize, say)


def gguf_copy(
    registry: Registry, m: Manifest, dequantize: bool, say: Callable[[str], Any] = print
) -> Manifest:
    """For GGUF manifest `m`: its dequantized HF copy `NAME-hf` when registered or `dequantize` asks to
    make it; else the refusal that names it."""
    cached = f"{m.name}-hf"
    if dequantize:
        from lmforge.train.finetune import hf_base

        return hf_base(registry, m.name, say)
    why = f"{m.name} is GGUF (llama.cpp weights): attention maps and attributions need the transformers model, " \
          f"so GGUF must be dequantized first"  # fmt: skip
    if registry.exists(cached):
        raise LmforgeError(f"{why}: use {cached} (its dequantized copy, already registered)")
    raise LmforgeError(f"{why}: add --dequantize to make {cached} once (fp32; the copy `lmforge finetune {m.name}` "
                       f"also makes and reuses)")  # fmt: skip


def resolve(spec: str, registry: Registry | None = None, dequantize: bool = False,
            say: Callable[[str], Any] = print) -> tuple[str, Path]:  # fmt: skip
    """(display name, HF folder) for a registered model name or a path to an HF folder."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LmforgeError(
                f"{spec} is a folder without config.json: give a Hugging Face checkpoint folder"
            )
        return path.resolve().name, path.resolve()
    if path.is_file():
        if path.suffix == ".gguf":
            raise LmforgeError(f"{spec} is a GGUF file: GGUF must be dequantized first; register it "
                               f"(`lmforge models add {spec} --name NAME`) and run again with NAME --dequantize")  # fmt: skip
        raise LmforgeError(
            f"{spec} is a file; give a registered model name or a Hugging Face checkpoint folder"
        )
    if not NAME_RE.match(spec):
        raise LmforgeError(f"no such folder: {spec} (and it is not a registry name)")
    reg = registry or Registry()
    m = registered_hf(reg, spec, dequantize, say)
    return m.name, reg.model_path(m)


def load_model(spec: str, registry: Registry | None = None, dequantize: bool = False,
               say: Callable[[str], Any] = print) -> ExplainModel:  # fmt: skip
    """Resolve `spec` (name or folder) and load it with eager attention, float32, eval mode."""
    name, path = resolve(spec, registry, dequantize, say)
    return load_folder(path, name)


def load_folder(path: Path, name: str | None = None) -> ExplainModel:
    """Load the HF checkpoint at `path` with the head it was saved with (`kind_of`)."""
    import torch
    from transformers import (
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
    )

    from lmforge.infer.hf import load_tokenizer

    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise LmforgeError(f"cannot read {path / 'config.json'}: {e}") from e
    kind = kind_of(config)
    cls = {"causal": AutoModelForCausalLM, "masked": AutoModelForMaskedLM,
           "classifier": AutoModelForSequenceClassification, "encoder": AutoModel}[kind]  # fmt: skip
    tokenizer = load_tokenizer(path)
    try:
        model = cls.from_pretrained(str(path), dtype=torch.float32, attn_implementation="eager").eval()
    except (OSError, ValueError, KeyError) as e:
        raise LmforgeError(f"transformers could not load {path} with eager attention: {e}") from e
    return ExplainModel(name=name or path.name, path=path, kind=kind, tokenizer=tokenizer, model=model)
