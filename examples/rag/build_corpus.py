"""Regenerate examples/rag/docs/ from installed, openly licensed sources.

Sources (see README.md for versions and licences):

* Debian package ``fortunes-zh`` (``apt-get install fortunes-zh``):
  ``/usr/share/games/fortunes/tang300`` and ``song100`` -> ``tang300-NN.md`` / ``song100-NN.md``
* Debian package ``base-files``: ``/usr/share/common-licenses/*`` -> ``license-*.md`` / ``license-*.txt``
  (the FSF texts are copied verbatim; see LICENSE_FILES)
* PyPI package ``chatterbot-corpus`` 1.3.3, read straight from its wheel (no install needed)::

      pip download chatterbot-corpus==1.3.3 --no-deps -d /tmp/cbc
      python examples/rag/build_corpus.py --chatterbot /tmp/cbc/chatterbot_corpus-1.3.3-py2.py3-none-any.whl

  ``--chatterbot`` also accepts an unpacked wheel / installed package directory; without it the
  script looks for an importable ``chatterbot_corpus`` package.

The output is deterministic: running it twice gives byte-identical files.
Only the standard library and PyYAML are needed.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import zipfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
FORTUNES = Path("/usr/share/games/fortunes")
LICENSES = Path("/usr/share/common-licenses")

TANG_PARTS = 8
SONG_PARTS = 3

ANSI = re.compile(r"\x1b\[[0-9;]*m")


# ------------------------------------------------------------------ poems (fortunes-zh)


def read_fortunes(path: Path) -> list[str]:
    """Entries of a fortune file: ANSI colour codes stripped, split on lines holding only '%'."""
    text = ANSI.sub("", path.read_text(encoding="utf-8"))
    entries = re.split(r"^%[ \t]*$", text, flags=re.M)
    return [e.strip("\n") for e in entries if e.strip()]


def parse_poem(entry: str) -> dict[str, str]:
    """One fortune entry -> {title, author, author_line, body}.

    tang300 entries look like   《静夜思》 / 作者：李白 / lines...
    song100 entries look like   题目:《村行》 / 作者:王禹偁（９５４－１００１） / lines...
    """
    lines = entry.split("\n")
    title = re.sub(r"^题目[:：]\s*", "", lines[0].strip())
    m = re.match(r"^作者[:：]\s*(.+)$", lines[1].strip())
    if not title.startswith("《") or not m:
        raise ValueError(f"unexpected poem entry: {entry[:80]!r}")
    author_full = m.group(1).strip()
    author = re.split(r"[（(]", author_full, maxsplit=1)[0].strip()
    body: list[str] = []
    for line in lines[2:]:
        line = line.strip()  # the "其一"/"其二" sub-headings are centred with spaces
        if not line and (not body or not body[-1]):
            continue  # collapse runs of blank lines, drop leading ones
        body.append(line)
    while body and not body[-1]:
        body.pop()
    return {"title": title, "author": author, "author_line": f"作者：{author_full}", "body": "\n".join(body)}


def split_even(items: list, parts: int) -> list[list]:
    """Split into `parts` consecutive runs whose lengths differ by at most one."""
    q, r = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        n = q + (1 if i < r else 0)
        out.append(items[start : start + n])
        start += n
    return out


def poem_documents(src: Path, stem: str, book: str, parts: int) -> dict[str, str]:
    poems = [parse_poem(e) for e in read_fortunes(src)]
    docs: dict[str, str] = {}
    first = 1
    for i, group in enumerate(split_even(poems, parts), start=1):
        last = first + len(group) - 1
        out = [
            f"# {book}（第 {i} 部分，共 {parts} 部分）",
            "",
            f"本文收录{book}第 {first}–{last} 首，共 {len(group)} 首，顺序与原书相同。",
            "",
        ]
        for p in group:
            out += [f"## {p['title']} {p['author']}", "", p["author_line"], "", p["body"], ""]
        docs[f"{stem}-{i:02d}.md"] = "\n".join(out)
        first = last + 1
    return docs


# ------------------------------------------------------------------ licence texts (base-files)

# name in common-licenses -> (output file, markdown title or None for a verbatim .txt copy).
# The FSF texts (GPL, LGPL, GFDL) say "changing it is not allowed", so they are copied byte for
# byte. Apache-2.0, MPL-2.0 and CC0-1.0 gain Markdown section headings; their wording is
# unchanged, only indentation, runs of blank lines and MPL's ASCII boxes/underlines are normalised.
LICENSE_FILES = {
    "Apache-2.0": ("license-apache-2.0.md", "Apache License, Version 2.0"),
    "MPL-2.0": ("license-mpl-2.0.md", "Mozilla Public License, Version 2.0"),
    "CC0-1.0": ("license-cc0-1.0.md", "Creative Commons CC0 1.0 Universal"),
    "GPL-3": ("license-gpl-3.txt", None),
    "LGPL-2.1": ("license-lgpl-2.1.txt", None),
    "GFDL-1.3": ("license-gfdl-1.3.txt", None),
    "Artistic": ("license-artistic.txt", None),
    "BSD": ("license-bsd.txt", None),
}

# A line that starts a section: the heading text is the first non-empty group.
SECTION = {
    "Apache-2.0": re.compile(r"^(\d+\. [A-Z][^.]*)\.|^(APPENDIX: .*?)\.?$"),
    "CC0-1.0": re.compile(r"^(\d+\. [A-Z][^.]*)\.|^(Statement of Purpose)$"),
}


def _mpl_to_markdown(lines: list[str]) -> list[str]:
    """MPL-2.0 uses setext underlines and two boxed sections (6 and 7)."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if set(line.strip()) == {"*"}:  # top/bottom border of a box
            i += 1
            continue
        if line.startswith("*") and line.rstrip().endswith("*"):
            line = line.strip()[1:-1].strip()  # unbox
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if nxt.startswith("*") and nxt.rstrip().endswith("*"):
            nxt = nxt.strip()[1:-1].strip()
        if line and nxt and set(nxt) <= {"-", "="} and len(nxt) >= 3:
            out.append(("# " if set(nxt) == {"="} else "## ") + line)
            i += 2
            continue
        out.append(line)
        i += 1
    return out


