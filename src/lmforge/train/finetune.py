"""`lmforge finetune`: supervised fine-tuning of a registered model on prompt/response data — full,
LoRA, QLoRA (NF4 via bitsandbytes, CPU or GPU), prefix tuning, prompt tuning, IA3 (peft) — with
exact resume, a before/after report, and registration with lineage.

- Data: data/sft.py reads the four formats, renders them with the model's own chat template and
  labels only the assistant tokens (their end-of-turn token included, so the model learns to stop).
- Base: an HF checkpoint; a GGUF model is dequantized once by transformers into an HF checkpoint
  registered as `<name>-hf` (parent: the GGUF), which later runs reuse.
- The loop is ours, as in pretraining (train/pretrain.py docstring): example g of the run is
  train[perm_epoch[g mod n]], dropout is reseeded per micro-batch, the learning rate is a function of
  the step and a step's loss is its response-token losses summed over the step / their count. A
  checkpoint holds only the trainable tensors and the optimizer, so a kill -9 resumes to the same
  losses; a changed config or data file is refused; more --epochs on a finished run continue it.
  trl's SFTTrainer is not used: its resume skips batches by count and cannot refuse changed data,
  and its defaults (bf16, gradient checkpointing) are wrong on most CPUs.
- Before/after: the held-out split's loss and the greedy answers to its prompts are measured before
  the first update and after the last; ROUGE-L, exact match and chrF against the references; five
  side-by-side answers; optional `--eval-suite` runs on base and result. train/report.py writes it.
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lmforge.errors import LmforgeError
from lmforge.home import Manifest, Registry, check_name
from lmforge.progress import printer, training_progress
from lmforge.train.args import Precision, Schedule, lr_factor
from lmforge.train.checkpoint import RunFolder
from lmforge.train.events import EventLog
from lmforge.train.record import fmt_loss, perplexity, write_history

Method = Literal["full", "lora", "qlora", "prefix", "prompt", "ia3"]
METHODS: tuple[str, ...] = ("full", "lora", "qlora", "prefix", "prompt", "ia3")
DEFAULT_LR: dict[str, float] = {
    "full": 2e-5,
    "lora": 2e-4,
    "qlora": 2e-4,
    "prefix": 1e-2,
    "prompt": 3e-2,
    "ia3": 5e-3,
}
"""Peak learning rate per method when --lr is not given (the usual orders of magnitude: soft prompts
and IA3 vectors need far larger steps than full weights)."""
LORA_TARGETS: dict[str, list[str]] = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
}
"""LoRA/QLoRA targets per architecture (every linear layer of attention and MLP, as LLaMA-Factory's
`all`); other architectures get peft's 'all-linear'."""
IA3_TARGETS: dict[str, tuple[list[str], list[str]]] = {
    arch: (["k_proj", "v_proj", "down_proj"], ["down_proj"])
    for arch in ("llama", "qwen2", "mistral", "gemma")
}


