"""Content rules: categories of phrases and regexes, matched into hits, masks and a verdict.

A `Category` has phrases (any number: tens of thousands are fine), regexes and an action:
`block` (refuse the text), `mask` (replace each matched character with the mask character) or `flag`
(let it through, report it). `RuleSet.check(text)` returns every `Hit` with its exact span in the
original text and why it matched; `RuleSet.apply(text)` turns them into a `Verdict`.

Phrases are matched over the normalised text (normalize.py: full-width, case, homoglyphs,
separators, traditional Chinese …), the phrases normalised the same way when the set is built, in one
pass with Aho-Corasick, so the cost is linear in the text whatever the number of phrases. The library
is pyahocorasick (`import ahocorasick`): a maintained C extension with wheels for current CPython,
it builds a 50k-phrase automaton in tens of milliseconds, reports every overlapping occurrence with
its end index and stores a Python value per phrase (here: its length and the rules behind it), which
ahocorasick-rs does not (it returns pattern indexes only). Phrases whose normalised form starts (ends)
with a letter or digit of a space-separated script match only at a word boundary of the original
text when the category's `whole_words` is on ("ass" does not fire inside "class"); Chinese, Japanese
and Korean phrases match anywhere.

Regexes run on the original text (a user writes them for what they see: with separators removed, a
pattern like `\\d{3}-\\d{4}` could never match). They must not match the empty string.

An optional classifier hook, `fn(text) -> [(category, score), ...]`, adds a hit per category whose
score reaches the threshold. It has no span: its hits cover the whole text, `block` categories block
and anything else is reported as `flag`; a category the rule set does not know is flagged.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import ahocorasick

from lmforge.data.lang import NO_SPACE_SCRIPTS
from lmforge.errors import LmforgeError
from lmforge.safety.normalize import Normalized, NormalizeOptions, Normalizer

Action = Literal["block", "mask", "flag"]
ACTIONS: tuple[Action, ...] = ("block", "mask", "flag")
MASK_CHAR = "*"
"""The default character that replaces each masked character."""
CLASSIFIER_THRESHOLD = 0.5
"""The default score at which a classifier result becomes a hit."""

Classifier = Callable[[str], Sequence[tuple[str, float]]]
_NO_SPACE = re.compile(f"[{NO_SPACE_SCRIPTS}]")


@dataclass(frozen=True)
class Category:
    """A named group of rules with one action."""

    name: str
    action: Action
    phrases: tuple[str, ...] = ()
    """Matched after normalisation, anywhere (CJK) or as whole words (see `whole_words`)."""
    regexes: tuple[str, ...] = ()
    """Python regular expressions, matched on the original text."""
    whole_words: bool = True
    """Phrases that begin/end with a Latin-script letter or digit need a word boundary there."""


@dataclass(frozen=True)
class ClassifierHook:
    """A model or function that scores a whole text per category."""

    fn: Classifier
    threshold: float = CLASSIFIER_THRESHOLD
    name: str = "classifier"
    """How hits name it (`module:function` when it came from safety.yaml)."""


@dataclass(frozen=True)
class Hit:
    """One rule that fired: where in the original text, on what, and why."""

    category: str
    rule: str
    """The phrase as written in the rule list, the regex pattern, or the classifier's name."""
    action: Action
    start: int
    end: int
    """[start, end): offsets in the original text (in a stream: from the start of the stream)."""
    text: str
    """The original text of the span ("" for a classifier hit)."""
    why: str
    """"exact match", "matched after normalisation: full-width, separators", "regex", or a score."""
    source: Literal["phrase", "regex", "classifier"] = "phrase"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    """What to do with a text: refuse it (blocked), or pass `text` on (masked where a rule says so)."""

    blocked: bool
    text: str
    """The text with every `mask` hit's characters replaced by the mask character."""
    hits: list[Hit]
    flagged: list[Hit]
    """The hits whose action is `flag` (reported, not acted on)."""

    def to_dict(self) -> dict[str, Any]:
        return {"blocked": self.blocked, "text": self.text, "hits": [h.to_dict() for h in self.hits],
                "flagged": [h.to_dict() for h in self.flagged]}  # fmt: skip


