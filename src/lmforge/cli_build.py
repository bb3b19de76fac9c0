"""CLI commands that make models: `pretrain`, `fill-mask` (and `quickstart`). cli.py mounts them.

Kept apart from cli.py only for size; the same rules hold: each command is a thin typer function
whose defaults come from the config dataclasses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from lmforge.errors import LmforgeError
from lmforge.quickstart import QuickstartConfig
from lmforge.train.align import AlignConfig, AlignMethod
from lmforge.train.args import Objective, Precision, PretrainConfig, Schedule
from lmforge.train.distill import DistillConfig, Mode, StudentMethod
from lmforge.train.finetune import FinetuneConfig, Method

_PRE = PretrainConfig()


def _registry():
    from lmforge.home import Registry

    return Registry()


def relaunch_cpu_ddp(argv: list[str]) -> int | None:
    """`accelerate launch --num_processes N` on a machine with no GPU runs ONE process (its simple
    launcher; multi-process needs --multi_gpu). When that happened, start the N gloo workers with
    torch.distributed.run ourselves, so the documented command really trains data-parallel. Returns the
    workers' exit code, or None when there is nothing to do."""
    if "WORLD_SIZE" in os.environ or "ACCELERATE_USE_CPU" not in os.environ:
        return None
    try:
        parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    if not any(a.endswith("accelerate") or a == "launch" for a in parent):
        return None
    n = 1
    for i, a in enumerate(parent):
        if a == "--num_processes" and i + 1 < len(parent):
            n = int(parent[i + 1]) if parent[i + 1].isdigit() else 1
        elif a.startswith("--num_processes="):
            n = int(a.split("=", 1)[1]) if a.split("=", 1)[1].isdigit() else 1
    if n <= 1:
        return None
    print(f"lmforge: accelerate started one process on a machine without GPUs; starting {n} CPU workers (gloo)",
          file=sys.stderr)  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "lmforge", *argv]  # fmt: skip
    return subprocess.call(cmd)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pretrain(
    out: Annotated[str, typer.Option("--out", help="Name of the trained model in the registry.")],
    data: Annotated[str, typer.Option("--data", help="A dataset made by `lmforge data prepare`.")],
    objective: Annotated[Objective, typer.Option(help="clm: causal LM (Llama); mlm: masked LM (BERT).")] = _PRE.objective,
    size: Annotated[str, typer.Option(help="tiny | mini | small | CONFIG.json")] = _PRE.size,
    tokenizer: Annotated[str | None, typer.Option(help="A tokenizer from `lmforge tokenizer train` (or a model's).")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps.")] = None,
    tokens: Annotated[int | None, typer.Option(help="Train on this many tokens instead of --steps.")] = None,
    batch_size: Annotated[int, typer.Option(help="Sequences per micro-batch per process.")] = _PRE.batch_size,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = _PRE.grad_accum,
    seq_len: Annotated[int | None, typer.Option(help="Tokens per sequence (default: the size's context).")] = None,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = _PRE.lr,
    min_lr_ratio: Annotated[float, typer.Option(help="Decaying schedules end at lr x this.")] = _PRE.min_lr_ratio,
    schedule: Annotated[Schedule, typer.Option(help="cosine | linear | constant | cyclic (after warm-up).")] = _PRE.schedule,
    warmup: Annotated[int | None, typer.Option(help="Warm-up steps (default 5% of steps).")] = None,
    cycle_steps: Annotated[int, typer.Option(help="Cyclic schedule: steps per triangle.")] = _PRE.cycle_steps,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay (matrices only).")] = _PRE.weight_decay,
    grad_clip: Annotated[float, typer.Option(help="Clip the gradient norm (0 = off).")] = _PRE.grad_clip,
    dropout: Annotated[float, typer.Option(help="Dropout probability.")] = _PRE.dropout,
    mlm_prob: Annotated[float, typer.Option(help="mlm: share of tokens predicted.")] = _PRE.mlm_prob,
    eval_every: Annotated[int, typer.Option(help="Validate every N steps.")] = _PRE.eval_every,
    eval_batches: Annotated[int, typer.Option(help="Validation micro-batches per evaluation.")] = _PRE.eval_batches,
    early_stop: Annotated[int, typer.Option(help="Stop after N evaluations without improvement (0 = off).")] = _PRE.early_stop,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = _PRE.save_every,
    seed: Annotated[int, typer.Option(help="Weights, data order, masks and dropout all follow it.")] = _PRE.seed,
    precision: Annotated[Precision, typer.Option(help="auto (measure once), fp32 or bf16.")] = _PRE.precision,
    init: Annotated[str | None, typer.Option(help="Continue pretraining this registered HF model.")] = None,
    replay: Annotated[str | None, typer.Option(help="General dataset mixed in (with --init) against forgetting.")] = None,
    replay_frac: Annotated[float, typer.Option(help="Share of sequences from --replay.")] = _PRE.replay_frac,
    threads: Annotated[int | None, typer.Option(help="Torch threads per process.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Require a checkpoint to resume (a rerun resumes anyway).")] = False,
    restart: Annotated[bool, typer.Option("--restart", help="Discard this run's checkpoint and start over.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the registered manifest as JSON.")] = False,
) -> None:  # fmt: skip
    """Pretrain a causal LM or a masked LM on a dataset; rerun the same command to resume (预训练)."""
    code = relaunch_cpu_ddp(sys.argv[1:])
    if code is not None:
        raise typer.Exit(code)
    from lmforge.train.pretrain import main

    cfg = PretrainConfig(objective=objective, size=size, tokenizer=tokenizer, data=data, steps=steps, tokens=tokens,
                         batch_size=batch_size, grad_accum=grad_accum, seq_len=seq_len, lr=lr,
                         min_lr_ratio=min_lr_ratio, schedule=schedule, warmup=warmup, cycle_steps=cycle_steps,
                         weight_decay=weight_decay, grad_clip=grad_clip, dropout=dropout, mlm_prob=mlm_prob,
                         eval_every=eval_every, eval_batches=eval_batches, early_stop=early_stop,
                         save_every=save_every, seed=seed, precision=precision, init=init, replay=replay,
                         replay_frac=replay_frac, threads=threads)  # fmt: skip
    reg = _registry()
    m = main(reg, out, cfg, resume=resume, restart=restart, progress=sys.stderr.isatty())
    if m is None:
        return
    if as_json:
        from dataclasses import asdict

        print(json.dumps(asdict(m), ensure_ascii=False, indent=2))
        return
    met = m.metrics
    folder = reg.artifact_dir(m.name)
    print(f"registered {m.kind} model {m.name}: {m.params / 1e6:.2f}M parameters, {met['steps']} steps, "
          f"{met['tokens']:,} tokens, {met['processes']} process(es), precision {met['precision']['used']}")  # fmt: skip
    print(f"validation loss {met['val_loss']}  perplexity {met['val_ppl']}  ({met['tokens_per_s']} tokens/s)")
    if "forgetting" in met:
        f = met["forgetting"]
        print(f"domain perplexity {f['domain_ppl_before']} -> {f['domain_ppl_after']}; "
              f"general perplexity {f['general_ppl_before']} -> {f['general_ppl_after']} (forgetting)")  # fmt: skip
    print(f"loss curve: {folder / 'loss.png'}\nfolder: {folder}")


def fill_mask(
    model: Annotated[str, typer.Argument(help="A registered masked LM (from `lmforge pretrain --objective mlm`).")],
    text: Annotated[str, typer.Argument(help="Text with one or more [MASK].")],
    top_k: Annotated[int, typer.Option("--top-k", help="Candidates per mask.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:  # fmt: skip
    """Predict the tokens behind [MASK] with a masked LM: top-k with probabilities (完形填空)."""
    from lmforge.infer.fillmask import fill_mask as run

    preds = run(_registry(), model, text, top_k)
    if as_json:
        print(json.dumps([[c.__dict__ for c in p] for p in preds], ensure_ascii=False))
        return
    for i, cands in enumerate(preds, 1):
        print(f"[MASK] {i}:")
        for c in cands:
            print(f"  {c.token!r:>12}  {c.probability:.4f}  {c.sequence}")


_QUICK = QuickstartConfig()


def quickstart(
    steps: Annotated[int, typer.Option(help="Pretraining steps (0.25-0.5 s each on 2 cores).")] = _QUICK.steps,
    vocab: Annotated[int, typer.Option(help="Tokenizer vocabulary.")] = _QUICK.vocab,
    prefix: Annotated[str, typer.Option(help="Registry names start with this.")] = _QUICK.prefix,
    max_docs: Annotated[int | None, typer.Option(help="At most N documents per bundled source (faster).")] = None,
    sft_steps: Annotated[int, typer.Option(help="Steps of the closing fine-tuning step (0 skips it).")] = _QUICK.sft_steps,
    fresh: Annotated[bool, typer.Option("--fresh", help="Rebuild every step (remove earlier quickstart artifacts).")] = False,
    threads: Annotated[int | None, typer.Option(help="CPU threads.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Also print the summary as JSON.")] = False,
) -> None:  # fmt: skip
    """The whole road on bundled real data: prepare, tokenizer, pretrain, perplexity, GGUF, generate (快速上手)."""
    from lmforge.quickstart import names, run

    reg = _registry()
    cfg = QuickstartConfig(steps=steps, vocab=vocab, prefix=prefix, max_docs_per_source=max_docs, fresh=fresh, sft_steps=sft_steps,
                           threads=threads)  # fmt: skip
    summary = run(reg, cfg, say=lambda s: print(s, flush=True))
    print(f"\ndone in {summary['total_seconds']:.0f} s. The lineage of what was built:\n")
    from lmforge.cli import models_show

    models_show(names(cfg)["lm"])
    if as_json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))


_FT = FinetuneConfig()


def finetune(
    model: Annotated[str, typer.Argument(help="A registered chat/base model (HF, or GGUF: dequantized once).")],
    data: Annotated[str, typer.Option("--data", help="JSONL/JSON: prompt/response, alpaca, messages or ShareGPT.")],
    out: Annotated[str, typer.Option("--out", help="Name of the adapter (or full model) in the registry.")],
    method: Annotated[Method, typer.Option(help="full | lora | qlora | prefix | prompt | ia3")] = _FT.method,
    epochs: Annotated[float, typer.Option(help="Passes over the training examples (more on a finished run continue it).")] = _FT.epochs,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps instead of epochs.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default per method).")] = None,
    batch_size: Annotated[int, typer.Option(help="Examples per micro-batch.")] = _FT.batch_size,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = _FT.grad_accum,
    rank: Annotated[int, typer.Option(help="LoRA rank r.")] = _FT.rank,
    alpha: Annotated[int, typer.Option(help="LoRA alpha (scale = alpha / r).")] = _FT.alpha,
    target_modules: Annotated[list[str] | None, typer.Option("--target-modules", help="Module names (repeatable; default per architecture).")] = None,
    virtual_tokens: Annotated[int, typer.Option(help="Prefix/prompt tuning: virtual tokens.")] = _FT.virtual_tokens,
    max_length: Annotated[int, typer.Option(help="Tokens per example (longer ones are cut or dropped, and counted).")] = _FT.max_length,
    on_long: Annotated[str, typer.Option(help="truncate | drop examples over --max-length.")] = _FT.on_long,
    val_frac: Annotated[float, typer.Option(help="Share of examples held out for the before/after report.")] = _FT.val_frac,
    eval_data: Annotated[str | None, typer.Option(help="Separate held-out file for validation and the report.")] = None,
    report_eval: Annotated[int, typer.Option(help="Held-out examples answered before and after.")] = _FT.report_eval,
    gen_tokens: Annotated[int, typer.Option(help="Tokens per answer in the report.")] = _FT.gen_tokens,
    eval_suite: Annotated[list[str] | None, typer.Option("--eval-suite", help="`lmforge eval` suite run before and after (repeatable).")] = None,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = _FT.save_every,
    seed: Annotated[int, typer.Option(help="Split, order, dropout and initialisation follow it.")] = _FT.seed,
    precision: Annotated[Precision, typer.Option(help="auto (measured), fp32 or bf16.")] = _FT.precision,
    threads: Annotated[int | None, typer.Option(help="Torch threads.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Require a checkpoint (a rerun resumes anyway).")] = False,
    restart: Annotated[bool, typer.Option("--restart", help="Discard this run's checkpoint.")] = False,
    task: Annotated[Literal["classification", "ner"] | None, typer.Option(help="Train a task head instead: classification (sentiment, classify) or ner; --data is then {\"text\", \"label\"} or {\"text\", \"entities\"} JSONL.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the registered manifest as JSON.")] = False,
) -> None:  # fmt: skip
    """Fine-tune a model on your data: full, LoRA, QLoRA, prefix, prompt tuning or IA3 (微调), with a before/after report;
    or train a classification / NER head (--task) that `lmforge task` uses."""
    from lmforge.train.finetune import main as run

    if task is not None:
        return _finetune_head(model, out, task, data, method, epochs, steps, lr, batch_size, rank, alpha,
                              max_length, val_frac, eval_data, seed, threads, as_json)  # fmt: skip

    if on_long not in ("truncate", "drop"):
        raise LmforgeError("--on-long must be truncate or drop")
    cfg = FinetuneConfig(method=method, data=data, epochs=epochs, steps=steps, lr=lr, batch_size=batch_size,
                         grad_accum=grad_accum, rank=rank, alpha=alpha, target_modules=target_modules,
                         virtual_tokens=virtual_tokens, max_length=max_length, on_long=on_long, val_frac=val_frac,
                         eval_data=eval_data, report_eval=report_eval, gen_tokens=gen_tokens,
                         eval_suite=list(eval_suite or []), save_every=save_every, seed=seed, precision=precision,
                         threads=threads)  # fmt: skip
    reg = _registry()
    m = run(reg, model, out, cfg, resume=resume, restart=restart, progress=sys.stderr.isatty())
    if as_json:
        from dataclasses import asdict

        print(json.dumps(asdict(m), ensure_ascii=False, indent=2))
        return
    from lmforge.train.report import comparison_rows

    met = m.metrics
    print(f"registered {m.kind} {m.name} ({cfg.method} on {m.config['base']}): {met['steps']} steps, "
          f"{met['trainable_params']:,} trainable parameters, {met['tokens_per_s']} tokens/s, peak memory {met['peak_rss_mb']} MB")  # fmt: skip
    print(f"{'':24} {'base':>10} {'fine-tuned':>10}")
    for label, b, a, verdict in comparison_rows(met["before_after"]):
        fb = f"{b:.4g}" if isinstance(b, float) else str(b)
        fa = f"{a:.4g}" if isinstance(a, float) else str(a)
        print(f"{label:24} {fb:>10} {fa:>10}  {verdict}")
    print(f"report: {reg.artifact_dir(m.name) / 'report.html'}")


def _finetune_head(model: str, out: str, task: str, data: str, method: str, epochs: float, steps: int | None,
                   lr: float | None, batch_size: int, rank: int, alpha: int, max_length: int, val_frac: float,
                   eval_data: str | None, seed: int, threads: int | None, as_json: bool) -> None:  # fmt: skip
    from lmforge.train.heads import HeadConfig
    from lmforge.train.heads import main as train_head

    d = HeadConfig()
    cfg = HeadConfig(task=task, data=data, method=method, epochs=epochs if epochs != _FT.epochs else d.epochs,
                     steps=steps, lr=lr, batch_size=batch_size if batch_size != _FT.batch_size else d.batch_size,
                     rank=rank, alpha=alpha, max_length=max_length if max_length != _FT.max_length else d.max_length,
                     val_frac=val_frac, eval_data=eval_data, seed=seed, threads=threads)  # type: ignore[arg-type]  # fmt: skip
    m = train_head(_registry(), model, out, cfg, progress=sys.stderr.isatty())
    if as_json:
        from dataclasses import asdict

        print(json.dumps(asdict(m), ensure_ascii=False, indent=2))
        return
    met = m.metrics
    held = ", ".join(f"{k} {v}" for k, v in met["held_out"].items())
    print(f"registered classifier {m.name} ({task} head, {cfg.method} on {m.config['base']}): {met['steps']} steps, "
          f"{met['examples_per_s']} examples/s; held out: {held or '-'}")  # fmt: skip
    verb = "ner" if task == "ner" else "sentiment|classify"
    print(
        f"next: lmforge task {verb} {m.name} TEXT   (loss curve: {_registry().artifact_dir(m.name) / 'loss.png'})"
    )


def merge(
    adapter: Annotated[str, typer.Argument(help="A LoRA / QLoRA / IA3 adapter from `lmforge finetune`.")],
    out: Annotated[str, typer.Option("--out", help="Name of the merged model.")],
) -> None:  # fmt: skip
    """Merge an adapter into its base's full-precision weights (合并 LoRA); export it with `lmforge export`."""
    from lmforge.train.merge import merge_adapter

    reg = _registry()
    m = merge_adapter(reg, adapter, out, say=lambda s: print(s, file=sys.stderr))
    print(f"registered {m.kind} model {m.name} ({m.params / 1e6:.1f}M parameters): {adapter} merged into "
          f"{m.config['base']} -> {reg.artifact_dir(m.name)}")  # fmt: skip
    print(f"next: lmforge export {m.name} --format gguf --quant q8_0")


_AL = AlignConfig()


def align(
    model: Annotated[str, typer.Argument(help="A registered chat/base model (HF, or GGUF: dequantized once).")],
    data: Annotated[str, typer.Option("--data", help="Preference pairs: prompt/chosen/rejected JSONL (the arena's export).")],
    out: Annotated[str, typer.Option("--out", help="Name of the result in the registry.")],
    method: Annotated[AlignMethod, typer.Option(help="reward (a reward model) | dpo | grpo | rloo (optimise the policy).")] = _AL.method,
    beta: Annotated[float, typer.Option(help="DPO: pull towards the reference (higher = closer).")] = _AL.beta,
    lora: Annotated[bool, typer.Option("--lora", help="Train a LoRA adapter instead of every weight.")] = False,
    reward: Annotated[str | None, typer.Option(help="grpo/rloo: exact-answer | json-schema | length | format:REGEX | FILE.py:FUNC | a reward model.")] = None,
    generations: Annotated[int, typer.Option(help="grpo/rloo: completions per prompt.")] = _AL.generations,
    temperature: Annotated[float, typer.Option(help="grpo/rloo: sampling temperature.")] = _AL.temperature,
    max_new_tokens: Annotated[int, typer.Option(help="grpo/rloo: tokens per completion.")] = _AL.max_new_tokens,
    kl_beta: Annotated[float, typer.Option(help="grpo/rloo: KL weight to the reference (0 = none).")] = _AL.kl_beta,
    epochs: Annotated[float, typer.Option(help="Passes over the pairs.")] = _AL.epochs,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps instead of epochs.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default per method).")] = None,
    batch_size: Annotated[int, typer.Option(help="Pairs per step.")] = _AL.batch_size,
    max_length: Annotated[int, typer.Option(help="Tokens per side.")] = _AL.max_length,
    val_frac: Annotated[float, typer.Option(help="Share of pairs held out (accuracy, margin before/after).")] = _AL.val_frac,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = _AL.save_every,
    seed: Annotated[int, typer.Option(help="Split, order and head initialisation follow it.")] = _AL.seed,
    threads: Annotated[int | None, typer.Option(help="Torch threads.")] = None,
    judge: Annotated[str | None, typer.Option(help="A reward model judging aligned vs base (win rate); default --reward if it is one.")] = None,
    judge_prompts: Annotated[int, typer.Option(help="Held-out prompts both models answer for the win rate.")] = _AL.judge_prompts,
    eval_suite: Annotated[list[str] | None, typer.Option("--eval-suite", help="`lmforge eval` suite run on base and result (repeatable).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Require a checkpoint (a rerun resumes anyway).")] = False,
    restart: Annotated[bool, typer.Option("--restart", help="Discard this run's checkpoint.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the registered manifest as JSON.")] = False,
) -> None:  # fmt: skip
    """Learn from preferences: a reward model or DPO (对齐 · 偏好优化 · 奖励模型)."""
    from lmforge.train.align import main as run

    cfg = AlignConfig(method=method, data=data, beta=beta, lora=lora, epochs=epochs, steps=steps, lr=lr, reward=reward,
                      generations=generations, temperature=temperature, max_new_tokens=max_new_tokens, kl_beta=kl_beta,
                      batch_size=batch_size, max_length=max_length, val_frac=val_frac, save_every=save_every,
                      seed=seed, threads=threads, judge=judge, judge_prompts=judge_prompts,
                      eval_suite=list(eval_suite or []))  # fmt: skip
    reg = _registry()
    m = run(reg, model, out, cfg, resume=resume, restart=restart, progress=sys.stderr.isatty())
    if as_json:
        from dataclasses import asdict

        print(json.dumps(asdict(m), ensure_ascii=False, indent=2))
        return
    met = m.metrics
    print(f"registered {m.kind} {m.name} ({method} on {m.config['base']}): {met['steps']} steps, "
          f"{met['trainable_params']:,} trainable parameters, peak memory {met['peak_rss_mb']} MB")  # fmt: skip
    b, a = met.get("before") or {}, met.get("after") or {}
    print(f"{'held out':24} {'before':>10} {'after':>10}")
    for k in ("accuracy", "margin", "loss", "mean_reward"):
        if k in a:
            print(f"{k:24} {b.get(k, '-'):>10} {a[k]:>10}")
    if j := met.get("judged"):
        print(f"win rate vs {m.config['base']} judged by {j['judge']}: {j['win_rate']:.0%} "
              f"({j['wins']} wins, {j['ties']} ties, {j['losses']} losses on {j['prompts']} prompts)")  # fmt: skip
    for suite, res in (met.get("suite_pairs") or {}).items():
        for k, pair in res.items():
            if k != "general":
                print(f"{suite + ': ' + k:24} {pair[0]:>10.4g} {pair[1]:>10.4g}")
    print(f"report: {reg.artifact_dir(m.name) / 'report.html'}")


