"""`lmforge kb eval`: retrieval and answer quality of a knowledge base on a QA file.

QA file: JSONL, one object per line with `question`, `answer`, `doc` (document name as stored, or its file
name) and optionally `evidence` (a short exact substring of the supporting passage). `doc` and `evidence`
may be lists (a question whose answer spans two passages: a hit needs every evidence span within the top k,
the rank is that of the last one found). Optional fields: `type` (paraphrase, cross-language, multi-passage,
unanswerable, ...), `lang` (the question's) and `doc_lang` (the documents'), `answerable` (false: the answer
is in no document; such questions are left out of hit@k/MRR and scored on abstention), `answer_alt` (the
answer in the question's language, also accepted).

A retrieved chunk is relevant when it comes from `doc` and contains `evidence` (whitespace ignored): hit@k
and MRR are chunk-level. With a chat model: answer accuracy (the reference, or answer_alt, is contained in the
answer), EM, token F1, citation precision, abstention accuracy (unanswerable questions answered "I don't
know"), and how well the verifier catches wrong answers: an answer the model gave (not a refusal) that is
wrong is *caught* when a claim was unsupported or the answer was judged not to address the question;
precision and recall of those flags over the wrong answers. Everything also per question type and per
language pair (question → documents).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.eval.harness import jsonl_rows
from lmforge.eval.metrics import contains_answer, exact_match, hit_at_k, mean, reciprocal_rank, token_f1
from lmforge.rag.answer import REFUSALS
from lmforge.rag.pipeline import KnowledgeBase
from lmforge.rag.retrieve import Hit, Retriever, SearchParams

MODES = ("dense", "lexical", "hybrid")


@dataclass
class QAItem:
    question: str
    answer: str
    doc: list[str]
    evidence: list[str] = field(default_factory=list)
    id: str = ""
    lang: str = ""
    type: str = ""
    doc_lang: str = ""
    answerable: bool = True
    answer_alt: str = ""
    answer_parts: list[str] = field(default_factory=list)
    """Multi-passage questions: every part must be in the answer (one part per document)."""

    @property
    def pair(self) -> str:
        return f"{self.lang or '?'}→{self.doc_lang or self.lang or '?'}"


def _strings(v: Any) -> list[str]:
    items = v if isinstance(v, list) else [v]
    return [str(x) for x in items if str(x or "").strip()]


def load_qa(path: Path) -> list[QAItem]:
    if not path.is_file():
        raise LmforgeError(f"{path}: no such QA file")
    items = []
    for n, row in jsonl_rows(path.name, path.read_text(encoding="utf-8")):
        answerable = bool(row.get("answerable", True))
        need = ("question", "answer", "doc") if answerable else ("question",)
        missing = [k for k in need if not _strings(row.get(k, ""))]
        if missing:
            raise LmforgeError(f"{path.name} line {n}: missing {', '.join(missing)}")
        items.append(QAItem(row["question"], str(row.get("answer") or ""), _strings(row.get("doc", "")),
                            _strings(row.get("evidence", "")), str(row.get("id", n)), row.get("lang", ""),
                            row.get("type", ""), row.get("doc_lang", ""), answerable,
                            str(row.get("answer_alt") or ""), _strings(row.get("answer_parts", []))))  # fmt: skip
    if not items:
        raise LmforgeError(f"{path.name}: no questions")
    return items


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def first_relevant(hits: list[Hit], item: QAItem) -> int | None:
    """The rank at which every evidence span (of its document) has appeared; None if one never does."""
    spans = item.evidence or [""]
    docs = item.doc if len(item.doc) == len(spans) else [d for d in item.doc for _ in spans][: len(spans)]
    worst = 0
    for doc, ev in zip(docs or [""] * len(spans), spans, strict=True):
        found = None
        for rank, h in enumerate(hits, start=1):
            same_doc = h.document == doc or h.document.rsplit("/", 1)[-1] == doc
            if same_doc and (not ev or _squash(ev) in _squash(h.text)):
                found = rank
                break
        if found is None:
            return None
        worst = max(worst, found)
    return worst


@dataclass
class ModeResult:
    mode: str
    hit_at_k: float
    mrr: float
    n: int
    exact_match: float | None = None
    f1: float | None = None
    contains: float | None = None
    """Answer accuracy: the reference (or answer_alt) is in the answer (answerable questions)."""
    citation_precision: float | None = None
    abstention: float | None = None
    """Unanswerable questions answered "I don't know"."""
    flag_precision: float | None = None
    flag_recall: float | None = None
    """Of the wrong answers the model gave, the share the verifier flagged (unsupported / off the question)."""
    retried: int | None = None
    """Answers the model was asked again for, its first being only a citation ("[1]"; AnswerConfig.retry_bare)."""
    per_question: list[dict] = field(default_factory=list)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per question type ("type:paraphrase") and language pair ("pair:en→zh"): n, hit@k, mrr, accuracy, ..."""


