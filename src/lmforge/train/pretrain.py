"""`lmforge pretrain`: train a causal LM (Llama architecture) or a masked LM (BERT) from scratch, or
continue pretraining a registered model, on a registered dataset — with exact resume.

The loop is written here rather than with transformers' Trainer because the contract needs what
Trainer does not give: the same losses after kill -9 and resume (to 1e-6 in fp32), the same losses
for 2 processes x batch b as for 1 process x batch 2b, and refusal to resume a changed run.
What makes that hold:
- The data order is a pure function of (seed, global sample index): sequence g of the run is
  block perm_epoch[g mod n] of the token stream, and MLM masks come from a generator seeded by g.
  A step's samples are g = step * B .. (step + 1) * B - 1 split into micro-batches, then processes.
- The loss of a step is sum(token losses) / (tokens in the whole step), each process scaling its
  part by the process count (DDP averages gradients), so sharding changes nothing but float order.
- Dropout's generator is reseeded from (seed, step, micro-batch, rank) before each forward; the
  learning rate is a pure function of the step. A checkpoint holds weights, AdamW state, the step
  and the history; nothing else carries state.
Processes, devices and DDP/FSDP/DeepSpeed wrapping come from accelerate (`accelerate launch`);
on a CPU, gloo. Precision is measured, not assumed (see `choose_precision`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.data.prepare import dataset_texts
from lmforge.errors import LmforgeError
from lmforge.home import Manifest, Registry, check_name
from lmforge.progress import printer, training_progress
from lmforge.train.args import ModelSize, PretrainConfig, lr_factor, resolve_size
from lmforge.train.checkpoint import RunFolder
from lmforge.train.events import EventLog
from lmforge.train.record import fmt_loss, perplexity, write_history

MASK_TOKEN = "[MASK]"
CLS_TOKEN = "[CLS]"


# -- data ----------------------------------------------------------------------------------------
def token_stream(tokenizer: Any, texts: list[str]) -> np.ndarray:
    """All texts tokenized and joined, each document followed by the end-of-text token."""
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    encoded = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    out: list[int] = []
    for e in encoded:
        out.extend(e.ids)
        if sep is not None:
            out.append(sep)
    return np.asarray(out, dtype=np.int64)


@dataclass
class Blocks:
    """Fixed-length training sequences cut from a token stream. clm: seq_len + 1 tokens (inputs and
    shifted labels); mlm: [CLS] + seq_len - 1 tokens."""

    stream: np.ndarray
    seq_len: int
    objective: str
    cls_id: int | None = None

    @property
    def stride(self) -> int:
        return self.seq_len if self.objective == "clm" else self.seq_len - 1

    def __len__(self) -> int:
        n = len(self.stream) - (1 if self.objective == "clm" else 0)
        return max(0, n // self.stride)

    def get(self, i: int) -> np.ndarray:
        s = i * self.stride
        if self.objective == "clm":
            return self.stream[s : s + self.seq_len + 1]
        return np.concatenate([[self.cls_id], self.stream[s : s + self.stride]])


@dataclass
class Sampler:
    """Which block is sample g of the run: a pure function of (seed, g), so resume and sharding are exact."""

    main: Blocks
    seed: int
    replay: Blocks | None = None
    replay_frac: float = 0.0
    _perms: dict[int, np.ndarray] = field(default_factory=dict)

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.main))}
        return self._perms[epoch]

    def block(self, g: int) -> np.ndarray:
        if self.replay is not None and self.replay_frac > 0:
            r = random.Random(self.seed * 1_000_003 + g)
            if r.random() < self.replay_frac:
                return self.replay.get(r.randrange(len(self.replay)))
        n = len(self.main)
        return self.main.get(int(self._perm(g // n)[g % n]))


def mlm_mask(block: np.ndarray, seed: int, vocab: int, special: np.ndarray, mask_id: int, prob: float):
    """BERT masking of one sequence: `prob` of the non-special tokens are predicted; of those 80% become
    [MASK], 10% a random token, 10% stay. Returns (inputs, labels with -100 where nothing is predicted)."""
    import torch

    ids = torch.as_tensor(block, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    chosen = (torch.rand(ids.shape, generator=gen) < prob) & ~torch.isin(ids, torch.as_tensor(special))
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    action = torch.rand(ids.shape, generator=gen)
    random_ids = torch.randint(0, vocab, ids.shape, generator=gen)
    inputs = torch.where(chosen & (action < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, inputs)
    return inputs, labels


# -- model -------------------------------------------------------------------------------------
DECODERS = ("llama", "qwen2")
"""Architectures a new decoder can be built as."""


def build_model(objective: str, size: ModelSize, tokenizer: Any, dropout: float, seed: int,
                architecture: str = "llama") -> Any:  # fmt: skip
    """A randomly initialised decoder (clm: Llama, or Qwen2 — Llama's layout plus q/k/v biases — when
    `architecture` is "qwen2", e.g. a student of a Qwen teacher) or BERT (mlm) sized for the tokenizer."""
    import torch
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(seed)
    if objective == "clm":
        if architecture not in DECODERS:
            raise LmforgeError(f"unknown architecture {architecture!r}: {' or '.join(DECODERS)}")
        config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[architecture]  # fmt: skip
        cfg = config_cls(vocab_size=len(tokenizer), hidden_size=size.hidden, intermediate_size=size.intermediate,
                         num_hidden_layers=size.layers, num_attention_heads=size.heads,
                         num_key_value_heads=size.kv_heads, max_position_embeddings=size.context,
                         attention_dropout=dropout, tie_word_embeddings=True, rope_theta=10000.0,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        model = model_cls(cfg)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        return model
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=size.hidden, intermediate_size=size.intermediate,
                     num_hidden_layers=size.layers, num_attention_heads=size.heads,
                     max_position_embeddings=size.context, hidden_dropout_prob=dropout,
                     attention_probs_dropout_prob=dropout, type_vocab_size=1,
                     pad_token_id=tokenizer.pad_token_id or 0)  # fmt: skip
    return BertForMaskedLM(cfg)


def prepare_tokenizer(tokenizer: Any, objective: str) -> Any:
    """An MLM needs [MASK] (and a [CLS] to start each sequence, the classifiers' pooled position)."""
    if objective == "mlm":
        extra = {k: v for k, v in (("mask_token", MASK_TOKEN), ("cls_token", CLS_TOKEN))
                 if getattr(tokenizer, k) is None}  # fmt: skip
        if extra:
            tokenizer.add_special_tokens(extra)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# -- precision -----------------------------------------------------------------------------------
def time_steps(model: Any, inputs: Any, device_type: str, rounds: int = 3) -> tuple[float, float]:
    """Best seconds per forward + backward in fp32 and in bf16 autocast (no optimizer step; gradients
    cleared). Both are warmed up first and the rounds interleave, so neither pays a one-time cost."""
    import torch

    def once(bf16: bool) -> float:
        t0 = time.perf_counter()
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            out = model(input_ids=inputs).logits
        out.float().logsumexp(-1).mean().backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    once(False), once(True)
    fp32, bf16 = zip(*[(once(False), once(True)) for _ in range(rounds)], strict=True)
    return min(fp32), min(bf16)


def choose_precision(
    registry: Registry, model: Any, inputs: Any, key: str, device_type: str
) -> dict[str, Any]:
    """fp32 or bf16 autocast, whichever trains this model faster here, measured once per (machine, shape)
    and remembered in LMFORGE_HOME/hardware.json. On CPUs without AVX512-BF16/AMX bf16 is slower."""
    from lmforge.hardware import cpu_name, recall, remember

    cpu = cpu_name() if device_type == "cpu" else device_type
    full_key = f"{cpu}|{key}"
    known = recall(registry, full_key)
    if known is not None:
        return known | {"cached": True}
    fp32, bf16 = time_steps(model, inputs, device_type)
    choice = {"used": "bf16" if bf16 < fp32 * 0.95 else "fp32", "fp32_s_per_step": round(fp32, 4),
              "bf16_s_per_step": round(bf16, 4), "device": cpu}  # fmt: skip
    remember(registry, full_key, choice)
    return choice | {"cached": False}


# -- the run -------------------------------------------------------------------------------------
@dataclass
class Inputs:
    """What a run reads from the registry, resolved and checked before anything trains."""

    tokenizer: Any
    tokenizer_source: str
    tokenizer_fingerprint: str
    data_fingerprint: str
    init_model: Any = None
    init_fingerprint: str = ""
    replay_fingerprint: str = ""
    size: ModelSize | None = None


def resolve_inputs(registry: Registry, cfg: PretrainConfig) -> Inputs:
    from lmforge.infer.hf import load_pretrained, load_tokenizer

    data_m = _get(registry, cfg.data, "dataset", "--data")
    replay_fp = _get(registry, cfg.replay, "dataset", "--replay").data_fingerprint if cfg.replay else ""
    init_model, init_fp, size = None, "", None
    if cfg.init:
        init_m = _get(registry, cfg.init, None, "--init")
        if init_m.format != "hf":
            raise LmforgeError(f"--init {cfg.init} is a {init_m.format} model; continued pretraining needs a "
                               f"Hugging Face checkpoint (register the HF folder with `lmforge models add`)")  # fmt: skip
        head = "causal" if cfg.objective == "clm" else "masked"
        tok, init_model = load_pretrained(registry.model_path(init_m), head)
        init_fp = init_m.data_fingerprint
        source = cfg.init
    if cfg.tokenizer:
        tok_m = _get(registry, cfg.tokenizer, None, "--tokenizer")
        if tok_m.kind not in ("tokenizer", "base", "chat", "masked-lm"):
            raise LmforgeError(
                f"--tokenizer {cfg.tokenizer} is a {tok_m.kind} artifact, not a tokenizer or model"
            )
        tok = load_tokenizer(
            registry.model_path(tok_m) if tok_m.kind != "tokenizer" else registry.artifact_dir(cfg.tokenizer)
        )
        source = cfg.tokenizer
    tok = prepare_tokenizer(tok, cfg.objective)
    if init_model is not None:
        rows = init_model.get_input_embeddings().weight.shape[0]
        if len(tok) > rows:
            raise LmforgeError(f"tokenizer/model mismatch: {source} has {len(tok)} tokens but {cfg.init} has "
                               f"{rows} embedding rows; use the model's own tokenizer or `lmforge tokenizer extend`")  # fmt: skip
    else:
        size = resolve_size(cfg.objective, cfg.size)
    fingerprint = _tokenizer_fingerprint(tok)
    return Inputs(tok, source, fingerprint, data_m.data_fingerprint, init_model, init_fp, replay_fp, size)


def _get(registry: Registry, name: str, kind: str | None, flag: str) -> Manifest:
    if not registry.exists(name):
        raise LmforgeError(f"{flag} {name!r} is not in the registry (`lmforge models ls` lists it)")
    m = registry.get(name)
    if kind and m.kind != kind:
        raise LmforgeError(f"{flag} {name!r} is a {m.kind} artifact, not a {kind}")
    return m


def _tokenizer_fingerprint(tok: Any) -> str:
    import hashlib

    return hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest()


@dataclass
class StepRecord:
    step: int
    loss: float
    lr: float
    grad_norm: float
    tokens: int


def main(registry: Registry, out: str, cfg: PretrainConfig, *, resume: bool = False, restart: bool = False,
         progress: bool = True) -> Manifest | None:  # fmt: skip
    """Run (or resume) a pretraining run and register its model. Returns the manifest on the main
    process, None on the others."""
    import torch
    from accelerate import Accelerator

    cfg.validate()
    check_name(out)
    if registry.exists(out):
        raise LmforgeError(f"{out!r} already exists in the registry; pick another --out or remove it")
    inputs = resolve_inputs(registry, cfg)
    tok = inputs.tokenizer
    run = RunFolder(registry.root / "runs" / out)
    state = {"config": cfg.semantic(), "data_fingerprint": inputs.data_fingerprint,
             "tokenizer_fingerprint": inputs.tokenizer_fingerprint, "init_fingerprint": inputs.init_fingerprint,
             "replay_fingerprint": inputs.replay_fingerprint}  # fmt: skip

    accel = Accelerator(cpu=not torch.cuda.is_available())
    rank, world = accel.process_index, accel.num_processes
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // world))
    main_proc = accel.is_main_process
    say = printer(main_proc)

    if restart and main_proc:
        run.discard()
    accel.wait_for_everyone()
    resuming = run.has_checkpoint()
    if resume and not resuming:
        raise LmforgeError(f"--resume: no checkpoint of {out!r} in {run.path}")
    if resuming:
        run.check_same(state)
    elif main_proc:
        run.start(state)

    # data
    model = inputs.init_model
    if model is None:
        model = build_model(cfg.objective, inputs.size, tok, cfg.dropout, cfg.seed)
    context = _context_of(model)
    seq_len = cfg.seq_len or min(context, inputs.size.context if inputs.size else context)
    if seq_len > context:
        raise LmforgeError(f"--seq-len {seq_len} is longer than the model's context ({context})")
    texts = dataset_texts(registry, cfg.data, "train")
    val_texts = dataset_texts(registry, cfg.data, "validation")
    if not texts:
        raise LmforgeError(f"dataset {cfg.data!r} has no training text")
    cls_id = tok.cls_token_id if cfg.objective == "mlm" else None
    train_blocks = Blocks(token_stream(tok, texts), seq_len, cfg.objective, cls_id)
    val_blocks = Blocks(token_stream(tok, val_texts), seq_len, cfg.objective, cls_id) if val_texts else None
    if len(train_blocks) == 0:
        raise LmforgeError(f"dataset {cfg.data!r} has {len(train_blocks.stream)} tokens, fewer than one "
                           f"sequence of {seq_len}; use more text or a smaller --seq-len")  # fmt: skip
    if val_blocks is not None and len(val_blocks) == 0:
        val_blocks = None
    replay_blocks = None
    if cfg.replay:
        replay_blocks = Blocks(
            token_stream(tok, dataset_texts(registry, cfg.replay, "train")), seq_len, cfg.objective, cls_id
        )
        if len(replay_blocks) == 0:
            raise LmforgeError(f"--replay {cfg.replay!r} has less text than one sequence of {seq_len}")
    sampler = Sampler(train_blocks, cfg.seed, replay_blocks, cfg.replay_frac)
    per_step = cfg.batch_size * cfg.grad_accum * world  # sequences per optimizer step
    total = cfg.steps or (math.ceil(cfg.tokens / (per_step * seq_len)) if cfg.tokens else 1000)
    warmup = cfg.warmup if cfg.warmup is not None else max(1, total // 20) if total >= 20 else 0
    special = np.asarray(sorted(set(tok.all_special_ids)), dtype=np.int64)
    vocab = len(tok)

    def pair(block: np.ndarray, mask_seed: int) -> tuple[Any, Any]:
        """(inputs, labels) of one sequence; labels are -100 where nothing is predicted."""
        if cfg.objective == "clm":
            t = torch.as_tensor(block, dtype=torch.long)
            return t[:-1], t[1:]
        return mlm_mask(block, mask_seed, vocab, special, tok.mask_token_id, cfg.mlm_prob)

    def train_pair(g: int) -> tuple[Any, Any]:
        return pair(sampler.block(g), cfg.seed * 104_729 + g + 1)

    # optimizer (weight decay on matrices only, as nanoGPT)
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))  # fmt: skip
    history: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    best: dict[str, Any] = {"val_loss": None, "step": None, "bad_evals": 0}
    best_state = None
    start_step, elapsed, precision = 0, 0.0, None
    forgetting: dict[str, Any] = {}
    if resuming:
        ck = run.load()
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_step, history, evals, best = ck["step"], ck["history"], ck["evals"], ck["best"]
        best_state, elapsed, precision = ck.get("best_state"), ck["elapsed"], ck["precision"]
        forgetting = ck["forgetting"]
        say(f"resuming {out} from the checkpoint of step {start_step}/{total}")

    device_type = accel.device.type
    model.to(accel.device)
    if precision is None:
        if cfg.precision == "auto":
            probe = torch.stack([train_pair(g)[0] for g in range(cfg.batch_size)]).to(accel.device)
            key = f"{cfg.objective}|{sum(p.numel() for p in model.parameters())}|{cfg.batch_size}x{seq_len}"
            precision = choose_precision(registry, model, probe, key, device_type) if main_proc else None
            precision = _broadcast(accel, precision)
        else:
            precision = {"used": cfg.precision, "chosen_by": "--precision"}
    bf16 = precision["used"] == "bf16"
    say(f"precision: {precision['used']}" + (f" (measured fp32 {precision['fp32_s_per_step']} s/step, bf16 "
        f"{precision['bf16_s_per_step']} s/step)" if "fp32_s_per_step" in precision else ""))  # fmt: skip

    model, opt = accel.prepare(model, opt)
    # Exact resume is built (and tested) for one process and DDP, where every process holds the whole
    # optimizer state. Under FSDP / DeepSpeed it is sharded; rather than write a checkpoint that cannot
    # resume exactly, none is written there (the final model is still gathered and saved).
    checkpoints = accel.distributed_type.value in ("NO", "MULTI_CPU", "MULTI_GPU")
    if not checkpoints:
        say(f"note: no resumable checkpoints under {accel.distributed_type.value} (sharded optimizer state)")
    params = sum(p.numel() for p in accel.unwrap_model(model).parameters())

    def forward_loss(inp: Any, lab: Any) -> Any:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=inp.to(accel.device)).logits
        return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), lab.to(accel.device).flatten(),
                                                 ignore_index=-100, reduction="sum")  # fmt: skip

    def evaluate(blocks_fn: Callable[[int], tuple[Any, Any]], n: int) -> float | None:
        """Mean token loss over samples 0..n-1 (each process takes every world-th)."""
        if n == 0:
            return None
        model.eval()
        tot = torch.zeros(2, dtype=torch.float64, device=accel.device)
        with torch.no_grad():
            mine = list(range(rank, n, world))
            for i in range(0, len(mine), cfg.batch_size):
                pairs = [blocks_fn(g) for g in mine[i : i + cfg.batch_size]]
                inp, lab = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
                tot[0] += forward_loss(inp, lab).double()
                tot[1] += int((lab != -100).sum())
        model.train()
        tot = accel.reduce(tot, reduction="sum")
        return float(tot[0] / tot[1]) if tot[1] else None

    n_val = min(len(val_blocks), cfg.eval_batches * cfg.batch_size * world) if val_blocks is not None else 0

    def validate() -> float | None:
        return evaluate(lambda i: pair(val_blocks.get(i), cfg.seed * 7_919 + 1 + i), n_val)

    def general_loss(blocks: Blocks) -> float | None:
        n = min(len(blocks), cfg.eval_batches * cfg.batch_size * world)
        return evaluate(lambda i: pair(blocks.get(i), cfg.seed * 7_919 + 17 + i), n)

    general = None
    if cfg.init and not resuming:
        general = _general_blocks(registry, cfg, tok, seq_len, cls_id)
        forgetting["domain_ppl_before"] = perplexity(validate())
        forgetting["general_ppl_before"] = perplexity(general_loss(general))

    bar = training_progress(progress and main_proc, total, start_step)
    events = EventLog(run.path, enabled=main_proc, fresh=not resuming)
    model.train()
    t_start = time.perf_counter() - elapsed
    tokens_per_step = per_step * seq_len
    stopped_early = False
    step = start_step
    try:
        for step in range(start_step, total):
            g0 = step * per_step
            # every process builds the step's labels, so each knows the step's token count
            batch = [train_pair(g0 + i) for i in range(per_step)]
            count = sum(int((lab != -100).sum()) for _, lab in batch)
            lr = cfg.lr * lr_factor(step, total, warmup, cfg.schedule, cfg.min_lr_ratio, cfg.cycle_steps)
            for group in opt.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), dtype=torch.float64, device=accel.device)
            for m in range(cfg.grad_accum):
                lo = m * cfg.batch_size * world + rank * cfg.batch_size
                part = batch[lo : lo + cfg.batch_size]
                inp, lab = torch.stack([p[0] for p in part]), torch.stack([p[1] for p in part])
                torch.manual_seed(cfg.seed * 1_000_003 + step * 1009 + m * 31 + rank)  # dropout
                ctx = accel.no_sync(model) if m < cfg.grad_accum - 1 else contextlib.nullcontext()
                with ctx:
                    s = forward_loss(inp, lab)
                    accel.backward(s / max(1, count) * world)
                loss_sum += s.detach().double()
            grad_norm = accel.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip else None
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss = float(accel.reduce(loss_sum, reduction="sum")) / max(1, count)
            history.append(asdict(StepRecord(step + 1, loss, lr, float(grad_norm) if grad_norm is not None else 0.0,
                                             (step + 1) * tokens_per_step)))  # fmt: skip
            events.log(history[-1], total_steps=total, elapsed_s=time.perf_counter() - t_start)
            done = step + 1
            rate = (done - start_step) * tokens_per_step / max(1e-9, time.perf_counter() - t_start - elapsed)
            if bar is not None:
                bar.update(bar.task_ids[0], completed=done, loss=loss, tps=rate)
            if done % cfg.eval_every == 0 or done == total:
                val = validate()
                evals.append({"step": done, "val_loss": val, "val_ppl": perplexity(val)})
                events.log(evals[-1])
                say(f"step {done}/{total}  loss {loss:.4f}  val_loss {fmt_loss(val)}  val_ppl {fmt_loss(perplexity(val))}  "
                    f"{rate:,.0f} tok/s", bar)  # fmt: skip
                if val is not None and (best["val_loss"] is None or val < best["val_loss"]):
                    best = {"val_loss": val, "step": done, "bad_evals": 0}
                    if cfg.early_stop:
                        best_state = {
                            k: v.detach().cpu().clone()
                            for k, v in accel.unwrap_model(model).state_dict().items()
                        }
                elif val is not None:
                    best["bad_evals"] += 1
                    if cfg.early_stop and best["bad_evals"] >= cfg.early_stop:
                        say(f"early stop at step {done}: no better validation loss for {cfg.early_stop} "
                            f"evaluations; keeping step {best['step']}", bar)  # fmt: skip
                        stopped_early = True
            if checkpoints and done % cfg.save_every == 0 and done < total and not stopped_early:
                if main_proc:
                    run.save({"step": done, "model": accel.unwrap_model(model).state_dict(),
                              "optimizer": opt.state_dict(), "history": history, "evals": evals, "best": best,
                              "best_state": best_state, "elapsed": time.perf_counter() - t_start,
                              "precision": precision, "forgetting": forgetting}, done)  # fmt: skip
                accel.wait_for_everyone()
            if stopped_early:
                break
    finally:
        if bar is not None:
            bar.stop()
    train_seconds = time.perf_counter() - t_start
    raw = accel.unwrap_model(model)
    if best_state is not None and stopped_early:
        raw.load_state_dict(best_state)
        final_state = best_state
    else:
        final_state = accel.get_state_dict(model)  # a collective under FSDP / ZeRO-3: every process calls it
    if cfg.init:
        if general is None:
            general = _general_blocks(registry, cfg, tok, seq_len, cls_id)
        forgetting["domain_ppl_after"] = perplexity(validate())
        forgetting["general_ppl_after"] = perplexity(general_loss(general))
    accel.wait_for_everyone()
    if not main_proc:
        return None
    final_val = best["val_loss"] if stopped_early else evals[-1]["val_loss"] if evals else None
    metrics = {
        "steps": len(history), "planned_steps": total, "tokens": len(history) * tokens_per_step,
        "final_loss": history[-1]["loss"] if history else None, "val_loss": final_val, "val_ppl": perplexity(final_val),
        "best_val_loss": best["val_loss"], "best_step": best["step"], "stopped_early": stopped_early,
        "tokens_per_s": round((len(history) - start_step) * tokens_per_step / max(1e-9, train_seconds - elapsed), 1)
        if len(history) > start_step else None,
        "train_seconds": round(train_seconds, 1), "processes": world, "precision": precision,
        "history": history, "evals": evals,
    }  # fmt: skip
    if forgetting:
        metrics["forgetting"] = forgetting
    manifest = _register(
        registry, out, cfg, inputs, (raw, final_state), tok, metrics, params, seq_len, warmup, total
    )
    run.discard()
    return manifest