reward_app = typer.Typer(no_args_is_help=True, help="Reward models: score a response (奖励模型打分).")


@reward_app.command("score")
def reward_score(
    model: Annotated[str, typer.Argument(help="A reward model from `lmforge align --method reward`.")],
    prompt: Annotated[str, typer.Option("--prompt", help="The user's message.")],
    response: Annotated[str, typer.Option("--response", help="The answer to score.")],
) -> None:  # fmt: skip
    """The reward model's score of RESPONSE to PROMPT (higher = preferred)."""
    from lmforge.train.align import score

    print(f"{score(_registry(), model, prompt, response):.4f}")


_DI = DistillConfig()


def distill(
    teacher: Annotated[str, typer.Option("--teacher", help="A registered chat/base model (HF, or GGUF).")],
    student: Annotated[str, typer.Option("--student", help="A registered model, or new:SIZE (tiny | mini | small | CONFIG.json): a fresh Llama with the teacher's tokenizer.")],
    data: Annotated[str, typer.Option("--data", help="JSONL/JSON: prompt/response, alpaca, messages or ShareGPT.")],
    out: Annotated[str, typer.Option("--out", help="Name of the distilled student in the registry.")],
    temperature: Annotated[float, typer.Option(help="Softmax temperature of the KL term.")] = _DI.temperature,
    alpha: Annotated[float, typer.Option(help="Weight of the KL to the teacher (1 - alpha: the labels).")] = _DI.alpha,
    mode: Annotated[Mode, typer.Option(help="auto | logit (shared tokenizer) | sequence (the teacher's answers).")] = _DI.mode,
    top_k: Annotated[int, typer.Option(help="Teacher logits cached per response token.")] = _DI.top_k,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Cache the teacher's top-k logits (shared by students), or use its full logits on the fly.")] = _DI.cache,
    method: Annotated[StudentMethod, typer.Option(help="full | lora (a registered student).")] = _DI.method,
    epochs: Annotated[float, typer.Option(help="Passes over the training examples.")] = _DI.epochs,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps instead of epochs.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default: pretraining's for new:SIZE, fine-tuning's otherwise).")] = None,
    batch_size: Annotated[int, typer.Option(help="Examples per micro-batch.")] = _DI.batch_size,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = _DI.grad_accum,
    max_length: Annotated[int, typer.Option(help="Tokens per example (longer ones are cut).")] = _DI.max_length,
    val_frac: Annotated[float, typer.Option(help="Share of examples held out for the comparison.")] = _DI.val_frac,
    eval_data: Annotated[str | None, typer.Option(help="Separate held-out file for the comparison.")] = None,
    eval_every: Annotated[int | None, typer.Option(help="Held-out loss every N steps (default once per epoch).")] = None,
    baseline: Annotated[bool, typer.Option("--baseline/--no-baseline", help="Also train the student without the teacher, for the comparison.")] = _DI.baseline,
    gen_tokens: Annotated[int, typer.Option(help="Sequence mode: tokens per teacher answer.")] = _DI.gen_tokens,
    report_eval: Annotated[int, typer.Option(help="Sequence mode: held-out prompts answered in the fine-tuning report.")] = _DI.report_eval,
    eval_suite: Annotated[list[str] | None, typer.Option("--eval-suite", help="`lmforge eval` suite run on teacher, student and baseline (repeatable).")] = None,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = _DI.save_every,
    seed: Annotated[int, typer.Option(help="Split, order, initialisation and dropout follow it.")] = _DI.seed,
    precision: Annotated[Precision, typer.Option(help="auto (measured), fp32 or bf16.")] = _DI.precision,
    threads: Annotated[int | None, typer.Option(help="Torch threads.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Require a checkpoint (a rerun resumes anyway).")] = False,
    restart: Annotated[bool, typer.Option("--restart", help="Discard this run's checkpoint.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the registered manifest as JSON.")] = False,
) -> None:  # fmt: skip
    """Distil a teacher into a smaller student: logit (shared tokenizer) or sequence level (知识蒸馏), compared with the student trained without it."""
    from lmforge.train.distill import main as run

    cfg = DistillConfig(data=data, mode=mode, temperature=temperature, alpha=alpha, top_k=top_k, cache=cache,
                        method=method, epochs=epochs, steps=steps, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
                        max_length=max_length, val_frac=val_frac, eval_data=eval_data, eval_every=eval_every, baseline=baseline,
                        gen_tokens=gen_tokens, report_eval=report_eval, save_every=save_every, seed=seed,
                        precision=precision, threads=threads, eval_suite=list(eval_suite or []))  # fmt: skip
    reg = _registry()
    m = run(reg, teacher, student, out, cfg, resume=resume, restart=restart, progress=sys.stderr.isatty())
    if as_json:
        from dataclasses import asdict

        print(json.dumps(asdict(m), ensure_ascii=False, indent=2))
        return
    met = m.metrics
    print(f"registered {m.kind} {m.name}: {met['mode']} distillation from {teacher} into {student} "
          f"(τ={temperature}, α={alpha}) — {met['why']}")  # fmt: skip
    cached = met.get("teacher_cache") or {}
    if cached.get("used"):
        print(f"teacher logits: {cached['hits']} of {cached['examples']} examples from the cache, "
              f"{cached['computed']} computed ({cached['dir']})")  # fmt: skip
    c = met["comparison"]
    print(f"held-out perplexity per {c['per']}, {c['held_out_examples']} examples:")
    for label, key in (("teacher", "teacher_ppl"), ("student (distilled)", "student_ppl"),
                       ("student (no teacher)", "baseline_ppl")):  # fmt: skip
        print(f"  {label:22} {'-' if c.get(key) is None else c[key]}")
    if "peak_rss_mb" in met:
        print(f"{met['steps']} steps, {met['tokens_per_s']} tokens/s, peak memory {met['peak_rss_mb']} MB")
    print(f"folder: {reg.artifact_dir(m.name)}")


def mount(app: typer.Typer) -> None:
    app.command("align")(align)
    app.command("distill")(distill)
    app.add_typer(reward_app, name="reward")
    app.command("finetune")(finetune)
    app.command("merge")(merge)
    app.command("pretrain")(pretrain)
    app.command("fill-mask")(fill_mask)
    app.command("quickstart")(quickstart)
