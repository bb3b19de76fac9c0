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

from lmforge.plan.estimates import (
    CpuFacts,
    Plan,
    PlanConfig,
    Row,
    Suggestion,
    cpu_facts,
    estimate,
    main,
    measure_memory_bandwidth,
    validate,
)
from lmforge.plan.models import (
    CONFIG_FIELDS,
    KNOWN_ARCHITECTURES,
    SIZES,
    Architecture,
    KvPrecision,
    ModelSpec,
    Optimizer,
    Precision,
    TrainMethod,
    architecture_from_config,
    architecture_from_gguf,
    resolve_model,
)

__all__ = [
    "Architecture",
    "CONFIG_FIELDS",
    "CpuFacts",
    "KNOWN_ARCHITECTURES",
    "KvPrecision",
    "ModelSpec",
    "Optimizer",
    "Plan",
    "PlanConfig",
    "Precision",
    "Row",
    "SIZES",
    "Suggestion",
    "TrainMethod",
    "architecture_from_config",
    "architecture_from_gguf",
    "cpu_facts",
    "estimate",
    "main",
    "measure_memory_bandwidth",
    "resolve_model",
    "validate",
]
