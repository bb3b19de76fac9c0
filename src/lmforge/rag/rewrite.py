"""Query rewriting for knowledge-base search (`kb search|ask|eval --rewrite MODEL`): a chat model turns the
user's question into a few search queries — translated into the knowledge base's language(s) when the
question is in another, key terms spelled out, one paraphrase (and, optionally, a short hypothetical answer
passage: HyDE) — each is searched with the same settings, and the rankings are fused by reciprocal rank
fusion with the original query counted twice (a rewrite can add recall, it should not bury a good match).

Rewrites are cached per (model, question, KB languages); the reply says how long the model took and whether
it came from the cache. If the model is unknown, down or answers nothing usable, the search falls back to
the plain query and says why (`fallback`) — a search never fails because its rewriter did.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from lmforge.data.lang import language, query_language
from lmforge.rag.retrieve import Hit, SearchParams, collapse_copies, rrf

LANG_NAMES = {
    "zh": ("Chinese", "中文"), "en": ("English", "英文"), "ja": ("Japanese", "日文"), "ko": ("Korean", "韩文"),
    "ru": ("Russian", "俄文"), "ar": ("Arabic", "阿拉伯文"),
}  # fmt: skip


@dataclass(frozen=True)
class RewriteConfig:
    variants: int = 3
    """Rewritten queries kept (besides the original)."""
    hyde: bool = False
    """Also ask for a one-sentence hypothetical answer and search with it (HyDE; `--hyde`). Off by default since
    the question is also translated by dictionary (SearchParams.translate): with it, HyDE lowered hit@5 on the
    hard set 0.889 → 0.861 and on the easy set 0.886 → 0.857 (benchmarks/rag.py part 4). Before the dictionary
    it had helped (0.806 → 0.833)."""
    max_tokens: int = 160
    original_weight: float = 3.0
    """The original query's weight in the fusion; each rewrite counts 1. 3 since the question itself is also
    translated by dictionary (SearchParams.translate): with it, 3 against 2 kept hard-set hit@5 at 0.861 (MRR
    0.509 → 0.517) and lifted the easy set 0.843 → 0.857; 4 and 6 changed nothing more."""
    variant_lexical_weight: float = 0.3
    """BM25's share in a rewrite's own hybrid search, relative to the caller's lexical weight: the model's
    text is a good embedding query but a noisy bag of words. Swept on both QA sets with cached rewrites
    (docs/rag.md): 0.3 lifted hard-set hit@5/MRR 0.667/0.323 → 0.667/0.384 (0.694/0.398 with HyDE) and the easy
    set's MRR 0.709 → 0.749, hit@5 unchanged at 0.843."""
    cache_size: int = 1024


@dataclass
class Rewrite:
    query: str
    queries: list[str]
    """The original first, then the rewrites."""
    seconds: float = 0.0
    cached: bool = False
    fallback: str | None = None
    """Why only the original query was searched (the model failed or gave nothing usable)."""

    def to_dict(self) -> dict:
        return {"queries": self.queries, "seconds": round(self.seconds, 3), "cached": self.cached,
                "fallback": self.fallback}  # fmt: skip


def kb_languages(texts: list[str]) -> set[str]:
    """The languages of a knowledge base, from a sample of its chunks (a language with ≥10% of them)."""
    langs = [language(t) for t in texts if t.strip()]
    return {x for x in set(langs) if langs.count(x) >= 0.1 * len(langs)} or {"en"}


