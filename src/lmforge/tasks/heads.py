"""Fine-tuned task models (kind "classifier"): a sequence-classification head (sentiment, classify) or a
token-classification head (NER) on a masked LM or a decoder, made by `lmforge finetune --task` and used by
`lmforge task` and `POST /v1/tasks/{task}` in place of a prompted chat model — same JSON out.

Shared by training and inference: the data reader, the BIO tagging of character spans onto tokens
(through the fast tokenizer's offset mapping) and the decoding of tags back into character spans.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.data.textfile import read_utf8
from lmforge.errors import LmforgeError

HEAD_TASKS = {"classification": ("sentiment", "classify"), "ner": ("ner",)}
"""Which `lmforge task` commands a fine-tuned model of each --task answers."""


def read_rows(path: str, task: str) -> list[dict[str, Any]]:
    """Rows of a JSONL (or JSON list) training file, checked: classification {"text", "label"}; ner
    {"text", "entities": [{"label", "start", "end"} | {"label", "text"}]} (a span given by text only is
    located at its first occurrence). Errors name the line."""
    raw = read_utf8(path, "--data")
    stripped = raw.lstrip()
    if stripped.startswith("["):
        try:
            loaded = json.loads(raw)
        except json.JSONDecodeError as e:
            raise LmforgeError(f"--data {path}: not JSON ({e.msg}, line {e.lineno})") from e
        lines = list(enumerate(loaded, 1))
    else:
        lines = []
        for n, line in enumerate(raw.splitlines(), 1):
            if line.strip():
                try:
                    lines.append((n, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise LmforgeError(f"--data {path} line {n}: not JSON ({e.msg})") from e
    rows = [_row(path, n, obj, task) for n, obj in lines]
    if not rows:
        raise LmforgeError(f"--data {path} has no examples")
    return rows


def _row(path: str, n: int, obj: Any, task: str) -> dict[str, Any]:
    where = f"--data {path} line {n}"
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or not obj["text"].strip():
        raise LmforgeError(f'{where}: needs a non-empty "text"')
    text = obj["text"]
    if task == "classification":
        if not isinstance(obj.get("label"), str | int) or str(obj["label"]).strip() == "":
            raise LmforgeError(f'{where}: needs a "label" (classification)')
        return {"text": text, "label": str(obj["label"]).strip()}
    ents = obj.get("entities")
    if not isinstance(ents, list):
        raise LmforgeError(f'{where}: needs "entities": [{{"label", "start", "end"}}, ...] (ner)')
    spans = []
    for e in ents:
        if not isinstance(e, dict) or not str(e.get("label") or e.get("type") or "").strip():
            raise LmforgeError(f"{where}: an entity without a label: {e!r}")
        label = str(e.get("label") or e.get("type")).strip()
        if "start" in e:
            start = int(e["start"])
            end = int(e.get("end", start + len(str(e.get("text", "")))))
        elif e.get("text") and e["text"] in text:
            start = text.index(e["text"])
            end = start + len(e["text"])
        else:
            raise LmforgeError(f"{where}: entity {e!r} has no start/end and its text is not in the sentence")
        if not 0 <= start < end <= len(text) or ("text" in e and text[start:end] != e["text"]):
            raise LmforgeError(f"{where}: entity {e!r} does not match text[{start}:{end}]")
        spans.append({"label": label, "start": start, "end": end})
    return {"text": text, "entities": spans}


def bio_labels(types: list[str]) -> list[str]:
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]


def tag_tokens(offsets: list[tuple[int, int]], spans: list[dict[str, Any]]) -> tuple[list[str | None], int]:
    """BIO tag per token (None for special tokens, which the loss ignores) and how many spans do not start
    or end on a token boundary (a BPE token that straddles an entity edge)."""
    char: dict[int, tuple[str, int]] = {}
    for s in spans:
        for i in range(s["start"], s["end"]):
            char[i] = (s["label"], s["start"])
    tags: list[str | None] = []
    starts = {a for a, b in offsets if b > a}
    ends = {b for a, b in offsets if b > a}
    misaligned = sum(1 for s in spans if s["start"] not in starts or s["end"] not in ends)
    seen: set[int] = set()
    for a, b in offsets:
        if b <= a:
            tags.append(None)
            continue
        hit = next((char[i] for i in range(a, b) if i in char), None)
        if hit is None:
            tags.append("O")
            continue
        label, start = hit
        tags.append(("I-" if start in seen else "B-") + label)
        seen.add(start)
    return tags, misaligned


def spans_from_tags(
    text: str, offsets: list[tuple[int, int]], tags: list[str], probs: list[float]
) -> list[dict[str, Any]]:
    """Character spans from BIO tags per token: an I- of a different type, or after O, starts a span."""
    out: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for (a, b), tag, p in zip(offsets, tags, probs, strict=True):
        if b <= a:
            continue
        kind = tag[2:] if tag != "O" else None
        if kind and cur and cur["label"] == kind and tag.startswith("I-"):
            cur["end"] = b
            cur["ps"].append(p)
            continue
        if cur:
            out.append(cur)
        cur = {"label": kind, "start": a, "end": b, "ps": [p]} if kind else None
    if cur:
        out.append(cur)
    result = []
    for s in out:
        a, b = s["start"], s["end"]
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b > a:
            score = round(sum(s["ps"]) / len(s["ps"]), 4)
            result.append({"text": text[a:b], "label": s["label"], "start": a, "end": b, "score": score})
    return result


@dataclass
class TaskHead:
    """A loaded fine-tuned task model; `run` answers like tasks.engine.run does for a chat model."""

    name: str
    task: str
    """classification or ner."""
    labels: list[str]
    tokenizer: Any
    model: Any
    max_length: int = 512

    @classmethod
    def load(cls, path: Path, name: str, config: dict[str, Any]) -> TaskHead:
        import torch
        from transformers import (
            AutoModelForSequenceClassification,
            AutoModelForTokenClassification,
            AutoTokenizer,
        )

        task = config.get("task")
        if task not in HEAD_TASKS:
            raise LmforgeError(f"{name}: manifest has no task (classification or ner)")
        auto = (
            AutoModelForSequenceClassification
            if task == "classification"
            else AutoModelForTokenClassification
        )
        tok = AutoTokenizer.from_pretrained(str(path))
        model = auto.from_pretrained(str(path), dtype=torch.float32).eval()
        return cls(name=name, task=task, labels=list(config.get("labels") or []), tokenizer=tok, model=model,
                   max_length=int(config.get("max_length", 512)))  # fmt: skip

    def check(self, task: str, requested: list[str]) -> None:
        """Refuse a task this head cannot answer, or --labels other than the ones it was trained on."""
        if task not in HEAD_TASKS[self.task]:
            raise LmforgeError(f"{self.name} is a fine-tuned {self.task} model: it answers "
                               f"{' and '.join(HEAD_TASKS[self.task])}, not {task}")  # fmt: skip
        have = (
            self.labels if self.task == "classification" else sorted({x[2:] for x in self.labels if x != "O"})
        )
        extra = [x for x in requested if x.strip() and x.strip() not in have]
        if extra:
            raise LmforgeError(f"{self.name} was trained on the labels {', '.join(have)}; it cannot answer "
                               f"{', '.join(extra)} (fine-tune again with them, or use a chat model)")  # fmt: skip

    def run(self, task: str, text: str, labels: list[str] | None = None) -> dict[str, Any]:
        """The JSON `lmforge task` prints: {"label", "score"} or {"entities", "dropped"}; text longer than
        the head's max_length is classified in windows (votes weighted by probability) or tagged in
        windows with offsets mapped back, and the answer says `"chunks": n`."""
        import torch

        self.check(task, labels or [])
        if not text.strip():
            raise LmforgeError("the text is empty")
        pieces = self._windows(text)
        results = []
        with torch.inference_mode():
            for start, piece in pieces:
                enc = self.tokenizer(piece, return_offsets_mapping=True, return_tensors="pt", truncation=True,
                                     max_length=self.max_length)  # fmt: skip
                offsets = [tuple(x) for x in enc.pop("offset_mapping")[0].tolist()]
                probs = torch.softmax(self.model(**enc).logits[0].float(), dim=-1)
                if self.task == "classification":
                    results.append((start, probs))
                else:
                    best = probs.max(dim=-1)
                    tags = [self.model.config.id2label[int(i)] for i in best.indices]
                    ents = spans_from_tags(piece, offsets, tags, best.values.tolist())
                    results.append((start, [e | {"start": e["start"] + start, "end": e["end"] + start}
                                            for e in ents]))  # fmt: skip
        extra = {"chunks": len(pieces)} if len(pieces) > 1 else {}
        if self.task == "classification":
            total = sum(p for _, p in results) / len(results)
            i = int(total.argmax())
            return {
                "label": self.model.config.id2label[i],
                "score": round(float(total[i]), 4),
                "tries": 0,
            } | extra
        return {"entities": [e for _, ents in results for e in ents], "dropped": 0, "tries": 0} | extra

    def _windows(self, text: str) -> list[tuple[int, str]]:
        from lmforge.tasks.engine import split_text

        n = len(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        if n <= self.max_length:
            return [(0, text)]
        chars = max(16, int(len(text) * (self.max_length - 8) / n))
        return split_text(text, chars)

    def close(self) -> None:
        self.model = None


def load_head(registry: Any, name: str) -> TaskHead | None:
    """The fine-tuned task model `name`, or None when it is not one (a chat model answers by prompting)."""
    if not registry.exists(name):
        return None
    m = registry.get(name)
    if m.kind != "classifier":
        return None
    return TaskHead.load(registry.model_path(m), name, m.config)
