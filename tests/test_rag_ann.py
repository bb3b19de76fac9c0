"""Approximate search per shard (rag/ann.py through rag/store.py): recall against the exact scan,
ACL masks (never a hidden row, still k rows), and shard folders without a graph.

A 5,000-chunk store with shard_size 4096 and min_rows 1000: shard 0 (4,096 rows) gets an HNSW graph,
shard 1 (904 rows) stays exact. Vectors are clustered (like benchmarks/rag_ann.py, smaller)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from lmforge.errors import LmforgeError
from lmforge.rag import ann
from lmforge.rag.ann import AnnConfig
from lmforge.rag.store import Store

DIM, DOCS, PER_DOC = 384, 50, 100
CFG = AnnConfig(min_rows=1000, max_fetch=0.05)  # at 4,096 rows: masks leaving >= 15% visible take the graph


def clustered(n: int, seed: int, clusters: int = 40, sigma: float = 2.0) -> np.ndarray:
    """Unit vectors around `clusters` random centres; noise of norm ~sigma (the same centres for every seed)."""
    centres = np.random.default_rng(123).standard_normal((clusters, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    x = (
        centres[rng.integers(0, clusters, n)]
        + sigma * rng.standard_normal((n, DIM), dtype=np.float32) / DIM**0.5
    )
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def groups_of(d: int) -> tuple[str, ...]:
    return ("rare",) if d == 7 else ("even",) if d % 2 == 0 else ("odd",)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ann-kb")
    st = Store(folder, shard_size=4096, ann_cfg=CFG)
    vecs = clustered(DOCS * PER_DOC, 0)
    with st.connect() as db:
        version = st.begin(db)
        st.set_meta(db, "dim", str(DIM))
        for d in range(DOCS):
            doc = st.insert_doc(db, name=f"d{d}.txt", sha256=f"{d:064x}", title=f"d{d}", groups=groups_of(d),
                                pages=None, nbytes=0, encoding="utf-8", version=version)  # fmt: skip
            rows = [(i, f"w{d} w{i}", None, "", "text", 2, f"w{d} w{i}") for i in range(PER_DOC)]
            st.insert_chunks(db, doc, version, rows, vecs[d * PER_DOC : (d + 1) * PER_DOC])
        st.commit(db, version)
    yield st
    st.close()


EXACT = ann.exact


def _ids(found: list[tuple[int, float]]) -> list[int]:
    return [i for i, _ in found]


def test_big_shard_gets_a_graph_small_one_stays_exact(store):
    big, small = store.shards()
    assert len(big.ids) == 4096 and big.ann is not None and big.ann.rows == 4096
    assert len(small.ids) == 904 and small.ann is None
    assert not (store.index_dir / f"s1-v{small.version}" / ann.FILE).exists()


def test_recall_at_10_against_exact(store):
    shard = store.shards()[0]
    queries = clustered(100, 1)
    recall = []
    for q in queries:
        got = shard.dense(q, 10, None)
        want = ann.exact(shard.vectors, q, 10, None)
        assert len(got) == 10 and [s for _, s in got] == sorted((s for _, s in got), reverse=True)
        recall.append(len(set(_ids(got)) & {int(shard.ids[r]) for r, _ in want}) / 10)
    assert np.mean(recall) >= 0.95, np.mean(recall)


@pytest.mark.parametrize(
    ("caller", "path"),
    [(frozenset({"even"}), "filter"), (frozenset({"odd", "rare"}), "filter"), (frozenset({"rare"}), "exact")],
)
def test_masked_search_hides_rows_and_still_returns_k(store, caller, path, monkeypatch):
    """About half the shard visible: faiss walks the graph skipping hidden rows (one filtered search per query);
    a caller who sees one document: the exact scan. Either way k rows, none hidden, recall@10 >= 0.95."""
    shard = store.shards()[0]
    mask = store.mask(shard, caller)
    hidden = set(shard.ids[~mask].tolist())
    k = 10
    queries = clustered(30, 2)
    wants = [{int(shard.ids[r]) for r, _ in ann.exact(shard.vectors, q, k, mask)} for q in queries]
    scans, walks = [], []
    monkeypatch.setattr(ann, "exact", lambda *a: scans.append(1) or EXACT(*a))
    graph = ann.AnnIndex._graph
    monkeypatch.setattr(ann.AnnIndex, "_graph", lambda self, *a: walks.append(len(a) > 2) or graph(self, *a))
    recall = []
    for q, want in zip(queries, wants, strict=True):
        got = shard.dense(q, k, mask)
        assert len(got) == k and not hidden & set(_ids(got))
        recall.append(len(want & set(_ids(got))) / k)
    assert np.mean(recall) >= 0.95, np.mean(recall)
    assert len(scans) == (len(queries) if path == "exact" else 0)
    assert walks == ([True] * len(queries) if path == "filter" else [])


def test_masked_search_grows_the_request_or_falls_back(store):
    shard = store.shards()[0]
    mask = store.mask(shard, frozenset({"rare"}))  # one document: 100 of 4,096 rows
    q = clustered(1, 3)[0]
    # the default cap sends so sparse a mask to the exact scan: identical to it
    assert shard.dense(q, 10, mask) == [
        (int(shard.ids[r]), s) for r, s in ann.exact(shard.vectors, q, 10, mask)
    ]
    # no cap: the graph is asked for more until 10 visible rows come back
    graph = ann.AnnIndex(shard.ann.index, AnnConfig(min_rows=1000, max_fetch=1.0))
    got = graph.search(shard.vectors, q, 10, mask)
    assert len(got) == 10 and all(mask[r] for r, _ in got)
    # fewer visible rows than k: every visible row, nothing else
    assert {r for r, _ in shard.ann.search(shard.vectors, q, 150, mask)} == set(np.flatnonzero(mask).tolist())
    assert shard.dense(q, 10, np.zeros(len(shard.ids), dtype=bool)) == []


def test_folder_without_graph_loads_and_searches_exactly(store, tmp_path):
    copy = tmp_path / "kb"
    shutil.copytree(store.folder, copy)
    old = store.shards()[0]
    (copy / "index" / f"s0-v{old.version}" / ann.FILE).unlink()
    st = Store(copy, shard_size=4096, ann_cfg=CFG)
    try:
        shard = st.shards()[0]
        assert shard.ann is None and shard.version == old.version  # loaded as it was, not rebuilt
        mask = st.mask(shard, frozenset({"odd"}))
        for q in clustered(5, 4):
            for m in (None, mask):
                want = ann.exact(shard.vectors, q, 10, m)
                assert shard.dense(q, 10, m) == [(int(shard.ids[r]), s) for r, s in want]
    finally:
        st.close()


def test_min_rows_above_the_shard_ignores_its_graph(store):
    st = Store(store.folder, shard_size=4096, ann_cfg=AnnConfig(min_rows=10_000))
    try:
        assert all(s.ann is None for s in st.shards())
    finally:
        st.close()


def test_bad_settings_name_every_problem():
    with pytest.raises(LmforgeError, match="min_rows.*ef_search.*overfetch"):
        AnnConfig(min_rows=0, ef_search=0, overfetch=1.0)