@dataclass
class FinetuneConfig:
    method: Method = "lora"
    data: str = ""
    """A JSONL/JSON file: {"prompt","response"}, alpaca, OpenAI messages or ShareGPT."""
    epochs: float = 3.0
    steps: int | None = None
    """Optimizer steps instead of epochs."""
    lr: float | None = None
    """Peak learning rate; default per method (DEFAULT_LR)."""
    batch_size: int = 4
    grad_accum: int = 1
    rank: int = 8
    alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] | None = None
    """LoRA/QLoRA/IA3 target module names; default per architecture."""
    virtual_tokens: int = 16
    """Prefix / prompt tuning: learned virtual tokens."""
    max_length: int = 512
    on_long: Literal["truncate", "drop"] = "truncate"
    val_frac: float = 0.1
    eval_data: str | None = None
    """A separate held-out file (any of the four formats) for validation and the report; then every
    example of --data trains and --val-frac is ignored."""
    eval_suite: list[str] = field(default_factory=list)
    """`lmforge eval` suites run on the base and on the result."""
    schedule: Schedule = "cosine"
    warmup: int | None = None
    """Warm-up steps; default 3% of the steps."""
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_every: int | None = None
    """Held-out loss every N steps; default once per epoch."""
    save_every: int = 50
    seed: int = 0
    precision: Precision = "auto"
    report_samples: int = 5
    """Side-by-side answers in the report."""
    report_eval: int = 20
    """Held-out examples answered (greedy) before and after, for ROUGE-L / EM / chrF."""
    gen_tokens: int = 64
    threads: int | None = None

    NON_SEMANTIC = ("save_every", "threads", "epochs", "steps", "eval_suite", "report_samples")
    """May change on resume: --epochs/--steps extend a run (the schedule follows the new total from
    the step it resumes at); the rest do not change what is computed."""

    def semantic(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in self.NON_SEMANTIC}

    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    def validate(self) -> None:
        problems = []
        if self.method not in METHODS:
            problems.append(f"unknown --method {self.method!r}; choose one of {', '.join(METHODS)}")
        if not self.data:
            problems.append("--data FILE is required")
        elif not Path(self.data).is_file():
            problems.append(f"--data {self.data}: no such file")
        if self.eval_data and not Path(self.eval_data).is_file():
            problems.append(f"--eval-data {self.eval_data}: no such file")
        if self.epochs <= 0 or (self.steps is not None and self.steps <= 0):
            problems.append("--epochs / --steps must be positive")
        for name in ("batch_size", "grad_accum", "rank", "alpha", "virtual_tokens", "save_every"):
            if getattr(self, name) <= 0:
                problems.append(f"--{name.replace('_', '-')} must be positive")
        if self.max_length < 8:
            problems.append("--max-length must be at least 8")
        if not 0 <= self.val_frac < 1:
            problems.append("--val-frac must be in [0, 1)")
        if self.lr is not None and self.lr <= 0:
            problems.append("--lr must be positive")
        if problems:
            raise LmforgeError("; ".join(problems))


# -- the base model ---------------------------------------------------------------------------
def hf_base(registry: Registry, name: str, say=print) -> Manifest:
    """The registered HF checkpoint to train: `name` itself, or for a GGUF model its dequantized copy
    `<name>-hf` (made once by transformers, registered with the GGUF as parent)."""
    if not registry.exists(name):
        raise LmforgeError(f"unknown model {name!r}; `lmforge models ls` lists the registry")
    m = registry.get(name)
    if m.kind not in ("chat", "base"):
        raise LmforgeError(f"{name} is a {m.kind}; fine-tuning takes a chat or base language model")
    if m.format == "hf":
        return m
    if m.format != "gguf":
        raise LmforgeError(f"{name} is a {m.format} model; fine-tuning needs local weights (HF or GGUF)")
    cached = f"{name}-hf"
    if registry.exists(cached):
        return registry.get(cached)
    say(
        f"dequantizing {name} ({m.config.get('quantization', 'gguf')}) to an HF checkpoint {cached} (once) ..."
    )
    from lmforge.infer.hf import load_pretrained

    tok, model = load_pretrained(registry.model_path(m), "causal")
    # the weights are plain fp32 tensors now; drop the "quantized with gguf" marker that blocks saving
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    params = sum(p.numel() for p in model.parameters())
    manifest = Manifest(name=cached, kind=m.kind, format="hf", path="", parents=[name], source=f"dequantize:{name}",
                        config={"dequantized_from": name, "quantization": m.config.get("quantization"),
                                "architecture": m.config.get("architecture")}, params=params,
                        notes=f"fp32 weights dequantized from {name}; {m.notes}".strip())  # fmt: skip

    def fill(stage: Path) -> None:
        model.save_pretrained(str(stage))
        tok.save_pretrained(str(stage))

    return registry.put(manifest, fill)


def load_for_training(path: Path, method: str) -> tuple[Any, Any]:
    """(tokenizer, model) of an HF folder; for qlora the linear layers are NF4 (bitsandbytes)."""
    import torch
    from transformers import AutoModelForCausalLM

    from lmforge.infer.hf import load_pretrained, load_tokenizer

    if method != "qlora":
        tok, model = load_pretrained(path, "causal")
        return tok, model.train()
    try:
        from transformers import BitsAndBytesConfig
    except ImportError as e:  # pragma: no cover - transformers always has it
        raise LmforgeError(f"qlora needs bitsandbytes: {e}") from e
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise LmforgeError("--method qlora needs bitsandbytes (pip install 'bitsandbytes>=0.50')") from e
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32)  # fmt: skip
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(str(path), quantization_config=quant, dtype=torch.float32,
                                                 device_map={"": device})  # fmt: skip
    # bitsandbytes 0.50 repacks NF4 weights for its AVX512-BF16 CPU inference kernel the first time a
    # layer runs in eval mode, and that packed form has no backward (training afterwards fails with
    # "a view of a leaf Variable ... in-place operation" on layers with a bias, e.g. Qwen2's q/k/v).
    # The before/after answers run in eval mode between training steps, so keep the trainable path.
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return load_tokenizer(path), model