def refused(text: str) -> bool:
    return any(r in text.lower() for r in REFUSALS)


def right(item: QAItem, text: str) -> bool:
    """The answer holds the reference (or answer_alt); for multi-passage questions every part."""
    if item.answer_parts:
        return all(contains_answer(text, a) for a in item.answer_parts)
    return any(contains_answer(text, a) for a in (item.answer, item.answer_alt) if a)


def _answer_row(item: QAItem, r: dict) -> dict:
    text = r["answer"]
    given = r.get("off_topic_answer") or text  # what the model said, before an off-topic answer was withheld
    model_refused = not r.get("answerable", True) or refused(given)
    abstained = refused(text) or not r.get("answerable", True)
    correct = (
        item.answerable
        and not abstained
        and any(contains_answer(text, a) for a in (item.answer, item.answer_alt) if a)
    )
    check = r.get("addresses_question") or {}
    flagged = bool(r.get("unsupported")) or ("off_topic_answer" in r) or check.get("addresses") is False
    gave_answer = not model_refused
    wrong = gave_answer and (not item.answerable or not right(item, given))
    checks = [c for c in r.get("claims", []) if c["citations"]]
    return {"prediction": text, "em": exact_match(text, item.answer) if item.answerable else None,
            "f1": token_f1(text, item.answer) if item.answerable else None, "correct": correct,
            "abstained": abstained, "gave_answer": gave_answer, "wrong": wrong, "flagged": flagged and gave_answer,
            "citations": len(checks), "supported": sum(1 for c in checks if c["supported"]),
            "retried": "retried" in r}  # fmt: skip


def summarise(rows: list[dict], k: int, answered: bool) -> dict[str, Any]:
    """hit@k / MRR over answerable rows; with answers: accuracy, abstention, the verifier's flags."""
    ans = [r for r in rows if r["answerable"]]
    out: dict[str, Any] = {"n": len(rows), "answerable": len(ans),
                           "hit_at_k": mean([hit_at_k(r["rank"], k) for r in ans]) if ans else None,
                           "mrr": mean([reciprocal_rank(r["rank"]) for r in ans]) if ans else None}  # fmt: skip
    if answered:
        un = [r for r in rows if not r["answerable"]]
        wrong = [r for r in rows if r["wrong"]]
        flagged = [r for r in rows if r["flagged"]]
        caught = [r for r in wrong if r["flagged"]]
        out |= {"accuracy": mean([float(r["correct"]) for r in ans]) if ans else None,
                "abstention": mean([float(r["abstained"]) for r in un]) if un else None,
                "wrong_answers": len(wrong), "flagged": len(flagged),
                "flag_precision": len(caught) / len(flagged) if flagged else None,
                "flag_recall": len(caught) / len(wrong) if wrong else None}  # fmt: skip
    return out