def license_markdown(name: str, text: str, title: str) -> str:
    lines = [line.strip() for line in text.split("\n")]
    if name == "MPL-2.0":
        text = "\n".join(_mpl_to_markdown(lines))
        return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"
    pattern = SECTION[name]
    out = [f"# {title}", ""]
    for line in lines:
        m = pattern.match(line)
        if m:
            heading = next(g for g in m.groups() if g)
            if out and out[-1]:
                out.append("")
            out += [f"## {heading}", ""]
            if line == heading or line == heading + ".":
                continue  # the heading stood alone on its line: do not repeat it
        out.append(line)
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"


def license_documents(root: Path) -> dict[str, str]:
    docs = {}
    for name, (out, title) in LICENSE_FILES.items():
        text = (root / name).read_text(encoding="utf-8")
        docs[out] = text if title is None else license_markdown(name, text, title)
    return docs


# ------------------------------------------------------------------ chatterbot-corpus


CHATTERBOT_TOPICS = {
    # Chinese and English topics are chosen so that no English file is a translation of a
    # Chinese one in the collection (the corpus's zh files are machine translations of en ones).
    "chinese": {"history": "历史", "science": "科学", "literature": "文学", "money": "金钱"},
    "english": {
        "trivia": "Trivia",
        "computers": "Computers",
        "ai": "Artificial Intelligence",
        "psychology": "Psychology",
    },
}


class ChatterbotSource:
    """Reads chatterbot_corpus/data/<lang>/<topic>.yml from a wheel, a directory, or the install."""

    def __init__(self, where: Path | None):
        self.zip = None
        self.root = None
        if where is None:
            spec = importlib.util.find_spec("chatterbot_corpus")
            if spec is None or not spec.submodule_search_locations:
                raise SystemExit(
                    "chatterbot_corpus not found: pip download chatterbot-corpus==1.3.3 --no-deps -d DIR "
                    "and pass --chatterbot DIR/chatterbot_corpus-1.3.3-py2.py3-none-any.whl"
                )
            self.root = Path(list(spec.submodule_search_locations)[0])
        elif where.is_file():
            self.zip = zipfile.ZipFile(where)
        elif (where / "chatterbot_corpus").is_dir():
            self.root = where / "chatterbot_corpus"
        else:
            self.root = where

    def read(self, lang: str, topic: str) -> str:
        rel = f"data/{lang}/{topic}.yml"
        if self.zip is not None:
            return self.zip.read(f"chatterbot_corpus/{rel}").decode("utf-8")
        return (self.root / rel).read_text(encoding="utf-8")


