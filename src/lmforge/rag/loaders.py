"""Document loaders: file → stream of `Block`s (text or table, with page and heading path).

Supported: txt, md, html/htm, pdf (text layer, page numbers), docx, csv, json, jsonl.
Text files are decoded with the detected encoding (BOM, strict UTF-8, then charset-normalizer
limited to UTF-16 / GB18030 / Big5) and read as a stream, so a 200 MB file never sits in memory
whole: blocks are bounded to `MAX_BLOCK_CHARS`.

Every refusal is a `LoaderError` naming the file and the reason: unsupported type, zero bytes,
binary content under a text extension, a corrupt PDF, a scanned PDF without a text layer.
pypdf and python-docx do the parsing; html uses the standard library's parser (headings and tables
are all we need from it).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from lmforge.errors import LmforgeError

SUPPORTED = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".csv", ".json", ".jsonl")
MAX_BLOCK_CHARS = 4000
SNIFF_BYTES = 64 * 1024


class LoaderError(LmforgeError):
    """A document that cannot be read; the message names the file and why."""


@dataclass
class Block:
    """A run of text from one place in a document."""

    text: str
    page: int | None = None  # 1-based PDF page, None where pages do not exist
    heading: tuple[str, ...] = ()  # heading path, outermost first
    kind: str = "text"  # "text" or "table"


@dataclass
class LoadedDocument:
    path: Path
    title: str
    blocks: Iterator[Block]
    encoding: str | None = None
    pages: int | None = None
    meta: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- encodings


def _looks_binary(sample: bytes) -> bool:
    if not sample:
        return False
    if b"\x00" in sample:
        return True
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13, 27))
    return controls / len(sample) > 0.05


def detect_encoding(sample: bytes, name: str = "file") -> str:
    """Encoding of a text sample: BOM, strict UTF-8, else the best of UTF-16 / GB18030 / Big5."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if _utf8_prefix_ok(sample):
        return "utf-8"
    if _looks_binary(sample):
        raise LoaderError(f"{name}: looks like binary data, not text (NUL or control bytes)")
    from charset_normalizer import from_bytes

    best = from_bytes(sample, cp_isolation=["gb18030", "big5", "utf_16"]).best()
    if best is None:
        raise LoaderError(f"{name}: cannot detect the text encoding (tried UTF-8, UTF-16, GB18030, Big5)")
    enc = best.encoding.replace("_", "-")
    if enc in ("gb2312", "gbk"):
        enc = "gb18030"
    return enc


def _utf8_prefix_ok(sample: bytes) -> bool:
    # the sample may end inside a multi-byte sequence: an incremental decoder tolerates that
    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(sample, final=False)
    except UnicodeDecodeError:
        return False
    return not _looks_binary(sample)


def _open_text(path: Path) -> tuple[io.TextIOWrapper, str]:
    with path.open("rb") as fh:
        sample = fh.read(SNIFF_BYTES)
    if not sample:
        raise LoaderError(f"{path.name}: empty file (0 bytes)")
    enc = detect_encoding(sample, path.name)
    return io.TextIOWrapper(path.open("rb"), encoding=enc, errors="strict", newline=None), enc


def _decode_guard(lines: Iterable[str], name: str) -> Iterator[str]:
    try:
        yield from lines
    except UnicodeDecodeError as e:
        raise LoaderError(f"{name}: invalid bytes for its detected encoding at byte {e.start}") from e


# ---------------------------------------------------------------- plain text and markdown


def _paragraphs(lines: Iterable[str], heading: tuple[str, ...] = ()) -> Iterator[Block]:
    buf: list[str] = []
    size = 0
    for line in lines:
        if not line.strip():
            if buf:
                yield Block("".join(buf).strip(), heading=heading)
                buf, size = [], 0
            continue
        buf.append(line)
        size += len(line)
        if size >= MAX_BLOCK_CHARS:
            yield Block("".join(buf).strip(), heading=heading)
            buf, size = [], 0
    if buf:
        yield Block("".join(buf).strip(), heading=heading)


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _markdown(lines: Iterable[str]) -> Iterator[Block]:
    """Headings set the path; `|` table rows become one table block; fences are kept verbatim."""
    path: list[str] = []
    para: list[str] = []
    table: list[str] = []
    fence = False

    def flush_para() -> Iterator[Block]:
        if para:
            yield from _paragraphs(para, tuple(path))
            para.clear()

    def flush_table() -> Iterator[Block]:
        if table:
            yield Block("".join(table).strip(), heading=tuple(path), kind="table")
            table.clear()

    for line in lines:
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
            para.append(line)
            continue
        if not fence:
            m = _MD_HEADING.match(line)
            if m:
                yield from flush_para()
                yield from flush_table()
                level = len(m.group(1))
                del path[level - 1 :]
                path.extend([""] * (level - 1 - len(path)))
                path.append(m.group(2))
                continue
            if line.lstrip().startswith("|"):
                yield from flush_para()
                table.append(line)
                continue
            yield from flush_table()
        para.append(line)
        if not line.strip() and not fence:
            yield from flush_para()
    yield from flush_para()
    yield from flush_table()


