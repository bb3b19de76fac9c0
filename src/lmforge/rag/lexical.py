"""Lexical side of retrieval: a zh/en analyzer (jieba search-mode cuts for Chinese, lower-cased
words for Latin script) and a BM25 index per shard (bm25s; its numba backend when numba is
installed, ~100× faster per query than the numpy one).

ACL filtering happens inside scoring: `search(..., mask=...)` passes a 0/1 weight per chunk to
bm25s, so chunks a caller may not see score 0 and never enter the top-k.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lmforge.data.lang import HAN
from lmforge.rag.bilingual import Dictionary, cedict_path

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


_HAN_RUN = re.compile(f"[{HAN}]+")
_NAME_WORD = re.compile(r"\b([A-Z][a-z]+)\b(['’]s)?")
_NOT_NAMES = frozenset(
    [
        "a", "an", "he", "she", "me", "men", "can", "ban", "fan", "pen", "sun", "ran", "hang", "long", "bang",
        "die", "lie", "tie", "pie", "gene", "line", "mine", "nine", "pine", "wine", "fine", "dine", "zone",
        "bone", "tone", "china", "chinese", "june", "dance", "bingo", "tango", "mango", "panda", "banana",
    ]
)  # fmt: skip
"""English words that happen to spell pinyin and are capitalised often enough to be taken for names."""
_INTERJECTIONS = frozenset({"m", "n", "ng", "hm", "hng"})
"""Pinyin of interjections (呣, 嗯, 哼): left out of the syllables so that 'poem' is not read po-e-m."""
PINYIN = "py:"
"""Prefix of the pinyin terms: they never collide with an English word."""


class Analyzer:
    """Text → index terms. Owns its jieba tokenizer (no module-global dictionary state)."""

    def __init__(self) -> None:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        self._jieba = jieba.Tokenizer()
        self._jieba.initialize()
        self._syllables: frozenset[str] | None = None
        self._dictionary: Dictionary | None | bool = False  # False: not loaded yet; None: not installed
        self._dictionary_lock = threading.Lock()  # a server's first searches and its warm-up may race for it

    def pinyin_terms(self, text: str) -> list[str]:
        """Terms that let a question written in Latin letters name what this Chinese text names (杜甫 → 'Du
        Fu', 白帝城 → 'Baidi'): per run of Han characters, each character's toneless pinyin ('py:du') and
        each adjacent pair ('py:dufu'). Knowledge bases index them for titles and headings."""
        from pypinyin import lazy_pinyin

        out: list[str] = []
        for run in _HAN_RUN.findall(text):
            syl = lazy_pinyin(run)
            out += [PINYIN + s for s in syl]
            out += [PINYIN + a + b for a, b in zip(syl, syl[1:], strict=False)]
        return out

    def name_terms(self, query: str) -> list[str]:
        """The question's side of `pinyin_terms`: each run of capitalised words that spell pinyin ('Li Bai',
        'Jiangling', "Du Fu's"), as syllables and adjacent pairs within the run. A lone word opening a sentence
        ('He', 'Can') is not taken for a name."""
        starts = {0} | {m.end() for m in re.finditer(r"[.!?]\s+", query)}
        out: list[str] = []
        run: list[str] = []  # syllables of the name being read
        words, opened, last = 0, 0, -1

        def emit() -> None:
            if words > 1 or opened not in starts:
                out.extend(PINYIN + s for s in run)
                out.extend(PINYIN + a + b for a, b in zip(run, run[1:], strict=False))

        for m in _NAME_WORD.finditer(query):
            word = m.group(1).lower()
            syl = None if word in _NOT_NAMES else self.syllables_of(word)
            if run and (syl is None or last < 0 or query[last : m.start()].strip()):
                emit()
                run, words = [], 0
            if syl is not None:
                opened = m.start() if not run else opened
                run, words = run + syl, words + 1
            last = m.end() if not m.group(2) else -1  # a possessive ends the name
        if run:
            emit()
        return out

    def syllables_of(self, word: str) -> list[str] | None:
        """`word` (lower case) split into pinyin syllables, the fewest possible ('jiangling' → jiang, ling);
        None when it is not pinyin."""
        if self._syllables is None:
            from pypinyin import lazy_pinyin

            every = lazy_pinyin("".join(chr(c) for c in range(0x4E00, 0x9FA6)))
            self._syllables = frozenset(every) - _INTERJECTIONS
        n = len(word)
        best: list[list[str] | None] = [None] * (n + 1)
        best[0] = []
        for i in range(n):
            if best[i] is None:
                continue
            for j in range(i + 1, min(n, i + 6) + 1):
                if word[i:j] in self._syllables and (best[j] is None or len(best[i]) + 1 < len(best[j])):
                    best[j] = [*best[i], word[i:j]]
        return best[n]

    @property
    def dictionary(self) -> Dictionary | None:
        """The zh⇄en dictionary (CC-CEDICT, read on first use, ~0.6 s); None when it is not installed."""
        with self._dictionary_lock:
            if self._dictionary is False:
                path = cedict_path()
                self._dictionary = Dictionary.load(path, _STOP_EN) if path else None
        return self._dictionary  # type: ignore[return-value]

    def translate(self, query: str, into: str, known: Callable[[str], bool]) -> list[str]:
        """BM25 terms in language `into` ('zh' or 'en') for the words of `query` written in the other one, by
        dictionary (rag/bilingual.py), keeping those `known` to the index; [] without the dictionary."""
        d = self.dictionary
        if d is None:
            return []
        words = self.terms(query, pieces=False)
        if into == "zh":
            english = [t for t in words if t.isascii() and t.isalpha()]
            return d.to_chinese(english, known, lambda w: self._jieba.FREQ.get(w, 0))
        return d.to_english([t for t in words if not t.isascii()], known)

    def terms(self, text: str, pieces: bool = True) -> list[str]:
        """Index terms of `text`: Latin words lower-cased, less stop words; Chinese cut by jieba's search mode, less
        stop words, and with `pieces` each word of three or more characters that jieba joined by guess (its HMM,
        not its dictionary) also by its two-character pieces. The guess depends on the neighbours — 瓜洲 alone,
        but 夜雪瓜洲 in 楼船夜雪瓜洲渡 — so without the pieces a question's 瓜洲 misses that line."""
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
                        if pieces and len(w) > 2 and not self._jieba.FREQ.get(w):
                            out += [w[i : i + 2] for i in range(len(w) - 1)]
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

    def doc_freq(self, term: str) -> int:
        """How many of this shard's chunks hold `term`."""
        if self._bm25 is None:
            return 0
        tid = self._bm25.vocab_dict.get(term)
        if tid is None:
            return 0
        indptr = self._bm25.scores["indptr"]
        return int(indptr[tid + 1] - indptr[tid])

    def search(self, terms: list[str], k: int, mask: np.ndarray | None = None) -> list[tuple[int, float]]:
        """(row, score) best first; rows with score 0 (no term in common, or masked) are dropped."""
        if not terms or self.n == 0:
            return []
        k = min(k, self.n)
        docs, scores = self._bm25.retrieve(
            [terms], k=k, show_progress=False, n_threads=1, weight_mask=mask, return_as="tuple"
        )
        return [(int(d), float(s)) for d, s in zip(docs[0], scores[0], strict=True) if s > 0]
