"""`lmforge task eval TASK MODEL --suite S` and `lmforge task compare TASK MODEL --suite S`: a task run item by
item over an evaluation suite (the bundled ones of `lmforge eval`, or a user's YAML + JSONL) and scored with the
same metrics (eval/metrics.py): accuracy and macro-F1 for sentiment/classify, entity P/R/F1 on (type, text)
pairs for NER (as `lmforge eval` scores it), EM/F1 for QA, BLEU/chrF for translation, ROUGE for summaries.

An item whose answer never parses counts as wrong and is listed by id; the others are kept. `compare` runs the
same items through several strategies — zero-shot, few-shot (examples from a file, random or similar), chain of
thought, and fine-tuned task models — and writes the table as Markdown, HTML and a PNG chart.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.eval.harness import Suite, generation_metrics
from lmforge.tasks.engine import TaskConfig

SUITE_TASKS = {"classification": ("sentiment", "classify"), "ner": ("ner",),
               "generation": ("qa", "translate", "summarize")}  # fmt: skip
"""Which `lmforge task` commands can be scored on a suite of each eval task type."""
SENTIMENT_KEYS = {"pos": "positive", "positive": "positive", "neg": "negative", "negative": "negative",
                  "neu": "neutral", "neutral": "neutral"}  # fmt: skip
"""Suite label keys read as the sentiment task's labels."""

Runner = Callable[[str, TaskConfig], dict[str, Any]]
"""(text, config) -> the task's JSON answer: tasks.engine.run over a backend, or TaskHead.run."""


@dataclass
class Item:
    id: str
    text: str
    gold: Any
    cfg: TaskConfig


@dataclass
class TaskEval:
    task: str
    model: str
    suite: str
    strategy: str
    n: int
    metrics: dict[str, float]
    failed: list[str] = field(default_factory=list)
    """Ids of items with no valid answer (scored as wrong)."""
    seconds: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self, with_rows: bool = False) -> dict[str, Any]:
        d = {"task": self.task, "model": self.model, "suite": self.suite, "strategy": self.strategy, "n": self.n,
             "metrics": self.metrics, "failed": self.failed, "seconds": round(self.seconds, 2),
             "items_per_s": round(self.n / self.seconds, 3) if self.seconds else None}  # fmt: skip
        return d | ({"rows": self.rows} if with_rows else {})


def items_of(task: str, suite: Suite, cfg: TaskConfig, limit: int | None = None) -> list[Item]:
    """The suite's items as task inputs with their gold answers; refuses a task the suite cannot score."""
    if task not in SUITE_TASKS.get(suite.task, ()):
        fits = [kind for kind, tasks in SUITE_TASKS.items() if task in tasks]
        raise LmforgeError(f"suite {suite.name} is a {suite.task} suite: it scores "
                           f"{', '.join(SUITE_TASKS.get(suite.task, ())) or 'no task'}, not {task}"
                           + (f" (give a {fits[0]} suite)" if fits else ""))  # fmt: skip
    out = []
    for it in suite.items[: limit or None]:
        c = replace(cfg)
        if task == "sentiment":
            gold = SENTIMENT_KEYS.get(str(it["label"]).lower())
            if gold is None:
                raise LmforgeError(f"suite {suite.name}: label {it['label']!r} is not a sentiment "
                                   f"(pos/neg/neu); score it with `task classify`")  # fmt: skip
            out.append(Item(it["id"], it["text"], gold, c))
        elif task == "classify":
            c.labels = c.labels or list(suite.labels.values())
            out.append(Item(it["id"], it["text"], suite.labels.get(str(it["label"]), str(it["label"])), c))
        elif task == "ner":
            c.labels = c.labels or ["PER", "LOC", "ORG"]
            gold = {(e.get("type") or e.get("label"), e["text"]) for e in it["entities"]}
            out.append(Item(it["id"], it["text"], gold, c))
        elif task == "qa":
            if "question" not in it or "context" not in it:
                raise LmforgeError(f"suite {suite.name}: qa needs items with question and context")
            c.context = it["context"]
            out.append(Item(it["id"], it["question"], str(it["reference"]), c))
        elif task == "translate":
            if "source" not in it:
                raise LmforgeError(f"suite {suite.name}: translate needs items with a source text")
            c.to = suite.lang.split("-")[-1] if "-" in suite.lang else c.to
            out.append(Item(it["id"], it["source"], str(it["reference"]), c))
        else:  # summarize
            if "text" not in it:
                raise LmforgeError(f"suite {suite.name}: summarize needs items with a text")
            out.append(Item(it["id"], it["text"], str(it["reference"]), c))
    if not out:
        raise LmforgeError(f"suite {suite.name} has no items")
    return out


def prediction(task: str, result: dict[str, Any]) -> Any:
    if task in ("sentiment", "classify"):
        return result["label"]
    if task == "ner":
        return {(e["label"], e["text"]) for e in result["entities"]}
    return result[{"qa": "answer", "translate": "translation", "summarize": "summary"}[task]]


