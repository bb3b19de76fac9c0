"""Approximate dense search for one shard: an HNSW graph from faiss (`IndexHNSWFlat`, inner
product; the store's vectors are L2-normalised, so inner product is cosine).

The graph itself is faiss's; this module is the glue the store needs around it: when a shard is
big enough to be worth a graph (`AnnConfig.min_rows`), the build and query parameters, saving
beside the shard's other indexes, and access control. A search with an ACL mask that leaves at
least `filter_min_visible` of the shard visible walks the graph with faiss's bitmap filter (hidden
rows skipped during the walk); one that sees less over-fetches: it asks the graph for
`overfetch * k / visible-fraction` rows, keeps the visible ones, and grows the request by `overfetch`
while fewer than k survive. When the request would pass `max_fetch` of the shard (a caller who sees
few of its rows), or the graph still returns too few, the search falls back to the exact scan over the shard's vectors, so a
masked search returns exactly as many rows as an exact one would: k, or every visible row when
fewer than k are visible. Hidden rows are never returned.

Exact search (`exact`) is the same numpy scan the store always used; shards below `min_rows`,
and shard folders written before this module (no ann.faiss), use it alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmforge.errors import LmforgeError

FILE = "ann.faiss"
"""The HNSW index's file name inside a shard folder."""


@dataclass(frozen=True)
class AnnConfig:
    min_rows: int = 32768
    """Shards with at least this many chunks get an HNSW graph; smaller ones are scanned exactly.
    Measured by benchmarks/rag_ann.py (crossover table in benchmarks/README.md, "Approximate search
    per shard"), 2 busy cores: HNSW's p95 for 50 candidates beats the scan's from 1k-8k rows (below
    that both take well under a millisecond and run-to-run noise decides), but its recall@10 against
    the scan stays under 0.95 until 32,768 rows (0.81 at 4k-8k, 0.92 at 16k, 0.97 at 32k). 32,768 is
    the smallest size measured that wins on p95 and keeps recall@10 >= 0.95; a KB under 32,768
    chunks never builds a graph."""
    m: int = 16
    """Graph neighbours per node (faiss `M`): memory is ~8*M bytes per row on top of the vector."""
    ef_construction: int = 100
    """Candidate list while building. With m=16 and ef_search=64: recall@10 0.998 against exact search
    at 1M chunks, ~24 s per 65,536-row shard with its BM25 (rag_ann.py). (A one-off sweep on one such
    shard: M 32 took ~1.5x the build time, ef_construction 200 ~2x, for about +0.01 recall; a graph
    is rebuilt with its shard on every change, so build time counts.)"""
    ef_search: int = 64
    """Candidate list while searching (faiss uses at least k). Raise it for recall, at a cost in
    latency roughly proportional to it; read at query time, so no rebuild is needed."""
    overfetch: float = 3.0
    """With an ACL mask: rows asked of the graph = overfetch * k / visible fraction, multiplied by
    overfetch again on each retry while fewer than k visible rows come back. 3 keeps a 65,536-row
    shard's masked recall@10 >= 0.95 down to a quarter visible (rag_ann.py, ACL rows: 0.98 at half,
    0.95 at a quarter); in a one-off sweep 2 gave 0.93 at a quarter, and 4 cost a third more time."""
    max_fetch: float = 0.01
    """Fraction of the shard beyond which a masked search scans exactly instead of asking the graph
    for more: 1% of 65,536 rows takes ~2 ms through the graph (rag_ann.py), what the scan of such a
    shard takes on an idle 2-core machine (benchmarks/rag.py), and deeper requests lose recall. With
    the defaults, a caller who sees under ~23% of a shard gets the exact scan."""

    filter_min_visible: float = 0.45
    """Visible fraction of a shard at or above which a masked search walks the graph with faiss's own filter
    (`IDSelectorBitmap`: hidden rows are skipped during the walk) instead of over-fetching: on a 65,536-row
    shard with half its rows visible that took 0.24 ms p50 against 0.97 ms, at recall@10 0.967 (rag_ann.py,
    ACL rows), but the filter's recall falls below 0.95 by a third visible (0.925), so smaller fractions keep
    over-fetching. A filtered walk that finds fewer than k rows falls back to over-fetching. 1 turns it off."""

    def __post_init__(self) -> None:
        problems = []
        if self.min_rows < 1:
            problems.append(f"min_rows must be >= 1, got {self.min_rows}")
        if not 4 <= self.m <= 128:
            problems.append(f"m must be between 4 and 128, got {self.m}")
        if self.ef_construction < self.m:
            problems.append(f"ef_construction must be >= m ({self.m}), got {self.ef_construction}")
        if self.ef_search < 1:
            problems.append(f"ef_search must be >= 1, got {self.ef_search}")
        if self.overfetch <= 1:
            problems.append(f"overfetch must be > 1, got {self.overfetch}")
        if not 0 < self.max_fetch <= 1:
            problems.append(f"max_fetch must be in (0, 1], got {self.max_fetch}")
        if not 0 < self.filter_min_visible <= 1:
            problems.append(f"filter_min_visible must be in (0, 1], got {self.filter_min_visible}")
        if problems:
            raise LmforgeError("invalid ANN settings: " + "; ".join(problems))