def apply_method(model: Any, cfg: FinetuneConfig) -> Any:
    """Wrap `model` for the method (peft) and leave only the method's parameters trainable."""
    arch = getattr(model.config, "model_type", "")
    if cfg.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model

    if cfg.method in ("lora", "qlora"):
        if cfg.method == "qlora":
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        targets = cfg.target_modules or LORA_TARGETS.get(arch, "all-linear")
        pcfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.lora_dropout, target_modules=targets,
                          task_type="CAUSAL_LM", bias="none")  # fmt: skip
    elif cfg.method == "ia3":
        if cfg.target_modules:
            targets, ff = cfg.target_modules, [t for t in cfg.target_modules if "down" in t or "fc" in t]
        elif arch in IA3_TARGETS:
            targets, ff = IA3_TARGETS[arch]
        else:
            raise LmforgeError(
                f"IA3 has no default target modules for a {arch!r} model; give --target-modules"
            )
        pcfg = IA3Config(target_modules=targets, feedforward_modules=ff, task_type="CAUSAL_LM")
    elif cfg.method == "prefix":
        pcfg = PrefixTuningConfig(num_virtual_tokens=cfg.virtual_tokens, task_type="CAUSAL_LM")
    else:
        pcfg = PromptTuningConfig(num_virtual_tokens=cfg.virtual_tokens, task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, pcfg)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise LmforgeError(f"{cfg.method} cannot be applied to this {arch!r} model: {e}") from e


# -- batches ------------------------------------------------------------------------------------
def collate(items: list[Any], pad_id: int) -> tuple[Any, Any, Any]:
    """Right-padded (input_ids, attention_mask, labels) of tokenized examples."""
    import torch

    width = max(len(t.input_ids) for t in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    for i, t in enumerate(items):
        n = len(t.input_ids)
        ids[i, :n] = torch.tensor(t.input_ids)
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(t.labels)
    return ids, mask, labels


def token_loss_sum(model: Any, ids: Any, mask: Any, labels: Any, bf16: bool) -> tuple[Any, int]:
    """Sum of next-token cross-entropy over the labelled (response) positions, and their count. The
    last T logits are the sequence's own (prompt tuning prepends virtual positions)."""
    import torch

    dev = next(p for p in model.parameters()).device
    ids, mask, labels = ids.to(dev), mask.to(dev), labels.to(dev)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=ids, attention_mask=mask).logits[:, -ids.shape[1] :]
    target = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), target.flatten(),
                                             ignore_index=-100, reduction="sum")  # fmt: skip
    return loss, int((target != -100).sum())


def greedy_answers(model: Any, tok: Any, examples: list[Any], max_new: int) -> list[str]:
    """The model's greedy answer to each example's conversation minus its last (assistant) turn."""
    import torch

    out = []
    model.eval()
    dev = next(p for p in model.parameters()).device
    eos = {tok.eos_token_id} | set(_as_list(getattr(model.generation_config, "eos_token_id", None)))
    eos.discard(None)
    with torch.no_grad():
        for ex in examples:
            prompt = tok.apply_chat_template(ex.messages[:-1], tokenize=False, add_generation_prompt=True)
            ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].to(dev)
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                                 do_sample=False, eos_token_id=sorted(eos), pad_token_id=tok.pad_token_id
                                 if tok.pad_token_id is not None else tok.eos_token_id)  # fmt: skip
            out.append(tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True).strip())
    model.train()
    return out


def _as_list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else [x] if x is not None else []


def answer_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    from lmforge.data.lang import HAN_RE
    from lmforge.eval.metrics import chrf, exact_match, mean, rouge

    if not predictions:
        return {}
    zh = sum(bool(HAN_RE.search(r)) for r in references) * 2 > len(references)
    return {"rougeL": round(rouge(predictions, references, "zh" if zh else "en")["rougeL"], 4),
            "exact_match": round(mean([exact_match(p, r) for p, r in zip(predictions, references, strict=True)]), 4),
            "chrf": round(chrf(predictions, references), 2)}  # fmt: skip


