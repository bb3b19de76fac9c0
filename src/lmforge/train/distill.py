"""`lmforge distill`: knowledge distillation from a registered teacher into a student — a registered
model, or a fresh decoder of the teacher's architecture (Qwen2 or Llama) built with the teacher's
tokenizer (`--student new:SIZE`) — on prompt/response
data, with the same student trained without the teacher alongside as the baseline.

- Data: data/sft.py's four formats; the labels are the assistant tokens, as in fine-tuning. The
  held-out split (--val-frac, or --eval-data) is never trained on: it gives the comparison,
  metrics.comparison = {teacher_ppl, student_ppl, baseline_ppl}, perplexity on its response tokens
  (in sequence mode the teacher's is per its own tokens, scored by its inference backend).
- Mode. Logits can be compared only id by id, so `logit` needs a shared tokenizer: the same id → token
  map, vocabulary size included (normalizer and merges may differ; the text is tokenized once, by the
  student's tokenizer, and the teacher reads the same ids). Then
      loss = α·τ²·KL(p_T ‖ q_S) + (1 − α)·CE(student, labels)
  over the response positions, each term summed over the step's response tokens and divided by their
  count; p_T and q_S are the teacher's and the student's softmax at temperature τ (τ² keeps the soft
  term's gradient scale independent of τ; Hinton et al. 2015). When the tokenizers differ, `sequence`:
  the teacher answers the training prompts greedily (any backend: llama.cpp for a GGUF teacher) and
  the student is fine-tuned on its answers by finetune.main (Kim & Rush 2016); the answers are kept
  under LMFORGE_HOME/cache/teacher-answers/<fingerprint>/ for reruns. --mode auto chooses and
  says why; --mode logit with different tokenizers is an error naming the two vocabularies.
- Teacher logits are cached under LMFORGE_HOME/cache/teacher-logits/<fingerprint of the teacher's
  weights, the data, the max length and k>/, one safetensors file per example, named by the hash of its
  tokens and labels: at each response position the teacher's k largest logits (float16, shifted so the
  largest is 0) and their token ids (int32), and the teacher's summed cross-entropy on the example. The
  logits are stored raw, so τ is applied while training and one cache serves every temperature and
  every student that shares the tokenizer (the run reports its hits). With the top k the KL term is
  KL(p̃_T ‖ q_S): p̃_T the teacher's softmax over its k cached tokens, renormalised (zero elsewhere),
  q_S the student's softmax over the whole vocabulary — still a KL between two distributions, and the
  full one when k covers the vocabulary. --no-cache keeps the teacher in memory and uses its full
  logits at every step (the exact KL, no approximation). Token ids past the tokenizer (padding rows of
  an embedding matrix) take no part in the KL.
- Baseline: logit mode trains a second copy of the student (same initialisation, same batches, same
  schedule) with α = 0 in lockstep with the distilled one, so the comparison differs in the teacher
  only; sequence mode fine-tunes the student on the original references with the same settings
  (registered as OUT-baseline while it trains, removed once measured). --no-baseline skips it.
- The loop is ours, for fine-tuning's reasons (train/finetune.py docstring): example g of the run is
  train[perm_epoch[g mod n]], dropout is reseeded per micro-batch, the learning rate is a function of
  the step, and a checkpoint holds both students' trainable tensors and optimizers, so an interrupted
  run resumes to the same losses; a changed config, data file, teacher or student is refused
  (RunFolder.check_same). trl's GKDTrainer is not used: besides Trainer's resume (by batch count,
  blind to changed data) it recomputes the teacher every step, has no cache shared between students
  and no lockstep baseline. Sequence mode inherits fine-tuning's resume.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lmforge.data.sft import Example, SFTData
from lmforge.errors import LmforgeError
from lmforge.home import Manifest, Registry, check_name, weights_fingerprint
from lmforge.progress import printer, training_progress
from lmforge.train.args import ModelSize, Precision, PretrainConfig, Schedule, lr_factor
from lmforge.train.checkpoint import RunFolder
from lmforge.train.events import EventLog
from lmforge.train.finetune import DEFAULT_LR
from lmforge.train.record import fmt_loss, perplexity, write_history
from lmforge.train.teacher import (
    LogitCache,
    TeacherTargets,
    distill_kl,
    response_logits,
    teacher_answers,
    teacher_targets,
    tokenizer_difference,
    vocab_fingerprint,
)

Mode = Literal["auto", "logit", "sequence"]
StudentMethod = Literal["full", "lora"]
NEW_STUDENT = "new:"
"""`--student new:SIZE`: a fresh decoder of SIZE (tiny | mini | small | CONFIG.json) with the teacher's tokenizer."""


