"""Text → matching form, with a map from every normalised character back to the original text.

Obfuscated text ("ｂ.u.y　ｆｏｌｌｏｗｅｒｓ", "代開發票", "fоllоwеrs" with Cyrillic о/е) and the rule
phrases are both brought to one form, so a plain substring match (Aho-Corasick in rules.py) catches
them. The steps, each switchable in `NormalizeOptions`:

1. NFKC: full-width letters and digits → ASCII, compatibility forms (ﬁ → fi, ① → 1, ㍿ → 株式会社).
2. Homoglyphs: the listed Cyrillic/Greek look-alikes → Latin (`HOMOGLYPHS`, a small table, not the
   whole Unicode confusables file: those map many ordinary letters and would cause false hits).
3. casefold (ß → ss); accents stripped from Latin letters (é → e; never from kana or other scripts).
4. Optional digit/symbol substitutions (`LEET`: 0→o 1→l 3→e 4→a 5→s 7→t @→a $→s), off by default:
   they also turn ordinary numbers into letters.
5. Separators removed: whitespace, punctuation, symbols (* . - _ | emoji …), control and format
   characters (zero-width space/joiner, soft hyphen, BOM), variation selectors and invisible fillers.
6. Traditional → simplified Chinese with OpenCC's `t2s` (after step 5, so "開 發 票" is converted as
   the phrase 開發票).

The offset map. The text is cut into segments: one starter character plus the combining marks that
follow it (so "e" + U+0301 is one unit). Steps 1–5 run per segment; each character a segment yields
maps back to the segment's [start, end) in the original, so a match over normalised characters
[i, j) is exactly the original span [starts[i], ends[j-1]), separators inside it included. A segment
that yields several characters (㍿, ß) maps all of them to itself; a separator yields none.
OpenCC t2s is 1:1 per character for almost all input but converts by phrase; when its output length
differs from its input, the CJK runs whose length changed are converted character by character
instead, keeping the original character wherever one character would become several, so the map
stays exact. Hangul conjoining jamo are not composed across segments (each jamo is its own starter).

Hand-written because no maintained library returns an offset map through NFKC, casefold and OpenCC.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from types import MappingProxyType

from lmforge.data.lang import HAN

FULLWIDTH, COMPAT, HOMOGLYPH, CASE, ACCENT, LEET_SUB, T2S = 1, 2, 4, 8, 16, 32, 64
"""Bits in `Normalized.flags`: which step changed a character."""
REASONS = MappingProxyType(
    {
        FULLWIDTH: "full-width",
        COMPAT: "compatibility forms",
        HOMOGLYPH: "homoglyphs",
        CASE: "case",
        ACCENT: "accents",
        LEET_SUB: "digit/symbol substitutions",
        T2S: "traditional→simplified",
    }
)
"""The words `Normalized.why` uses for each bit, in the order they are listed."""

HOMOGLYPHS: MappingProxyType[str, str] = MappingProxyType({
    # Cyrillic capitals and small letters that look like Latin ones
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
    "Х": "X", "У": "Y", "Ѕ": "S", "І": "I", "Ј": "J", "Ԛ": "Q", "Ԝ": "W", "Ү": "Y",
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ј": "j",
    "ԁ": "d", "һ": "h", "ԛ": "q", "ԝ": "w", "ӏ": "l", "к": "k", "ү": "y", "ɡ": "g",
    # Greek capitals and small letters
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    "α": "a", "ο": "o", "ρ": "p", "ν": "v", "ι": "i", "κ": "k", "υ": "u", "χ": "x", "ε": "e", "η": "n",
    # Latin look-alikes outside ASCII
    "ı": "i", "ȷ": "j", "ℓ": "l",
})  # fmt: skip
"""Look-alike letters → the Latin letter they imitate (applied before and after casefolding)."""

LEET = MappingProxyType({"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
"""Digit and symbol substitutions, used only with `NormalizeOptions.leet`."""

_INVISIBLE = frozenset("\u034f\u115f\u1160\u3164\uffa0\u2800") | frozenset(map(chr, range(0xFE00, 0xFE10)))
"""Invisible characters whose category is not a separator's: CGJ, Hangul fillers, braille blank, VS1–16."""
_HAN_RUN = re.compile(f"[{HAN}\U00020000-\U0003134f]+")


@dataclass(frozen=True)
class NormalizeOptions:
    """Which normalisation steps run (the same ones for the text and for the rule phrases)."""

    nfkc: bool = True
    """NFKC: full-width → half-width, compatibility characters → their plain form."""
    homoglyphs: bool = True
    """Map the listed Cyrillic/Greek look-alikes (`HOMOGLYPHS`) to Latin letters."""
    casefold: bool = True
    """Case-insensitive matching (str.casefold: ß → ss)."""
    strip_accents: bool = True
    """Drop combining accents on Latin letters (é → e)."""
    leet: bool = False
    """Read digits and symbols as letters (`LEET`: 0→o 1→l 3→e 4→a 5→s 7→t @→a $→s)."""
    separators: bool = True
    """Remove whitespace, punctuation, symbols and invisible characters."""
    t2s: bool = True
    """Traditional → simplified Chinese (OpenCC t2s)."""


