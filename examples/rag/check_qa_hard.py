"""Check examples/rag/qa-hard.jsonl against examples/rag/docs/ and print counts.

Errors (exit status 1):
  * a missing, empty or unknown field, a duplicate id, an id that does not match its type and
    language (`hard-<lang>-<para|xl|multi|unans>-NN`), a wrong `lang` / `doc_lang` / `answerable`;
  * a `doc` that does not exist; an `evidence` that is outside 6-40 characters, is not in its
    document (whitespace ignored, as lmforge.eval.rag matches a chunk), or lies only in Markdown
    heading lines (the Markdown loader moves headings out of the chunk text);
  * an answerable item whose `answer` (multi-passage: each of `answer_parts`) is not in its
    document (whitespace ignored), or is in the wrong script for the document's language, or is
    given away verbatim in the question;
  * a paraphrase question that shares a key phrase with its evidence or with the `##` heading the
    evidence sits under: a run of 3+ Chinese characters (zh), or a content word (en: stop words
    dropped, crude stem = plural "s" dropped, first 5 letters);
  * a cross-language item whose question is in the document's language (or the reverse for the
    other types); a multi-passage item without exactly two (doc, evidence, answer part) triples;
  * an unanswerable item with a non-empty answer/doc/evidence, without `absent_terms`, with a
    term that occurs in any document (Chinese: substring, whitespace ignored; Latin: whole words,
    case-insensitive), or with none of its terms in the question.
Notes (printed, not errors): evidence or answers found only when whitespace is ignored (the
licence texts are hard-wrapped), and evidence that also occurs in another document.

    python examples/rag/check_qa_hard.py [qa-hard.jsonl] [docs/]
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIRED = ("id", "question", "answer", "doc", "evidence", "lang", "doc_lang", "type", "answerable")
OPTIONAL = ("answer_alt", "answer_parts", "absent_terms")
TYPES = {"paraphrase": "para", "cross-language": "xl", "multi-passage": "multi", "unanswerable": "unans"}
LANGS = ("zh", "en")
HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
STOP = {  # English stop words, ignored by the paraphrase check
    "a", "an", "the", "and", "or", "nor", "but", "if", "then", "else", "of", "to", "in", "on", "at",
    "by", "for", "from", "with", "without", "into", "onto", "about", "over", "under", "than", "as", "is",
    "are", "was", "were", "be", "been", "being", "am", "do", "does", "did", "done", "doing", "has",
    "have", "had", "having", "it", "its", "this", "that", "these", "those", "there", "here",
    "which", "what", "who", "whom", "whose", "when", "where", "why", "how", "you", "your", "yours", "i",
    "me", "my", "we", "our", "us", "he", "him", "his", "she", "her", "they", "them", "their", "not",
    "no", "yes", "so", "such", "any", "all", "each", "both", "either", "neither", "some", "other",
    "another", "own", "same", "also", "only", "just", "very", "can", "could", "may", "might", "must",
    "shall", "should", "will", "would", "say", "says", "said", "one", "ones", "s", "t",
}  # fmt: skip


def squash(text: str) -> str:
    """Whitespace removed, as lmforge.eval.rag._squash does."""
    return re.sub(r"\s+", "", text)


def has_han(text: str) -> bool:
    return bool(HAN.search(text))


def doc_language(text: str) -> str:
    body = squash(text)
    return "zh" if body and len(HAN.findall(body)) / len(body) > 0.3 else "en"


def body_text(name: str, text: str) -> str:
    """The text that stays in chunk bodies: Markdown heading lines are dropped for .md files."""
    if not name.endswith(".md"):
        return text
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def heading_of(name: str, text: str, evidence: str) -> str:
    """The nearest `#` heading line above the first body occurrence of `evidence` (whitespace
    ignored); "" for non-Markdown files or when the evidence is not found."""
    if not name.endswith(".md"):
        return ""
    chars: list[str] = []
    owner: list[int] = []  # for each squashed body character: index of its heading (-1: none)
    headings: list[str] = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            headings.append(line.lstrip("# ").strip())
            chars.append("\n")  # a heading line breaks a body match
            owner.append(len(headings) - 1)
            continue
        for ch in squash(line):
            chars.append(ch)
            owner.append(len(headings) - 1)
    at = "".join(chars).find(squash(evidence))
    if at < 0 or owner[at] < 0:
        return ""
    return headings[owner[at]]


def han_trigrams(text: str) -> set[str]:
    return {run[i : i + 3] for run in HAN_RUN.findall(text) for i in range(len(run) - 2)}


def stem(word: str) -> str:
    if len(word) > 3 and word.endswith("s"):
        word = word[:-1]
    return word[:5]


def content_words(text: str) -> dict[str, str]:
    """stem -> one surface form, for words of 3+ letters that are not stop words."""
    out: dict[str, str] = {}
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        if len(word) >= 3 and word not in STOP:
            out.setdefault(stem(word), word)
    return out


def shared_key_phrases(question: str, passage: str, lang: str) -> list[str]:
    if lang == "zh":
        return sorted(g for g in han_trigrams(passage) if g in question)
    q = content_words(question)
    return sorted(w for s, w in content_words(passage).items() if s in q)


def term_in(term: str, text: str, squashed: str) -> bool:
    if has_han(term):
        return squash(term) in squashed
    words = [re.escape(w) for w in term.split()]
    pattern = r"(?<![A-Za-z0-9])" + r"\s+".join(words) + r"(?![A-Za-z0-9])"
    return re.search(pattern, text, flags=re.IGNORECASE) is not None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    qa_path = Path(args[0]) if args else HERE / "qa-hard.jsonl"
    docs_dir = Path(args[1]) if len(args) > 1 else HERE / "docs"
    docs = {p.name: p.read_text(encoding="utf-8") for p in sorted(docs_dir.iterdir()) if p.is_file()}
    squashed = {name: squash(text) for name, text in docs.items()}
    bodies = {name: squash(body_text(name, text)) for name, text in docs.items()}
    langs = {name: doc_language(text) for name, text in docs.items()}

    errors: list[str] = []
    notes: list[str] = []
    ids: set[str] = set()
    by_type_lang: Counter[tuple[str, str]] = Counter()
    by_doc: Counter[str] = Counter()
    rows = [json.loads(line) for line in qa_path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def check_passage(rid: str, name: str, ev: str, answer: str, row: dict) -> None:
        """One (doc, evidence, answer) triple of an answerable item."""
        text = docs.get(name)
        if text is None:
            errors.append(f"{rid}: doc {name!r} not in {docs_dir}")
            return
        by_doc[name] += 1
        if langs[name] != row["doc_lang"]:
            errors.append(f"{rid}: doc_lang is {row['doc_lang']!r} but {name} is {langs[name]!r}")
        if not isinstance(ev, str) or not 6 <= len(ev) <= 40:
            errors.append(f"{rid}: evidence {ev!r} is not a string of 6-40 characters")
            return
        if squash(ev) not in squashed[name]:
            errors.append(f"{rid}: evidence {ev!r} not in {name} (whitespace ignored)")
        else:
            if ev not in text:
                notes.append(f"{rid}: evidence {ev!r} is in {name} only with whitespace ignored")
            if squash(ev) not in bodies[name]:
                errors.append(f"{rid}: evidence {ev!r} is only in a heading of {name}")
        elsewhere = [other for other, s in squashed.items() if other != name and squash(ev) in s]
        if elsewhere:
            notes.append(f"{rid}: evidence {ev!r} also occurs in {elsewhere}")
        if not isinstance(answer, str) or not answer.strip():
            errors.append(f"{rid}: empty answer for {name}")
            return
        if squash(answer) not in squashed[name]:
            errors.append(f"{rid}: answer {answer!r} not in {name} (whitespace ignored)")
        elif answer not in text:
            notes.append(f"{rid}: answer {answer!r} is in {name} only with whitespace ignored")
        if has_han(answer) != (row["doc_lang"] == "zh"):
            errors.append(f"{rid}: answer {answer!r} is not in the document's language ({row['doc_lang']})")
        if squash(answer).lower() in squash(row["question"]).lower():
            errors.append(f"{rid}: the question gives the answer {answer!r} away")
        if row["type"] == "paraphrase":
            for where, passage in (("evidence", ev), ("heading", heading_of(name, text, ev))):
                shared = shared_key_phrases(row["question"], passage, row["lang"])
                if shared:
                    errors.append(f"{rid}: paraphrase question shares {shared} with its {where} {passage!r}")

    for row in rows:
        rid = row.get("id", "?")
        missing = [f for f in REQUIRED if f not in row]
        unknown = [f for f in row if f not in REQUIRED + OPTIONAL]
        if missing or unknown:
            errors.append(f"{rid}: missing {missing}, unknown {unknown}")
            continue
        if rid in ids:
            errors.append(f"{rid}: duplicate id")
        ids.add(rid)
        kind, lang, doc_lang = row["type"], row["lang"], row["doc_lang"]
        if kind not in TYPES or lang not in LANGS:
            errors.append(f"{rid}: unknown type {kind!r} or lang {lang!r}")
            continue
        by_type_lang[(kind, lang)] += 1
        if not re.fullmatch(rf"hard-{lang}-{TYPES[kind]}-\d\d", rid):
            errors.append(f"{rid}: id should look like hard-{lang}-{TYPES[kind]}-NN")
        question = row["question"]
        if not isinstance(question, str) or not question.strip():
            errors.append(f"{rid}: empty question")
            continue
        if has_han(question) != (lang == "zh"):
            errors.append(f"{rid}: question is not in its lang {lang!r}")
        if row["answerable"] is not (kind != "unanswerable"):
            errors.append(f"{rid}: answerable should be {kind != 'unanswerable'}")
        alt = row.get("answer_alt")
        if alt is not None and (
            not isinstance(alt, str) or not alt.strip() or has_han(alt) != (lang == "zh")
        ):
            errors.append(
                f"{rid}: answer_alt {alt!r} should be a non-empty string in the question's language"
            )

        if kind == "unanswerable":
            if row["answer"] != "" or row["doc"] != "" or row["evidence"] != "" or doc_lang != "":
                errors.append(f'{rid}: unanswerable items have answer, doc, evidence and doc_lang all ""')
            if set(row) & {"answer_alt", "answer_parts"}:
                errors.append(f"{rid}: unanswerable items take no answer_alt / answer_parts")
            terms = row.get("absent_terms")
            if (
                not isinstance(terms, list)
                or not terms
                or not all(isinstance(t, str) and t.strip() for t in terms)
            ):
                errors.append(f"{rid}: absent_terms should be a non-empty list of strings")
                continue
            for term in terms:
                found = [name for name, text in docs.items() if term_in(term, text, squashed[name])]
                if found:
                    errors.append(f"{rid}: absent term {term!r} occurs in {found}")
            if not any(term_in(t, question, squash(question)) for t in terms):
                errors.append(f"{rid}: none of absent_terms {terms} is in the question")
            continue

        if "absent_terms" in row:
            errors.append(f"{rid}: absent_terms is only for unanswerable items")
        if doc_lang not in LANGS:
            errors.append(f"{rid}: doc_lang {doc_lang!r} should be zh or en")
            continue
        if (kind == "cross-language") != (lang != doc_lang):
            errors.append(f"{rid}: {kind} with lang {lang!r} and doc_lang {doc_lang!r}")
        if kind == "multi-passage":
            docs_, evs, parts = row["doc"], row["evidence"], row.get("answer_parts")
            if not all(isinstance(x, list) and len(x) == 2 for x in (docs_, evs, parts)):
                errors.append(f"{rid}: multi-passage needs doc, evidence and answer_parts as lists of two")
                continue
            if not isinstance(row["answer"], str) or not row["answer"].strip():
                errors.append(f"{rid}: empty answer")
            if docs_[0] == docs_[1] and heading_of(docs_[0], docs[docs_[0]], evs[0]) == heading_of(
                docs_[1], docs[docs_[1]], evs[1]
            ):
                errors.append(f"{rid}: the two passages are in the same document section")
            for name, ev, part in zip(docs_, evs, parts, strict=True):
                check_passage(rid, name, ev, part, row)
        else:
            if "answer_parts" in row:
                errors.append(f"{rid}: answer_parts is only for multi-passage items")
            if not isinstance(row["doc"], str) or not isinstance(row["evidence"], str):
                errors.append(f"{rid}: doc and evidence should be strings")
                continue
            check_passage(rid, row["doc"], row["evidence"], row["answer"], row)

    total = Counter(lang for _, lang in by_type_lang.elements())
    print(f"{len(rows)} questions over {len(by_doc)} of {len(docs)} documents")
    print(f"{'type':16} {'zh':>4} {'en':>4} {'total':>6}")
    for kind in TYPES:
        zh, en = by_type_lang[(kind, "zh")], by_type_lang[(kind, "en")]
        print(f"{kind:16} {zh:>4} {en:>4} {zh + en:>6}")
    print(f"{'total':16} {total['zh']:>4} {total['en']:>4} {sum(total.values()):>6}")
    for n in notes:
        print("note:", n)
    for e in errors:
        print("ERROR:", e)
    print("OK" if not errors else f"{len(errors)} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
