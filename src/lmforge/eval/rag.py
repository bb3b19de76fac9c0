"""`lmforge kb eval`: retrieval and answer quality of a knowledge base on a QA file.

QA file: JSONL, one object per line with `question`, `answer`, `doc` (document name as stored,
or its file name) and optionally `evidence` (a short exact substring of the supporting passage).
A retrieved chunk is relevant when it comes from `doc` and, if `evidence` is given, contains it
(whitespace ignored). For each retrieval mode (dense, lexical, hybrid) we report hit@k and MRR;
with a chat model also answer exact match, token F1 and citation precision (the share of the
answer's citations that the verifier found supported by the cited source).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.eval.harness import jsonl_rows
from lmforge.eval.metrics import contains_answer, exact_match, hit_at_k, mean, reciprocal_rank, token_f1
from lmforge.rag.pipeline import KnowledgeBase
from lmforge.rag.retrieve import Hit, Retriever, SearchParams

MODES = ("dense", "lexical", "hybrid")


@dataclass
class QAItem:
    question: str
    answer: str
    doc: str
    evidence: str = ""
    id: str = ""
    lang: str = ""


def load_qa(path: Path) -> list[QAItem]:
    if not path.is_file():
        raise LmforgeError(f"{path}: no such QA file")
    items = []
    for n, row in jsonl_rows(path.name, path.read_text(encoding="utf-8")):
        missing = [k for k in ("question", "answer", "doc") if not str(row.get(k, "")).strip()]
        if missing:
            raise LmforgeError(f"{path.name} line {n}: missing {', '.join(missing)}")
        items.append(QAItem(row["question"], str(row["answer"]), row["doc"], row.get("evidence", ""),
                            str(row.get("id", n)), row.get("lang", "")))  # fmt: skip
    if not items:
        raise LmforgeError(f"{path.name}: no questions")
    return items


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def first_relevant(hits: list[Hit], item: QAItem) -> int | None:
    for rank, h in enumerate(hits, start=1):
        same_doc = h.document == item.doc or h.document.rsplit("/", 1)[-1] == item.doc
        if same_doc and (not item.evidence or _squash(item.evidence) in _squash(h.text)):
            return rank
    return None


@dataclass
class ModeResult:
    mode: str
    hit_at_k: float
    mrr: float
    n: int
    exact_match: float | None = None
    f1: float | None = None
    contains: float | None = None
    citation_precision: float | None = None
    per_question: list[dict] = field(default_factory=list)


def evaluate(
    kb: KnowledgeBase,
    items: list[QAItem],
    *,
    k: int = 5,
    retriever: Retriever | None = None,
    answer: Callable[[str, list[Hit]], dict] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[ModeResult]:
    """Run every question through each retrieval mode; `answer(question, hits)` (optional) returns
    the grounded-answer response dict (rag.answer.response)."""
    retriever = retriever or Retriever()
    results = []
    total = len(items) * len(MODES)
    done = 0
    for mode in MODES:
        params = SearchParams(k=k, mode=mode)  # type: ignore[arg-type]
        rows = []
        for item in items:
            hits = retriever.search(kb, item.question, params)
            rank = first_relevant(hits, item)
            row = {"id": item.id, "rank": rank}
            if answer is not None:
                r = answer(item.question, hits)
                checks = [c for c in r["claims"] if c["citations"]]
                row |= {"prediction": r["answer"], "em": exact_match(r["answer"], item.answer),
                        "f1": token_f1(r["answer"], item.answer), "contains": contains_answer(r["answer"], item.answer),
                        "citations": len(checks), "supported": sum(1 for c in checks if c["supported"])}  # fmt: skip
            rows.append(row)
            done += 1
            if progress:
                progress(done, total)
        res = ModeResult(mode, mean([hit_at_k(r["rank"], k) for r in rows]),
                         mean([reciprocal_rank(r["rank"]) for r in rows]), len(rows), per_question=rows)  # fmt: skip
        if answer is not None:
            res.exact_match = mean([r["em"] for r in rows])
            res.f1 = mean([r["f1"] for r in rows])
            res.contains = mean([r["contains"] for r in rows])
            cites = sum(r["citations"] for r in rows)
            res.citation_precision = sum(r["supported"] for r in rows) / cites if cites else None
        results.append(res)
    return results


def table(results: list[ModeResult], k: int) -> str:
    head = (
        f"{'mode':8} {'hit@' + str(k):>7} {'MRR':>6} {'EM':>6} {'F1':>6} {'contains':>8} {'cite prec':>9}  n"
    )
    lines = [head, "-" * len(head)]

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    for r in results:
        lines.append(f"{r.mode:8} {r.hit_at_k:>7.3f} {r.mrr:>6.3f} {f(r.exact_match):>6} {f(r.f1):>6} "
                     f"{f(r.contains):>8} {f(r.citation_precision):>9}  {r.n}")  # fmt: skip
    return "\n".join(lines)
