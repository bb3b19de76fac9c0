"""Estimates for `lmforge plan`: serving and training memory, CPU decode speed, verdicts and
suggestions (lmforge.plan's docstring has the whole picture)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.home import Registry

from lmforge.plan.models import (
    BITS_PER_WEIGHT,
    GB,
    GGUF_TYPES,
    KV_BYTES,
    LAYER_ONLY,
    OPTIMIZER_BYTES,
    TRAIN_PRECISIONS,
    Architecture,
    KvPrecision,
    ModelSpec,
    Optimizer,
    Precision,
    TrainMethod,
    resolve_model,
)

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

    from lmforge.hardware import recall, remember

    bw = recall(registry, BANDWIDTH_KEY)
    if bw is None and measure:
        bw = measure_memory_bandwidth()
        remember(registry, BANDWIDTH_KEY, bw)
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
