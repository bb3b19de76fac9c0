"""`lmforge plan`: the resource planner's command (资源规划 · 显存估算). cli.py mounts it.

A thin typer function over `lmforge.plan.main`: the defaults come from `PlanConfig`, the table and the
verdict are printed here, `--json` prints `Plan.to_json()` (stable keys).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from lmforge.plan import KvPrecision, Optimizer, Plan, PlanConfig, Precision, TrainMethod

_CFG = PlanConfig()


def _registry():
    from lmforge.home import Registry

    return Registry()


def plan(
    model: Annotated[str, typer.Argument(help="A registered model, an HF config.json (or its folder), or a known architecture / size: qwen2.5-7b, llama-3.1-8b, 7b.")],
    train: Annotated[TrainMethod | None, typer.Option("--train", help="Plan a fine-tune (full | lora | qlora) instead of serving.")] = None,
    precision: Annotated[Precision | None, typer.Option(help="Weights (default: a registered model's own; bf16 on GPU; q4_k_m to serve on CPU, fp32 to train on CPU).")] = None,
    context: Annotated[int | None, typer.Option(help="Serving: tokens per sequence (default min(4096, the model's), as `lmforge serve`).")] = None,
    concurrency: Annotated[int, typer.Option(help="Serving: sequences decoded together (`lmforge serve --slots`).")] = _CFG.concurrency,
    prompt_tokens: Annotated[int | None, typer.Option(help="Serving: the longest prompt (default: the whole context, the worst case).")] = None,
    kv_cache: Annotated[KvPrecision, typer.Option(help="Serving: KV cache type (llama.cpp --cache-type-k, vLLM --kv-cache-dtype).")] = _CFG.kv_cache,
    batch: Annotated[int, typer.Option(help="Training: sequences per micro-batch per device.")] = _CFG.batch,
    seq_len: Annotated[int, typer.Option(help="Training: tokens per sequence.")] = _CFG.seq_len,
    optimizer: Annotated[Optimizer, typer.Option(help="Training: adamw | adamw8bit | sgd (momentum).")] = _CFG.optimizer,
    grad_checkpointing: Annotated[bool, typer.Option("--grad-checkpointing", help="Training: recompute activations in backward.")] = False,
    zero: Annotated[int, typer.Option(help="Training: DeepSpeed ZeRO stage 0-3 across --gpus.")] = _CFG.zero,
    rank: Annotated[int, typer.Option(help="Training: LoRA / QLoRA rank.")] = _CFG.rank,
    cpu: Annotated[bool, typer.Option("--cpu", help="Plan for this machine's CPU and RAM (llama.cpp serving, `lmforge finetune`).")] = False,
    gpu_memory: Annotated[float, typer.Option(help="GB of one GPU (the device of the verdict).")] = _CFG.gpu_memory_gb,
    gpus: Annotated[int, typer.Option(help="GPUs available (tensor parallel when serving, data parallel / ZeRO when training).")] = _CFG.gpus,
    ram: Annotated[float | None, typer.Option(help="With --cpu: GB of RAM to check against (default: this machine's).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON (stable keys, decimal GB).")] = False,
) -> None:  # fmt: skip
    """How much memory serving or fine-tuning a model needs, whether it fits, and what to change (显存估算 · 资源规划 · 部署硬件)."""
    from lmforge.plan import main

    cfg = PlanConfig(train=train, precision=precision, context=context, concurrency=concurrency,
                     prompt_tokens=prompt_tokens, kv_cache=kv_cache, batch=batch, seq_len=seq_len, optimizer=optimizer,
                     grad_checkpointing=grad_checkpointing, zero=zero, rank=rank, cpu=cpu, gpu_memory_gb=gpu_memory,
                     gpus=gpus, ram_gb=ram)  # fmt: skip
    result = main(_registry(), model, cfg)
    if as_json:
        print(json.dumps(result.to_json(), ensure_ascii=False, indent=2))
        return
    print(render(result))


def render(p: Plan) -> str:
    """The plan as the terminal shows it: what was planned, the breakdown, the verdict, what to change,
    the naive figure, and on CPU the threads and decode speed."""
    a, c = p.spec.arch, p.cfg
    lines = [f"{p.spec.label} ({p.spec.source}): {a.summary()}"]
    if p.mode == "serve":
        lines.append(f"serving: {c.precision} weights, {c.context:,} tokens × {c.concurrency} sequences, "
                     f"KV cache {c.kv_cache}, longest prompt {c.prompt_tokens:,}, on {p.device}")  # fmt: skip
    else:
        extra = [f"ZeRO-{c.zero}" if c.zero else "", "gradient checkpointing" if c.grad_checkpointing else ""]
        lines.append(f"training: {c.train} ({c.precision}), batch {c.batch} × {c.seq_len} tokens, {c.optimizer}"
                     + "".join(f", {e}" for e in extra if e) + f", on {p.device}")  # fmt: skip
    split = p.devices > 1
    width = max(len(r.label) for r in p.rows) + 2
    head = f"{'':{width}}{'GB':>8}" + (f"{'per GPU':>9}" if split else "")
    lines += ["", head]
    for r in p.rows:
        per = f"{r.per_device_gb:>9.2f}" if split else ""
        lines.append(f"{r.label:{width}}{r.gb:>8.2f}{per}  {r.note}")
    total = f"{'peak':{width}}{p.total_gb:>8.2f}" + (f"{p.per_device_gb:>9.2f}" if split else "")
    lines.append(f"{total}  {p.peak_rule.removeprefix('peak = ')}")
    lines += ["", p.verdict]
    if p.mode == "serve" and not c.cpu and not p.fits:
        tp = p.devices_needed
        lines.append(f"tensor parallel: {tp} GPUs of {c.gpu_memory_gb:g} GB" if tp
                     else f"tensor parallel: no size up to 16 GPUs of {c.gpu_memory_gb:g} GB fits")  # fmt: skip
    if p.suggestions:
        lines.append("what to change:")
        w = max(len(s.change) for s in p.suggestions) + 2
        for s in p.suggestions:
            each = " per GPU" if s.devices > 1 else ""
            lines.append(
                f"  {s.change:{w}}{s.per_device_gb:>7.2f} GB{each}  {'fits' if s.fits else 'still too big'}"
            )
    lines += [f"  note: {n}" for n in p.notes]
    lines += [
        "",
        f"naive formula: {p.naive_gb:.1f} GB vs {p.per_device_gb * p.devices:.1f} GB here — {p.naive_note}",
    ]
    if p.cpu:
        lines.append(_cpu_line(p))
    return "\n".join(lines)


def _cpu_line(p: Plan) -> str:
    cpu = p.cpu or {}
    line = f"CPU: {cpu.get('threads')} threads (physical cores)"
    if cpu.get("memory_bandwidth_gbs"):
        line += (f"; memory bandwidth {cpu['memory_bandwidth_gbs']:g} GB/s, {cpu['bytes_per_token_gb']:.2f} GB read per "
                 f"token: decode ≤ {cpu['decode_tokens_per_s']:g} tok/s per sequence on a short context, "
                 f"≤ {cpu['decode_tokens_per_s_full_context']:g} at full context "
                 f"({cpu['aggregate_tokens_per_s_full_context']:g} for all {p.cfg.concurrency} together); "
                 f"memory-bandwidth ceilings, llama.cpp reaches 55-90% of them (benchmarks/decode.py)")  # fmt: skip
    return line


def mount(app: typer.Typer) -> None:
    app.command("plan")(plan)
