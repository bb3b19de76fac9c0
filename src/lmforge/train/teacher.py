"""The teacher's side of `lmforge distill` (train/distill.py has the run): whether two tokenizers can
be distilled logit by logit, the teacher's targets and the KL loss, the on-disk cache of its top-k
logits, and (sequence mode) its cached greedy answers. The formats and the reasons are in distill.py's
module docstring.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.errors import LmforgeError
from lmforge.home import Registry, weights_fingerprint
from lmforge.train.record import perplexity

if TYPE_CHECKING:
    from lmforge.train.distill import DistillConfig, Plan

CACHE_FORMAT = 1
"""Bumped when the layout of a cached example changes (old caches are then not read)."""


# -- tokenizers --------------------------------------------------------------------------------
def vocab_fingerprint(tok: Any) -> str:
    """sha256 of the tokenizer's id → token map (added tokens included): what logit distillation needs
    two models to share."""
    items = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()


def tokenizer_difference(teacher_tok: Any, student_tok: Any) -> str | None:
    """None when the two tokenizers map every id to the same token; else how they differ."""
    a, b = len(teacher_tok), len(student_tok)
    if a != b:
        return f"vocab {a} vs {b}"
    if vocab_fingerprint(teacher_tok) != vocab_fingerprint(student_tok):
        return f"vocab {a} each, but different tokens behind the same ids"
    return None


# -- the teacher's targets and the loss -------------------------------------------------------
@dataclass
class TeacherTargets:
    """The teacher's view of one example, at its response positions (labels[1:] != -100), in order."""

    values: Any
    """(P, K) float32 logits: the top k shifted so the largest is 0 (float16-rounded), or all of them."""
    indices: Any
    """(P, K) int32 token ids of `values`; None when `values` covers the whole vocabulary in id order."""
    ce: float
    """The teacher's summed cross-entropy on the example's response tokens."""


def distill_kl(student_logits: Any, teacher_logits: Any, indices: Any, temperature: float) -> Any:
    """Σ over positions of KL(p_T ‖ q_S) at temperature τ: p_T the teacher's softmax over its K tokens
    (renormalised when they are a top k), q_S the student's softmax over all of its V tokens.
    student_logits (P, V), teacher_logits (P, K), indices (P, K) or None (K = V, in id order)."""
    import torch

    logq = torch.log_softmax(student_logits.float() / temperature, dim=-1)  # (P, V)
    if indices is not None:
        logq = logq.gather(-1, indices.long())  # (P, K)
    logp = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)  # (P, K)
    return (logp.exp() * (logp - logq)).sum()


def response_logits(model: Any, ids: Any, mask: Any, labels: Any, bf16: bool) -> tuple[Any, Any]:
    """(logits (P, V) float32, targets (P,)) at the labelled positions of a right-padded batch, rows in
    example order then position order."""
    import torch

    dev = next(p for p in model.parameters()).device
    ids, mask, labels = ids.to(dev), mask.to(dev), labels.to(dev)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=ids, attention_mask=mask).logits[:, -ids.shape[1] : -1]  # (B, T-1, V)
    target = labels[:, 1:]  # (B, T-1)
    keep = target != -100
    return logits[keep].float(), target[keep]


def teacher_targets(teacher: Any, items: list[Any], pad: int, vocab: int, top_k: int | None) -> list[TeacherTargets]:  # fmt: skip
    """The teacher's targets for each tokenized example: its top_k logits (float16-rounded, as cached)
    or, with top_k None, all `vocab` of them in float32."""
    import torch

    from lmforge.train.finetune import collate

    ids, mask, labels = collate(items, pad)
    out = []
    with torch.no_grad():
        logits, target = response_logits(teacher, ids, mask, labels, False)  # (P, Vt), (P,)
        per_example = [sum(1 for x in t.labels[1:] if x != -100) for t in items]
        for lg, tg in zip(logits.split(per_example), target.split(per_example), strict=True):
            ce = float(torch.nn.functional.cross_entropy(lg, tg, reduction="sum"))
            lg = lg[:, :vocab]
            if top_k is None:
                out.append(TeacherTargets(values=lg, indices=None, ce=ce))
                continue
            values, idx = lg.topk(min(top_k, vocab), dim=-1)  # (P, k), largest first
            values = (values - values[:, :1]).half().float()
            out.append(TeacherTargets(values=values, indices=idx.int(), ce=ce))
    return out


