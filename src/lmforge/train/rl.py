"""`lmforge align --method grpo|rloo`: optimise the policy against rewards — rule functions for
verifiable tasks (train/rewards.py) or a registered reward model — with group-relative advantages.

Each step takes `batch_size` prompts, samples `generations` completions for each from the current
policy (temperature `temperature`, a generator seeded by (seed, step): reruns sample the same), scores
them, and turns the scores into advantages within each prompt's group:
- GRPO (Shao et al. 2024, DeepSeekMath): (r − mean(group)) / (std(group) + 1e-4);
- RLOO (Ahmadian et al. 2024): r − mean of the other completions' rewards.
The loss is −advantage × the mean log-probability of the completion's tokens (one update per batch of
samples, so PPO-style ratio clipping is the identity and is left out, as in trl's GRPO with one
iteration), plus β × the per-token KL to the reference (the k3 estimator) when β > 0 — the reference
being the base with the LoRA adapter switched off, or a frozen copy for full training.
trl 1.x has GRPOTrainer and RLOOTrainer (PPO was removed); this loop is ours for the same reasons as the
other trainers here (exact resume, refusal of changed runs, CPU defaults) and is small.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lmforge.errors import LmforgeError


@dataclass
class Prompt:
    messages: list[dict[str, str]]
    record: dict[str, Any]
    line: int


def load_prompts(path: Path) -> tuple[list[Prompt], str]:
    """JSONL records with a "prompt" (text, or a messages list); other fields reach the reward rules."""
    import hashlib

    raw = path.read_bytes()
    out = []
    for n, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise LmforgeError(f"{path}: line {n} is not JSON: {e.msg}") from e
        p = rec.get("prompt") if isinstance(rec, dict) else None
        if isinstance(p, str) and p.strip():
            messages = [{"role": "user", "content": p}]
        elif (
            isinstance(p, list)
            and p
            and all(isinstance(m, dict) and "role" in m and "content" in m for m in p)
        ):
            messages = p
        else:
            raise LmforgeError(f"{path}: line {n}: a 'prompt' (text or messages) is required for grpo/rloo")
        out.append(Prompt(messages, rec, n))
    if not out:
        raise LmforgeError(f"{path}: no prompts")
    return out, hashlib.sha256(raw).hexdigest()


def advantages(rewards: Any, method: str) -> Any:
    """(P, G) rewards → (P, G) advantages within each group."""
    if method == "grpo":
        return (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)
    g = rewards.shape[1]
    return rewards - (rewards.sum(1, keepdim=True) - rewards) / max(1, g - 1)


def completion_logps(model: Any, ids: Any, mask: Any, start: int) -> tuple[Any, Any]:
    """Per-token log-probabilities of the tokens after position `start` (the completion), and their mask."""
    import torch

    logits = model(input_ids=ids, attention_mask=mask).logits[:, -ids.shape[1] :]
    logp = torch.log_softmax(logits[:, start - 1 : -1].float(), dim=-1)
    target = ids[:, start:]
    return logp.gather(-1, target.unsqueeze(-1)).squeeze(-1), mask[:, start:].float()


def train_policy(*, registry: Any, base_m: Any, out: str, cfg: Any, say: Any, run: Any, resuming: bool,
                 state: dict[str, Any], progress: bool) -> Any:  # fmt: skip
    """The GRPO/RLOO loop; registers the policy (an adapter with --lora) like DPO does."""
    import numpy as np
    import torch

    from lmforge.progress import training_progress
    from lmforge.train.align import RewardScorer, _register, is_reward_model, load_models
    from lmforge.train.events import EventLog
    from lmforge.train.finetune import peak_rss_mb, trainable_state
    from lmforge.train.rewards import call, resolve

    prompts, fingerprint = load_prompts(Path(cfg.data))
    reward_spec = cfg.reward or ""
    score_model = None
    if is_reward_model(registry, reward_spec):
        score_model = RewardScorer(registry, reward_spec)
    elif not reward_spec:
        raise LmforgeError("--method grpo/rloo needs --reward: a rule (exact-answer, json-schema, length, "
                           "format:REGEX, FILE.py:FUNCTION) or a registered reward model")  # fmt: skip
    rule = None if score_model else resolve(reward_spec)
    tok, model = load_models(registry, base_m, cfg)
    if score_model is not None and score_model.vocab_size() != len(tok):
        raise LmforgeError(f"reward model {reward_spec} has a {score_model.vocab_size()}-token tokenizer but "
                           f"{base_m.name} has {len(tok)}: a reward model must share the policy's tokenizer")  # fmt: skip
    reference = None
    if cfg.kl_beta > 0 and not cfg.lora:
        reference = copy.deepcopy(model).eval()
        for p in reference.parameters():
            p.requires_grad_(False)
    rng = np.random.default_rng(cfg.seed)
    held = [
        prompts[i]
        for i in sorted(rng.choice(len(prompts), size=min(len(prompts), cfg.eval_prompts), replace=False))
    ]
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.peak_lr(), weight_decay=0.0)
    n = len(prompts)
    total = cfg.steps or max(1, math.ceil(cfg.epochs * n / cfg.batch_size))
    history: list[dict[str, Any]] = []
    before = None
    start_step, elapsed = 0, 0.0
    pad = tok.pad_token_id

    def encode(p: Prompt) -> list[int]:
        text = tok.apply_chat_template(p.messages, tokenize=False, add_generation_prompt=True)
        return tok(text, add_special_tokens=False)["input_ids"][-cfg.max_length :]

    def reward_of(p: Prompt, completion: str) -> float:
        if score_model is not None:
            return score_model.score(p.messages, completion)
        return call(rule, reward_spec, p.messages[-1]["content"], completion, p.record, p.line)

    def sample(p: Prompt, k: int, greedy: bool, seed: int) -> tuple[Any, list[str], int]:
        ids = torch.tensor([encode(p)])
        torch.manual_seed(seed)
        model.eval()
        with torch.no_grad():
            gen = model.generate(input_ids=ids.repeat(k, 1), attention_mask=torch.ones(k, ids.shape[1], dtype=torch.long),
                                 max_new_tokens=cfg.max_new_tokens, do_sample=not greedy,
                                 temperature=cfg.temperature if not greedy else None, top_k=0 if not greedy else None,
                                 pad_token_id=pad, eos_token_id=tok.eos_token_id)  # fmt: skip
        model.train()
        texts = [tok.decode(g[ids.shape[1] :], skip_special_tokens=True) for g in gen]
        return gen, texts, ids.shape[1]

    def mean_greedy_reward() -> float:
        return float(np.mean([reward_of(p, sample(p, 1, True, 0)[1][0]) for p in held]))

    if resuming:
        ck = run.load()
        model.load_state_dict(ck["trainable"], strict=False)
        opt.load_state_dict(ck["optimizer"])
        start_step, history, before, elapsed = ck["step"], ck["history"], ck["before"], ck["elapsed"]
        say(f"resuming {out} from step {start_step}/{total}")
    else:
        say(f"measuring the base: greedy reward on {len(held)} prompts (before) ...")
        before = {"mean_reward": round(mean_greedy_reward(), 4)}
    events = EventLog(run.path, fresh=not resuming)
    bar = training_progress(progress, total, start_step)
    t0 = time.perf_counter()
    order = np.random.default_rng([cfg.seed, 1]).permutation(n)
    try:
        for step in range(start_step, total):
            batch = [prompts[int(order[(step * cfg.batch_size + i) % n])] for i in range(cfg.batch_size)]
            groups = []
            for i, p in enumerate(batch):
                gen, texts, start = sample(p, cfg.generations, False, cfg.seed * 1_000_003 + step * 101 + i)
                groups.append((gen, start, [reward_of(p, t) for t in texts]))
            rewards = torch.tensor([g[2] for g in groups], dtype=torch.float32)  # (P, G)
            adv = advantages(rewards, cfg.method)
            for group in opt.param_groups:
                group["lr"] = cfg.peak_lr()
            loss_total, kl_total = 0.0, 0.0
            for (gen, start, _), a in zip(groups, adv, strict=True):
                mask = (gen != pad).long() if pad is not None else torch.ones_like(gen)
                mask[:, :start] = 1
                logp, cmask = completion_logps(model, gen, mask, start)
                tokens = cmask.sum(1).clamp(min=1)
                pg = -(a * (logp * cmask).sum(1) / tokens).mean()
                kl = torch.zeros(())
                if cfg.kl_beta > 0:
                    with torch.no_grad():
                        if reference is not None:
                            ref, _ = completion_logps(reference, gen, mask, start)
                        else:
                            with model.disable_adapter():
                                ref, _ = completion_logps(model, gen, mask, start)
                    kl = ((torch.exp(ref - logp) - (ref - logp) - 1) * cmask).sum(1).div(tokens).mean()
                loss = (pg + cfg.kl_beta * kl) / len(groups)
                loss.backward()
                loss_total += float(loss.detach())
                kl_total += float(kl) / len(groups)
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            done = step + 1
            rec = {"step": done, "loss": loss_total, "mean_reward": float(rewards.mean()), "kl": kl_total,
                   "lr": cfg.peak_lr()}  # fmt: skip
            history.append(rec)
            events.log(rec, total_steps=total, elapsed_s=elapsed + time.perf_counter() - t0)
            if bar is not None:
                bar.update(bar.task_ids[0], completed=done, loss=float(rewards.mean()), tps=0.0)
            if done % cfg.save_every == 0 or done == total:
                run.save({"step": done, "trainable": trainable_state(model), "optimizer": opt.state_dict(),
                          "history": history, "evals": [], "before": before,
                          "elapsed": elapsed + time.perf_counter() - t0}, done)  # fmt: skip
    finally:
        if bar is not None:
            bar.stop()
    say("measuring the result: greedy reward (after) ...")
    after = {"mean_reward": round(mean_greedy_reward(), 4)}
    k = max(1, len(history) // 5)
    metrics = {"steps": len(history), "prompts": n, "held_out_prompts": len(held),
               "trainable_params": sum(p.numel() for p in trainable),
               "total_params": sum(p.numel() for p in model.parameters()),
               "train_seconds": round(elapsed + time.perf_counter() - t0, 1), "peak_rss_mb": peak_rss_mb(),
               "reward": reward_spec, "data": {"prompts": n, "fingerprint": fingerprint},
               "sampled_reward_first": round(float(np.mean([h["mean_reward"] for h in history[:k]])), 4),
               "sampled_reward_last": round(float(np.mean([h["mean_reward"] for h in history[-k:]])), 4),
               "before": before, "after": after, "evals": []}  # fmt: skip
    data = SimpleNamespace(format="prompts", fingerprint=fingerprint)
    first = {id(p) for p in held}
    judged = [p.messages for p in held] + [p.messages for p in prompts if id(p) not in first]
    return _register(registry, out, base_m, cfg, data, model, tok, metrics, history, run, judged, say)
