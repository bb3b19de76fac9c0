"""Export a Hugging Face checkpoint to GGUF (f16 / q8_0 / q4_k_m), register it, check parity.

- Conversion: llama.cpp's own `convert_hf_to_gguf.py`, taken from the llama-cpp-python source
  distribution of the installed version (fetched once with `pip download`, cached under
  ~/.cache/lmforge), so the converter always matches the llama.cpp we run. It supports every
  architecture llama.cpp does.
- Quantization to q4_k_m: `llama_model_quantize` from the llama.cpp library itself (f16 → q4_k_m);
  q8_0 and f16 come straight from the converter.
- Parity: the exported file is loaded in llama.cpp and the parent in transformers; greedy
  continuations of a few prompts are compared token by token, and both perplexities are measured
  on a held-out text (the same token ids fed to both). The numbers go into the manifest.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Literal

from lmforge.errors import LmforgeError
from lmforge.home import Manifest, Registry, file_sha256
from lmforge.infer.sampling import SamplingParams

Quant = Literal["f16", "q8_0", "q4_k_m"]
QUANTS: tuple[str, ...] = ("f16", "q8_0", "q4_k_m")
CONVERTER_MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
DEFAULT_PROMPTS = ("The capital of France is", "Once upon a time", "今天天气很好，", "def fibonacci(n):")


@dataclass
class ExportConfig:
    quant: Quant = "f16"
    """GGUF tensor type: f16 (lossless for fp16/bf16 models), q8_0 (~half), q4_k_m (~quarter)."""
    name: str | None = None
    """Registry name of the result; default '<parent>-<quant>'."""
    parity: bool = True
    """Run the parity check (greedy match + perplexity of parent vs export)."""
    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    """Prompts for the greedy-continuation comparison."""
    greedy_tokens: int = 16
    """Tokens generated per prompt in the comparison."""
    eval_text: Path | None = None
    """Held-out text for perplexity; default: a short zh+en text shipped with lmforge."""
    max_eval_tokens: int = 512
    n_threads: int | None = None


@dataclass
class ParityReport:
    prompts: int
    greedy_exact: int
    """Prompts whose greedy continuation matched token for token."""
    greedy_token_agreement: float
    """Fraction of compared positions (up to the first divergence, over all prompts) that agree."""
    tokenizer_match: bool
    """llama.cpp tokenizes the held-out text to the same ids as transformers."""
    ppl_parent: float
    ppl_export: float
    ppl_rel_diff: float
    eval_tokens: int
    details: list[dict] = field(default_factory=list)


def converter_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lmforge"


def ensure_converter(version: str | None = None) -> Path:
    """Folder holding convert_hf_to_gguf.py (+ conversion/, gguf-py/) for the installed llama.cpp."""
    import llama_cpp

    version = version or llama_cpp.__version__
    tool = converter_cache() / f"llama.cpp-converter-{version}"
    if (tool / "convert_hf_to_gguf.py").is_file():
        return tool
    with tempfile.TemporaryDirectory(prefix="lmforge-sdist-") as tmp:
        print(f"fetching llama.cpp's converter (llama-cpp-python {version} sdist) ...", file=sys.stderr)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--dest", tmp, f"llama-cpp-python=={version}"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        sdists = list(Path(tmp).glob("*.tar.gz"))
        if proc.returncode != 0 or not sdists:
            last = (proc.stderr.strip().splitlines() or ["no sdist"])[-1]
            raise LmforgeError(
                f"could not fetch the llama-cpp-python {version} sdist for the converter: {last}"
            )
        stage = Path(tempfile.mkdtemp(prefix="conv-", dir=tmp))
        with tarfile.open(sdists[0]) as tar:
            prefix = f"{tar.getnames()[0].split('/')[0]}/vendor/llama.cpp/"
            for m in tar.getmembers():
                rel = m.name[len(prefix) :] if m.name.startswith(prefix) else None
                if rel and any(rel == c or rel.startswith(c) for c in CONVERTER_MEMBERS) and m.isfile():
                    m.name = rel
                    tar.extract(m, stage, filter="data")
        tool.parent.mkdir(parents=True, exist_ok=True)
        if not tool.exists():
            os.rename(stage, tool)
    return tool


def convertible(src: Path, scratch: Path) -> Path:
    """The folder to hand the converter. llama.cpp's qwen2 graph sizes the attention as hidden × hidden,
    so a Qwen2 whose heads × head_dim no longer equals hidden (structured pruning removed heads) is
    converted as what it also is, a Llama with q/k/v biases (that graph sizes by head_dim; the converter
    permutes the biases with the weights): `scratch` gets the files as links and a relabelled config."""
    import json

    cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    heads, hidden = cfg.get("num_attention_heads"), cfg.get("hidden_size")
    head_dim = cfg.get("head_dim")
    if cfg.get("model_type") != "qwen2" or not (head_dim and heads and hidden) or head_dim * heads == hidden:
        return src
    scratch.mkdir(parents=True)
    for f in src.iterdir():
        if f.name != "config.json":
            (scratch / f.name).symlink_to(f.resolve())
    cfg |= {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": True}
    (scratch / "config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
    return scratch


def _convert(src: Path, out: Path, outtype: str, tool: Path) -> None:
    cmd = [sys.executable, "-m", "lmforge.compress.convert_runner", str(tool), str(src),
           "--outfile", str(out), "--outtype", outtype]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not out.is_file():
        tail = [ln for ln in proc.stderr.splitlines() if ln.strip()][-3:]
        raise LmforgeError(f"GGUF conversion of {src.name} failed: {' | '.join(tail)}")


def _quantize(
    src: Path, out: Path, quant: str, n_threads: int | None, *, allow_requantize: bool = False
) -> None:
    """llama.cpp's quantizer (the library's own `llama_model_quantize`), GGUF → GGUF."""
    import llama_cpp

    ftype = {"q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M, "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
             "q5_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M, "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
             "f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16}[quant]  # fmt: skip
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = allow_requantize
    params.nthread = n_threads or os.cpu_count() or 1
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), params)
    if rc != 0 or not out.is_file():
        raise LmforgeError(f"llama.cpp quantization to {quant} failed (code {rc})")


def default_eval_text() -> str:
    return resources.files("lmforge.compress").joinpath("heldout.txt").read_text(encoding="utf-8")


def _ppl(logprobs: list[float]) -> float:
    return math.exp(-sum(logprobs) / max(1, len(logprobs)))


def parity_check(parent_dir: Path, gguf_path: Path, cfg: ExportConfig) -> ParityReport:
    """Compare the HF parent (transformers) and the GGUF (llama.cpp) on the same token ids."""
    from lmforge.infer.hf import TransformersBackend
    from lmforge.infer.llamacpp import LlamaCppBackend

    hf = TransformersBackend(parent_dir, n_threads=cfg.n_threads)
    gg = LlamaCppBackend(gguf_path, n_threads=cfg.n_threads, logits_all=True, n_ctx=None)
    greedy = SamplingParams(temperature=0.0, max_tokens=cfg.greedy_tokens, top_k=0, top_p=1.0)
    exact, agree, compared, details = 0, 0, 0, []
    for prompt in cfg.prompts:
        ids = hf.tokenize(prompt)
        a = [c.token_id for c in hf.generate(ids, greedy) if c.token_id is not None]
        b = [c.token_id for c in gg.generate(ids, greedy) if c.token_id is not None]
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        exact += int(a == b)
        agree += n
        compared += max(len(a), len(b)) if a == b else n + 1
        details.append({"prompt": prompt, "parent": hf.detokenize(a), "export": gg.detokenize(b),
                        "match": a == b, "first_divergence": None if a == b else n})  # fmt: skip
    text = cfg.eval_text.read_text(encoding="utf-8") if cfg.eval_text else default_eval_text()
    window = min(cfg.max_eval_tokens, hf.context_length, gg.context_length)
    ids = hf.tokenize(text)[:window]
    if len(ids) < 2:
        raise LmforgeError("held-out text is too short to measure perplexity")
    gg_ids = gg.tokenize(text)[: len(ids)]
    ppl_a, ppl_b = _ppl(hf.score(ids)), _ppl(gg.score(ids))
    gg.close()
    hf.close()
    return ParityReport(
        prompts=len(cfg.prompts),
        greedy_exact=exact,
        greedy_token_agreement=agree / max(1, compared),
        tokenizer_match=gg_ids == ids,
        ppl_parent=ppl_a,
        ppl_export=ppl_b,
        ppl_rel_diff=abs(ppl_b - ppl_a) / ppl_a,
        eval_tokens=len(ids),
        details=details,
    )


def export_gguf(registry: Registry, parent: str, cfg: ExportConfig | None = None) -> Manifest:
    """Convert registered HF checkpoint `parent` to GGUF, register it with lineage and parity."""
    import llama_cpp

    cfg = cfg or ExportConfig()
    if cfg.quant not in QUANTS:
        raise LmforgeError(f"unknown quantization {cfg.quant!r}; choose one of {', '.join(QUANTS)}")
    pm = registry.get(parent)
    if pm.format != "hf":
        raise LmforgeError(f"{parent} is already {pm.format}; export takes a Hugging Face checkpoint")
    if pm.kind in ("embedding", "masked-lm"):
        raise LmforgeError(f"{parent} is a {pm.kind} model; GGUF export covers causal LMs here")
    src = registry.model_path(pm)
    if pm.config.get("parity_prompts") and cfg.prompts == DEFAULT_PROMPTS:
        # a fine-tuned model is checked on its own (chat-formatted) fine-tuning prompts first
        cfg = replace(cfg, prompts=tuple(pm.config["parity_prompts"]) + DEFAULT_PROMPTS[:2])
    name = cfg.name or f"{parent}-{cfg.quant.replace('_', '-')}"
    if registry.exists(name):
        raise LmforgeError(f"model {name!r} already exists; pass --name or remove it first")
    tool = ensure_converter()
    filename = f"{name}.gguf"
    started = time.time()
    manifest = Manifest(
        name=name,
        kind=pm.kind,
        format="gguf",
        path=filename,
        parents=[parent],
        source=f"export:{parent}",
        config={
            "quant": cfg.quant,
            "converter": f"llama-cpp-python {llama_cpp.__version__} convert_hf_to_gguf.py",
            "quantizer": "llama_model_quantize" if cfg.quant == "q4_k_m" else "converter",
        },
        notes=f"exported from {parent}",
    )

    def fill(stage: Path) -> None:
        out = stage / filename
        conv_src = convertible(src, stage / "convert-src")
        if cfg.quant == "q4_k_m":
            f16 = stage / "f16.tmp.gguf"
            _convert(conv_src, f16, "f16", tool)
            _quantize(f16, out, "q4_k_m", cfg.n_threads)
            f16.unlink()
        else:
            _convert(conv_src, out, cfg.quant, tool)
        if conv_src != src:
            shutil.rmtree(conv_src)
        from lmforge.formats import inspect_gguf

        info = inspect_gguf(out)
        manifest.params = info.params
        manifest.config.update({"architecture": info.architecture, "file_type": info.file_type})
        manifest.data_fingerprint = file_sha256(out)
        if cfg.parity:
            print("checking parity (greedy continuations + perplexity) ...", file=sys.stderr)
            manifest.metrics["parity"] = asdict(parity_check(src, out, cfg))
        manifest.metrics["export_seconds"] = round(time.time() - started, 2)

    return registry.put(manifest, fill)


TOKENIZER_PROBES = (
    "Hello, world! The quick brown fox.",
    "中文分词：私有化部署大模型。",
    "def f(x):\n    return x ** 2",
)


def export_hf_tokenizer(registry: Registry, name: str, out: Path) -> dict[str, object]:
    """Write the model's tokenizer as a Hugging Face folder (tokenizer.json, tokenizer_config.json
    with the chat template) for tools that tokenize on their side, such as lm-evaluation-harness's
    `local-completions`. A GGUF's tokenizer is read by transformers out of the file itself. The
    result is checked: the probe texts must tokenize to the same ids as the model's own engine."""
    from lmforge.infer.hf import load_tokenizer
    from lmforge.infer.loader import load_backend

    m = registry.get(name)
    if m.format not in ("gguf", "hf"):
        raise LmforgeError(
            f"{name} is a {m.format} model; only GGUF and Hugging Face models carry a tokenizer"
        )
    if out.exists() and any(out.iterdir()):
        raise LmforgeError(f"{out} exists and is not empty; give a new folder")
    tok = load_tokenizer(registry.model_path(m))
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out))
    engine = load_backend(registry, name)
    try:
        same = [engine.tokenize(t, add_special=False) == tok(t, add_special_tokens=False)["input_ids"]
                for t in TOKENIZER_PROBES]  # fmt: skip
    finally:
        engine.close()
    return {"folder": str(out), "vocab": len(tok), "probes_identical": f"{sum(same)}/{len(same)}"}