@dataclass
class DistillConfig:
    data: str = ""
    """A JSONL/JSON file: {"prompt","response"}, alpaca, OpenAI messages or ShareGPT."""
    mode: Mode = "auto"
    """logit (shared tokenizer), sequence (the teacher's answers), or auto: logit when it can."""
    temperature: float = 2.0
    """τ of the softened distributions in the KL term."""
    alpha: float = 0.5
    """Weight of the KL term; 1 − alpha weighs the cross-entropy on the labels."""
    top_k: int = 64
    """Teacher logits cached per response position (the KL uses them renormalised)."""
    cache: bool = True
    """Cache the teacher's top-k logits on disk; False: its full logits on the fly every step."""
    method: StudentMethod = "full"
    """Train every student weight, or a LoRA adapter (finetune's rank and alpha) on a registered student."""
    epochs: float = 3.0
    steps: int | None = None
    """Optimizer steps instead of epochs."""
    lr: float | None = None
    """Peak learning rate; default: pretraining's for a new student, fine-tuning's per method otherwise."""
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 512
    """Tokens per example (a new student's context caps it); longer examples are cut."""
    val_frac: float = 0.1
    eval_data: str | None = None
    """A separate held-out file; then every example of --data trains and --val-frac is ignored."""
    baseline: bool = True
    """Train the same student without the teacher (alpha 0, same steps and data) for the comparison."""
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
    gen_tokens: int = 256
    """Sequence mode: most tokens of each teacher answer."""
    report_eval: int = 5
    """Sequence mode: held-out prompts answered before and after in fine-tuning's report."""
    eval_suite: list[str] = field(default_factory=list)
    """`lmforge eval` suites run on the teacher, the student and the no-teacher baseline."""
    threads: int | None = None

    NON_SEMANTIC = ("save_every", "threads", "epochs", "steps", "report_eval", "eval_suite")
    """May change on resume (--epochs/--steps: the schedule follows the new total from the step it resumes at)."""

    def semantic(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in self.NON_SEMANTIC}

    def peak_lr(self, new_student: bool) -> float:
        if self.lr is not None:
            return self.lr
        return PretrainConfig.lr if new_student else DEFAULT_LR[self.method]

    def validate(self, student: str) -> None:
        problems = []
        if self.mode not in ("auto", "logit", "sequence"):
            problems.append(f"unknown --mode {self.mode!r}; choose auto, logit or sequence")
        if self.method not in ("full", "lora"):
            problems.append(f"unknown --method {self.method!r}; choose full or lora")
        if not self.data:
            problems.append("--data FILE is required")
        elif not Path(self.data).is_file():
            problems.append(f"--data {self.data}: no such file")
        if self.eval_data and not Path(self.eval_data).is_file():
            problems.append(f"--eval-data {self.eval_data}: no such file")
        if not 0 <= self.alpha <= 1:
            problems.append("--alpha must be in [0, 1]")
        if self.temperature <= 0:
            problems.append("--temperature must be positive")
        if self.epochs <= 0 or (self.steps is not None and self.steps <= 0):
            problems.append("--epochs / --steps must be positive")
        for name in ("top_k", "batch_size", "grad_accum", "save_every", "gen_tokens"):
            if getattr(self, name) <= 0:
                problems.append(f"--{name.replace('_', '-')} must be positive")
        if self.max_length < 8:
            problems.append("--max-length must be at least 8")
        if not 0 <= self.val_frac < 1:
            problems.append("--val-frac must be in [0, 1)")
        if self.lr is not None and self.lr <= 0:
            problems.append("--lr must be positive")
        if student.startswith(NEW_STUDENT):
            if not student[len(NEW_STUDENT) :]:
                problems.append("--student new:SIZE needs a size: tiny, mini, small or a CONFIG.json")
            if self.method != "full":
                problems.append("a new student is trained in full: --method lora needs a pretrained student")
            if self.mode == "sequence":
                problems.append("a new student shares the teacher's tokenizer: distil it with --mode logit "
                                "(sequence mode is for students with a tokenizer of their own)")  # fmt: skip
        if problems:
            raise LmforgeError("; ".join(problems))


