"""`lmforge task topics` and `lmforge task cluster`: what a collection of documents is about.

- topics: LDA (scikit-learn's LatentDirichletAllocation, fixed seed) over word counts; Chinese is cut
  into words with jieba, English lower-cased; one-character words, numbers and stop words are left out.
  Each topic: its top terms with weights and its most representative documents (highest share).
- cluster: k-means over the documents' embeddings (the packaged multilingual E5 unless --embedder),
  a 2-D map (PCA of the embeddings) as PNG and as a self-contained HTML page with a tooltip per point,
  and, with a chat model, a short label per cluster proposed from its central documents.

Documents: a file (.jsonl with "text", or text split on blank lines), a folder of .txt/.md files (one
document each), or a knowledge base's chunks (--kb).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.data.lang import HAN_RE
from lmforge.errors import LmforgeError

ZH_STOP = frozenset(["的", "了", "和", "是", "在", "也", "有", "就", "不", "都", "而", "及", "与", "着", "或", "一个", "没有", "我们", "你们", "他们", "这个", "那个", "这些", "以及", "因为", "所以", "但是", "如果", "已经", "可以", "进行", "通过", "对于", "其中", "之一"])  # fmt: skip


def documents(path: str | None, kb: str | None) -> list[tuple[str, str]]:
    """(id, text) of every document; ids are file names, `file:line` or the KB's document#chunk."""
    if (path is None) == (kb is None):
        raise LmforgeError("give a PATH (file or folder) or --kb NAME (one of them)")
    if kb:
        from lmforge.rag.pipeline import KnowledgeBases

        base = KnowledgeBases().open(kb)
        try:
            return [
                (f"{c.doc}#{c.ord}", c.text) for d in base.documents() for c in base.store.doc_chunks(d.name)
            ]
        finally:
            base.close()
    p = Path(str(path))
    if not p.exists():
        raise LmforgeError(f"{p}: no such file or folder")
    files = (
        sorted(f for f in p.rglob("*") if f.suffix in (".txt", ".md") and f.is_file()) if p.is_dir() else [p]
    )
    docs: list[tuple[str, str]] = []
    for f in files:
        try:
            raw = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise LmforgeError(f"{f} is not UTF-8 text (byte {e.start}): convert it first") from e
        if f.suffix == ".jsonl":
            for n, line in enumerate(raw.splitlines(), 1):
                if line.strip():
                    try:
                        docs.append((f"{f.name}:{n}", str(json.loads(line)["text"])))
                    except (json.JSONDecodeError, KeyError, TypeError) as e:
                        raise LmforgeError(f'{f} line {n}: not a JSON object with "text"') from e
        elif p.is_dir():
            docs.append((f.name, raw))
        else:
            docs += [
                (f"{f.name}:{i}", t.strip()) for i, t in enumerate(re.split(r"\n\s*\n", raw), 1) if t.strip()
            ]
    docs = [(i, t) for i, t in docs if t.strip()]
    if not docs:
        raise LmforgeError("no documents found")
    return docs


def words(text: str) -> list[str]:
    """Content words: jieba for Chinese runs, lower-cased Latin words of 3+ letters; no stop words."""
    import jieba
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    out = []
    for w in jieba.lcut(text):
        w = w.strip().lower()
        if HAN_RE.search(w):
            if len(w) >= 2 and w not in ZH_STOP:
                out.append(w)
        elif re.fullmatch(r"[a-z][a-z'-]{2,}", w) and w not in ENGLISH_STOP_WORDS:
            out.append(w)
    return out


def _need(docs: list[tuple[str, str]], k: int) -> None:
    if k < 2:
        raise LmforgeError("--k must be at least 2")
    if len(docs) < k:
        raise LmforgeError(f"{len(docs)} documents cannot make {k} groups: lower --k")