def is_separator(ch: str) -> bool:
    """Whether `ch` is removed by the separators step (whitespace, punctuation, symbol, invisible)."""
    cat = unicodedata.category(ch)
    return cat[0] in "PSZ" or cat in ("Cc", "Cf") or ch in _INVISIBLE


@dataclass(frozen=True)
class Normalized:
    """The normalised text and, per normalised character, the original span it came from."""

    text: str
    original: str
    starts: list[int] = field(repr=False)
    """starts[i]: the original offset where the segment behind normalised character i begins."""
    ends: list[int] = field(repr=False)
    """ends[i]: the original offset just past that segment."""
    flags: bytearray = field(repr=False)
    """flags[i]: the bits (FULLWIDTH, …) of the steps that changed character i."""

    def span(self, i: int, j: int) -> tuple[int, int]:
        """The original span [start, end) of normalised characters [i, j) (j > i)."""
        return self.starts[i], self.ends[j - 1]

    def why(self, i: int, j: int) -> list[str]:
        """Which steps made normalised characters [i, j) differ from the original: [] when none did."""
        bits = 0
        for f in self.flags[i:j]:
            bits |= f
        reasons = [word for bit, word in REASONS.items() if bits & bit]
        gap = any(self.ends[k] != self.starts[k + 1] for k in range(i, j - 1))
        if gap:
            reasons.append("separators")
        return reasons


class Normalizer:
    """Normalises texts with one set of options; per-segment results are cached on the instance."""

    def __init__(self, options: NormalizeOptions | None = None) -> None:
        self.options = options or NormalizeOptions()
        self._t2s = None
        if self.options.t2s:
            import opencc

            self._t2s = opencc.OpenCC("t2s")
        self._cache: dict[str, tuple[str, int]] = {}

    def __call__(self, text: str) -> Normalized:
        out: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        flags = bytearray()
        cache = self._cache
        n = len(text)
        i = 0
        while i < n:
            j = i + 1
            while j < n and text[j] >= "\u0300" and unicodedata.combining(text[j]):
                j += 1
            seg = text[i:j]
            res = cache.get(seg)
            if res is None:
                res = self._segment(seg)
                if j - i <= 4:
                    cache[seg] = res
            chars, bits = res
            for ch in chars:
                out.append(ch)
                starts.append(i)
                ends.append(j)
                flags.append(bits)
            i = j
        joined = "".join(out)
        if self._t2s is not None and _HAN_RUN.search(joined):
            converted = self._convert(joined)
            if converted != joined:
                for k, (a, b) in enumerate(zip(joined, converted, strict=True)):
                    if a != b:
                        flags[k] |= T2S
                joined = converted
        return Normalized(joined, text, starts, ends, flags)

    def phrase(self, text: str) -> str:
        """The matching form of a rule phrase (the same steps as for texts)."""
        return self(text).text

    def _segment(self, seg: str) -> tuple[str, int]:
        """One segment's normalised characters (separators dropped) and the bits of the steps that changed it."""
        o = self.options
        bits = 0
        s = seg
        if o.nfkc:
            t = unicodedata.normalize("NFKC", s)
            if t != unicodedata.normalize("NFC", s):  # composing é from e + ◌́ is no obfuscation
                bits |= FULLWIDTH if any("\uff01" <= c <= "\uff5e" or c == "\u3000" for c in s) else COMPAT
            s = t
        if o.homoglyphs:
            t = "".join(HOMOGLYPHS.get(c, c) for c in s)
            if t != s:
                bits |= HOMOGLYPH
            s = t
        if o.casefold:
            t = s.casefold()
            if t != s:
                bits |= CASE
            s = t
        if o.homoglyphs or o.strip_accents:
            d = unicodedata.normalize("NFD", s)
            base = "".join(HOMOGLYPHS.get(c, c) for c in d) if o.homoglyphs else d
            if base != d:
                bits |= HOMOGLYPH
            if o.strip_accents:
                letters = [c for c in base if not unicodedata.combining(c)]
                if len(letters) < len(base) and letters and all(c < "\u0250" for c in letters):
                    base = "".join(letters)
                    bits |= ACCENT
            s = unicodedata.normalize("NFC", base) if base != d else s
        if o.leet:
            t = "".join(LEET.get(c, c) for c in s)
            if t != s:
                bits |= LEET_SUB
            s = t
        if o.separators:
            s = "".join(c for c in s if not is_separator(c))
        return s, bits

    def _convert(self, text: str) -> str:
        """OpenCC t2s, kept at exactly one output character per input character (see the docstring)."""
        assert self._t2s is not None
        whole = self._t2s.convert(text)
        if len(whole) == len(text):
            return whole
        parts: list[str] = []
        last = 0
        for m in _HAN_RUN.finditer(text):
            parts.append(text[last : m.start()])
            run = m.group()
            conv = self._t2s.convert(run)
            if len(conv) != len(run):
                conv = "".join(self._char(ch) for ch in run)
            parts.append(conv)
            last = m.end()
        parts.append(text[last:])
        return "".join(parts)

    def _char(self, ch: str) -> str:
        assert self._t2s is not None
        conv = self._t2s.convert(ch)
        return conv if len(conv) == 1 else ch