# -- tokenizers --------------------------------------------------------------------------------
def choose_mode(asked: Mode, difference: str | None) -> tuple[Literal["logit", "sequence"], str]:
    """(mode, why) for --mode `asked` when the tokenizers differ as `difference` says (None: shared)."""
    if asked == "logit" and difference:
        raise LmforgeError(f"teacher and student tokenizers differ ({difference}): logit distillation needs a "
                           f"shared tokenizer; use --mode sequence")  # fmt: skip
    if asked == "sequence":
        return "sequence", "asked for with --mode sequence"
    if difference:
        return "sequence", (f"the tokenizers differ ({difference}), so their logits cannot be compared: the teacher "
                            f"answers the training prompts and the student learns its answers")  # fmt: skip
    why = "asked for with --mode logit" if asked == "logit" else "teacher and student share the tokenizer"
    return "logit", why


# -- the run -----------------------------------------------------------------------------------
@dataclass
class Plan:
    """What was asked for, resolved before anything trains."""

    teacher: Manifest
    """As registered (a GGUF teacher stays GGUF here; logit mode dequantizes it)."""
    student: Manifest | None
    """The student's HF checkpoint; None for a new student."""
    size: ModelSize | None
    """A new student's shape."""
    student_spec: str
    out: str
    data: SFTData
    data_fingerprint: str
    """Of --data, and of --eval-data when given."""
    train: list[Example]
    val: list[Example]
    mode: Literal["logit", "sequence"]
    why: str


def main(registry: Registry, teacher: str, student: str, out: str, cfg: DistillConfig, *, resume: bool = False,
         restart: bool = False, progress: bool = True) -> Manifest:  # fmt: skip
    """Distil `teacher` into `student` (a registered model or new:SIZE) on cfg.data; register the result
    as `out` with metrics.comparison against the teacher and the no-teacher baseline."""
    from lmforge.data.sft import load_sft, split_examples
    from lmforge.infer.hf import load_tokenizer
    from lmforge.train.args import resolve_size
    from lmforge.train.finetune import hf_base

    cfg.validate(student)
    check_name(out)
    say = printer(True)
    if registry.exists(out):
        raise LmforgeError(f"{out!r} already exists in the registry; pick another --out or remove it")
    data = load_sft(Path(cfg.data))
    teacher_m = _language_model(registry, teacher, "--teacher")
    size = resolve_size("clm", student[len(NEW_STUDENT) :]) if student.startswith(NEW_STUDENT) else None
    student_m = None if size else hf_base(registry, student, say)
    teacher_tok = load_tokenizer(registry.model_path(teacher_m))
    student_tok = teacher_tok if student_m is None else load_tokenizer(registry.model_path(student_m))
    mode, why = choose_mode(cfg.mode, tokenizer_difference(teacher_tok, student_tok))
    say(f"mode: {mode} — {why}")
    fingerprint = data.fingerprint
    if cfg.eval_data:
        held = load_sft(Path(cfg.eval_data))
        train_ex, val_ex = data.examples, held.examples
        fingerprint = hashlib.sha256(f"{data.fingerprint}+{held.fingerprint}".encode()).hexdigest()
    else:
        train_ex, val_ex = split_examples(data.examples, cfg.val_frac, cfg.seed)
    plan = Plan(teacher=teacher_m, student=student_m, size=size, student_spec=student, out=out, data=data,
                data_fingerprint=fingerprint, train=train_ex, val=val_ex, mode=mode, why=why)  # fmt: skip
    if mode == "sequence":
        return sequence_run(registry, plan, cfg, say, resume=resume, restart=restart, progress=progress)
    return logit_run(registry, plan, cfg, say, resume=resume, restart=restart, progress=progress)