def is_word_char(ch: str) -> bool:
    """A letter or digit of a space-separated script (so not Han, kana or Hangul); "" is not."""
    return bool(ch) and ch.isalnum() and not _NO_SPACE.match(ch)


def mask_spans(text: str, spans: Iterable[tuple[int, int]], mask_char: str, offset: int = 0) -> str:
    """`text` with every character inside the spans replaced by `mask_char`.

    Spans are in the coordinates of a longer stream: `text` starts at `offset` (parts outside are ignored)."""
    chars = list(text)
    n = len(chars)
    for start, end in spans:
        for k in range(max(start - offset, 0), min(end - offset, n)):
            chars[k] = mask_char
    return "".join(chars)


class RuleSet:
    """Categories compiled for matching: one Aho-Corasick automaton over every phrase, compiled regexes."""

    def __init__(
        self,
        categories: Sequence[Category],
        normalize: NormalizeOptions | None = None,
        mask_char: str = MASK_CHAR,
        classifier: ClassifierHook | None = None,
    ) -> None:
        names = [c.name for c in categories]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise LmforgeError(f"safety categories named twice: {', '.join(dupes)}")
        if len(mask_char) != 1:
            raise LmforgeError(f"the mask character must be one character (got {mask_char!r})")
        for c in categories:
            if c.action not in ACTIONS:
                raise LmforgeError(
                    f"category {c.name}: action must be block, mask or flag (got {c.action!r})"
                )
        self.normalizer = Normalizer(normalize)
        self.mask_char = mask_char
        self.classifier = classifier
        self.categories: dict[str, Category] = {c.name: c for c in categories}
        self._actions: dict[str, Action] = {c.name: c.action for c in categories}
        self._disabled: frozenset[str] = frozenset()
        table: dict[str, list[tuple[str, str, bool, bool]]] = {}
        for c in categories:
            for phrase in c.phrases:
                key = self.normalizer.phrase(phrase)
                if not key:
                    raise LmforgeError(f"category {c.name}: phrase {phrase!r} is empty after normalisation "
                                       f"(only separators)")  # fmt: skip
                left = c.whole_words and is_word_char(key[0])
                right = c.whole_words and is_word_char(key[-1])
                table.setdefault(key, []).append((c.name, phrase, left, right))
        self.longest = max(map(len, table), default=0)
        """The longest phrase, in normalised characters (what a stream must hold back)."""
        self._automaton: Any = None
        if table:
            automaton = ahocorasick.Automaton()
            for key, rules in table.items():
                automaton.add_word(key, (len(key), tuple(rules)))
            automaton.make_automaton()
            self._automaton = automaton
        self._regexes: list[tuple[str, str, re.Pattern[str]]] = []
        for c in categories:
            for pattern in c.regexes:
                try:
                    rx = re.compile(pattern)
                except re.error as e:
                    raise LmforgeError(f"category {c.name}: bad regular expression {pattern!r}: {e}") from e
                if rx.search("") is not None:
                    raise LmforgeError(f"category {c.name}: regular expression {pattern!r} matches the empty "
                                       f"text")  # fmt: skip
                self._regexes.append((c.name, pattern, rx))

    @property
    def has_regexes(self) -> bool:
        return any(name not in self._disabled for name, _, _ in self._regexes)

    def action(self, category: str) -> Action | None:
        """The action of a category in this set (None: unknown or disabled)."""
        return None if category in self._disabled else self._actions.get(category)

    def derive(self, actions: Mapping[str, Action] | None = None, disabled: Iterable[str] = ()) -> RuleSet:
        """The same rules with some categories' actions changed or switched off (per API key).

        Shares the compiled automaton and regexes, so it is cheap; unknown category names are an error."""
        actions = dict(actions or {})
        disabled = frozenset(disabled)
        unknown = sorted((set(actions) | disabled) - set(self._actions))
        if unknown:
            raise LmforgeError(
                f"unknown safety categories: {', '.join(unknown)} (known: {', '.join(self._actions)})"
            )
        bad = {k: v for k, v in actions.items() if v not in ACTIONS}
        if bad:
            raise LmforgeError(f"actions must be block, mask or flag (got {bad})")
        out = copy.copy(self)
        out._actions = {**self._actions, **actions}
        out._disabled = self._disabled | disabled
        return out

    def scan(self, text: str, *, before: str = "", after: str | None = "") -> tuple[list[Hit], Normalized]:
        """Phrase and regex hits in `text` (no classifier), sorted by start, and the normalised text.

        `before`/`after`: the text around it, for word boundaries (a stream passes the last emitted
        character); `after=None` means more text follows, and a phrase that needs a word boundary at
        the very end of `text` is left out: the next character decides it."""
        norm = self.normalizer(text)
        hits: list[Hit] = []
        n = len(text)
        if self._automaton is not None and norm.text:
            for end, (length, rules) in self._automaton.iter(norm.text):
                i = end - length + 1
                start, stop = norm.starts[i], norm.ends[end]
                span = text[start:stop]
                changed = ""  # why, when the span differs from the phrase as written (computed once)
                for name, phrase, left, right in rules:
                    if name in self._disabled:
                        continue
                    if left and is_word_char(text[start - 1] if start else before[-1:]):
                        continue
                    if right:
                        if stop < n:
                            if is_word_char(text[stop]):
                                continue
                        elif after is None or is_word_char(after[:1]):
                            continue
                    if span != phrase and not changed:
                        reasons = norm.why(i, end + 1)
                        changed = (
                            "matched after normalisation: " + ", ".join(reasons) if reasons else "exact match"
                        )
                    why = "exact match" if span == phrase else changed
                    hits.append(Hit(name, phrase, self._actions[name], start, stop, span, why))
        for name, pattern, rx in self._regexes:
            if name in self._disabled:
                continue
            for m in rx.finditer(text):
                hits.append(Hit(name, pattern, self._actions[name], m.start(), m.end(), m.group(), "regex",
                                "regex"))  # fmt: skip
        hits.sort(key=lambda h: (h.start, -h.end, h.category, h.rule))
        return hits, norm

    def check(self, text: str) -> list[Hit]:
        """Every rule that fires on `text` (phrases, regexes, then the classifier's hits)."""
        hits, _ = self.scan(text)
        return hits + self.classify(text)

    def classify(self, text: str) -> list[Hit]:
        """The classifier hook's hits (none without a hook)."""
        hook = self.classifier
        if hook is None:
            return []
        try:
            scores = list(hook.fn(text))
        except LmforgeError:
            raise
        except Exception as e:  # noqa: BLE001 - the user's function: report whatever it raised
            raise LmforgeError(f"safety classifier {hook.name} raised {type(e).__name__}: {e}") from e
        hits = []
        for item in scores:
            if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str)
                    and isinstance(item[1], int | float) and math.isfinite(item[1])):  # fmt: skip
                raise LmforgeError(
                    f"safety classifier {hook.name} returned {item!r}: expected (category, score)"
                )
            category, score = item
            if category in self._disabled or score < hook.threshold:
                continue
            action: Action = "block" if self._actions.get(category) == "block" else "flag"
            why = f"classifier score {score:.2f} ≥ threshold {hook.threshold:.2f}"
            hits.append(Hit(category, hook.name, action, 0, len(text), "", why, "classifier"))
        return hits

    def mask(self, text: str, hits: Iterable[Hit]) -> str:
        """`text` with the spans of the `mask` hits among `hits` masked."""
        return mask_spans(text, ((h.start, h.end) for h in hits if h.action == "mask"), self.mask_char)

    def apply(self, text: str) -> Verdict:
        """Check `text` and decide: blocked, the masked text, every hit, the flagged ones."""
        hits = self.check(text)
        return Verdict(
            blocked=any(h.action == "block" for h in hits),
            text=self.mask(text, hits),
            hits=hits,
            flagged=[h for h in hits if h.action == "flag"],
        )
