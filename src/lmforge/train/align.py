"""`lmforge align`: learn from preferences — a reward model (`--method reward`) or direct preference
optimisation of the policy (`--method dpo`, full or `--lora`) on {"prompt","chosen","rejected"} pairs
(what the console arena exports).

- reward: the base with a one-output sequence-classification head (transformers'
  AutoModelForSequenceClassification: the score of the last non-pad token); loss −log σ(r_chosen −
  r_rejected); reports pairwise accuracy on held-out pairs before and after. Registered as kind
  'reward'; `lmforge reward score` and the policy optimisers use it.
- dpo: loss −log σ(β·[(log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))]) over the answer tokens
  (Rafailov et al. 2023, as trl's DPOTrainer's 'sigmoid' loss). The reference is the frozen base: with
  --lora the adapter switched off, otherwise its log-probabilities computed once before training (they
  never change) and kept with the run. Reports the chosen−rejected margin and reward accuracy on held-out
  pairs before and after.
- The loop follows fine-tuning's design (train/finetune.py): pair g of the run is a pure function of the
  seed, dropout reseeded per micro-batch, checkpoints of the trainable tensors and the optimizer, a
  changed config or data file refused, events.jsonl per step, loss PNG, peak RSS, manifest, lineage.
  trl's trainers are not used for the same reasons as SFTTrainer (resume, CPU defaults); the losses are
  the published ones, checked against hand computation in the tests.
GRPO/RLOO (policy optimisation against a reward model or rule functions) and distillation are not
here yet.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np

from lmforge.errors import LmforgeError
from lmforge.home import NAME_RE, Manifest, Registry, check_name
from lmforge.progress import printer, training_progress
from lmforge.train.args import Precision, lr_factor
from lmforge.train.checkpoint import RunFolder
from lmforge.train.events import EventLog
from lmforge.train.record import write_history

AlignMethod = Literal["reward", "dpo", "grpo", "rloo"]
DEFAULT_LR = {("reward", False): 1e-5, ("reward", True): 1e-4, ("dpo", False): 5e-6, ("dpo", True): 5e-5,
              ("grpo", False): 1e-6, ("grpo", True): 1e-5, ("rloo", False): 1e-6, ("rloo", True): 1e-5}  # fmt: skip
"""Peak learning rate per (method, --lora) when --lr is not given."""


@dataclass
class AlignConfig:
    method: AlignMethod = "dpo"
    data: str = ""
    """Preference pairs: {"prompt","chosen","rejected"} JSONL (the arena's export) or the messages form."""
    beta: float = 0.1
    """DPO: strength of the pull towards the reference (higher = stay closer)."""
    lora: bool = False
    rank: int = 8
    alpha: int = 16
    epochs: float = 1.0
    steps: int | None = None
    lr: float | None = None
    batch_size: int = 4
    """Pairs per optimizer step."""
    max_length: int = 512
    val_frac: float = 0.1
    save_every: int = 50
    seed: int = 0
    precision: Precision = "fp32"
    """fp32 by default: DPO's loss is a difference of log-probabilities, which bf16 rounds badly."""
    threads: int | None = None
    reward: str | None = None
    """grpo/rloo: a rule (exact-answer, json-schema, length, format:REGEX, FILE.py:FUNCTION) or a
    registered reward model."""
    generations: int = 4
    """grpo/rloo: completions sampled per prompt (the group)."""
    temperature: float = 1.0
    max_new_tokens: int = 32
    kl_beta: float = 0.0
    """grpo/rloo: weight of the KL to the reference (0 = none, trl's current default)."""
    eval_prompts: int = 8
    """grpo/rloo: prompts answered greedily before and after for the mean reward."""
    judge: str | None = None
    """A registered reward model that judges the aligned model against its base (win rate on held-out
    prompts); default: --reward when that is a reward model."""
    judge_prompts: int = 16
    """Prompts answered by both models for the win rate."""
    judge_tokens: int = 128
    """Most tokens of each judged answer."""
    eval_suite: list[str] = field(default_factory=list)
    """`lmforge eval` suites run on the base and on the result."""

    NON_SEMANTIC = ("save_every", "threads", "epochs", "steps", "eval_prompts", "judge", "judge_prompts",
                    "judge_tokens", "eval_suite")  # fmt: skip

    def judge_model(self, registry: Registry) -> str | None:
        """The reward model that judges the result: --judge, else --reward if it names a reward model."""
        if self.judge:
            return self.judge
        return self.reward if self.reward and is_reward_model(registry, self.reward) else None

    def semantic(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in self.NON_SEMANTIC}

    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[(self.method, self.lora)]

    def validate(self) -> None:
        problems = []
        if self.method not in ("reward", "dpo", "grpo", "rloo"):
            problems.append(f"unknown --method {self.method!r}: reward, dpo, grpo or rloo (PPO was removed from trl; "
                            f"GRPO and RLOO are the policy optimisers)")  # fmt: skip
        if self.method in ("grpo", "rloo") and self.generations < 2:
            problems.append(
                "--generations must be at least 2 (advantages compare completions within a group)"
            )
        if not self.data or not Path(self.data).is_file():
            problems.append(f"--data {self.data or '(missing)'}: no such file")
        if self.beta <= 0:
            problems.append("--beta must be positive")
        for name in (
            "batch_size",
            "rank",
            "alpha",
            "save_every",
            "max_length",
            "judge_prompts",
            "judge_tokens",
        ):
            if getattr(self, name) <= 0:
                problems.append(f"--{name.replace('_', '-')} must be positive")
        if self.epochs <= 0 or (self.steps is not None and self.steps <= 0):
            problems.append("--epochs / --steps must be positive")
        if not 0 <= self.val_frac < 1:
            problems.append("--val-frac must be in [0, 1)")
        if problems:
            raise LmforgeError("; ".join(problems))


def answer_logps(model: Any, ids: Any, mask: Any, labels: Any) -> Any:
    """Sum of log-probabilities of the labelled (answer) tokens of each sequence: shape (B,)."""
    import torch

    dev = next(p for p in model.parameters()).device
    ids, mask, labels = ids.to(dev), mask.to(dev), labels.to(dev)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, -ids.shape[1] :]
    target = labels[:, 1:]
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * (target != -100)).sum(-1)