def _register(registry: Registry, out: str, cfg: PretrainConfig, inputs: Inputs, weights: tuple[Any, Any], tok: Any,
              metrics: dict[str, Any], params: int, seq_len: int, warmup: int, total: int) -> Manifest:  # fmt: skip

    model, state = weights
    parents = [
        p for p in (cfg.init, cfg.tokenizer if cfg.tokenizer != cfg.init else None, cfg.data, cfg.replay) if p
    ]
    config = asdict(cfg) | {"seq_len": seq_len, "warmup": warmup, "steps": total,
                            "architecture": type(model).__name__, "size_resolved": asdict(inputs.size) if inputs.size else None,
                            "tokenizer_fingerprint": inputs.tokenizer_fingerprint}  # fmt: skip
    manifest = Manifest(name=out, kind="base" if cfg.objective == "clm" else "masked-lm", format="hf", path="",
                        parents=list(dict.fromkeys(parents)), source=f"pretrain:{cfg.objective}",
                        config=config, data_fingerprint=inputs.data_fingerprint, params=params,
                        metrics={k: v for k, v in metrics.items() if k not in ("history", "evals")} |
                        {"evals": metrics["evals"]})  # fmt: skip

    def fill(stage: Path) -> None:
        model.save_pretrained(str(stage), state_dict=state)
        tok.save_pretrained(str(stage))
        (stage / "training.json").write_text(
            json.dumps({"config": config, "metrics": metrics}, indent=1), "utf-8"
        )
        write_history(stage, metrics["history"], metrics["evals"], title=f"{out} ({cfg.objective})")

    return registry.put(manifest, fill)


def _general_blocks(
    registry: Registry, cfg: PretrainConfig, tok: Any, seq_len: int, cls_id: int | None
) -> Blocks:
    """General text for the forgetting report: the replay dataset's validation split, else lmforge's
    shipped zh+en held-out text."""
    texts = dataset_texts(registry, cfg.replay, "validation") if cfg.replay else []
    if not texts:
        texts = [resources.files("lmforge.compress").joinpath("heldout.txt").read_text(encoding="utf-8")]
    return Blocks(token_stream(tok, texts), min(seq_len, 128), cfg.objective, cls_id)


def _context_of(model: Any) -> int:
    return int(getattr(model.config, "max_position_embeddings", 0) or 2048)


def _broadcast(accel: Any, obj: Any) -> Any:
    from accelerate.utils import broadcast_object_list

    if accel.num_processes == 1:
        return obj
    box = [obj]
    broadcast_object_list(box, from_process=0)
    return box[0]
