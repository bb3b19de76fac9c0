"""Hybrid retrieval: dense (cosine, exact) + lexical (BM25) fused by reciprocal rank fusion.

    score(chunk) = w_dense / (rrf_k + rank_dense) + w_lexical / (rrf_k + rank_lexical)

Each retriever fetches `candidates` per shard inside the caller's ACL mask; shards are merged by
score; fusion then keeps the top k. An optional rerank stage reorders the fused list (an LLM
judging relevance, see `LLMReranker`). Results are cached per (KB, KB version, caller groups,
query, parameters): a repeat costs a dict lookup, and any change to the KB bumps its version,
which retires the old entries. `search_many` answers many queries over many KBs in one call,
embedding all queries in one batch.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np

from lmforge.data.lang import language, query_language
from lmforge.errors import LmforgeError
from lmforge.hub import ENGLISH_EMBEDDER
from lmforge.rag.opinion import SecondOpinion, installed, registered
from lmforge.rag.pipeline import KnowledgeBase, KnowledgeBases

Mode = Literal["hybrid", "dense", "lexical"]


@dataclass(frozen=True)
class SearchParams:
    k: int = 5
    """Results returned."""
    mode: Mode = "hybrid"
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    candidates: int = 50
    """Results each retriever contributes before fusion."""
    rrf_k: int = 60
    cross_language: bool = True
    """Hybrid only: a chunk written in another language than the question holds, in both rankings, the better of
    its dense and its BM25 rank (BM25 cannot see the question's words in it, the embedder sees it only roughly).
    Without this, a Chinese question ranks every English passage below Chinese ones that merely share words
    (hard set, docs/rag.md)."""
    names: bool = True
    """A question's capitalised words that spell pinyin ('Du Fu', 'Baidi') also match the pinyin of Chinese
    titles and headings, in knowledge bases that index it (KnowledgeBase.pinyin)."""
    collapse_copies: bool = True
    """Near-identical chunks from different documents (boilerplate: the same introduction, licence header or
    disclaimer in every file) take one place in the results; the other copies move behind every distinct chunk.
    Without this, the eight 'this part holds poems N–M' introductions fill a top 5 (hard set, docs/rag.md)."""
    translate: bool = True
    """Hybrid only: in a knowledge base that holds Chinese and the question is English, or the reverse, the
    question's words are also translated by dictionary (rag/bilingual.py) and searched by BM25; that order is
    fused with the hybrid one at `translate_weight`."""
    translate_weight: float = 0.75
    """The dictionary-translated BM25 order's weight against the hybrid order's 1 (hard set, no model: hit@5
    0.861 at 0.6–0.9; at 1.0 its ties with the hybrid order let stray translations in and hit@5 fell to 0.694)."""
    second_opinion: str | None = ENGLISH_EMBEDDER
    """Hybrid only: for an English question, an English sentence embedder also orders the English passages among
    the first `opinion_candidates`, and that order is fused with the search's own (rag/opinion.py); skipped
    while the model is not pulled. None = off."""
    opinion_candidates: int = 20
    """The first candidates the second opinion reorders (10 left the giraffe out of reach on the hard set; 30
    found what 20 does)."""
    opinion_weight: float = 0.5
    """The second opinion's weight against the search's own order's 1. Hard and easy sets (docs/rag.md): 0.5
    lifts the rewrite's hard-set hit@5 0.889 → 0.917 and the easy set without a model 0.886 → 0.900, and lowers
    nothing; 1 and 1.5 lift the hard set without a model too, but lose an easy question with the rewrite."""
    rerank: str | None = None
    """Chat model that reorders the fused candidates (LLM listwise rerank); None = off."""

    def plain(self) -> SearchParams:
        """These parameters with the cross-language rule, pinyin names, dictionary translation, boilerplate
        collapse and the second opinion off: hybrid search as it was before them (`--plain-fusion`, for comparison)."""
        return replace(self, cross_language=False, names=False, collapse_copies=False, translate=False,
                       second_opinion=None)  # fmt: skip

    def check(self) -> SearchParams:
        if not 1 <= self.k <= 100:
            raise LmforgeError(f"k must be between 1 and 100, got {self.k}")
        if self.mode not in ("hybrid", "dense", "lexical"):
            raise LmforgeError(f"mode must be hybrid, dense or lexical, got {self.mode!r}")
        if self.dense_weight < 0 or self.lexical_weight < 0 or self.dense_weight + self.lexical_weight == 0:
            raise LmforgeError("weights must be >= 0 and not both 0")
        if not 1 <= self.opinion_candidates <= 100:
            raise LmforgeError(f"opinion_candidates must be between 1 and 100, got {self.opinion_candidates}")
        for name in ("translate_weight", "opinion_weight"):
            if getattr(self, name) < 0:
                raise LmforgeError(f"{name} must be >= 0, got {getattr(self, name)}")
        return replace(self, candidates=max(self.candidates, self.k))


@dataclass
class Hit:
    chunk_id: int
    document: str
    title: str
    page: int | None
    heading: str
    text: str
    score: float
    dense: float | None  # cosine similarity, when the dense retriever found it
    lexical: float | None  # BM25 score, when the lexical retriever found it
    kb: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def rrf(rankings: list[tuple[float, list[int]]], rrf_k: int) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of (weight, ids best-first) lists → (id, score) best first; a negative id is a
    gap (that rank is held by nothing)."""
    scores: dict[int, float] = {}
    for weight, ids in rankings:
        for rank, cid in enumerate(ids, start=1):
            if cid < 0:
                continue
            scores[cid] = scores.get(cid, 0.0) + weight / (rrf_k + rank)
    return sorted(scores.items(), key=lambda x: (-x[1], x[0]))


def _cross_language(query: str, dense: list[int], lexical: list[int], rows: dict) -> list[list[int]]:
    """The two rankings for RRF where a chunk in another language than the query holds, in both, the better of
    its dense and its BM25 rank: each retriever sees such a chunk only in part (BM25 a name spelled in pinyin or
    a stray Latin word, the embedder an approximate cross-lingual match), so the one that saw it counts for
    both rather than the other voting against it. Returns [dense, lexical, dense-lifted, lexical-lifted]; a
    -1 id is a gap (that rank is held by nothing)."""
    qlang = query_language(query)
    d_rank = {c: r for r, c in enumerate(dense)}
    l_rank = {c: r for r, c in enumerate(lexical)}
    both = {c: sorted((d_rank.get(c, len(dense)), l_rank.get(c, len(lexical))))
            for c in d_rank.keys() | l_rank.keys() if c in rows and language(rows[c].text) != qlang}  # fmt: skip
    best = {c: r[0] for c, r in both.items()}
    out = [[-1 if c in best else c for c in dense], [-1 if c in best else c for c in lexical]]
    ranked = [-1] * (max(best.values(), default=-1) + 1 + len(best))
    for c, r in sorted(best.items(), key=lambda x: (both[x[0]], x[0])):  # a tie: the better other rank first
        while ranked[r] != -1:  # two chunks at one rank: the later one just after
            r += 1
        ranked[r] = c
    while ranked and ranked[-1] == -1:
        ranked.pop()
    return [*out, ranked, ranked]


def _cosines(q: np.ndarray, ids: list[int], shards: list) -> dict[int, float]:
    """Cosine of the query vector with each of the chunks `ids`, read from the shards' vectors (a shard's ids are
    in ascending order, Store._build, so each is found by binary search, not by a pass over the shard)."""
    out: dict[int, float] = {}
    want = np.asarray(ids, dtype=np.int64)
    for shard in shards if ids else []:
        if not len(shard.ids):
            continue
        pos = np.minimum(np.searchsorted(shard.ids, want), len(shard.ids) - 1)
        at = pos[shard.ids[pos] == want]
        if len(at):
            sims = np.asarray(shard.vectors[at], dtype=np.float32) @ q
            out.update(zip(shard.ids[at].tolist(), sims.tolist(), strict=True))
    return out


_NOT_CONTENT = re.compile(r"[\W\d_]+")


def _shingles(text: str) -> set[str]:
    t = _NOT_CONTENT.sub("", text.lower())
    return {t[i : i + 2] for i in range(len(t) - 1)} if len(t) >= COPY_MIN_CHARS else set()


COPY_MIN_CHARS = 20
"""Chunks shorter than this (letters only) are never treated as copies: short answers look alike by chance."""
COPY_SIMILARITY = 0.7
"""Jaccard similarity of character bigrams (digits, spaces and punctuation ignored) above which two chunks from
different documents are copies of one another."""


def collapse_copies(hits: list[Hit], k: int | None = None) -> list[Hit]:
    """`hits` (best first) with each near-identical chunk from a different document than an earlier, better one
    moved to the back (in order): boilerplate takes one place, not five. With `k`, only the first k distinct
    chunks are sought (the rest keep their order behind them)."""
    kept: list[tuple[Hit, set[str]]] = []
    copies: list[Hit] = []
    for i, h in enumerate(hits):
        if k is not None and len(kept) >= k:
            return [h for h, _ in kept] + copies + hits[i:]
        sh = _shingles(h.text)
        if sh and any(
            d.document != h.document and len(sh & s) >= COPY_SIMILARITY * len(sh | s) for d, s in kept
        ):
            copies.append(h)
        else:
            kept.append((h, sh))
    return [h for h, _ in kept] + copies


Reranker = Callable[[str, list[Hit]], list[Hit]]

RERANK_PROMPT = (
    "Rank the passages by how well they answer the question. Reply with the passage numbers only, "
    "most relevant first, separated by commas (for example: 3,1,2).\n\nQuestion: {q}\n\n{passages}"
)


class LLMReranker:
    """Listwise rerank by a chat model: one call lists the candidates, the model returns their
    order. Numbers it leaves out keep their fused order after the ones it ranked. (No
    cross-encoder is packaged for offline install; a registered one would slot in here.)"""

    def __init__(self, generate: Callable[[list[dict]], str]) -> None:
        self.generate = generate

    def __call__(self, query: str, hits: list[Hit]) -> list[Hit]:
        if len(hits) < 2:
            return hits
        passages = "\n\n".join(f"[{i}] {h.text[:600]}" for i, h in enumerate(hits, start=1))
        reply = self.generate([{"role": "user", "content": RERANK_PROMPT.format(q=query, passages=passages)}])
        order: list[int] = []
        for tok in re.findall(r"\d+", reply):
            n = int(tok)
            if 1 <= n <= len(hits) and n - 1 not in order:
                order.append(n - 1)
        order += [i for i in range(len(hits)) if i not in order]
        return [hits[i] for i in order]


def _asks_opinion(query: str, params: SearchParams) -> bool:
    """Whether a search of `query` asks the English embedder's second opinion: an English question, hybrid."""
    return params.mode == "hybrid" and bool(params.second_opinion) and query_language(query) == "en"


class Retriever:
    """Searches knowledge bases; thread-safe; owns the retrieval cache."""

    def __init__(self, cache_size: int = 4096, rerankers: Callable[[str], Reranker] | None = None,
                 opinions: Callable[[str], SecondOpinion | None] | None = None) -> None:  # fmt: skip
        self._cache: OrderedDict[tuple, list[Hit]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.rerankers = rerankers  # chat model name -> reranker
        self.opinions = opinions or installed(registered())
        """Embedder name -> its SecondOpinion, None while it is not pulled (default: the models of LMFORGE_HOME)."""
        self.stats = {"hits": 0, "misses": 0}

    def search(self, kb: KnowledgeBase, query: str, params: SearchParams | None = None, *,
               caller: frozenset[str] | None = None, qvec: np.ndarray | None = None) -> list[Hit]:  # fmt: skip
        params = (params or SearchParams()).check()
        query = query.strip()
        if not query:
            raise LmforgeError("empty query")
        key = (kb.store.uid, kb.version, caller, query, params)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.stats["hits"] += 1
                return list(cached)
            self.stats["misses"] += 1
        hits = self._search(kb, query, params, caller, qvec)
        with self._lock:
            self._cache[key] = hits
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return list(hits)

    def _search(self, kb: KnowledgeBase, query: str, params: SearchParams, caller, qvec) -> list[Hit]:  # noqa: ANN001
        shards = kb.store.shards()
        dense: list[tuple[int, float]] = []
        lexical: list[tuple[int, float]] = []
        q = None
        if params.mode != "lexical" and params.dense_weight > 0:
            q = qvec if qvec is not None else kb.embedder.queries([query])[0]
            external = kb.store.external_index  # in line with SQLite: shards() ran above
            if external is not None:
                dense.extend(external.search(q, params.candidates, caller))
            else:
                for shard in shards:
                    dense.extend(shard.dense(q, params.candidates, kb.store.mask(shard, caller)))
            dense.sort(key=lambda x: -x[1])
            dense = dense[: params.candidates]
        if params.mode != "dense" and params.lexical_weight > 0:
            terms = kb.analyzer.terms(query, pieces=kb.han_pieces) + (
                kb.analyzer.name_terms(query) if params.names and kb.pinyin else []
            )
            for shard in shards:
                lexical.extend(shard.lexical_search(terms, params.candidates, kb.store.mask(shard, caller)))
            lexical.sort(key=lambda x: -x[1])
            lexical = lexical[: params.candidates]
        rows = kb.store.chunks(list(dict.fromkeys(c for c, _ in dense + lexical)))
        d_ids, l_ids = [c for c, _ in dense], [c for c, _ in lexical]
        hybrid = params.mode == "hybrid"
        rankings = [(params.dense_weight if hybrid else 1.0, d_ids)] if d_ids else []
        rankings += [(params.lexical_weight if hybrid else 1.0, l_ids)] if l_ids else []
        if hybrid and params.cross_language and d_ids and l_ids:
            d_ids, l_ids, d_best, l_best = _cross_language(query, d_ids, l_ids, rows)
            rankings = [(params.dense_weight, d_ids), (params.lexical_weight, l_ids),
                        (params.dense_weight, d_best), (params.lexical_weight, l_best)]  # fmt: skip
        fused = rrf(rankings, params.rrf_k)[: params.candidates]
        d_score, l_score = dict(dense), dict(lexical)
        if hybrid and params.translate and params.translate_weight > 0:
            translated = self._translated(kb, query, params, shards, caller)
            if translated:
                fused = rrf([(1.0, [c for c, _ in fused]), (params.translate_weight, [c for c, _ in translated])],
                            params.rrf_k)[: params.candidates]  # fmt: skip
                new = [c for c, _ in fused if c not in rows]
                rows |= kb.store.chunks(new)
                if q is not None:  # the answer gate reads a hit's cosine: give what only BM25 found one
                    d_score |= _cosines(q, new, shards)
        hits = [
            Hit(
                cid,
                rows[cid].doc,
                rows[cid].title,
                rows[cid].page,
                rows[cid].heading,
                rows[cid].text,
                score,
                d_score.get(cid),
                l_score.get(cid),
                kb.name,
            )  # fmt: skip
            for cid, score in fused
            if cid in rows  # a chunk deleted between index and lookup is simply not returned
        ]
        opinion = (
            self.opinions(params.second_opinion) if _asks_opinion(query, params) else None
        )  # None: not pulled
        if params.collapse_copies:
            depth = params.k if not params.rerank else 2 * params.k
            hits = collapse_copies(hits, max(depth, params.opinion_candidates) if opinion else depth)
        if opinion is not None:
            hits = opinion(query, hits, params.opinion_candidates, params.opinion_weight, params.rrf_k)
        if params.rerank:
            if self.rerankers is None:
                raise LmforgeError("rerank is not available here (it needs a chat model to judge relevance)")
            hits = self.rerankers(params.rerank)(query, hits[: min(len(hits), 2 * params.k)])
        return hits[: params.k]

    def warm(self, kbs: KnowledgeBases, params: SearchParams | None = None,
             stopping: Callable[[], bool] = lambda: False) -> list[str]:  # fmt: skip
        """One uncached search per language of each of `kbs`' knowledge bases, so that their first real searches
        do not wait for what loads on first use: the shards' indexes (with BM25's compiled scorer), the
        embedder, the second opinion's model (English; when pulled) and the zh⇄en dictionary (a knowledge base
        holding both). A server calls this at start, in the background, and stops it (`stopping`) between
        knowledge bases when it shuts down. Returns the knowledge bases warmed."""
        params = (params or SearchParams()).check()
        probes = {"en": "What does this document say?", "zh": "这份文档讲了什么？"}
        warmed = []
        for name in kbs.names():
            if stopping():
                break
            try:
                kb = kbs.open(name)
                for lang in sorted(kb.languages() & probes.keys()) or ["en"]:
                    self._search(kb, probes[lang], params, None, None)
            except Exception:  # noqa: BLE001 - dropped or broken meanwhile: its own searches will say so
                continue
            warmed.append(name)
        return warmed

    def notes(self, kb: KnowledgeBase, query: str, params: SearchParams) -> list[str]:
        """What a search of `query` should tell its reader about this retriever: an English question over
        English passages gets no second opinion while its embedder is not pulled, and how to get it."""
        name = params.second_opinion
        if not _asks_opinion(query, params) or "en" not in kb.languages() or self.opinions(name) is not None:
            return []
        return [f"no second opinion on English passages: its embedder {name} is not pulled or did not load "
                f"(`lmforge pull {name}`, docs/rag.md)"]  # fmt: skip

    def _translated(self, kb: KnowledgeBase, query: str, params: SearchParams, shards: list,
                    caller: frozenset[str] | None) -> list[tuple[int, float]]:  # fmt: skip
        """BM25 over the dictionary translation of the question into the knowledge base's other language (zh⇄en),
        best first; [] when the knowledge base holds only the question's language or nothing translates."""
        qlang = query_language(query)
        into = {"en": "zh", "zh": "en"}.get(qlang)
        if into is None or into not in kb.languages():
            return []
        terms = kb.analyzer.translate(query, into, lambda t: any(s.lexical.doc_freq(t) for s in shards))
        out: list[tuple[int, float]] = []
        for shard in shards if terms else []:
            out.extend(shard.lexical_search(terms, params.candidates, kb.store.mask(shard, caller)))
        out.sort(key=lambda x: -x[1])
        return out[: params.candidates]

    def search_many(self, kbs: list[KnowledgeBase], queries: list[str], params: SearchParams | None = None, *,
                    caller: frozenset[str] | None = None) -> list[list[Hit]]:  # fmt: skip
        """For each query, the top k over all `kbs` (merged by fused score). Queries are embedded
        once per embedder, in one batch."""
        params = (params or SearchParams()).check()
        if not queries:
            raise LmforgeError("no queries")
        vecs: dict[str, np.ndarray] = {}
        if params.mode != "lexical":
            for kb in kbs:
                if kb.cfg.embedder not in vecs:
                    vecs[kb.cfg.embedder] = kb.embedder.queries([q.strip() or " " for q in queries])
        out = []
        for i, q in enumerate(queries):
            merged: list[Hit] = []
            for kb in kbs:
                qv = vecs[kb.cfg.embedder][i] if kb.cfg.embedder in vecs else None
                merged.extend(self.search(kb, q, params, caller=caller, qvec=qv))
            merged.sort(key=lambda h: -h.score)
            out.append(merged[: params.k])
        return out

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
