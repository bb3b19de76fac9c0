"""Lexical side of retrieval: a zh/en analyzer (jieba search-mode cuts for Chinese, lower-cased
words for Latin script) and a BM25 index per shard (bm25s; its numba backend when numba is
installed, ~100× faster per query than the numpy one).

ACL filtering happens inside scoring: `search(..., mask=...)` passes a 0/1 weight per chunk to
bm25s, so chunks a caller may not see score 0 and never enter the top-k.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from lmforge.data.lang import HAN

_WORD = re.compile(rf"[A-Za-z0-9_]+|[{HAN}]+")
_STOP_EN = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "he",
        "her",
        "his",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "our",
        "she",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
        "do",
        "does",
        "did",
        "how",
        "can",
    ]
)
_STOP_ZH = frozenset(
    [
        "的",
        "了",
        "是",
        "在",
        "和",
        "与",
        "及",
        "或",
        "就",
        "都",
        "而",
        "也",
        "之",
        "其",
        "这",
        "那",
        "个",
        "么",
        "吗",
        "呢",
        "吧",
        "啊",
        "哪",
        "什么",
        "谁",
        "如何",
        "怎么",
    ]
)


class Analyzer:
    """Text → index terms. Owns its jieba tokenizer (no module-global dictionary state)."""

    def __init__(self) -> None:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        self._jieba = jieba.Tokenizer()
        self._jieba.initialize()

    def terms(self, text: str) -> list[str]:
        out: list[str] = []
        for m in _WORD.finditer(text):
            piece = m.group(0)
            if piece[0].isascii():
                word = piece.lower()
                if word not in _STOP_EN and (len(word) > 1 or word.isdigit()):
                    out.append(word)
            else:
                for w in self._jieba.cut_for_search(piece):
                    if w not in _STOP_ZH:
                        out.append(w)
        return out


def _backend() -> str:
    try:
        import numba  # noqa: F401
    except ImportError:
        return "numpy"
    return "numba"


class LexicalIndex:
    """BM25 over one shard's chunks, addressed by row (0..n-1)."""

    def __init__(self, retriever, n: int) -> None:  # noqa: ANN001 - bm25s.BM25
        self._bm25 = retriever
        self.n = n

    @classmethod
    def build(cls, docs_terms: list[list[str]]) -> LexicalIndex:
        import bm25s

        if not docs_terms:
            return cls(None, 0)
        retriever = bm25s.BM25(backend=_backend())
        # an empty document would leave bm25s without a vocabulary: give it a placeholder term
        retriever.index([t or ["\x00"] for t in docs_terms], show_progress=False)
        return cls(retriever, len(docs_terms))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if self._bm25 is not None:
            self._bm25.save(str(folder))

    @classmethod
    def load(cls, folder: Path, n: int) -> LexicalIndex:
        import bm25s

        if n == 0:
            return cls(None, 0)
        retriever = bm25s.BM25.load(str(folder), mmap=False)
        retriever.backend = _backend()
        if retriever.backend == "numba":
            retriever.activate_numba_scorer()
        return cls(retriever, n)

    def search(self, terms: list[str], k: int, mask: np.ndarray | None = None) -> list[tuple[int, float]]:
        """(row, score) best first; rows with score 0 (no term in common, or masked) are dropped."""
        if not terms or self.n == 0:
            return []
        k = min(k, self.n)
        docs, scores = self._bm25.retrieve(
            [terms], k=k, show_progress=False, n_threads=1, weight_mask=mask, return_as="tuple"
        )
        return [(int(d), float(s)) for d, s in zip(docs[0], scores[0], strict=True) if s > 0]