def _language_model(registry: Registry, name: str, flag: str) -> Manifest:
    if not registry.exists(name):
        raise LmforgeError(f"{flag}: unknown model {name!r}; `lmforge models ls` lists the registry")
    m = registry.get(name)
    if m.kind not in ("chat", "base"):
        raise LmforgeError(f"{flag} {name} is a {m.kind}; distillation takes a chat or base language model")
    if m.format not in ("hf", "gguf"):
        raise LmforgeError(f"{flag} {name} is a {m.format} model; distillation needs local weights (HF or GGUF)")  # fmt: skip
    return m


def load_student(registry: Registry, plan: Plan, cfg: DistillConfig, tok: Any, teacher_dir: Path) -> Any:
    """The student, ready to train: a new decoder of the teacher's architecture when we can build it
    (Qwen2 or Llama, else Llama; seeded), or the registered checkpoint; LoRA-wrapped for --method lora
    (finetune's defaults). Called twice, it returns two identical models."""
    import torch

    from lmforge.train.finetune import FinetuneConfig, apply_method, load_for_training
    from lmforge.train.pretrain import DECODERS, build_model

    if plan.size is not None:
        teacher_type = json.loads((teacher_dir / "config.json").read_text(encoding="utf-8")).get("model_type")
        arch = teacher_type if teacher_type in DECODERS else "llama"
        model = build_model("clm", plan.size, tok, 0.0, cfg.seed, arch).train()
    else:
        _, model = load_for_training(registry.model_path(plan.student), cfg.method)
    torch.manual_seed(cfg.seed)
    return apply_method(model, FinetuneConfig(method=cfg.method))


@dataclass
class Trainee:
    """One student being trained: the distilled one, or the baseline."""

    model: Any
    opt: Any
    params: list[Any]


def _trainee(model: Any, cfg: DistillConfig, lr: float) -> Trainee:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    decay, no_decay = [p for p in params if p.dim() >= 2], [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)  # fmt: skip
    return Trainee(model, opt, params)