def trainable_state(model: Any) -> dict[str, Any]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# -- the run ------------------------------------------------------------------------------------
def main(registry: Registry, base: str, out: str, cfg: FinetuneConfig, *, resume: bool = False,
         restart: bool = False, progress: bool = True) -> Manifest:  # fmt: skip
    """Fine-tune `base` on cfg.data and register the result as `out` (an adapter, or a full model)."""
    import torch

    from lmforge.data.sft import load_sft, split_examples, tokenize_sft
    from lmforge.train.pretrain import choose_precision

    cfg.validate()
    check_name(out)
    say = printer(True)
    run = RunFolder(registry.root / "runs" / out)
    if restart:
        run.discard()
    finished = registry.exists(out)
    if finished and not run.has_checkpoint():
        raise LmforgeError(f"{out!r} already exists in the registry; pick another --out or remove it")
    data = load_sft(Path(cfg.data))
    base_m = hf_base(registry, base, say)
    state = {"config": cfg.semantic(), "data_fingerprint": data.fingerprint, "base": base_m.name,
             "tokenizer_fingerprint": "", "init_fingerprint": base_m.data_fingerprint, "replay_fingerprint": ""}  # fmt: skip
    resuming = run.begin(state, resume=resume)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    tok, model = load_for_training(registry.model_path(base_m), cfg.method)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if cfg.eval_data:
        train_ex, val_ex = data.examples, load_sft(Path(cfg.eval_data)).examples
    else:
        train_ex, val_ex = split_examples(data.examples, cfg.val_frac, cfg.seed)
    train, report = tokenize_sft(tok, train_ex, cfg.max_length, on_long=cfg.on_long)
    val, _ = tokenize_sft(tok, val_ex, cfg.max_length, on_long=cfg.on_long) if val_ex else ([], None)
    if not train:
        raise LmforgeError(f"no training example left: {report.text()}")
    say(f"data: {data.format} format, {len(data.examples)} examples ({len(train_ex)} train / {len(val_ex)} held out); "
        f"{report.text()}")  # fmt: skip
    torch.manual_seed(cfg.seed)
    model = apply_method(model, cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    n_total = sum(p.numel() for p in model.parameters())
    say(
        f"method {cfg.method}: {n_trainable:,} trainable of {n_total:,} parameters ({100 * n_trainable / n_total:.3f}%)"
    )

    per_step = cfg.batch_size * cfg.grad_accum
    n = len(train)
    total = cfg.steps or max(1, math.ceil(cfg.epochs * n / per_step))
    warmup = cfg.warmup if cfg.warmup is not None else (max(1, round(total * 0.03)) if total >= 30 else 0)
    eval_every = cfg.eval_every or max(1, math.ceil(n / per_step))
    perms: dict[int, np.ndarray] = {}

    def example(g: int) -> Any:
        epoch = g // n
        if epoch not in perms:
            perms.clear()
            perms[epoch] = np.random.default_rng([cfg.seed, epoch]).permutation(n)
        return train[int(perms[epoch][g % n])]

    decay = [p for p in trainable if p.dim() >= 2]
    no_decay = [p for p in trainable if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.peak_lr())  # fmt: skip
    history: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    before: dict[str, Any] = {}
    start_step, elapsed, precision = 0, 0.0, None
    if resuming:
        ck = run.load()
        missing = set(ck["trainable"]) - {n_ for n_, p in model.named_parameters() if p.requires_grad}
        if missing:
            raise LmforgeError(
                f"checkpoint of {out} does not fit this model ({len(missing)} tensors unknown); use --restart"
            )
        model.load_state_dict(ck["trainable"], strict=False)
        opt.load_state_dict(ck["optimizer"])
        start_step, history, evals, before = ck["step"], ck["history"], ck["evals"], ck["before"]
        elapsed, precision = ck["elapsed"], ck["precision"]
        if start_step >= total and finished:
            say(
                f"{out} already trained {start_step} steps; nothing to add (raise --epochs or --steps to continue it)"
            )
            return registry.get(out)
        if start_step >= total:
            say(f"{out}'s checkpoint is at step {start_step} of {total}: finishing it")
        else:
            say(f"resuming {out} from step {start_step}/{total}")
    pad = tok.pad_token_id

    def held_out_loss() -> float | None:
        if not val:
            return None
        model.eval()
        tot, cnt = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(val), cfg.batch_size):
                s, c = token_loss_sum(model, *collate(val[i : i + cfg.batch_size], pad), bf16)
                tot, cnt = tot + float(s.detach()), cnt + c
        model.train()
        return tot / cnt if cnt else None

    if precision is None:
        if cfg.precision == "auto":
            ids, _, _ = collate([example(g) for g in range(cfg.batch_size)], pad)
            key = f"sft|{cfg.method}|{n_trainable}|{n_total}|{tuple(ids.shape)}"
            precision = choose_precision(registry, model, ids.to(next(model.parameters()).device), key,
                                         next(model.parameters()).device.type)  # fmt: skip
        else:
            precision = {"used": cfg.precision, "chosen_by": "--precision"}
    bf16 = precision["used"] == "bf16"
    say(f"precision: {precision['used']}")
    report_ex = val_ex[: cfg.report_eval]
    if not before:
        say("measuring the base on the held-out split (before) ...")
        before = {
            "val_loss": held_out_loss(),
            "answers": greedy_answers(model, tok, report_ex, cfg.gen_tokens),
        }

    bar = training_progress(progress, total, start_step)
    events = EventLog(run.path, fresh=not resuming)
    model.train()
    t0 = time.perf_counter()
    aux_s = 0.0  # validation and checkpoint time, kept out of tokens/s
    tokens_done = 0
    try:
        for step in range(start_step, total):
            items = [example(step * per_step + i) for i in range(per_step)]
            count = sum(sum(1 for x in t.labels[1:] if x != -100) for t in items)
            lr = cfg.peak_lr() * lr_factor(step, total, warmup, cfg.schedule, 0.0, 200)
            for group in opt.param_groups:
                group["lr"] = lr
            loss_sum = 0.0
            for m in range(cfg.grad_accum):
                torch.manual_seed(cfg.seed * 1_000_003 + step * 1009 + m)
                part = items[m * cfg.batch_size : (m + 1) * cfg.batch_size]
                s, _ = token_loss_sum(model, *collate(part, pad), bf16)
                (s / max(1, count)).backward()
                loss_sum += float(s.detach())
                tokens_done += sum(len(t.input_ids) for t in part)
            norm = (
                torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip) if cfg.grad_clip else torch.zeros(())
            )
            opt.step()
            opt.zero_grad(set_to_none=True)
            done = step + 1
            loss = loss_sum / max(1, count)
            history.append(
                {"step": done, "loss": loss, "lr": lr, "grad_norm": float(norm), "tokens": tokens_done}
            )
            events.log(history[-1], total_steps=total, elapsed_s=elapsed + time.perf_counter() - t0)
            rate = tokens_done / max(1e-9, time.perf_counter() - t0 - aux_s)
            if bar is not None:
                bar.update(bar.task_ids[0], completed=done, loss=loss, tps=rate)
            t_aux = time.perf_counter()
            if done % eval_every == 0 or done == total:
                val_loss = held_out_loss()
                evals.append({"step": done, "val_loss": val_loss, "val_ppl": perplexity(val_loss)})
                events.log(evals[-1])
                say(
                    f"step {done}/{total}  loss {loss:.4f}  held-out loss {fmt_loss(val_loss)}  {rate:,.0f} tok/s",
                    bar,
                )
            if done % cfg.save_every == 0 or done == total:
                run.save({"step": done, "trainable": trainable_state(model), "optimizer": opt.state_dict(),
                          "history": history, "evals": evals, "before": before, "precision": precision,
                          "elapsed": elapsed + time.perf_counter() - t0}, done)  # fmt: skip
            aux_s += time.perf_counter() - t_aux
    finally:
        if bar is not None:
            bar.stop()
    train_s = time.perf_counter() - t0
    say("measuring the result on the held-out split (after) ...")
    after = {"val_loss": held_out_loss(), "answers": greedy_answers(model, tok, report_ex, cfg.gen_tokens)}
    refs = [ex.messages[-1]["content"] for ex in report_ex]
    comparison = {
        "held_out_examples": len(val), "answered": len(report_ex),
        "before": {"val_loss": before["val_loss"], "val_ppl": perplexity(before["val_loss"]),
                   **answer_scores(before["answers"], refs)},
        "after": {"val_loss": after["val_loss"], "val_ppl": perplexity(after["val_loss"]),
                  **answer_scores(after["answers"], refs)},
        "samples": [{"prompt": ex.messages[-2]["content"], "reference": r, "before": b, "after": a}
                    for ex, r, b, a in zip(report_ex, refs, before["answers"], after["answers"], strict=True)][: cfg.report_samples],
    }  # fmt: skip
    new_steps = len(history) - start_step
    metrics = {
        "steps": len(history), "epochs": round(len(history) * per_step / n, 3), "train_examples": n,
        "trainable_params": n_trainable, "total_params": n_total, "final_loss": history[-1]["loss"] if history else None,
        "tokens_per_s": round(tokens_done / (train_s - aux_s), 1) if new_steps else None, "train_seconds": round(elapsed + train_s, 1),
        "peak_rss_mb": peak_rss_mb(), "precision": precision, "data": report.__dict__ if report else None,
        "before_after": comparison, "evals": evals,
    }  # fmt: skip
    m = _register(registry, out, base_m, cfg, data, model, tok, metrics, history, finished, run)
    if cfg.eval_suite:
        m = suites_before_after(registry, base_m.name, m, cfg, say)
    return m