class LogitCache:
    """Teacher top-k logits on disk, one safetensors file per example (see the module docstring)."""

    def __init__(self, root: Path, key: dict[str, Any]) -> None:
        key = key | {"format": CACHE_FORMAT}
        self.path = root / hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        self.top_k: int = key["top_k"]
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "meta.json").write_text(json.dumps(key, indent=1), encoding="utf-8")

    def file(self, item: Any) -> Path:
        h = hashlib.sha256(json.dumps([item.input_ids, item.labels]).encode()).hexdigest()
        return self.path / f"{h[:32]}.safetensors"

    def has(self, item: Any) -> bool:
        return self.file(item).is_file()

    def get(self, item: Any) -> TeacherTargets:
        from safetensors.torch import load_file

        t = load_file(str(self.file(item)))
        return TeacherTargets(values=t["values"].float(), indices=t["indices"], ce=float(t["ce"][0]))

    def fill(self, items: list[Any], load_teacher: Any, batch_size: int, pad: int, vocab: int, say: Any,
             progress: bool = False) -> dict[str, Any]:  # fmt: skip
        """Compute and store what is missing of `items` (the teacher, from `load_teacher()`, is loaded
        only then and freed after); return the hits and misses."""
        from lmforge.progress import steps_progress

        unique = {self.file(t): t for t in items}
        missing = [t for t in unique.values() if not self.has(t)]
        if missing:
            say(f"teacher: top-{self.top_k} logits of {len(missing)} examples -> {self.path}")
            teacher = load_teacher()
            bar = steps_progress() if progress else None
            task = bar.add_task("teacher logits", total=len(missing)) if bar else None
            if bar:
                bar.start()
            try:
                for i in range(0, len(missing), batch_size):
                    part = missing[i : i + batch_size]
                    for t, tt in zip(
                        part, teacher_targets(teacher, part, pad, vocab, self.top_k), strict=True
                    ):
                        self.put(t, tt)
                    if bar:
                        bar.advance(task, len(part))
            finally:
                if bar:
                    bar.stop()
        hits = len(unique) - len(missing)
        say(
            f"teacher logits: {hits} of {len(unique)} examples from the cache, {len(missing)} computed ({self.path})"
        )
        return {"used": True, "dir": str(self.path), "examples": len(unique), "hits": hits, "computed": len(missing),
                "top_k": self.top_k}  # fmt: skip

    def put(self, item: Any, targets: TeacherTargets) -> None:
        import torch
        from safetensors.torch import save_file

        path = self.file(item)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({"values": targets.values.half().contiguous(), "indices": targets.indices.contiguous(),
                   "ce": torch.tensor([targets.ce], dtype=torch.float32)}, str(tmp))  # fmt: skip
        os.replace(tmp, path)  # a kill mid-write leaves no torn file


def teacher_answers(registry: Registry, plan: Plan, cfg: DistillConfig, say: Any, progress: bool) -> tuple[Path, float | None]:  # fmt: skip
    """(folder, teacher held-out perplexity): the folder holds teacher.jsonl (the training prompts with
    the teacher's greedy answers), reference.jsonl (the same prompts with their own responses) and
    heldout.jsonl, under LMFORGE_HOME/cache/teacher-answers/<fingerprint>/, made once."""
    from lmforge.infer.chat import greedy_text
    from lmforge.infer.loader import LoadConfig, load_backend
    from lmforge.progress import steps_progress

    key = {"teacher": weights_fingerprint(registry, plan.teacher), "data": plan.data_fingerprint, "gen_tokens": cfg.gen_tokens,
           "val_frac": None if cfg.eval_data else cfg.val_frac, "seed": cfg.seed, "max_length": cfg.max_length,
           "format": CACHE_FORMAT}  # fmt: skip
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    folder = registry.root / "cache" / "teacher-answers" / digest
    done = folder / "answers.json"
    if done.is_file():
        info = json.loads(done.read_text(encoding="utf-8"))
        say(f"teacher answers: cache hit ({info['answered']} answers in {folder})")
        return folder, info["teacher_ppl"]
    say(f"teacher {plan.teacher.name} answers {len(plan.train)} training prompts (greedy, at most "
        f"{cfg.gen_tokens} tokens) ...")  # fmt: skip
    backend = load_backend(registry, plan.teacher.name, LoadConfig(n_threads=cfg.threads, logits_all=True))
    try:
        teacher_rows, reference_rows = [], []
        bar = steps_progress() if progress else None
        task = bar.add_task("teacher answers", total=len(plan.train)) if bar else None
        if bar:
            bar.start()
        try:
            for ex in plan.train:
                answer = greedy_text(backend, ex.messages[:-1], cfg.gen_tokens).strip()
                if bar:
                    bar.advance(task)
                if not answer:
                    continue
                teacher_rows.append({"messages": [*ex.messages[:-1], {"role": "assistant", "content": answer}]})  # fmt: skip
                reference_rows.append({"messages": ex.messages})
        finally:
            if bar:
                bar.stop()
        if not teacher_rows:
            raise LmforgeError(f"teacher {plan.teacher.name} answered none of the {len(plan.train)} training prompts")  # fmt: skip
        teacher_ppl = backend_ppl(backend, registry, plan, cfg)
    finally:
        backend.close()
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("teacher.jsonl", teacher_rows), ("reference.jsonl", reference_rows),
                       ("heldout.jsonl", [{"messages": ex.messages} for ex in plan.val])):  # fmt: skip
        (folder / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    info = {"prompts": len(plan.train), "answered": len(teacher_rows), "empty": len(plan.train) - len(teacher_rows),
            "teacher_ppl": teacher_ppl, "backend": backend.kind}  # fmt: skip
    tmp = done.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=1), encoding="utf-8")
    os.replace(tmp, done)  # written last: its presence means the folder is whole
    say(f"teacher answers: {info['answered']} of {info['prompts']} prompts answered ({folder})")
    return folder, teacher_ppl


def backend_ppl(backend: Any, registry: Registry, plan: Plan, cfg: DistillConfig) -> float | None:
    """The teacher's held-out perplexity on the response tokens, per its own tokens (backend `score`)."""
    from lmforge.data.sft import tokenize_sft
    from lmforge.infer.hf import load_tokenizer

    if not plan.val or not backend.capabilities.score:
        return None
    tok = load_tokenizer(registry.model_path(plan.teacher))
    if not tok.chat_template:
        return None
    items, _ = tokenize_sft(tok, plan.val, min(cfg.max_length, backend.context_length))
    nll, count = 0.0, 0
    for t in items:
        logps = backend.score(t.input_ids)  # log p(ids[i] | ids[:i]) for i = 1..
        for lp, label in zip(logps, t.labels[1:], strict=True):
            if label != -100:
                nll, count = nll - lp, count + 1
    return perplexity(nll / count) if count else None