def _clean(s: object) -> str:
    s = " ".join(str(s).split())
    return s.rstrip("`").strip()  # science.yml (zh) has a stray trailing backtick


def _conversations(raw: list) -> list[list[str]]:
    convs = []
    for c in raw:
        if isinstance(c, str):
            # english/trivia.yml has one entry whose YAML nesting is broken and parses as the
            # single string 'Question? - \'22\''; split it back into question and answer.
            m = re.match(r"^(.*\?)\s+-\s+'?(.*?)'?$", c)
            c = [m.group(1), m.group(2)] if m else [c]
        convs.append([_clean(x) for x in c])
    return convs


def chatterbot_document(lang: str, topic: str, label: str, text: str) -> str:
    data = yaml.safe_load(text)
    zh = lang == "chinese"
    q_prefix, a_prefix = ("问：", "答：") if zh else ("Q: ", "A: ")
    # merge conversations that start with the same question, keep first-seen order
    answers: dict[str, list[str]] = {}
    shown: dict[str, str] = {}
    for conv in _conversations(data["conversations"]):
        key = conv[0].lower().rstrip("?？ ")
        shown.setdefault(key, conv[0])
        bucket = answers.setdefault(key, [])
        for reply in conv[1:]:
            if reply.lower().rstrip("?？ ") == key or reply in bucket:
                continue
            bucket.append(reply)
    if zh:
        out = [
            f"# ChatterBot 中文对话语料：{label}（{topic}）",
            "",
            f"以下问答整理自 chatterbot-corpus 的 {topic} 主题，每个问题下列出语料中的回答。",
            "",
        ]
    else:
        out = [
            f"# ChatterBot English Dialog Corpus: {label}",
            "",
            f"Questions and answers from the chatterbot-corpus '{topic}' topic; "
            "each question is followed by the replies the corpus gives for it.",
            "",
        ]
    for key, replies in answers.items():
        out += [f"## {q_prefix}{shown[key]}", ""]
        out += [f"{a_prefix}{r}\n" for r in replies] or [""]
    return "\n".join(out).rstrip("\n") + "\n"


def chatterbot_documents(src: ChatterbotSource) -> dict[str, str]:
    docs = {}
    for lang, topics in CHATTERBOT_TOPICS.items():
        short = "zh" if lang == "chinese" else "en"
        for topic, label in topics.items():
            docs[f"chatterbot-{short}-{topic}.md"] = chatterbot_document(
                lang, topic, label, src.read(lang, topic)
            )
    return docs


# ------------------------------------------------------------------ main


def build(out: Path, chatterbot: Path | None) -> dict[str, str]:
    docs: dict[str, str] = {}
    docs.update(poem_documents(FORTUNES / "tang300", "tang300", "唐诗三百首", TANG_PARTS))
    docs.update(poem_documents(FORTUNES / "song100", "song100", "宋诗选", SONG_PARTS))
    docs.update(license_documents(LICENSES))
    docs.update(chatterbot_documents(ChatterbotSource(chatterbot)))
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if old.is_file() and old.name not in docs:
            old.unlink()
    for name, text in sorted(docs.items()):
        (out / name).write_text(text, encoding="utf-8")
    return docs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--chatterbot",
        type=Path,
        default=None,
        help="chatterbot-corpus 1.3.3 wheel or unpacked directory (default: the installed package)",
    )
    ap.add_argument(
        "--out", type=Path, default=HERE / "docs", help="output folder (default: docs/ beside this file)"
    )
    args = ap.parse_args(argv)
    docs = build(args.out, args.chatterbot)
    total = sum(len(t.encode("utf-8")) for t in docs.values())
    print(f"wrote {len(docs)} documents, {total:,} bytes, to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