def _first_heading(path: Path, enc: str) -> str | None:
    with path.open(encoding=enc, errors="replace") as fh:
        for i, line in enumerate(fh):
            m = _MD_HEADING.match(line)
            if m:
                return m.group(2)
            if i > 50:
                break
    return None


def _load_text(path: Path, markdown: bool) -> LoadedDocument:
    fh, enc = _open_text(path)

    def blocks() -> Iterator[Block]:
        with fh:
            lines = _decode_guard(fh, path.name)
            yield from (_markdown(lines) if markdown else _paragraphs(lines))

    title = (_first_heading(path, enc) if markdown else None) or path.stem
    return LoadedDocument(path, title, blocks(), encoding=enc)


# ---------------------------------------------------------------- html


class _HtmlBlocks(HTMLParser):
    _HEADINGS = {f"h{i}": i for i in range(1, 7)}
    _BREAKS = {"p", "div", "li", "br", "section", "article", "blockquote", "pre", "dd", "dt", "tr"}
    _SKIP = {"script", "style", "noscript", "template", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self.title = ""
        self._path: list[str] = []
        self._text: list[str] = []
        self._heading: int | None = None
        self._skip = 0
        self._in_title = False
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None

    def _flush(self) -> None:
        text = re.sub(r"[ \t]+", " ", "".join(self._text)).strip()
        self._text.clear()
        if text:
            self.blocks.append(Block(text, heading=tuple(self._path)))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in self._SKIP:
            self._skip += 1
        elif tag in self._HEADINGS:
            self._flush()
            self._heading = self._HEADINGS[tag]
        elif tag == "table":
            self._flush()
            self._table = []
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag in self._BREAKS:
            self._flush() if self._table is None else None

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self._HEADINGS and self._heading is not None:
            text = re.sub(r"\s+", " ", "".join(self._text)).strip()
            self._text.clear()
            level = self._heading
            del self._path[level - 1 :]
            self._path.extend([""] * (level - 1 - len(self._path)))
            self._path.append(text)
            self._heading = None
        elif tag in ("td", "th") and self._table is not None and self._cell is not None:
            if not self._table:
                self._table.append([])
            self._table[-1].append(re.sub(r"\s+", " ", "".join(self._cell)).strip())
            self._cell = None
        elif tag == "table" and self._table is not None:
            rows = [" | ".join(r) for r in self._table if any(r)]
            if rows:
                self.blocks.append(Block("\n".join(rows), heading=tuple(self._path), kind="table"))
            self._table = None
        elif tag in self._BREAKS and self._table is None:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if self._skip:
            return
        if self._cell is not None:
            self._cell.append(data)
        elif self._table is None:
            self._text.append(data)


def _load_html(path: Path) -> LoadedDocument:
    fh, enc = _open_text(path)
    parser = _HtmlBlocks()
    with fh:
        for line in _decode_guard(fh, path.name):
            parser.feed(line)
    parser.close()
    parser._flush()
    return LoadedDocument(path, parser.title.strip() or path.stem, iter(parser.blocks), encoding=enc)


# ---------------------------------------------------------------- pdf and docx


def _load_pdf(path: Path) -> LoadedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        n_pages = len(reader.pages)
    except (PdfReadError, ValueError, KeyError, OSError, TypeError) as e:
        raise LoaderError(f"{path.name}: not a readable PDF ({e})") from e
    if n_pages == 0:
        raise LoaderError(f"{path.name}: PDF has no pages")
    texts: list[str] = []
    try:
        for page in reader.pages:
            texts.append(page.extract_text() or "")
    except (PdfReadError, ValueError, KeyError, TypeError) as e:
        raise LoaderError(f"{path.name}: corrupt PDF page ({e})") from e
    if not any(t.strip() for t in texts):
        raise LoaderError(
            f"{path.name}: scanned PDF with no text layer ({n_pages} pages); run OCR on it first"
        )
    meta = reader.metadata
    title = (meta.title if meta and meta.title else None) or path.stem

    def blocks() -> Iterator[Block]:
        for i, text in enumerate(texts, start=1):
            for block in _paragraphs(text.splitlines(keepends=True)):
                block.page = i
                yield block

    return LoadedDocument(path, str(title), blocks(), pages=n_pages)


def _load_docx(path: Path) -> LoadedDocument:
    import zipfile

    import docx
    from docx.opc.exceptions import OpcError
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(str(path))
    except (zipfile.BadZipFile, KeyError, ValueError, OpcError) as e:
        raise LoaderError(f"{path.name}: not a readable .docx ({e})") from e

    def blocks() -> Iterator[Block]:
        heading: list[str] = []
        for child in document.element.body.iterchildren():
            tag = child.tag.rsplit("}", 1)[-1]
            if tag == "p":
                para = Paragraph(child, document)
                text = para.text.strip()
                style = para.style.name if para.style is not None else ""
                if not text:
                    continue
                m = re.match(r"(?:Heading|标题)\s*(\d)", style or "")
                if m or style == "Title":
                    level = int(m.group(1)) if m else 1
                    del heading[level - 1 :]
                    heading.extend([""] * (level - 1 - len(heading)))
                    heading.append(text)
                    continue
                yield Block(text, heading=tuple(heading))
            elif tag == "tbl":
                table = Table(child, document)
                rows = [" | ".join(c.text.strip() for c in row.cells) for row in table.rows]
                yield Block("\n".join(r for r in rows if r.strip(" |")), heading=tuple(heading), kind="table")

    title = document.core_properties.title or path.stem
    return LoadedDocument(path, title, blocks())


# ---------------------------------------------------------------- csv and json


def _load_csv(path: Path) -> LoadedDocument:
    fh, enc = _open_text(path)

    def blocks() -> Iterator[Block]:
        with fh:
            reader = csv.reader(_decode_guard(fh, path.name))
            header = next(reader, None)
            if header is None:
                return
            rows: list[str] = []
            size = 0
            head = " | ".join(header)
            for row in reader:
                line = " | ".join(row)
                rows.append(line)
                size += len(line)
                if size >= MAX_BLOCK_CHARS:
                    yield Block("\n".join([head, *rows]), kind="table")
                    rows, size = [], 0
            if rows:
                yield Block("\n".join([head, *rows]), kind="table")

    return LoadedDocument(path, path.stem, blocks(), encoding=enc)


def _flatten(value: object, prefix: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(v, f"{prefix}{k}." if not isinstance(v, dict | list) else f"{prefix}{k}.")
    elif isinstance(value, list):
        for v in value:
            yield from _flatten(v, prefix)
    elif value is not None:
        key = prefix.rstrip(".")
        yield f"{key}: {value}" if key else str(value)


def _load_json(path: Path, lines: bool) -> LoadedDocument:
    fh, enc = _open_text(path)

    def records() -> Iterator[object]:
        with fh:
            if lines:
                for n, line in enumerate(_decode_guard(fh, path.name), start=1):
                    if line.strip():
                        try:
                            yield json.loads(line)
                        except json.JSONDecodeError as e:
                            raise LoaderError(f"{path.name}: line {n} is not valid JSON ({e.msg})") from e
            else:
                try:
                    data = json.loads(fh.read())
                except UnicodeDecodeError as e:
                    raise LoaderError(f"{path.name}: invalid bytes for its detected encoding") from e
                except json.JSONDecodeError as e:
                    raise LoaderError(f"{path.name}: not valid JSON ({e.msg} at line {e.lineno})") from e
                yield from data if isinstance(data, list) else [data]

    def blocks() -> Iterator[Block]:
        for record in records():
            text = "\n".join(_flatten(record))
            if text.strip():
                yield Block(text[: MAX_BLOCK_CHARS * 4])

    return LoadedDocument(path, path.stem, blocks(), encoding=enc)


# ---------------------------------------------------------------- entry point


def load(path: Path) -> LoadedDocument:
    """Open a document for streaming; raises `LoaderError` for anything we cannot read honestly."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise LoaderError(
            f"{path.name}: unsupported file type {suffix or '(none)'}; supported: {' '.join(SUPPORTED)}"
        )
    if not path.is_file():
        raise LoaderError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise LoaderError(f"{path.name}: empty file (0 bytes)")
    if suffix == ".pdf":
        return _load_pdf(path)
    if suffix == ".docx":
        return _load_docx(path)
    if suffix in (".html", ".htm"):
        return _load_html(path)
    if suffix == ".csv":
        return _load_csv(path)
    if suffix in (".json", ".jsonl"):
        return _load_json(path, lines=suffix == ".jsonl")
    return _load_text(path, markdown=suffix in (".md", ".markdown"))