def language_note(query: str, langs: set[str], rewriting: bool) -> str | None:
    """A line for the user when the question is in a language the knowledge base does not hold; None if it is."""
    q = query_language(query)
    if q in langs:
        return None
    name = LANG_NAMES.get(q, (q, q))[0]
    held = " and ".join(LANG_NAMES.get(x, (x, x))[0] for x in sorted(langs))
    if rewriting:
        return (
            f"the question is in {name} and the knowledge base holds {held} text: the rewriter translates it"
        )
    where = f"the question is in {name} but the knowledge base holds {held} text"
    if {q, *langs} <= {"zh", "en"}:  # SearchParams.translate: BM25 over the question translated by dictionary
        return (f"{where}: the multilingual embedder and a zh-en dictionary bridge the two (docs/rag.md); a rewrite "
                "(--rewrite MODEL) adds the model's translation")  # fmt: skip
    return (
        f"{where}: only the multilingual embedder bridges the two, which misses more often (docs/rag.md); rewrite "
        f"the question (--rewrite MODEL, or ask in {held})"
    )


def search_notes(kb: Any, query: str, rewriting: bool) -> list[str]:
    """What a search response tells its reader beside the hits: how to upgrade an index built before contextual
    chunk headers, and a question in a language the knowledge base does not hold."""
    notes = [kb.upgrade_hint(), language_note(query, kb.languages(), rewriting)]
    return [n for n in notes if n]


def prompt(query: str, langs: set[str], cfg: RewriteConfig) -> list[dict]:
    names = " and ".join(LANG_NAMES.get(x, (x, x))[0] for x in sorted(langs))
    lines = [f"Rewrite this search question for a document search engine. The documents are in {names}.",
             f"Write {cfg.variants} search queries, one per line, no numbering, no explanations:"]  # fmt: skip
    for x in sorted(langs):
        if x != query_language(query):
            lines.append(f"- the question translated into {LANG_NAMES.get(x, (x, x))[0]};")
    lines += ["- the key terms of the question, with synonyms;", "- the question said in other words."]
    if cfg.hyde:
        lines.append("Then one more line: a one-sentence answer as the documents might state it.")
    return [{"role": "user", "content": "\n".join(lines) + f"\n\nQuestion: {query}"}]


_NUMBERING = re.compile(r"^\s*(?:[-*•]|\d+[.)、:]|[（(]?\d+[)）])\s*")


_LABEL = re.compile(
    r"^(?:the\s+)?(?:question|query|queries|search quer(?:y|ies)|translation|translated|key\s*terms?|keywords?|"
    r"answer|paraphrase|rewrite|in other words|other words|synonyms?|hypothetical)[^:：\n]{0,60}[:：]\s*",
    re.IGNORECASE,
)
"""A label the model puts before a query ("The question translated into English is: ...")."""


def clean(line: str) -> str:
    """One line of the model's reply as a search query: numbering, labels and quotes removed."""
    q = _NUMBERING.sub("", line).strip().strip('"“”')
    q = _LABEL.sub("", q).strip().strip('"“”').strip()
    return re.sub(r'["“”]\s*[,，、]\s*["“”]', " ", q)  # "a", "b" (a list of quoted terms) -> a b


_GLOSS = re.compile(r"""^["“'‘]?([^=\n]{1,40}?)["”'’]?\s*=\s*["“'‘]?([^=\n]{1,40}?)["”'’.。]?$""")
"""One term and its translation or synonym on a line of its own ('chatbot" = "聊天机器人'): a small model's way
of writing the key-terms line over several lines."""


def parse(reply: str, query: str, cfg: RewriteConfig) -> list[str]:
    """The reply's search queries, cleaned; the key terms written as one `term = synonym` pair per line are joined
    into one query (searched one pair at a time, each outvoted the rest of the rewrite)."""
    out: list[str] = []
    glossary: list[str] = []
    at = None
    for line in reply.splitlines():
        m = _GLOSS.match(_NUMBERING.sub("", line).strip())
        if m:
            at = len(out) if at is None else at
            glossary += [t for t in (m.group(1).strip(), m.group(2).strip()) if t and t not in glossary]
            continue
        q = clean(line)
        if 2 <= len(q) <= 300 and q != query and q not in out:
            out.append(q)
    if glossary:
        out.insert(at, " ".join(glossary))
    return out[: cfg.variants + (1 if cfg.hyde else 0)]


