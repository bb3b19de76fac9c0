"""Metric functions: pure, deterministic, no model calls.

Answer metrics follow SQuAD's evaluation script (lower-case, strip punctuation and English
articles, collapse whitespace) with one change for Chinese: text with CJK characters is compared
character by character (the CMRC 2018 convention), since Chinese has no spaces between words.
Retrieval metrics take the rank (1-based) of the first relevant result, or None if none was found.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_PUNCT = set(string.punctuation) | set("，。！？；：、“”‘’（）《》【】「」『』…—·～")


def normalize_answer(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def answer_tokens(text: str) -> list[str]:
    """Words for English, single characters for CJK (mixed text: both)."""
    out: list[str] = []
    for word in normalize_answer(text).split():
        if _CJK.search(word):
            out.extend(ch for ch in word)
        else:
            out.append(word)
    return out


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def contains_answer(prediction: str, reference: str) -> float:
    """1.0 when the normalised reference occurs inside the normalised prediction."""
    ref = normalize_answer(reference)
    return float(bool(ref) and ref in normalize_answer(prediction))


def hit_at_k(first_relevant_rank: int | None, k: int) -> float:
    return float(first_relevant_rank is not None and first_relevant_rank <= k)


def reciprocal_rank(first_relevant_rank: int | None) -> float:
    return 0.0 if first_relevant_rank is None else 1.0 / first_relevant_rank


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