def logit_run(registry: Registry, plan: Plan, cfg: DistillConfig, say: Any, *, resume: bool, restart: bool,
              progress: bool) -> Manifest:  # fmt: skip
    """Logit distillation with our loop (module docstring)."""
    import torch

    from lmforge.data.sft import tokenize_sft
    from lmforge.infer.hf import load_pretrained, load_tokenizer
    from lmforge.train.finetune import collate, hf_base, peak_rss_mb, trainable_state
    from lmforge.train.pretrain import choose_precision

    run = RunFolder(registry.root / "runs" / plan.out)
    if restart:
        run.discard()
    teacher_hf = hf_base(registry, plan.teacher.name, say)
    teacher_weights = weights_fingerprint(registry, teacher_hf)
    tok = load_tokenizer(registry.model_path(teacher_hf if plan.student is None else plan.student))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    state = {"config": cfg.semantic() | {"teacher": plan.teacher.name, "student": plan.student_spec, "mode": "logit",
                                         "teacher_weights": teacher_weights},
             "data_fingerprint": plan.data_fingerprint, "base": plan.student.name if plan.student else plan.student_spec,
             "tokenizer_fingerprint": vocab_fingerprint(tok),
             "init_fingerprint": plan.student.data_fingerprint if plan.student else "", "replay_fingerprint": ""}  # fmt: skip
    resuming = run.begin(state, resume=resume)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    max_length = min(cfg.max_length, plan.size.context) if plan.size else cfg.max_length
    train, report = tokenize_sft(tok, plan.train, max_length)
    val, _ = tokenize_sft(tok, plan.val, max_length) if plan.val else ([], None)
    if not train:
        raise LmforgeError(f"no training example left: {report.text()}")
    say(f"data: {plan.data.format} format, {len(plan.train)} train / {len(plan.val)} held out; {report.text()}"
        + (f" (max length {max_length}: the new student's context)" if max_length < cfg.max_length else ""))  # fmt: skip
    pad, vocab = tok.pad_token_id, len(tok)

    # the teacher's targets: from the cache (filled once, then the teacher is freed) or computed every step
    teacher_model: Any = None
    cache: LogitCache | None = None
    cache_report: dict[str, Any] = {"used": False}
    if cfg.cache:
        cache = LogitCache(registry.root / "cache" / "teacher-logits",
                           {"teacher": teacher_weights, "data": plan.data_fingerprint,
                            "max_length": max_length, "top_k": cfg.top_k, "vocab": vocab_fingerprint(tok)})  # fmt: skip
        cache_report = cache.fill([*train, *val], lambda: load_pretrained(registry.model_path(teacher_hf), "causal")[1],
                                  cfg.batch_size, pad, vocab, say, progress)  # fmt: skip
    else:
        say(f"teacher {plan.teacher.name}: full logits computed every step (--no-cache)")
        _, teacher_model = load_pretrained(registry.model_path(teacher_hf), "causal")

    def targets(items: list[Any]) -> list[TeacherTargets]:
        if cache is not None:
            return [cache.get(t) for t in items]
        return teacher_targets(teacher_model, items, pad, vocab, None)

    new = plan.size is not None
    torch.manual_seed(cfg.seed)
    teacher_dir = registry.model_path(teacher_hf)
    student = _trainee(load_student(registry, plan, cfg, tok, teacher_dir), cfg, cfg.peak_lr(new))
    baseline = _trainee(load_student(registry, plan, cfg, tok, teacher_dir), cfg, cfg.peak_lr(new)) if cfg.baseline else None  # fmt: skip
    trainees = [student] + ([baseline] if baseline else [])
    n_trainable = sum(p.numel() for p in student.params)
    n_total = sum(p.numel() for p in student.model.parameters())
    say(f"student {plan.student_spec} ({cfg.method}): {n_trainable:,} trainable of {n_total:,} parameters"
        + ("; a baseline copy trains without the teacher in lockstep" if baseline else ""))  # fmt: skip

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

    history: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    teacher_val: dict[str, Any] | None = None
    start_step, elapsed, precision = 0, 0.0, None
    if resuming:
        ck = run.load()
        for who, t in (("student", student), ("baseline", baseline)):
            if t is not None:
                t.model.load_state_dict(ck[who], strict=False)
                t.opt.load_state_dict(ck[f"{who}_optimizer"])
        start_step, history, evals, teacher_val = ck["step"], ck["history"], ck["evals"], ck["teacher_val"]
        elapsed, precision = ck["elapsed"], ck["precision"]
        say(f"resuming {plan.out} from step {start_step}/{total}")
    if precision is None:
        if cfg.precision == "auto":
            ids, _, _ = collate([example(g) for g in range(cfg.batch_size)], pad)
            key = f"distill|{cfg.method}|{n_trainable}|{n_total}|{tuple(ids.shape)}"
            dev = next(student.model.parameters()).device
            precision = choose_precision(registry, student.model, ids.to(dev), key, dev.type)
        else:
            precision = {"used": cfg.precision, "chosen_by": "--precision"}
    bf16 = precision["used"] == "bf16"
    say(f"precision: {precision['used']}")
    tau, alpha = cfg.temperature, cfg.alpha

    def held_out(model: Any, with_kl: bool) -> tuple[float | None, float | None]:
        """(mean cross-entropy, mean KL to the teacher) per held-out response token."""
        if not val:
            return None, None
        model.eval()
        ce = kl = 0.0
        count = 0
        with torch.no_grad():
            for i in range(0, len(val), cfg.batch_size):
                part = val[i : i + cfg.batch_size]
                logits, target = response_logits(model, *collate(part, pad), bf16)
                ce += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
                if with_kl:
                    tt = targets(part)
                    kl += float(distill_kl(logits[:, :vocab], *_stack(tt), tau))
                count += len(target)
        model.train()
        return ce / count, (kl / count if with_kl else None)

    if teacher_val is None:
        if val:
            tt = [t for i in range(0, len(val), cfg.batch_size) for t in targets(val[i : i + cfg.batch_size])]
            count = sum(1 for t in val for x in t.labels[1:] if x != -100)
            teacher_val = {"val_loss": sum(t.ce for t in tt) / count}
        else:
            teacher_val = {"val_loss": None}

    bar = training_progress(progress, total, start_step)
    events = EventLog(run.path, fresh=not resuming)
    t0 = time.perf_counter()
    aux_s = 0.0  # validation and checkpoint time, kept out of tokens/s
    tokens_done = 0
    try:
        for step in range(start_step, total):
            items = [example(step * per_step + i) for i in range(per_step)]
            count = sum(sum(1 for x in t.labels[1:] if x != -100) for t in items)
            lr = cfg.peak_lr(new) * lr_factor(step, total, warmup, cfg.schedule, 0.0, 200)
            for t in trainees:
                for group in t.opt.param_groups:
                    group["lr"] = lr
            sums = {"loss": 0.0, "kl": 0.0, "ce": 0.0, "baseline_loss": 0.0}
            for m in range(cfg.grad_accum):
                part = items[m * cfg.batch_size : (m + 1) * cfg.batch_size]
                batch = collate(part, pad)
                seed = cfg.seed * 1_000_003 + step * 1009 + m
                torch.manual_seed(seed)
                logits, target = response_logits(student.model, *batch, bf16)  # (P, V), (P,)
                ce = torch.nn.functional.cross_entropy(logits, target, reduction="sum")
                kl = distill_kl(logits[:, :vocab], *_stack(targets(part)), tau)
                loss = alpha * tau * tau * kl + (1 - alpha) * ce
                (loss / max(1, count)).backward()
                sums["loss"] += float(loss.detach())
                sums["kl"] += float(kl.detach())
                sums["ce"] += float(ce.detach())
                if baseline is not None:
                    torch.manual_seed(seed)
                    b_logits, b_target = response_logits(baseline.model, *batch, bf16)
                    b_ce = torch.nn.functional.cross_entropy(b_logits, b_target, reduction="sum")
                    (b_ce / max(1, count)).backward()
                    sums["baseline_loss"] += float(b_ce.detach())
                tokens_done += sum(len(t.input_ids) for t in part)
            norms = [float(torch.nn.utils.clip_grad_norm_(t.params, cfg.grad_clip)) if cfg.grad_clip else 0.0
                     for t in trainees]  # fmt: skip
            for t in trainees:
                t.opt.step()
                t.opt.zero_grad(set_to_none=True)
            done = step + 1
            rec = {"step": done} | {k: v / max(1, count) for k, v in sums.items()} | {
                "lr": lr, "grad_norm": norms[0], "tokens": tokens_done}  # fmt: skip
            if baseline is None:
                del rec["baseline_loss"]
            history.append(rec)
            events.log(rec, total_steps=total, elapsed_s=elapsed + time.perf_counter() - t0)
            rate = tokens_done / max(1e-9, time.perf_counter() - t0 - aux_s)
            if bar is not None:
                bar.update(bar.task_ids[0], completed=done, loss=rec["loss"], tps=rate)
            t_aux = time.perf_counter()
            if done % eval_every == 0 or done == total:
                val_loss, val_kl = held_out(student.model, True)
                ev = {"step": done, "val_loss": val_loss, "val_ppl": perplexity(val_loss), "val_kl": val_kl}
                if baseline is not None:
                    b_loss, _ = held_out(baseline.model, False)
                    ev |= {"baseline_val_loss": b_loss, "baseline_val_ppl": perplexity(b_loss)}
                evals.append(ev)
                events.log(ev)
                say(f"step {done}/{total}  loss {rec['loss']:.4f}  kl {rec['kl']:.4f}  held-out loss "
                    f"{fmt_loss(val_loss)}" + (f" (baseline {fmt_loss(ev['baseline_val_loss'])})" if baseline else "")
                    + f"  {rate:,.0f} tok/s", bar)  # fmt: skip
            if done % cfg.save_every == 0 or done == total:
                payload = {"step": done, "history": history, "evals": evals, "teacher_val": teacher_val,
                           "precision": precision, "elapsed": elapsed + time.perf_counter() - t0}  # fmt: skip
                for who, t in (("student", student), ("baseline", baseline)):
                    if t is not None:
                        payload |= {who: trainable_state(t.model), f"{who}_optimizer": t.opt.state_dict()}
                run.save(payload, done)
            aux_s += time.perf_counter() - t_aux
    finally:
        if bar is not None:
            bar.stop()
    train_s = time.perf_counter() - t0
    last = evals[-1] if evals else {}
    comparison = {"teacher_ppl": perplexity(teacher_val["val_loss"]), "student_ppl": last.get("val_ppl"),
                  "baseline_ppl": last.get("baseline_val_ppl"), "teacher_val_loss": teacher_val["val_loss"],
                  "student_val_loss": last.get("val_loss"), "baseline_val_loss": last.get("baseline_val_loss"),
                  "student_val_kl": last.get("val_kl"), "held_out_examples": len(val),
                  "per": "response token (shared tokenizer)"}  # fmt: skip
    new_steps = len(history) - start_step
    metrics = {
        "mode": "logit", "why": plan.why, "steps": len(history), "epochs": round(len(history) * per_step / n, 3),
        "train_examples": n, "trainable_params": n_trainable, "total_params": n_total,
        "final_loss": history[-1]["loss"], "final_kl": history[-1]["kl"],
        "tokens_per_s": round(tokens_done / max(1e-9, train_s - aux_s), 1) if new_steps else None,
        "train_seconds": round(elapsed + train_s, 1), "peak_rss_mb": peak_rss_mb(), "precision": precision,
        "data": report.__dict__, "teacher_cache": cache_report, "comparison": comparison, "evals": evals,
    }  # fmt: skip
    m = _register(registry, plan, cfg, student.model, tok, metrics, history, run, teacher_hf)
    baseline_name = f"{plan.out}-baseline"
    if (
        cfg.eval_suite and baseline is not None and not registry.exists(baseline_name)
    ):  # registered while the suites run on it, then removed
        base_config = {"distill_baseline_of": plan.out, "base": m.config.get("base")}
        registry.put(Manifest(name=baseline_name, kind=m.kind, format=m.format, path="", parents=m.parents[:1],
                              source="distill:baseline", config=base_config, params=m.params),
                     lambda stage: (baseline.model.save_pretrained(str(stage)), tok.save_pretrained(str(stage))))  # fmt: skip
    try:
        return finish(registry, plan, cfg, m, teacher_hf.name, baseline_name, say)
    finally:
        if (
            registry.exists(baseline_name)
            and registry.get(baseline_name).config.get("distill_baseline_of") == plan.out
        ):
            registry.remove(baseline_name)