def dpo_loss(pc: Any, pr: Any, rc: Any, rr: Any, beta: float) -> tuple[Any, Any]:
    """(per-pair loss, per-pair margin β·[(pc − rc) − (pr − rr)])."""
    import torch

    margin = beta * ((pc - rc) - (pr - rr))
    return -torch.nn.functional.logsigmoid(margin), margin


def reward_scores(model: Any, ids: Any, mask: Any) -> Any:
    dev = next(p for p in model.parameters()).device
    return model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits[:, 0].float()


def load_models(registry: Registry, base_m: Manifest, cfg: AlignConfig) -> tuple[Any, Any]:
    """(tokenizer, trainable model): a reward head on the base, or the policy (LoRA-wrapped with --lora)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from lmforge.infer.hf import load_pretrained, load_tokenizer

    path = registry.model_path(base_m)
    if cfg.method == "reward":
        tok = load_tokenizer(path)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        torch.manual_seed(cfg.seed)
        model = AutoModelForSequenceClassification.from_pretrained(
            str(path), num_labels=1, dtype=torch.float32
        )
        model.config.pad_token_id = tok.pad_token_id
    else:
        tok, model = load_pretrained(path, "causal")
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
    model.train()
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        from lmforge.train.finetune import LORA_TARGETS

        targets = LORA_TARGETS.get(getattr(model.config, "model_type", ""), "all-linear")
        task = "SEQ_CLS" if cfg.method == "reward" else "CAUSAL_LM"
        torch.manual_seed(cfg.seed)
        model = get_peft_model(model, LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=targets,
                                                 lora_dropout=0.0, task_type=task))  # fmt: skip
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    return tok, model


def main(registry: Registry, base: str, out: str, cfg: AlignConfig, *, resume: bool = False,
         restart: bool = False, progress: bool = True) -> Manifest:  # fmt: skip
    import torch

    from lmforge.data.preference import load_preferences, split_pairs, tokenize_pairs
    from lmforge.train.finetune import collate, hf_base, peak_rss_mb, trainable_state

    cfg.validate()
    check_name(out)
    say = printer(True)
    if registry.exists(out):
        raise LmforgeError(f"{out!r} already exists in the registry; pick another --out or remove it")
    run = RunFolder(registry.root / "runs" / out)
    if restart:
        run.discard()
    if cfg.method in ("grpo", "rloo"):
        from lmforge.train.rl import load_prompts

        data = SimpleNamespace(format="prompts", fingerprint=load_prompts(Path(cfg.data))[1])
    else:
        data = load_preferences(Path(cfg.data))
    judge = cfg.judge_model(registry)
    if judge and cfg.method != "reward" and not is_reward_model(registry, judge):
        raise LmforgeError(
            f"--judge {judge}: not a registered reward model (`lmforge align --method reward`)"
        )
    base_m = hf_base(registry, base, say)
    state = {"config": cfg.semantic(), "data_fingerprint": data.fingerprint, "base": base_m.name,
             "tokenizer_fingerprint": "", "init_fingerprint": base_m.data_fingerprint, "replay_fingerprint": ""}  # fmt: skip
    resuming = run.begin(state, resume=resume)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.method in ("grpo", "rloo"):
        from lmforge.train.rl import train_policy

        return train_policy(registry=registry, base_m=base_m, out=out, cfg=cfg, say=say, run=run,
                            resuming=resuming, state=state, progress=progress)  # fmt: skip
    tok, model = load_models(registry, base_m, cfg)
    train_pairs, val_pairs = split_pairs(data.pairs, cfg.val_frac, cfg.seed)
    train, report = tokenize_pairs(tok, train_pairs, cfg.max_length)
    val, _ = tokenize_pairs(tok, val_pairs, cfg.max_length) if val_pairs else ([], None)
    if not train:
        raise LmforgeError(f"no training pair left: {report.text()}")
    say(
        f"data: {data.format}, {len(data.pairs)} pairs ({len(train_pairs)} train / {len(val_pairs)} held out); {report.text()}"
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable, n_total = sum(p.numel() for p in trainable), sum(p.numel() for p in model.parameters())
    say(f"{cfg.method}{' + LoRA' if cfg.lora else ''}: {n_trainable:,} trainable of {n_total:,} parameters")
    pad = tok.pad_token_id
    n = len(train)
    total = cfg.steps or max(1, math.ceil(cfg.epochs * n / cfg.batch_size))

    def sides(items: list[Any]) -> tuple[tuple[Any, Any, Any], tuple[Any, Any, Any]]:
        return collate([t.chosen for t in items], pad), collate([t.rejected for t in items], pad)

    # DPO's reference: the frozen base — the adapter switched off (--lora), or its log-probabilities
    # computed once before training (they never change) and looked up by the pair's index
    ref_cache: dict[str, list[float]] = {}
    index_of = {id(t): i for i, t in enumerate(train)} | {id(t): i for i, t in enumerate(val)}

    def reference(items: list[Any], key: str) -> tuple[Any, Any]:
        if cfg.lora:
            with torch.no_grad(), model.disable_adapter():
                c, r = sides(items)
                return answer_logps(model, *c), answer_logps(model, *r)
        idx = [index_of[id(t)] for t in items]
        return (torch.tensor([ref_cache[f"{key}c"][i] for i in idx]),
                torch.tensor([ref_cache[f"{key}r"][i] for i in idx]))  # fmt: skip

    if cfg.method == "dpo" and not cfg.lora:
        say("reference log-probabilities of the frozen base (once) ...")
        model.eval()
        with torch.no_grad():
            for key, pairs in (("train", train), ("val", val)):
                for side in ("c", "r"):
                    vals: list[float] = []
                    for i in range(0, len(pairs), cfg.batch_size):
                        c, r = sides(pairs[i : i + cfg.batch_size])
                        vals += answer_logps(model, *(c if side == "c" else r)).tolist()
                    ref_cache[f"{key}{side}"] = vals
        model.train()

    def batch_loss(items: list[Any], key: str) -> tuple[Any, Any]:
        """(mean loss, per-pair margin) of a list of pairs from split `key` (train or val)."""
        c, r = sides(items)
        if cfg.method == "reward":
            margin = reward_scores(model, *c[:2]) - reward_scores(model, *r[:2])
            return -torch.nn.functional.logsigmoid(margin).mean(), margin
        pc, pr = answer_logps(model, *c), answer_logps(model, *r)
        rc, rr = reference(items, key)
        loss, margin = dpo_loss(pc, pr, rc.to(pc.device), rr.to(pr.device), cfg.beta)
        return loss.mean(), margin

    def held_out() -> dict[str, float] | None:
        if not val:
            return None
        model.eval()
        losses, margins = [], []
        with torch.no_grad():
            for i in range(0, len(val), cfg.batch_size):
                loss, margin = batch_loss(val[i : i + cfg.batch_size], "val")
                losses.append(float(loss) * len(margin))
                margins += margin.tolist()
        model.train()
        out = {"loss": sum(losses) / len(margins), "accuracy": float(np.mean([m > 0 for m in margins])),
               "margin": float(np.mean(margins))}  # fmt: skip
        return {k: round(v, 5) for k, v in out.items()}

    opt = torch.optim.AdamW(trainable, lr=cfg.peak_lr(), weight_decay=0.0)
    history: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    before: dict[str, Any] | None = None
    start_step, elapsed = 0, 0.0
    if resuming:
        ck = run.load()
        model.load_state_dict(ck["trainable"], strict=False)
        opt.load_state_dict(ck["optimizer"])
        start_step, history, evals, before, elapsed = (
            ck["step"],
            ck["history"],
            ck["evals"],
            ck["before"],
            ck["elapsed"],
        )
        say(f"resuming {out} from step {start_step}/{total}")
    else:
        say("measuring the base on the held-out pairs (before) ...")
        before = held_out()

    perms: dict[int, np.ndarray] = {}

    def pair(g: int) -> Any:
        epoch = g // n
        if epoch not in perms:
            perms.clear()
            perms[epoch] = np.random.default_rng([cfg.seed, epoch]).permutation(n)
        return train[int(perms[epoch][g % n])]

    events = EventLog(run.path, fresh=not resuming)
    bar = training_progress(progress, total, start_step)
    t0 = time.perf_counter()
    warmup = max(1, round(total * 0.1)) if total >= 10 else 0
    try:
        for step in range(start_step, total):
            items = [pair(step * cfg.batch_size + i) for i in range(cfg.batch_size)]
            lr = cfg.peak_lr() * lr_factor(step, total, warmup, "linear", 0.0, 1)
            for group in opt.param_groups:
                group["lr"] = lr
            torch.manual_seed(cfg.seed * 1_000_003 + step)
            loss, margin = batch_loss(items, "train")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            done = step + 1
            rec = {"step": done, "loss": float(loss.detach()), "lr": lr, "margin": float(margin.detach().mean()),
                   "accuracy": float((margin.detach() > 0).float().mean())}  # fmt: skip
            history.append(rec)
            events.log(rec, total_steps=total, elapsed_s=elapsed + time.perf_counter() - t0)
            if bar is not None:
                bar.update(bar.task_ids[0], completed=done, loss=float(loss.detach()), tps=0.0)
            if done % cfg.save_every == 0 or done == total:
                run.save({"step": done, "trainable": trainable_state(model), "optimizer": opt.state_dict(),
                          "history": history, "evals": evals, "before": before,
                          "elapsed": elapsed + time.perf_counter() - t0}, done)  # fmt: skip
    finally:
        if bar is not None:
            bar.stop()
    say("measuring the result on the held-out pairs (after) ...")
    after = held_out()
    if after is not None:
        evals.append({"step": total, "val_loss": after["loss"]})
    metrics = {"steps": len(history), "train_pairs": n, "held_out_pairs": len(val), "trainable_params": n_trainable,
               "total_params": n_total, "train_seconds": round(elapsed + time.perf_counter() - t0, 1),
               "peak_rss_mb": peak_rss_mb(), "data": report.__dict__, "before": before, "after": after,
               "evals": evals}  # fmt: skip
    judged = [p.prompt_messages for p in (val_pairs or train_pairs)]
    return _register(registry, out, base_m, cfg, data, model, tok, metrics, history, run, judged, say)


def _register(registry: Registry, out: str, base_m: Manifest, cfg: AlignConfig, data: Any, model: Any, tok: Any,
              metrics: dict[str, Any], history: list[dict[str, Any]], run: RunFolder,
              prompts: list[list[dict[str, str]]], say: Any) -> Manifest:  # fmt: skip

    from lmforge.train.report import write_align_report

    if cfg.method == "reward" and cfg.lora:  # a reward model is one HF folder (score head included)
        model = model.merge_and_unload()
    kind = "reward" if cfg.method == "reward" else ("adapter" if cfg.lora else base_m.kind)
    fmt = "peft" if cfg.lora and cfg.method != "reward" else "hf"
    config = asdict(cfg) | {"base": base_m.name, "base_fingerprint": base_m.data_fingerprint,
                            "data_path": str(Path(cfg.data).resolve()), "data_format": data.format,
                            "lr_used": cfg.peak_lr(), "method": "lora" if cfg.lora else cfg.method,
                            "align_method": cfg.method}  # fmt: skip
    params = metrics["trainable_params"] if fmt == "peft" else metrics["total_params"]
    manifest = Manifest(name=out, kind=kind, format=fmt, path="", parents=[base_m.name], source=f"align:{cfg.method}",
                        config=config, data_fingerprint=data.fingerprint, params=params, metrics=metrics)  # fmt: skip

    def fill(stage: Path) -> None:
        model.save_pretrained(str(stage))
        tok.save_pretrained(str(stage))
        write_history(stage, history, metrics["evals"], title=f"{out} ({cfg.method} on {base_m.name})")
        write_align_report(stage, out, base_m.name, cfg.method, metrics)

    m = registry.put(manifest, fill)
    run.discard()
    return compare_with_base(registry, m, base_m.name, cfg, prompts, say)


def compare_with_base(registry: Registry, m: Manifest, base: str, cfg: AlignConfig,
                      prompts: list[list[dict[str, str]]], say: Any) -> Manifest:  # fmt: skip
    """The report's second half: the win rate judged by a reward model on `prompts` and the
    `--eval-suite`s, base against aligned (train/compare.py); stored in the manifest's metrics."""
    from lmforge.train.compare import measure_models, suite_pairs, win_rate
    from lmforge.train.report import write_align_report

    judge = cfg.judge_model(registry)
    if cfg.method == "reward" or not (judge or cfg.eval_suite):
        return m
    prompts = prompts[: cfg.judge_prompts] if judge else []  # (main() checked the judge before training)
    got = measure_models(registry, [base, m.name], suites=cfg.eval_suite, prompts=prompts,
                         max_tokens=cfg.judge_tokens, threads=cfg.threads, say=say)  # fmt: skip
    extra: dict[str, Any] = {}
    if judge:
        j = extra["judged"] = win_rate(registry, judge, prompts, got[base]["answers"], got[m.name]["answers"])
        say(f"win rate against {base}, judged by {judge}: {j['win_rate']:.0%} ({j['wins']} wins, {j['ties']} ties, "
            f"{j['losses']} losses on {j['prompts']} prompts)")  # fmt: skip
    if cfg.eval_suite:
        scores = {who: r["suites"] for who, r in got.items()}
        extra["suites"] = scores
        extra["suite_pairs"], extra["forgetting"] = suite_pairs(scores, base, m.name)
        if extra["forgetting"]:
            say(f"forgetting: {', '.join(extra['forgetting'])} fell after alignment")
    metrics = registry.get(m.name).metrics | extra
    write_align_report(registry.artifact_dir(m.name), m.name, base, cfg.method, metrics)
    return registry.update(m.name, metrics=metrics)