def exact(vectors: np.ndarray, q: np.ndarray, k: int, mask: np.ndarray | None) -> list[tuple[int, float]]:
    """(row, cosine) best first over every row of `vectors` (n, dim) that `mask` lets through."""
    if len(vectors) == 0 or k < 1:
        return []
    scores = vectors @ q  # (n,)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top])]
    return [(int(i), float(scores[i])) for i in top if np.isfinite(scores[i])]


class AnnIndex:
    """One shard's HNSW graph (it holds its own copy of the vectors) and the settings to query it."""

    def __init__(self, index, cfg: AnnConfig) -> None:  # noqa: ANN001 - faiss.IndexHNSWFlat
        self.index = index
        self.cfg = cfg

    @property
    def rows(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(cls, vectors: np.ndarray, cfg: AnnConfig) -> AnnIndex:
        """Graph over `vectors` (n, dim) float32; faiss builds with all its OpenMP threads."""
        import faiss

        index = faiss.IndexHNSWFlat(vectors.shape[1], cfg.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.ef_construction
        index.hnsw.efSearch = cfg.ef_search
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return cls(index, cfg)

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path, cfg: AnnConfig) -> AnnIndex:
        import faiss

        try:
            index = faiss.read_index(str(path))
        except RuntimeError as e:
            raise LmforgeError(
                f"cannot read the HNSW index {path} ({str(e).strip().splitlines()[-1]}); delete its folder "
                f"{path.parent} and the next query rebuilds it from kb.sqlite"
            ) from e
        return cls(index, cfg)

    def _graph(self, q: np.ndarray, k: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        params = faiss.SearchParametersHNSW(efSearch=max(self.cfg.ef_search, k))
        if mask is not None:  # faiss skips hidden rows while walking the graph
            bits = np.packbits(mask, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
            params.sel = selector  # `bits` and `selector` stay referenced until the search returns
        scores, rows = self.index.search(q.reshape(1, -1).astype(np.float32, copy=False), k, params=params)
        keep = rows[0] >= 0  # faiss pads with -1 when the graph yields fewer than k
        return rows[0][keep], scores[0][keep]

    def search(self, vectors: np.ndarray, q: np.ndarray, k: int, mask: np.ndarray | None) -> list[tuple[int, float]]:  # fmt: skip
        """(row, cosine) best first, like `exact(vectors, q, k, mask)` but through the graph.
        `vectors` are the shard's rows, used only by the exact fallback: a masked search over-fetches
        and filters, and scans exactly when the visible rows are too few for the graph to find k of
        them within `max_fetch` of the shard (see the module docstring)."""
        n = self.rows
        k = min(k, n)
        if k < 1:
            return []
        if mask is None:
            rows, scores = self._graph(q, k)
            if len(rows) < k:
                return exact(vectors, q, k, None)
            return [(int(r), float(s)) for r, s in zip(rows, scores, strict=True)]
        visible = int(np.count_nonzero(mask))
        if visible == 0:
            return []
        k = min(k, visible)
        if visible >= self.cfg.filter_min_visible * n:
            rows, scores = self._graph(q, k, mask)
            if len(rows) >= k and mask[rows].all():
                return [(int(r), float(s)) for r, s in zip(rows, scores, strict=True)]
        fetch = math.ceil(self.cfg.overfetch * k * n / visible)
        while fetch <= self.cfg.max_fetch * n:
            rows, scores = self._graph(q, fetch)
            keep = mask[rows]
            if int(np.count_nonzero(keep)) >= k:
                return [(int(r), float(s)) for r, s in zip(rows[keep][:k], scores[keep][:k], strict=True)]
            fetch = math.ceil(fetch * self.cfg.overfetch)
        return exact(vectors, q, k, mask)