def topics(docs: list[tuple[str, str]], k: int, *, top_terms: int = 10, top_docs: int = 3, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    import logging

    import jieba
    from sklearn.decomposition import LatentDirichletAllocation
    from sklearn.feature_extraction.text import CountVectorizer

    _need(docs, k)
    jieba.setLogLevel(logging.WARNING)
    vec = CountVectorizer(analyzer=words, min_df=1)
    counts = vec.fit_transform([t for _, t in docs])
    if counts.shape[1] < k:
        raise LmforgeError(f"only {counts.shape[1]} distinct content words: too little text for {k} topics")
    lda = LatentDirichletAllocation(n_components=k, random_state=seed, learning_method="batch", max_iter=50)
    share = lda.fit_transform(counts)  # (docs, k)
    vocab = vec.get_feature_names_out()
    out = []
    for t in range(k):
        weights = lda.components_[t] / lda.components_[t].sum()
        best = np.argsort(weights)[::-1][:top_terms]
        reps = np.argsort(share[:, t])[::-1][:top_docs]
        out.append({"id": t, "terms": [{"term": str(vocab[i]), "weight": round(float(weights[i]), 4)} for i in best],
                    "documents": [{"id": docs[i][0], "share": round(float(share[i, t]), 3),
                                   "preview": docs[i][1][:120]} for i in reps],
                    "size": int((share.argmax(1) == t).sum())})  # fmt: skip
    return {"topics": out, "documents": len(docs), "vocabulary": len(vocab), "method": "lda"}


def cluster(docs: list[tuple[str, str]], k: int, embed: Callable[[list[str]], np.ndarray], out_dir: Path, *,
            label: Callable[[list[str]], str] | None = None, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    _need(docs, k)
    vecs = np.asarray(embed([t for _, t in docs]), dtype=np.float32)
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(vecs)
    xy = (
        PCA(n_components=2, random_state=seed).fit_transform(vecs)
        if len(docs) > 2
        else np.zeros((len(docs), 2))
    )
    clusters = []
    for c in range(k):
        members = np.where(km.labels_ == c)[0]
        dist = np.linalg.norm(vecs[members] - km.cluster_centers_[c], axis=1)
        central = members[np.argsort(dist)][:5]
        name = label([docs[i][1] for i in central]) if label else ""
        clusters.append({"id": c, "size": int(len(members)), "label": name,
                         "documents": [{"id": docs[i][0], "preview": docs[i][1][:120]} for i in central],
                         "members": [docs[i][0] for i in members]})  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    png, page = out_dir / "clusters.png", out_dir / "clusters.html"
    _map_png(xy, km.labels_, clusters, png)
    _map_html(xy, km.labels_, clusters, docs, page)
    return {
        "clusters": clusters,
        "documents": len(docs),
        "method": "kmeans",
        "map_png": str(png),
        "map_html": str(page),
    }


def _map_png(xy: np.ndarray, labels: np.ndarray, clusters: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    for c in clusters:
        pts = xy[labels == c["id"]]
        ax.scatter(
            pts[:, 0], pts[:, 1], s=18, alpha=0.75, label=f"{c['id']}: {c['label'] or ''} ({c['size']})"[:40]
        )
    ax.legend(fontsize=7, loc="best")
    ax.set_title("documents by embedding (PCA), coloured by k-means cluster", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _map_html(xy: np.ndarray, labels: np.ndarray, clusters: list[dict[str, Any]], docs: list[tuple[str, str]],
              path: Path) -> None:  # fmt: skip
    """A self-contained SVG scatter: hover a point for its document."""
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]  # fmt: skip
    lo, hi = xy.min(0), xy.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1)
    pts = (xy - lo) / span * 560 + 20
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{600 - y:.1f}" r="5" fill="{colors[int(c) % len(colors)]}" fill-opacity="0.75">'
        f"<title>[{int(c)}] {html.escape(docs[i][0])}: {html.escape(docs[i][1][:200])}</title></circle>"
        for i, ((x, y), c) in enumerate(zip(pts, labels, strict=True))
    )
    legend = "".join(f'<li style="color:{colors[c["id"] % len(colors)]}">{c["id"]}: {html.escape(c["label"] or "")} '
                     f"({c['size']})</li>" for c in clusters)  # fmt: skip
    path.write_text(f"<!doctype html><meta charset='utf-8'><title>clusters</title><body style='font-family:sans-serif'>"
                    f"<svg width='600' height='620' style='border:1px solid #ccc'>{dots}</svg><ul>{legend}</ul>",
                    encoding="utf-8")  # fmt: skip