@dataclass
class QueryRewriter:
    """Rewrites with one chat model (generate: messages -> text), cached; thread-safe."""

    model: str
    generate: Callable[[list[dict]], str]
    cfg: RewriteConfig = field(default_factory=RewriteConfig)
    _cache: OrderedDict = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def rewrite(self, query: str, langs: set[str]) -> Rewrite:
        key = (query, tuple(sorted(langs)))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return Rewrite(query, list(hit), 0.0, cached=True)
        t0 = time.perf_counter()
        try:
            variants = parse(self.generate(prompt(query, langs, self.cfg)), query, self.cfg)
        except Exception as e:  # noqa: BLE001 - any failure of the rewriter: search the plain query
            return Rewrite(
                query, [query], time.perf_counter() - t0, fallback=f"rewrite model {self.model}: {e}"
            )
        seconds = time.perf_counter() - t0
        if not variants:
            return Rewrite(
                query, [query], seconds, fallback=f"rewrite model {self.model} gave no usable query"
            )
        queries = [query, *variants]
        with self._lock:
            self._cache[key] = queries
            while len(self._cache) > self.cfg.cache_size:
                self._cache.popitem(last=False)
        return Rewrite(query, queries, seconds)

    def search(self, run: Callable[[str, SearchParams], list[Hit]], query: str, langs: set[str],
               params: SearchParams, rerank: Callable[[str, list[Hit]], list[Hit]] | None = None,
               ) -> tuple[list[Hit], Rewrite]:  # fmt: skip
        """Search every rewrite with `run` and fuse the rankings (RRF, the original weighted); `rerank` (if
        given) then reorders the fused top 2k once, against the original question. A hit's `dense` is the best
        cosine between the chunk and any of the queries (the answer gate reads it: a question in another
        language than its passage is judged by its translation)."""
        rw = self.rewrite(query, langs)
        plain = replace(params, rerank=None)
        if len(rw.queries) == 1 and rerank is None:
            return run(query, params), rw
        wide = replace(plain, k=min(100, max(params.k * 2, 10)))
        by_id: dict[int, Hit] = {}
        rankings = []
        # a rewrite is already aimed at the language it is written in: the cross-language allowance, the
        # dictionary translation and the English embedder's second opinion are for the question as asked (with
        # the allowance on the rewrites too, paraphrase hit@5 fell 0.750 → 0.583 on the hard set; with the
        # translation, zh→zh fell 0.8 → 0.7)
        variant = replace(wide, lexical_weight=wide.lexical_weight * self.cfg.variant_lexical_weight,
                          cross_language=False, translate=False, second_opinion=None)  # fmt: skip
        qlang = query_language(query)
        for i, q in enumerate(rw.queries):
            hits = run(q, wide if i == 0 else variant)
            for h in hits:
                seen = by_id.get(h.chunk_id)
                if seen is None:
                    by_id[h.chunk_id] = h if i == 0 or language(h.text) != qlang else replace(h, dense=None)
                elif (h.dense or -1.0) > (seen.dense or -1.0) and language(h.text) != qlang:
                    # a passage in another language than the question is judged by the best cosine any
                    # formulation reached (its translation); one in the question's language by the question's
                    # own (a hypothetical answer resembles every passage it imitates)
                    by_id[h.chunk_id] = replace(seen, dense=h.dense)
            rankings.append((self.cfg.original_weight if i == 0 else 1.0, [h.chunk_id for h in hits]))
        fused = [_rescored(by_id[cid], score) for cid, score in rrf(rankings, params.rrf_k)]
        if params.collapse_copies:
            fused = collapse_copies(fused, 2 * params.k if rerank is not None else params.k)
        if rerank is not None:
            return rerank(query, fused[: 2 * params.k])[: params.k], rw
        return fused[: params.k], rw


def _rescored(h: Hit, score: float) -> Hit:
    return replace(h, score=score)
