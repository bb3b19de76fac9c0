"""A second embedder's opinion on English candidates (`SearchParams.second_opinion`).

The knowledge base's own embedder (multilingual-e5-small by default) serves every language at once, and in
English it misses paraphrases that an English-only sentence embedder catches: 'lacks the folds in the larynx
that produce a voice' is far from 'Which animal has no vocal cords?' for BM25, and the hybrid order buries the
passage that e5 alone ranks first. all-MiniLM-L6-v2, trained on a billion English sentence pairs, ranks it
first too, so its vote lifts it.

For an English question, the English passages among the search's first candidates are embedded (on demand, and
cached by text) and ordered by their cosine with the question. That order takes the English passages' places in
the search's own order (a passage in another language keeps its place: an English-only embedder cannot judge
it) and is fused with it by reciprocal rank fusion. Nothing is stored in the knowledge base, so any knowledge
base gets it without a reindex, and the knowledge base's embedder stays the one that indexed it.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from lmforge.data.lang import language
from lmforge.rag.pipeline import embed_text

if TYPE_CHECKING:
    from lmforge.home import Registry
    from lmforge.rag.embed import Embedder
    from lmforge.rag.retrieve import Hit


class SecondOpinion:
    """Reorders a search's English candidates by one English sentence embedder; thread-safe."""

    def __init__(self, embedder: Embedder, cache_size: int = 8192) -> None:
        self.embedder = embedder
        self._vectors: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def _passages(self, texts: list[str]) -> np.ndarray:
        keys = [hashlib.blake2b(t.encode(), digest_size=16).digest() for t in texts]
        with self._lock:
            have = {k: self._vectors[k] for k in keys if k in self._vectors}
        todo = list({k: t for k, t in zip(keys, texts, strict=True) if k not in have}.items())
        if todo:
            vecs = self.embedder.passages([t for _, t in todo])
            have.update(zip([k for k, _ in todo], vecs, strict=True))
            with self._lock:
                for k, _ in todo:
                    self._vectors[k] = have[k]
                while len(self._vectors) > self._cache_size:
                    self._vectors.popitem(last=False)
        return np.stack([have[k] for k in keys])

    def __call__(self, query: str, hits: list[Hit], candidates: int, weight: float, rrf_k: int) -> list[Hit]:
        """`hits` (best first) with the first `candidates` fused with their English-embedder order; the rest
        keep their places behind them."""
        from lmforge.rag.retrieve import rrf

        head, tail = hits[:candidates], hits[candidates:]
        english = [i for i, h in enumerate(head) if language(h.text) == "en"]
        if len(english) < 2 or weight <= 0:
            return hits
        texts = [
            embed_text(head[i].title, tuple(head[i].heading.split(" > ")), head[i].text) for i in english
        ]
        sims = self._passages(texts) @ self.embedder.queries([query])[0]
        opinion = [h.chunk_id for h in head]
        for slot, best in zip(english, np.argsort(-sims, kind="stable"), strict=True):
            opinion[slot] = head[english[best]].chunk_id
        by_id = {h.chunk_id: h for h in head}
        fused = rrf([(1.0, [h.chunk_id for h in head]), (weight, opinion)], rrf_k)
        return [replace(by_id[cid], score=score) for cid, score in fused] + tail


def installed(load: Callable[[str], Embedder | None]) -> Callable[[str], SecondOpinion | None]:
    """name -> SecondOpinion over `load(name)`, loaded once. None while `load` gives None (the model is not
    pulled: asked again next time) and for good once it raised: a search never fails because its second
    opinion did."""
    made: dict[str, SecondOpinion] = {}
    failed: set[str] = set()
    lock = threading.Lock()

    def get(name: str) -> SecondOpinion | None:
        with lock:
            if name in made or name in failed:
                return made.get(name)
            try:
                embedder = load(name)
            except Exception:  # noqa: BLE001 - fails to load: search without it
                failed.add(name)
                return None
            if embedder is not None:
                made[name] = SecondOpinion(embedder)
            return made.get(name)

    return get


def registered(registry: Registry | None = None) -> Callable[[str], Embedder | None]:
    """Loads an embedder that is pulled or registered in `registry` (default: LMFORGE_HOME's, opened on first
    use); None when it is not."""
    opened: list[Registry] = [registry] if registry is not None else []

    def load(name: str) -> Embedder | None:
        from lmforge.home import Registry
        from lmforge.rag.embed import load_embedder

        if not opened:
            opened.append(Registry())
        return load_embedder(name, opened[0]) if opened[0].exists(name) else None

    return load