def is_reward_model(registry: Registry, spec: str) -> bool:
    """Whether --reward/--judge `spec` names a registered reward model (else it may be a rule)."""
    return bool(NAME_RE.match(spec)) and registry.exists(spec) and registry.get(spec).kind == "reward"


class RewardScorer:
    """A registered reward model, loaded once: score(messages, completion) -> float."""

    def __init__(self, registry: Registry, name: str) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        from lmforge.infer.hf import load_tokenizer

        if not registry.exists(name):
            raise LmforgeError(f"unknown model {name!r}")
        m = registry.get(name)
        if m.kind != "reward":
            raise LmforgeError(
                f"{name} is a {m.kind} model, not a reward model (`lmforge align --method reward`)"
            )
        path = registry.model_path(m)
        self.tok = load_tokenizer(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=torch.float32).eval()

    def vocab_size(self) -> int:
        return len(self.tok)

    def score(self, messages: list[dict[str, str]], completion: str) -> float:
        import torch

        text = self.tok.apply_chat_template(
            [*messages, {"role": "assistant", "content": completion}], tokenize=False
        )
        ids = self.tok(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            return float(self.model(**ids).logits[0, 0])


def score(registry: Registry, name: str, prompt: str, response: str) -> float:
    """`lmforge reward score`: the reward model's score of `response` to `prompt`."""
    return RewardScorer(registry, name).score([{"role": "user", "content": prompt}], response)
