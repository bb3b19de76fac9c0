"""`lmforge quantize MODEL --to TYPE`: a quantized copy, registered with lineage and its three measured
numbers (compress/measure.py), or refused when it lost too much.

- GGUF types (gguf-f16, gguf-q8_0, gguf-q5_k_m, gguf-q4_k_m, gguf-q4_0): llama.cpp's converter for an
  HF parent (→ f16), then llama.cpp's own quantizer (`llama_model_quantize`); a GGUF parent in f32/f16/
  bf16 is quantized directly. A parent that is already quantized is refused: each requantization adds
  its rounding error to the last one's, and the file would claim a precision its weights no longer
  have; quantize the HF form instead (fine-tuning's dequantized `NAME-hf`), or insist with --force.
- int8: weight-only int8 through torchao (`Int8WeightOnlyConfig`, per-channel scales) for the
  transformers backend on CPU (torch.ao.quantization is deprecated); `--engine bitsandbytes` gives
  LLM.int8() instead. nf4: 4-bit NormalFloat through bitsandbytes (CPU or GPU). Both are saved as HF
  folders with their quantization_config, so transformers (and `lmforge serve`) load them as they are.
  They need an HF parent: a GGUF parent is used through its dequantized `NAME-hf`.
- Quality gate: the result's perplexity on the held-out text is compared with the parent's (same
  engine family, same text, same token ids). Above `max_ppl_increase` (default 5%) nothing is
  registered unless --force, and the error says by how much.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lmforge.compress.measure import MeasureConfig, begin, delta, measure_model, measure_path
from lmforge.errors import LmforgeError
from lmforge.home import Manifest, Registry, file_sha256

Target = Literal["gguf-f16", "gguf-q8_0", "gguf-q5_k_m", "gguf-q4_k_m", "gguf-q4_0", "int8", "nf4"]
TARGETS: tuple[str, ...] = ("gguf-f16", "gguf-q8_0", "gguf-q5_k_m", "gguf-q4_k_m", "gguf-q4_0", "int8", "nf4")
Engine = Literal["auto", "torchao", "bitsandbytes"]
UNQUANTIZED_GGUF = ("ALL_F32", "F32", "F16", "BF16")


@dataclass
class QuantizeConfig:
    to: str = "gguf-q4_k_m"
    out: str | None = None
    """Registry name; default '<model>-<type>'."""
    force: bool = False
    """Register even past the quality limit, and requantize an already-quantized GGUF."""
    max_ppl_increase: float = 0.05
    """Largest relative perplexity increase over the parent that is registered without --force."""
    engine: Engine = "auto"
    """int8: torchao (default) or bitsandbytes; nf4 is always bitsandbytes."""
    measure: MeasureConfig = field(default_factory=MeasureConfig)

    def validate(self) -> None:
        if self.to not in TARGETS:
            raise LmforgeError(f"unknown quantization type {self.to!r}; choose one of {', '.join(TARGETS)}")
        if self.engine not in ("auto", "torchao", "bitsandbytes"):
            raise LmforgeError(f"unknown --engine {self.engine!r}: auto, torchao or bitsandbytes")
        if self.to == "nf4" and self.engine == "torchao":
            raise LmforgeError("nf4 is bitsandbytes' type: leave --engine at auto")
        if not self.max_ppl_increase >= 0:
            raise LmforgeError("--max-ppl-increase must be >= 0")

    def engine_used(self) -> str:
        if self.to.startswith("gguf-"):
            return "llama.cpp"
        if self.to == "nf4":
            return "bitsandbytes"
        return "bitsandbytes" if self.engine == "bitsandbytes" else "torchao"


def gguf_file_type(path: Path) -> str:
    from lmforge.formats import inspect_gguf

    return str(inspect_gguf(path).file_type or "")


def main(registry: Registry, model: str, cfg: QuantizeConfig, *, say=print) -> Manifest:
    """Quantize registered `model` to cfg.to; register it (or raise) with the measured numbers."""
    cfg.validate()
    out = cfg.out or f"{model}-{cfg.to.replace('_', '-')}"
    pm = begin(registry, model, out)
    source = pm
    if cfg.to.startswith("gguf-") and pm.format == "gguf":
        ftype = gguf_file_type(registry.model_path(pm)).upper()
        if ftype not in UNQUANTIZED_GGUF and not cfg.force:
            raise LmforgeError(
                f"{model} is already quantized ({ftype or 'unknown type'}): quantizing it again adds a second "
                f"rounding error to the first and the file would claim a precision its weights do not have. "
                f"Quantize its Hugging Face form instead (`lmforge finetune` dequantizes it once to {model}-hf), "
                f"or pass --force to do it anyway"
            )
    if not cfg.to.startswith("gguf-") and pm.format == "gguf":
        from lmforge.train.finetune import hf_base

        source = hf_base(registry, model, lambda m: say(m))
        say(f"{cfg.to} works on Hugging Face weights: using {source.name}")
    say(f"measuring the parent {source.name} (size, decode tokens/s, perplexity on the held-out text) ...")
    parent = measure_model(registry, source.name, cfg.measure)
    started = time.time()
    quant = cfg.to.removeprefix("gguf-")
    fmt = "gguf" if cfg.to.startswith("gguf-") else "hf"
    filename = f"{out}.gguf" if fmt == "gguf" else ""
    manifest = Manifest(name=out, kind=pm.kind, format=fmt, path=filename, parents=[source.name],
                        source=f"quantize:{cfg.to}", notes=f"{cfg.to} of {source.name}",
                        config={"quant": cfg.to, "engine": cfg.engine_used(), "parent": source.name,
                                "max_ppl_increase": cfg.max_ppl_increase, "forced": cfg.force})  # fmt: skip

    def fill(stage: Path) -> None:
        src = registry.model_path(source)
        if fmt == "gguf":
            target = stage / filename
            _gguf(src, source.format, target, quant, cfg, allow_requantize=cfg.force)
            from lmforge.formats import inspect_gguf

            info = inspect_gguf(target)
            manifest.params = info.params
            manifest.config.update({"architecture": info.architecture, "file_type": info.file_type})
            manifest.data_fingerprint = file_sha256(target)
            weights = target
        else:
            _hf(src, stage, cfg)
            manifest.params = source.params
            weights = stage
        say(f"measuring {out} ...")
        got = measure_path(weights, fmt, cfg.measure)
        d = delta(parent, got)
        manifest.metrics["compress"] = got.as_dict() | {"parent": source.name, "delta": d,
                                                        "seconds": round(time.time() - started, 1)}  # fmt: skip
        if d["ppl_increase"] > cfg.max_ppl_increase and not cfg.force:
            raise LmforgeError(
                f"{cfg.to} of {source.name} lost too much: perplexity {parent.perplexity} -> {got.perplexity} "
                f"(+{d['ppl_increase']:.1%}, over the {cfg.max_ppl_increase:.0%} limit); not registered. "
                f"Pick a wider type, raise --max-ppl-increase, or pass --force to keep it"
            )

    return registry.put(manifest, fill)


def _gguf(src: Path, src_format: str, target: Path, quant: str, cfg: QuantizeConfig, *, allow_requantize: bool) -> None:  # fmt: skip
    import shutil

    from lmforge.compress.export import _convert, _quantize, convertible, ensure_converter

    if src_format == "hf":
        conv_src = convertible(src, target.with_name("convert-src"))
        f16 = target if quant == "f16" else target.with_name("f16.tmp.gguf")
        try:
            _convert(conv_src, f16, "f16", ensure_converter())
        finally:
            if conv_src != src:
                shutil.rmtree(conv_src)
        if quant == "f16":
            return
        try:
            _quantize(f16, target, quant, cfg.measure.threads)
        finally:
            f16.unlink(missing_ok=True)
        return
    _quantize(src, target, quant, cfg.measure.threads, allow_requantize=allow_requantize)


def _hf(src: Path, stage: Path, cfg: QuantizeConfig) -> None:
    """Load the HF parent with the quantization config and save it (weights + quantization_config)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, TorchAoConfig

    from lmforge.infer.hf import load_tokenizer

    if cfg.engine_used() == "torchao":
        from torchao.quantization import Int8WeightOnlyConfig

        qc = TorchAoConfig(Int8WeightOnlyConfig())
    elif cfg.to == "nf4":
        qc = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
        )
    else:
        qc = BitsAndBytesConfig(load_in_8bit=True)
    if cfg.measure.threads:
        torch.set_num_threads(cfg.measure.threads)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(src), quantization_config=qc, dtype=torch.float32)
    except (ImportError, RuntimeError, ValueError) as e:
        raise LmforgeError(f"{cfg.to} quantization with {cfg.engine_used()} failed: {e}") from e
    model.save_pretrained(str(stage))
    load_tokenizer(src).save_pretrained(str(stage))