def score(task: str, suite: Suite, preds: list[Any], golds: list[Any]) -> dict[str, float]:
    from lmforge.eval import metrics as M

    if task in ("sentiment", "classify"):
        labels = sorted({g for g in golds})
        p = [x if x is not None else "(no answer)" for x in preds]
        return {"accuracy": M.accuracy(p, golds), "macro_f1": M.macro_f1(p, golds, labels)}
    if task == "ner":
        prf = M.entity_prf([x or set() for x in preds], golds)
        return {"entity_f1": prf["f1"], "entity_precision": prf["precision"], "entity_recall": prf["recall"]}
    target = suite.lang.split("-")[-1]
    return generation_metrics(suite.metrics, [x or "" for x in preds], golds, target)


def evaluate(run: Runner, task: str, model: str, suite: Suite, cfg: TaskConfig, *, strategy: str = "zero-shot",
             limit: int | None = None, tick: Callable[[int], None] | None = None) -> TaskEval:  # fmt: skip
    """Run `task` over the suite's items and score it; failed items count as wrong."""
    items = items_of(task, suite, cfg, limit)
    preds, failed, rows = [], [], []
    t0 = time.perf_counter()
    for i, it in enumerate(items, 1):
        try:
            result = run(it.text, it.cfg)
            pred = prediction(task, result)
        except LmforgeError as e:
            failed.append(it.id)
            pred, result = None, {"error": str(e)}
        preds.append(pred)
        rows.append({"id": it.id, "prediction": sorted(pred) if isinstance(pred, set) else pred,
                     "gold": sorted(it.gold) if isinstance(it.gold, set) else it.gold})  # fmt: skip
        if tick:
            tick(i)
    seconds = time.perf_counter() - t0
    metrics = {k: round(v, 4) for k, v in score(task, suite, preds, [it.gold for it in items]).items()}
    return TaskEval(task, model, suite.name, strategy, len(items), metrics, failed, seconds, rows)


@dataclass
class Strategy:
    name: str
    """zero-shot, few-shot, cot, or fine-tuned:NAME."""
    model: str
    cfg: TaskConfig


def strategies(model: str, cfg: TaskConfig, examples: list[dict[str, Any]], shots: int, pick: str,
               finetuned: list[str], cot: bool = True) -> list[Strategy]:  # fmt: skip
    """The rows of `task compare`: zero-shot; few-shot when examples are given; CoT; each fine-tuned model."""
    rows = [Strategy("zero-shot", model, replace(cfg, examples=[], cot=False))]
    if examples:
        name = f"few-shot ({shots or len(examples)} {pick})"
        rows.append(Strategy(name, model, replace(cfg, examples=examples, shots=shots, pick=pick, cot=False)))  # type: ignore[arg-type]
    if cot:
        rows.append(Strategy("chain-of-thought", model, replace(cfg, examples=[], cot=True)))
    rows += [Strategy(f"fine-tuned ({f})", f, replace(cfg, examples=[], cot=False)) for f in finetuned]
    return rows


def write_comparison(results: list[TaskEval], out: Path) -> dict[str, Path]:
    """compare.md, compare.html (self-contained) and compare.png (one bar group per metric)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    names = list(results[0].metrics)
    head = ["strategy", "model", *names, "failed", "items/s"]
    body = [[r.strategy, r.model, *[f"{r.metrics.get(k, 0):.3f}" for k in names], str(len(r.failed)),
             f"{r.n / r.seconds:.2f}" if r.seconds else "-"] for r in results]  # fmt: skip
    first = results[0]
    title = f"{first.task} on {first.suite} ({first.n} items)"
    md = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(row) + " |" for row in body]
    (out / "compare.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names) * len(results) / 2 + 3), 4), dpi=110)
    width = 0.8 / len(results)
    for i, r in enumerate(results):
        xs = [j + i * width for j in range(len(names))]
        bars = ax.bar(xs, [r.metrics.get(k, 0) for k in names], width, label=r.strategy)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks([j + width * (len(results) - 1) / 2 for j in range(len(names))], names)
    ax.set_ylim(0, 1.1 if all(max(r.metrics.values(), default=0) <= 1 for r in results) else None)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    fig.savefig(out / "compare.png")
    plt.close(fig)
    rows_html = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    data = json.dumps([r.as_dict() for r in results], ensure_ascii=False).replace("</", "<\\/")
    (out / "compare.html").write_text(
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}td:first-child,td:nth-child(2){text-align:left}"
        "</style>"
        f"<h1>{html.escape(title)}</h1><table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in head)}</tr>"
        f"{rows_html}</table><p>Chart: compare.png. Raw results:</p>"
        f"<script type='application/json' id='results'>{data}</script>",
        encoding="utf-8",
    )
    return {"markdown": out / "compare.md", "html": out / "compare.html", "png": out / "compare.png"}
