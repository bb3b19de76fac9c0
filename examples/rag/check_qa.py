"""Check examples/rag/qa.jsonl against examples/rag/docs/ and print counts.

Errors (exit status 1): a missing field, a duplicate id, a `doc` that does not exist, an
`evidence` that is not a verbatim substring of its document or is outside 5-30 characters.
Notes (printed, not errors): an `answer` that is not verbatim in its document (or only across a
line break), and an `evidence`
string that also occurs in another document (the question may then be ambiguous).

    python examples/rag/check_qa.py
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIELDS = ("id", "question", "answer", "doc", "evidence", "lang", "type")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    qa_path = Path(args[0]) if args else HERE / "qa.jsonl"
    docs_dir = Path(args[1]) if len(args) > 1 else HERE / "docs"
    docs = {p.name: p.read_text(encoding="utf-8") for p in sorted(docs_dir.iterdir()) if p.is_file()}

    errors: list[str] = []
    notes: list[str] = []
    ids: set[str] = set()
    by_lang: Counter[str] = Counter()
    by_type: Counter[str] = Counter()
    by_lang_type: Counter[tuple[str, str]] = Counter()
    by_doc: Counter[str] = Counter()
    rows = [json.loads(line) for line in qa_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for row in rows:
        rid = row.get("id", "?")
        missing = [f for f in FIELDS if not row.get(f)]
        if missing:
            errors.append(f"{rid}: missing {missing}")
            continue
        if rid in ids:
            errors.append(f"{rid}: duplicate id")
        ids.add(rid)
        by_lang[row["lang"]] += 1
        by_type[row["type"]] += 1
        by_lang_type[(row["lang"], row["type"])] += 1
        by_doc[row["doc"]] += 1
        text = docs.get(row["doc"])
        if text is None:
            errors.append(f"{rid}: doc {row['doc']!r} not in {docs_dir}")
            continue
        ev = row["evidence"]
        if ev not in text:
            errors.append(f"{rid}: evidence {ev!r} not found verbatim in {row['doc']}")
        if not 5 <= len(ev) <= 30:
            errors.append(f"{rid}: evidence is {len(ev)} characters (want 5-30)")
        if row["answer"] not in text:
            if " ".join(row["answer"].split()) in " ".join(text.split()):
                notes.append(f"{rid}: answer is in {row['doc']} only across a line break")
            else:
                notes.append(f"{rid}: answer {row['answer']!r} is not verbatim in {row['doc']}")
        elsewhere = [name for name, other in docs.items() if name != row["doc"] and ev in other]
        if elsewhere:
            notes.append(f"{rid}: evidence {ev!r} also occurs in {elsewhere}")

    print(f"{len(rows)} questions over {len(by_doc)} of {len(docs)} documents")
    print("by lang:", dict(sorted(by_lang.items())))
    print("by type:", dict(sorted(by_type.items())))
    print("by lang x type:", {f"{k[0]}/{k[1]}": v for k, v in sorted(by_lang_type.items())})
    for n in notes:
        print("note:", n)
    for e in errors:
        print("ERROR:", e)
    print("OK" if not errors else f"{len(errors)} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
