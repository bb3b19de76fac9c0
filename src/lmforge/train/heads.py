"""`lmforge finetune MODEL --task classification|ner --data FILE --out NAME`: a sequence-classification or
token-classification head trained on a masked LM (`lmforge pretrain --objective mlm`) or a decoder (the
default Qwen, SmolLM2, a model built here), full or LoRA. The result is an ordinary HF folder
(`AutoModelForSequenceClassification` / `AutoModelForTokenClassification` load it; LoRA is merged in) registered
as kind "classifier", and `lmforge task sentiment|classify|ner NAME` uses it in place of prompting.

transformers' `*ForSequenceClassification` / `*ForTokenClassification` heads and peft's SEQ_CLS / TOKEN_CLS
LoRA do the modelling; this module is the loop (seeded order, warm-up + linear decay, gradient clipping,
progress with rate and ETA), the held-out metrics (accuracy / macro-F1, entity P/R/F1 from the eval
metrics) and the registration. Runs are short (minutes): a stopped run starts again rather than resuming.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from lmforge.errors import LmforgeError
from lmforge.home import Manifest, Registry, check_name
from lmforge.progress import printer, steps_progress
from lmforge.tasks.heads import bio_labels, read_rows, spans_from_tags, tag_tokens

HeadTask = Literal["classification", "ner"]
HEAD_LR = {"full": 5e-5, "lora": 5e-4}
"""Default peak learning rate per method (the new head itself is trained in both)."""


@dataclass
class HeadConfig:
    task: HeadTask = "classification"
    data: str = ""
    """JSONL: classification {"text", "label"}; ner {"text", "entities": [{"label", "start", "end"}]}."""
    method: Literal["full", "lora"] = "lora"
    epochs: float = 1.0
    steps: int | None = None
    lr: float | None = None
    batch_size: int = 16
    max_length: int = 128
    """Tokens per example (longer ones are cut; counted in the report)."""
    val_frac: float = 0.1
    eval_data: str | None = None
    rank: int = 8
    alpha: int = 16
    warmup_frac: float = 0.06
    grad_clip: float = 1.0
    seed: int = 0
    threads: int | None = None

    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else HEAD_LR[self.method]

    def validate(self) -> None:
        if self.task not in ("classification", "ner"):
            raise LmforgeError(f"--task must be classification or ner (got {self.task!r})")
        if self.method not in ("full", "lora"):
            raise LmforgeError(f"--task {self.task} trains with --method full or lora (got {self.method})")
        if not 0 <= self.val_frac < 1 or self.batch_size < 1 or self.max_length < 8:
            raise LmforgeError("--val-frac must be in [0, 1), --batch-size >= 1, --max-length >= 8")


def base_folder(registry: Registry, name: str, say) -> Manifest:
    """The HF checkpoint under the head: a masked LM as it is, a chat/base LM through finetune.hf_base
    (a GGUF model is dequantized once)."""
    from lmforge.train.finetune import hf_base

    if not registry.exists(name):
        raise LmforgeError(f"unknown model {name!r}; `lmforge models ls` lists the registry")
    m = registry.get(name)
    if m.kind == "masked-lm":
        return m
    return hf_base(registry, name, say)


def encode(
    tok: Any, rows: list[dict[str, Any]], cfg: HeadConfig, label_ids: dict[str, int]
) -> tuple[list, dict]:
    """Token ids + labels per row (ner: one BIO label id per token, -100 for special tokens)."""
    out, cut, misaligned = [], 0, 0
    for r in rows:
        enc = tok(r["text"], truncation=True, max_length=cfg.max_length, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], [tuple(x) for x in enc["offset_mapping"]]
        cut += offsets and max(b for _, b in offsets) < len(r["text"].rstrip())
        if cfg.task == "classification":
            out.append((ids, label_ids[r["label"]], r))
            continue
        tags, bad = tag_tokens(offsets, r["entities"])
        misaligned += bad
        out.append((ids, [-100 if t is None else label_ids[t] for t in tags], r))
    return out, {"truncated": int(cut), "misaligned_spans": misaligned}


def _batches(items: list, size: int, pad: int, task: str):
    import torch

    width = max(len(x[0]) for x in items)
    ids = torch.full((len(items), width), pad, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    labels = (
        torch.tensor([x[1] for x in items])
        if task == "classification"
        else torch.full((len(items), width), -100, dtype=torch.long)
    )
    for i, (row_ids, lab, _) in enumerate(items):
        ids[i, : len(row_ids)] = torch.tensor(row_ids)
        mask[i, : len(row_ids)] = 1
        if task == "ner":
            labels[i, : len(lab)] = torch.tensor(lab)
    return ids, mask, labels


def evaluate(
    model: Any, tok: Any, items: list, cfg: HeadConfig, id2label: dict[int, str]
) -> dict[str, float]:
    """Held-out accuracy + macro-F1 (classification) or entity precision/recall/F1 on exact spans (ner)."""
    import torch

    from lmforge.eval.metrics import accuracy, entity_prf, macro_f1

    model.eval()
    preds, golds, pred_sets, gold_sets = [], [], [], []
    with torch.inference_mode():
        for i in range(0, len(items), cfg.batch_size):
            chunk = items[i : i + cfg.batch_size]
            ids, mask, _ = _batches(chunk, cfg.batch_size, tok.pad_token_id, cfg.task)
            probs = torch.softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
            for j, (row_ids, _lab, row) in enumerate(chunk):
                if cfg.task == "classification":
                    preds.append(id2label[int(probs[j].argmax())])
                    golds.append(row["label"])
                    continue
                enc = tok(
                    row["text"], truncation=True, max_length=cfg.max_length, return_offsets_mapping=True
                )
                best = probs[j, : len(row_ids)].max(dim=-1)
                tags = [id2label[int(k)] for k in best.indices]
                offsets = [tuple(x) for x in enc["offset_mapping"]]
                found = spans_from_tags(row["text"], offsets, tags, best.values.tolist())
                pred_sets.append({(e["label"], e["start"], e["end"]) for e in found})
                gold_sets.append({(e["label"], e["start"], e["end"]) for e in row["entities"]})
    model.train()
    if cfg.task == "classification":
        return {"accuracy": round(accuracy(preds, golds), 4), "macro_f1": round(macro_f1(preds, golds), 4),
                "n": len(golds)}  # fmt: skip
    prf = entity_prf(pred_sets, gold_sets)
    return {f"entity_{k}": round(v, 4) for k, v in prf.items()} | {"n": len(gold_sets)}


def main(registry: Registry, base: str, out: str, cfg: HeadConfig, *, progress: bool = True) -> Manifest:
    """Train a task head on `base` and register it as `out` (kind "classifier")."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    cfg.validate()
    check_name(out)
    if registry.exists(out):
        raise LmforgeError(f"{out!r} already exists in the registry; pick another --out or remove it")
    say = printer(True)
    rows = read_rows(cfg.data, cfg.task)
    if cfg.eval_data:
        train_rows, val_rows = rows, read_rows(cfg.eval_data, cfg.task)
    else:
        order = random.Random(cfg.seed).sample(range(len(rows)), len(rows))
        n_val = int(len(rows) * cfg.val_frac)
        val_rows = [rows[i] for i in order[:n_val]]
        train_rows = [rows[i] for i in order[n_val:]]
    if cfg.task == "classification":
        labels = sorted({r["label"] for r in rows})
        if len(labels) < 2:
            raise LmforgeError(
                f"--data {cfg.data}: one label only ({labels[0]}); a classifier needs two or more"
            )
    else:
        types = sorted({e["label"] for r in rows for e in r["entities"]})
        if not types:
            raise LmforgeError(f"--data {cfg.data}: no entity in any example")
        labels = bio_labels(types)
    label_ids = {x: i for i, x in enumerate(labels)}
    id2label = dict(enumerate(labels))
    base_m = base_folder(registry, base, say)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    path = registry.model_path(base_m)
    tok = AutoTokenizer.from_pretrained(str(path))
    if not tok.is_fast:
        raise LmforgeError(
            f"{base_m.name}: a fast tokenizer (tokenizer.json) is needed for character offsets"
        )
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    auto = (
        AutoModelForSequenceClassification
        if cfg.task == "classification"
        else AutoModelForTokenClassification
    )
    torch.manual_seed(cfg.seed)
    model = auto.from_pretrained(str(path), num_labels=len(labels), id2label=id2label, label2id=label_ids,
                                 dtype=torch.float32)  # fmt: skip
    model.config.pad_token_id = tok.pad_token_id
    if cfg.method == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        kind = TaskType.SEQ_CLS if cfg.task == "classification" else TaskType.TOKEN_CLS
        head = {
            "score",
            "classifier",
        }  # the new head trains in full (peft's modules_to_save for SEQ_CLS/TOKEN_CLS)
        linear = sorted({n.rsplit(".", 1)[-1] for n, mod in model.named_modules()
                         if isinstance(mod, torch.nn.Linear)} - head)  # fmt: skip
        model = get_peft_model(model, LoraConfig(task_type=kind, r=cfg.rank, lora_alpha=cfg.alpha,
                                                 lora_dropout=0.05, target_modules=linear))  # fmt: skip
    train, tr_stats = encode(tok, train_rows, cfg, label_ids)
    val, _ = encode(tok, val_rows, cfg, label_ids)
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    say(f"data: {len(train)} train / {len(val)} held out; labels {', '.join(labels)}; "
        f"{tr_stats['truncated']} cut at {cfg.max_length} tokens"
        + (f"; {tr_stats['misaligned_spans']} spans end inside a token" if cfg.task == "ner" else "")
        + f"; {n_trainable:,} trainable parameters ({cfg.method})")  # fmt: skip
    total = cfg.steps or max(1, math.ceil(cfg.epochs * len(train) / cfg.batch_size))
    warmup = int(total * cfg.warmup_frac)
    opt = torch.optim.AdamW(trainable, lr=cfg.peak_lr(), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (s + 1) / (warmup + 1) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)),
    )
    rng = random.Random(cfg.seed)
    order: list[int] = []
    history: list[dict[str, Any]] = []
    model.train()
    t0 = time.perf_counter()
    tokens = 0
    with steps_progress() if progress else _Quiet() as bar:
        job = bar.add_task(f"{cfg.task} head ({cfg.method})", total=total)
        for step in range(1, total + 1):
            if len(order) < cfg.batch_size:
                order += rng.sample(range(len(train)), len(train))
            chunk = [train[order.pop(0)] for _ in range(min(cfg.batch_size, len(train)))]
            ids, mask, lab = _batches(chunk, cfg.batch_size, tok.pad_token_id, cfg.task)
            loss = model(input_ids=ids, attention_mask=mask, labels=lab).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            tokens += int(mask.sum())
            history.append({"step": step, "loss": round(loss.item(), 5)})
            bar.update(
                job, advance=1, description=f"{cfg.task} head ({cfg.method}) loss {history[-1]['loss']:.4f}"
            )
            if not progress and (step % max(1, total // 10) == 0 or step == total):
                rate = step / (time.perf_counter() - t0)
                say(f"step {step}/{total}  loss {history[-1]['loss']:.4f}  {rate * cfg.batch_size:.1f} examples/s  "
                    f"ETA {(total - step) / rate:.0f} s")  # fmt: skip
    seconds = time.perf_counter() - t0
    held = evaluate(model, tok, val, cfg, id2label) if val else {}
    if cfg.method == "lora":
        model = model.merge_and_unload()
    metrics = {"steps": total, "train_seconds": round(seconds, 1), "examples_per_s": round(total * cfg.batch_size / seconds, 2),
               "tokens_per_s": round(tokens / seconds, 1), "train_loss": history[-1]["loss"],
               "held_out": held, "trainable_params": n_trainable, **tr_stats}  # fmt: skip
    say("held out: " + ", ".join(f"{k} {v}" for k, v in held.items()) if held else "no held-out examples")
    config = asdict(cfg) | {"base": base_m.name, "labels": labels, "lr_used": cfg.peak_lr(),
                            "architecture": getattr(model.config, "model_type", ""),
                            "data_path": str(Path(cfg.data).resolve())}  # fmt: skip
    manifest = Manifest(name=out, kind="classifier", format="hf", path="", parents=[base_m.name],
                        source=f"finetune:{cfg.task}-{cfg.method}", config=config,
                        params=sum(p.numel() for p in model.parameters()), metrics=metrics,
                        notes=f"{cfg.task} head on {base_m.name}; `lmforge task "
                              f"{'sentiment|classify' if cfg.task == 'classification' else 'ner'} {out} TEXT`")  # fmt: skip

    def fill(stage: Path) -> None:
        from lmforge.train.plot import loss_curve

        model.save_pretrained(str(stage))
        tok.save_pretrained(str(stage))
        loss_curve(history, [], stage / "loss.png", title=f"{out}: {cfg.task} head on {base_m.name}")

    return registry.put(manifest, fill)


class _Quiet:
    """A progress bar that shows nothing (progress=False)."""

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def add_task(self, *a: Any, **k: Any) -> int:
        return 0

    def update(self, *a: Any, **k: Any) -> None:
        return None