def evaluate(
    kb: KnowledgeBase,
    items: list[QAItem],
    *,
    k: int = 5,
    retriever: Retriever | None = None,
    answer: Callable[[str, list[Hit]], dict] | None = None,
    progress: Callable[[int, int], None] | None = None,
    modes: tuple[str, ...] = MODES,
    search: Callable[[str, SearchParams], list[Hit]] | None = None,
) -> list[ModeResult]:
    """Run every question through each retrieval mode; `answer(question, hits)` (optional) returns the
    grounded-answer response dict (rag.answer.response); `search` replaces the plain retriever call (e.g. a
    query-rewriting search)."""
    retriever = retriever or Retriever()
    run = search or (lambda q, params: retriever.search(kb, q, params))
    results = []
    total = len(items) * len(modes)
    done = 0
    for mode in modes:
        params = SearchParams(k=k, mode=mode)  # type: ignore[arg-type]
        rows = []
        for item in items:
            hits = run(item.question, params)
            row: dict[str, Any] = {"id": item.id, "type": item.type, "pair": item.pair,
                                   "answerable": item.answerable,
                                   "rank": first_relevant(hits, item) if item.answerable else None}  # fmt: skip
            if answer is not None:
                row |= _answer_row(item, answer(item.question, hits))
            rows.append(row)
            done += 1
            if progress:
                progress(done, total)
        overall = summarise(rows, k, answer is not None)
        res = ModeResult(
            mode, overall["hit_at_k"] or 0.0, overall["mrr"] or 0.0, len(rows), per_question=rows
        )
        if answer is not None:
            given = [r for r in rows if r["answerable"]]
            res.exact_match = mean([r["em"] for r in given]) if given else None
            res.f1 = mean([r["f1"] for r in given]) if given else None
            res.contains = overall["accuracy"]
            res.abstention = overall["abstention"]
            res.flag_precision, res.flag_recall = overall["flag_precision"], overall["flag_recall"]
            cites = sum(r["citations"] for r in rows)
            res.citation_precision = sum(r["supported"] for r in rows) / cites if cites else None
            res.retried = sum(r["retried"] for r in rows)
        keys = sorted({f"type:{r['type']}" for r in rows if r["type"]} | {f"pair:{r['pair']}" for r in rows})
        if len(keys) > 1:
            for key in keys:
                kind, value = key.split(":", 1)
                sub = [r for r in rows if r["type" if kind == "type" else "pair"] == value]
                res.groups[key] = summarise(sub, k, answer is not None)
        results.append(res)
    return results


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def table(results: list[ModeResult], k: int) -> str:
    w = max([8, *(len(r.mode) for r in results)])
    head = (f"{'mode':{w}} {'hit@' + str(k):>7} {'MRR':>6} {'EM':>6} {'F1':>6} {'accuracy':>8} {'cite prec':>9} "
            f"{'abstain':>7} {'flag P':>6} {'flag R':>6}  n")  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r.mode:{w}} {r.hit_at_k:>7.3f} {r.mrr:>6.3f} {_f(r.exact_match):>6} {_f(r.f1):>6} "
                     f"{_f(r.contains):>8} {_f(r.citation_precision):>9} {_f(r.abstention):>7} "
                     f"{_f(r.flag_precision):>6} {_f(r.flag_recall):>6}  {r.n}")  # fmt: skip
    lines += [f"{r.mode}: {r.retried} of {r.n} answers asked again (the first was only a citation)"
              for r in results if r.retried]  # fmt: skip
    return "\n".join(lines)


def group_table(result: ModeResult, k: int) -> str:
    """Per question type and language pair, for one mode."""
    if not result.groups:
        return ""
    head = f"{result.mode + ' by':22} {'hit@' + str(k):>7} {'MRR':>6} {'accuracy':>8} {'abstain':>7} {'flag R':>6}  n"
    lines = [head, "-" * len(head)]
    for key, g in result.groups.items():
        lines.append(f"{key:22} {_f(g['hit_at_k']):>7} {_f(g['mrr']):>6} {_f(g.get('accuracy')):>8} "
                     f"{_f(g.get('abstention')):>7} {_f(g.get('flag_recall')):>6}  {g['n']}")  # fmt: skip
    return "\n".join(lines)