def suites_before_after(registry: Registry, base: str, m: Manifest, cfg: FinetuneConfig, say) -> Manifest:
    """Run the `--eval-suite`s on the base and on the result (train/compare.py), store the pairs in
    metrics.before_after.suites and redo the report; a score that fell is flagged as forgetting."""
    from lmforge.train.compare import suite_pairs, suite_scores
    from lmforge.train.report import write_report

    pairs, fell = suite_pairs(suite_scores(registry, [base, m.name], cfg.eval_suite, threads=cfg.threads, say=say),
                              base, m.name)  # fmt: skip
    fresh = registry.get(m.name)
    ba = dict(fresh.metrics["before_after"]) | {"suites": pairs, "forgetting": fell}
    if fell:
        say(f"forgetting: {', '.join(fell)} fell after fine-tuning")
    write_report(
        registry.artifact_dir(m.name), m.name, base, cfg.method, fresh.metrics | {"before_after": ba}
    )
    return registry.update(m.name, metrics=fresh.metrics | {"before_after": ba})


def _register(registry: Registry, out: str, base_m: Manifest, cfg: FinetuneConfig, data: Any, model: Any, tok: Any,
              metrics: dict[str, Any], history: list[dict[str, Any]], replace: bool, run: RunFolder) -> Manifest:  # fmt: skip
    from lmforge.train.report import write_report

    adapter = cfg.method != "full"
    config = asdict(cfg) | {"base": base_m.name, "base_fingerprint": base_m.data_fingerprint, "data_path": str(Path(cfg.data).resolve()), "data_format": data.format,
                            "lr_used": cfg.peak_lr(),
                            "parity_prompts": parity_prompts(tok, metrics["before_after"]["samples"])}  # fmt: skip
    manifest = Manifest(name=out, kind="adapter" if adapter else base_m.kind, format="peft" if adapter else "hf",
                        path="", parents=[base_m.name], source=f"finetune:{cfg.method}", config=config,
                        data_fingerprint=data.fingerprint, params=metrics["trainable_params"] if adapter else metrics["total_params"],
                        metrics=metrics)  # fmt: skip

    def fill(stage: Path) -> None:
        model.save_pretrained(str(stage))
        tok.save_pretrained(str(stage))
        write_history(stage, history, metrics["evals"], title=f"{out} ({cfg.method} on {base_m.name})")
        write_report(stage, out, base_m.name, cfg.method, metrics)

    m = registry.put(manifest, fill, replace=replace)
    if not adapter:  # a full model's checkpoint is the size of the model x 3: not kept once registered
        run.discard()
    return m


def parity_prompts(tok: Any, samples: list[dict[str, Any]], n: int = 4) -> list[str]:
    """Held-out prompts rendered with the chat template (generation prompt included): what export's
    parity check feeds both the merged HF model and its GGUF."""
    return [tok.apply_chat_template([{"role": "user", "content": s["prompt"]}], tokenize=False,
                                    add_generation_prompt=True) for s in samples[:n]]  # fmt: skip
