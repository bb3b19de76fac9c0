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

from lmforge.data.lang import HAN_RE

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
        if HAN_RE.search(word):
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


# ---------------------------------------------------------------- classification


def accuracy(predictions: Sequence[str], labels: Sequence[str]) -> float:
    _same_length(predictions, labels)
    return mean([float(p == g) for p, g in zip(predictions, labels, strict=True)])


def macro_f1(
    predictions: Sequence[str], labels: Sequence[str], label_set: Sequence[str] | None = None
) -> float:
    """Unweighted mean of per-class F1 over `label_set` (default: the gold labels seen)."""
    _same_length(predictions, labels)
    classes = list(label_set) if label_set is not None else sorted(set(labels))
    scores = []
    for c in classes:
        tp = sum(1 for p, g in zip(predictions, labels, strict=True) if p == c and g == c)
        fp = sum(1 for p, g in zip(predictions, labels, strict=True) if p == c and g != c)
        fn = sum(1 for p, g in zip(predictions, labels, strict=True) if p != c and g == c)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return mean(scores)


def _same_length(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} predictions for {len(b)} references")


# ---------------------------------------------------------------- sequence labelling (NER)


def bio_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """(type, start, end) spans from BIO/IOB2 tags, seqeval's default (non-strict) rules: an I-
    tag after O or after another type starts a new entity."""
    spans: set[tuple[str, int, int]] = set()
    start, kind = None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, t = tag.partition("-")
        if prefix in ("B", "O", "S", "E") or (prefix == "I" and t != kind):
            if kind is not None and start is not None:
                spans.add((kind, start, i))
            start, kind = (i, t) if prefix in ("B", "I", "S", "E") else (None, None)
    return spans


def entity_prf(predicted: Sequence[set], gold: Sequence[set]) -> dict[str, float]:
    """Micro precision / recall / F1 over entity sets (spans or (type, text) pairs) per sentence."""
    _same_length(predicted, gold)
    tp = sum(len(p & g) for p, g in zip(predicted, gold, strict=True))
    n_pred = sum(len(p) for p in predicted)
    n_gold = sum(len(g) for g in gold)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def seq_f1(predicted_tags: Sequence[Sequence[str]], gold_tags: Sequence[Sequence[str]]) -> float:
    """Entity-level F1 of BIO tag sequences (what seqeval's f1_score computes)."""
    return entity_prf([bio_spans(p) for p in predicted_tags], [bio_spans(g) for g in gold_tags])["f1"]


# ---------------------------------------------------------------- generation


def bleu(predictions: Sequence[str], references: Sequence[str], lang: str = "en") -> float:
    """Corpus BLEU (sacrebleu); Chinese targets use sacrebleu's 'zh' tokenizer."""
    import sacrebleu

    _same_length(predictions, references)
    tok = "zh" if lang == "zh" else "13a"
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)], tokenize=tok).score)


def chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    import sacrebleu

    _same_length(predictions, references)
    return float(sacrebleu.corpus_chrf(list(predictions), [list(references)]).score)


class _JiebaTokenizer:
    """rouge-score's default tokenizer drops non-ASCII text; for Chinese we segment with jieba."""

    def __init__(self) -> None:
        import logging

        import jieba

        jieba.setLogLevel(logging.WARNING)
        self._jieba = jieba.Tokenizer()

    def tokenize(self, text: str) -> list[str]:
        return [w for w in self._jieba.lcut(normalize_answer(text)) if w.strip()]


def rouge(predictions: Sequence[str], references: Sequence[str], lang: str = "en") -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure (rouge-score). Chinese: jieba word segmentation (not characters)."""
    from rouge_score import rouge_scorer

    _same_length(predictions, references)
    scorer = rouge_scorer.RougeScorer(
        ["rouge1", "rouge2", "rougeL"],
        use_stemmer=lang == "en",
        tokenizer=_JiebaTokenizer() if lang == "zh" else None,
    )
    rows = [scorer.score(r, p) for p, r in zip(predictions, references, strict=True)]
    return {k: mean([row[k].fmeasure for row in rows]) for k in ("rouge1", "rouge2", "rougeL")}


# ---------------------------------------------------------------- language modelling


def perplexity(total_nll: float, n_tokens: int) -> float:
    import math

    return math.exp(total_nll / n_tokens) if n_tokens else float("nan")


def bits_per_byte(total_nll: float, n_bytes: int) -> float:
    """Natural-log NLL summed over a text → bits per UTF-8 byte (comparable across tokenizers)."""
    import math

    return total_nll / math.log(2) / n_bytes if n_bytes else float("nan")


def wilson_interval(wins: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (ties counted as half a win by the caller)."""
    import math

    if n == 0:
        return (0.0, 1.0)
    p = wins / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