def finish(registry: Registry, plan: Plan, cfg: DistillConfig, m: Manifest, teacher: str, baseline: str,
           say: Any) -> Manifest:  # fmt: skip
    """The `--eval-suite`s on the teacher, the student and (while it is registered) the no-teacher
    baseline, stored in metrics.suites; then report.md/report.html in the student's folder."""
    from lmforge.train.compare import suite_scores
    from lmforge.train.report import write_distill_report

    names = {"teacher": teacher, "student": m.name, "baseline": baseline}
    metrics = m.metrics
    if cfg.eval_suite:
        models = [n for n in (teacher, m.name, baseline) if registry.exists(n)]
        metrics = metrics | {
            "suites": suite_scores(registry, models, cfg.eval_suite, threads=cfg.threads, say=say)
        }
        m = registry.update(m.name, metrics=metrics)
    write_distill_report(registry.artifact_dir(m.name), m.name, metrics, names)
    return m


def _stack(tt: list[TeacherTargets]) -> tuple[Any, Any]:
    """The targets of a batch's examples concatenated in order: (values, indices or None)."""
    import torch

    values = torch.cat([t.values for t in tt])
    return values, (None if tt[0].indices is None else torch.cat([t.indices for t in tt]))


def _register(registry: Registry, plan: Plan, cfg: DistillConfig, model: Any, tok: Any, metrics: dict[str, Any],
              history: list[dict[str, Any]], run: RunFolder, teacher_hf: Manifest) -> Manifest:  # fmt: skip

    adapter = cfg.method != "full"
    base = plan.student
    kind = "adapter" if adapter else (base.kind if base else ("chat" if tok.chat_template else "base"))
    config = asdict(cfg) | {
        "mode": "logit", "teacher": plan.teacher.name, "teacher_fingerprint": weights_fingerprint(registry, registry.get(teacher_hf.name)),
        "student": plan.student_spec, "lr_used": cfg.peak_lr(base is None), "data_path": str(Path(cfg.data).resolve()),
        "data_format": plan.data.format, "architecture": model.config.model_type,
        "context_length": int(getattr(model.config, "max_position_embeddings", 0) or 0),
        "size_resolved": asdict(plan.size) if plan.size else None,
    }  # fmt: skip
    if base is not None:
        config |= {"base": base.name, "base_fingerprint": base.data_fingerprint}
    parents = list(dict.fromkeys([base.name if base else plan.teacher.name, plan.teacher.name]))
    manifest = Manifest(name=plan.out, kind=kind, format="peft" if adapter else "hf", path="", parents=parents,
                        source="distill:logit", config=config, data_fingerprint=plan.data_fingerprint,
                        params=metrics["trainable_params"] if adapter else metrics["total_params"], metrics=metrics)  # fmt: skip

    def fill(stage: Path) -> None:
        model.save_pretrained(str(stage))
        tok.save_pretrained(str(stage))
        write_history(stage, history, metrics["evals"],
                      title=f"{plan.out} (distilled from {plan.teacher.name}, τ={cfg.temperature}, α={cfg.alpha})")  # fmt: skip

    m = registry.put(manifest, fill)
    run.discard()
    return m


# -- sequence-level distillation -----------------------------------------------------------------
def sequence_run(registry: Registry, plan: Plan, cfg: DistillConfig, say: Any, *, resume: bool, restart: bool,
                 progress: bool) -> Manifest:  # fmt: skip
    """The teacher's greedy answers to the training prompts (cached beside the logits), then
    finetune.main on them; the baseline is finetune.main on the original references."""
    from lmforge.train.finetune import FinetuneConfig
    from lmforge.train.finetune import main as finetune

    assert plan.student is not None  # validate() refuses a new student here
    folder, teacher_ppl = teacher_answers(registry, plan, cfg, say, progress)
    ft = dict(method=cfg.method, epochs=cfg.epochs, steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size,
              grad_accum=cfg.grad_accum, max_length=cfg.max_length, eval_data=str(folder / "heldout.jsonl"),
              schedule=cfg.schedule, warmup=cfg.warmup, weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip,
              eval_every=cfg.eval_every, save_every=cfg.save_every, seed=cfg.seed, precision=cfg.precision,
              report_eval=cfg.report_eval, threads=cfg.threads)  # fmt: skip
    baseline_name = f"{plan.out}-baseline"
    baseline_ppl = None
    if cfg.baseline:
        if registry.exists(baseline_name) and registry.get(baseline_name).config.get("distill_baseline_of") == plan.out:  # fmt: skip
            say(f"baseline {baseline_name} already trained (an earlier run of this command)")
            b = registry.get(baseline_name)
        else:
            say(f"baseline: {plan.student.name} fine-tuned on the original responses ({baseline_name}) ...")
            b = finetune(registry, plan.student.name, baseline_name,
                         FinetuneConfig(data=str(folder / "reference.jsonl"), **ft), resume=resume,
                         restart=restart, progress=progress)  # fmt: skip
            b = registry.update(baseline_name, config={"distill_baseline_of": plan.out})
        baseline_ppl = b.metrics["before_after"]["after"]["val_ppl"]
    say(f"student: {plan.student.name} fine-tuned on {plan.teacher.name}'s answers ...")
    m = finetune(registry, plan.student.name, plan.out, FinetuneConfig(data=str(folder / "teacher.jsonl"), **ft),
                 resume=resume, restart=restart, progress=progress)  # fmt: skip
    comparison = {"teacher_ppl": teacher_ppl, "student_ppl": m.metrics["before_after"]["after"]["val_ppl"],
                  "baseline_ppl": baseline_ppl, "held_out_examples": len(plan.val),
                  "per": "response token of each model's own tokenizer (the teacher's differs: compare the "
                         "students with each other)"}  # fmt: skip
    answers = json.loads((folder / "answers.json").read_text(encoding="utf-8"))
    m = registry.update(plan.out, parents=list(dict.fromkeys([plan.student.name, plan.teacher.name])),
                        source="distill:sequence",
                        config={"distill": asdict(cfg) | {"mode": "sequence", "teacher": plan.teacher.name,
                                                          "student": plan.student_spec, "answers": str(folder)}},
                        metrics={"mode": "sequence", "why": plan.why, "comparison": comparison,
                                 "teacher_answers": answers})  # fmt: skip
    try:
        return finish(registry, plan, cfg, m, plan.teacher.name, baseline_name, say)
    finally:
        if cfg.baseline and registry.exists(baseline_name):
            registry.remove(baseline_name)
            shutil.rmtree(registry.root / "runs" / baseline_name, ignore_errors=True)
