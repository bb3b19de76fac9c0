"""`lmforge data prepare`: a pretraining corpus from your files — read, normalise, filter,
deduplicate, split by document, and register as a dataset with its report.

Reading reuses the knowledge-base loaders (txt, md, html, pdf, docx with encoding detection; a
binary or undecodable file is reported and skipped) and Hugging Face `datasets` for the tabular
formats (jsonl/json, csv, parquet: one record = one document, its `--text-field`). Every document
is NFKC-normalised (control characters dropped, runs of spaces collapsed), then passes quality
filters that each count what they removed: length, symbol/digit ratio, repeated lines, repeated
n-grams, and a language label (zh / en / other, by the share of Han characters and Latin letters).
Exact duplicates go by the sha256 of the normalised text; near duplicates by MinHash LSH
(`datasketch`, character 5-gram shingles so Chinese works without segmentation), with a few
removed pairs in the report so a person can judge the threshold. The split is by document
(a hash of the text decides, so it is stable when files are added). The output is Parquet shards
(`train-00000.parquet`, `validation-00000.parquet`, column `text`) published atomically in the
registry as kind 'dataset', with the report in its manifest and a fingerprint over the shards.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmforge.data.lang import HAN_RE
from lmforge.errors import LmforgeError
from lmforge.home import Manifest, Registry, check_name, file_sha256

Dedup = Literal["exact", "near", "none"]
TABULAR = (".jsonl", ".json", ".csv", ".parquet")
NGRAM = 30
"""Span length (characters) of the repeated-n-gram filter."""
SHARD_ROWS = 50_000
"""Documents per Parquet shard."""
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACES = re.compile(r"[ \t\u3000]+")
_BLANKS = re.compile(r"\n{3,}")
_LATIN = re.compile(r"[A-Za-z]")


@dataclass(frozen=True)
class PrepareConfig:
    text_field: str = "text"
    """Field holding the text in jsonl/json/csv/parquet records."""
    dedup: Dedup = "near"
    """exact: identical normalised texts; near: also MinHash LSH near-duplicates; none."""
    near_threshold: float = 0.8
    """Estimated Jaccard similarity (character 5-grams) at or above which two documents are near duplicates."""
    num_perm: int = 128
    """MinHash permutations (more: a finer estimate, slower)."""
    val_frac: float = 0.05
    """Share of documents held out for validation (chosen by a hash of the text)."""
    min_chars: int = 20
    """Shorter documents are dropped."""
    max_symbol_ratio: float = 0.3
    """Documents whose share of digits and symbols (not letters, not CJK, not space) is higher are dropped."""
    max_repeated_lines: float = 0.3
    """Documents whose share of duplicate lines is higher are dropped."""
    max_repeated_ngrams: float = 0.3
    """Documents whose share of positions starting a repeated 30-character span is higher are dropped
    (pasted paragraphs, boilerplate; spans this long do not repeat in ordinary prose, Chinese or English)."""
    languages: tuple[str, ...] = ("zh", "en", "other")
    """Languages kept."""
    seed: int = 0
    """Salt of the split hash and the MinHash permutations."""


@dataclass
class PrepareReport:
    files: int = 0
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    documents_read: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    near_duplicate_examples: list[dict[str, Any]] = field(default_factory=list)
    languages: dict[str, int] = field(default_factory=dict)
    train_documents: int = 0
    validation_documents: int = 0
    train_chars: int = 0
    validation_chars: int = 0

    def text(self) -> str:
        lines = [f"read {self.documents_read} documents from {self.files} files"
                 + (f" ({len(self.skipped_files)} files skipped)" if self.skipped_files else "")]  # fmt: skip
        for s in self.skipped_files:
            lines.append(f"  skipped {s['file']}: {s['reason']}")
        for why, n in self.removed.items():
            lines.append(f"  removed {n:>6}  {why}")
        for ex in self.near_duplicate_examples:
            lines.append(
                f"  near duplicate (~{ex['similarity']:.2f}): {ex['kept'][:60]!r} ~ {ex['removed'][:60]!r}"
            )
        lang = ", ".join(f"{k} {v}" for k, v in sorted(self.languages.items()))
        lines.append(f"kept {self.train_documents} train + {self.validation_documents} validation documents "
                     f"({self.train_chars + self.validation_chars:,} characters; {lang})")  # fmt: skip
        return "\n".join(lines)


def normalise(text: str) -> str:
    """NFKC (full-width → half-width, compatibility forms), no control characters, collapsed spaces."""
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANKS.sub("\n\n", text).strip()


def language(text: str) -> str:
    """'zh' when Han characters make at least 30% of the letters, 'en' when Latin letters dominate."""
    han, latin = len(HAN_RE.findall(text)), len(_LATIN.findall(text))
    letters = han + latin
    if not letters:
        return "other"
    if han / letters >= 0.3:
        return "zh"
    return "en" if latin / letters >= 0.7 else "other"


def quality_problem(text: str, cfg: PrepareConfig) -> str | None:
    """The first quality filter `text` fails, or None."""
    if len(text) < cfg.min_chars:
        return f"shorter than {cfg.min_chars} characters"
    body = [c for c in text if not c.isspace()]
    symbols = sum(1 for c in body if not (c.isalpha() or HAN_RE.match(c)))
    if body and symbols / len(body) > cfg.max_symbol_ratio:
        return f"digits/symbols over {cfg.max_symbol_ratio:.0%}"
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if len(lines) > 1:
        repeated = sum(n - 1 for n in Counter(lines).values() if n > 1)
        if repeated / len(lines) > cfg.max_repeated_lines:
            return f"repeated lines over {cfg.max_repeated_lines:.0%}"
    if len(text) >= 2 * NGRAM:
        grams = Counter(text[i : i + NGRAM] for i in range(0, len(text) - NGRAM + 1))
        covered = sum(n for n in grams.values() if n > 1)
        if covered / (len(text) - NGRAM + 1) > cfg.max_repeated_ngrams:
            return f"repeated {NGRAM}-character spans over {cfg.max_repeated_ngrams:.0%}"
    return None


def _expand(paths: list[str | Path]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out += sorted(
                f
                for f in p.rglob("*")
                if f.is_file() and not any(s.startswith(".") for s in f.relative_to(p).parts)
            )
        elif p.is_file():
            out.append(p)
        else:
            raise LmforgeError(f"{p}: no such file or folder")
    return out


def _records(path: Path, text_field: str) -> Iterator[str]:
    import datasets

    kind = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}[path.suffix.lower()]
    try:
        ds = datasets.load_dataset(kind, data_files=str(path), split="train", cache_dir=None)
    except (ValueError, OSError, datasets.exceptions.DatasetGenerationError) as e:
        raise LmforgeError(f"{path.name}: not readable as {kind} ({str(e).splitlines()[0][:200]})") from e
    if text_field not in ds.column_names:
        raise LmforgeError(
            f"{path.name}: no field {text_field!r} (fields: {', '.join(ds.column_names)}); use --text-field"
        )
    for value in ds[text_field]:
        if isinstance(value, str):
            yield value


def read_documents(paths: list[str | Path], cfg: PrepareConfig, report: PrepareReport,
                   progress: Callable[[int, int, str], None] | None = None) -> Iterator[str]:  # fmt: skip
    """Raw texts, one per document; unreadable files are recorded in the report and skipped.
    `progress(files_done, files_total, current)` is called before each file."""
    from lmforge.rag.loaders import SUPPORTED, LoaderError, load

    files = _expand(paths)
    for i, path in enumerate(files):
        if progress:
            progress(i, len(files), path.name)
        report.files += 1
        suffix = path.suffix.lower()
        try:
            if suffix in TABULAR:
                yield from _records(path, cfg.text_field)
            elif suffix in SUPPORTED:
                doc = load(path)
                yield "\n".join(b.text for b in doc.blocks)
            else:
                raise LoaderError(f"{path.name}: unsupported file type {suffix or '(none)'}")
        except (LoaderError, LmforgeError, UnicodeDecodeError) as e:
            report.skipped_files.append({"file": str(path), "reason": str(e).removeprefix(f"{path.name}: ")})


def _shingles(text: str) -> set[bytes]:
    return {text[i : i + 5].encode() for i in range(max(1, len(text) - 4))}


def prepare(registry: Registry, paths: list[str | Path], name: str, cfg: PrepareConfig | None = None,
            progress: Callable[[int, int, str], None] | None = None) -> Manifest:  # fmt: skip
    """Build and register dataset `name` from `paths`; LmforgeError (nothing stored) on bad input."""
    cfg = cfg or PrepareConfig()
    check_name(name)
    if registry.exists(name):
        raise LmforgeError(f"{name!r} already exists; pick another --out or remove it")
    if not 0 <= cfg.val_frac < 1:
        raise LmforgeError(f"--val-frac must be in [0, 1), got {cfg.val_frac}")
    if not 0 < cfg.near_threshold <= 1:
        raise LmforgeError(f"--near-threshold must be in (0, 1], got {cfg.near_threshold}")
    report = PrepareReport()
    removed: Counter[str] = Counter()
    seen: set[str] = set()
    kept: list[tuple[str, str]] = []  # (text, language)
    lsh = minhashes = None
    if cfg.dedup == "near":
        from datasketch import MinHash, MinHashLSH

        try:
            lsh = MinHashLSH(threshold=cfg.near_threshold, num_perm=cfg.num_perm)
        except ValueError as e:  # too close to 1 for this many permutations
            raise LmforgeError(f"--near-threshold {cfg.near_threshold} does not work with {cfg.num_perm} "
                               f"permutations ({e}); lower it or use --dedup exact") from e  # fmt: skip
        minhashes = {}
    for raw in read_documents(paths, cfg, report, progress):
        report.documents_read += 1
        text = normalise(raw)
        if not text:
            removed["empty after normalisation"] += 1
            continue
        problem = quality_problem(text, cfg)
        if problem:
            removed[problem] += 1
            continue
        lang = language(text)
        if lang not in cfg.languages:
            removed[f"language {lang} not kept"] += 1
            continue
        if cfg.dedup != "none":
            digest = hashlib.sha256(text.encode()).hexdigest()
            if digest in seen:
                removed["exact duplicate"] += 1
                continue
            seen.add(digest)
        if lsh is not None:
            mh = MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
            mh.update_batch(list(_shingles(text)))
            twins = lsh.query(mh)
            if twins:
                removed["near duplicate"] += 1
                if len(report.near_duplicate_examples) < 3:
                    other = twins[0]
                    report.near_duplicate_examples.append({"kept": kept[other][0], "removed": text,
                                                           "similarity": round(mh.jaccard(minhashes[other]), 3)})  # fmt: skip
                continue
            key = len(kept)
            lsh.insert(key, mh)
            minhashes[key] = mh
        kept.append((text, lang))
    report.removed = dict(removed)
    if report.documents_read == 0:
        skipped = "; ".join(f"{Path(x['file']).name}: {x['reason']}" for x in report.skipped_files[:3])
        raise LmforgeError("empty corpus: no readable document in the given paths"
                           + (f" ({len(report.skipped_files)} files skipped: {skipped})" if skipped else ""))  # fmt: skip
    if not kept:
        raise LmforgeError("nothing left after filtering and deduplication:\n" + report.text())
    train, val = [], []
    for text, lang in kept:
        report.languages[lang] = report.languages.get(lang, 0) + 1
        h = int(hashlib.sha256(f"{cfg.seed}:{text}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (val if h < cfg.val_frac else train).append(text)
    if not train:
        train, val = val, []
    report.train_documents, report.validation_documents = len(train), len(val)
    report.train_chars, report.validation_chars = sum(map(len, train)), sum(map(len, val))
    manifest = Manifest(name=name, kind="dataset", format="parquet", path="", source="prepare:" + ",".join(map(str, paths))[:500],
                        config=asdict(cfg), metrics={"report": asdict(report)})  # fmt: skip

    def fill(stage: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        digest = hashlib.sha256()
        for split, rows in (("train", train), ("validation", val)):
            for k in range(0, max(1, len(rows)), SHARD_ROWS):
                shard = stage / f"{split}-{k // SHARD_ROWS:05d}.parquet"
                pq.write_table(
                    pa.table({"text": pa.array(rows[k : k + SHARD_ROWS], type=pa.string())}), shard
                )
                digest.update(file_sha256(shard).encode())
        manifest.data_fingerprint = digest.hexdigest()

    return registry.put(manifest, fill)


def dataset_texts(registry: Registry, name: str, split: str) -> list[str]:
    """The texts of a registered dataset's split ('train' or 'validation')."""
    import pyarrow.parquet as pq

    if not registry.exists(name):
        raise LmforgeError(f"unknown dataset {name!r}; `lmforge models ls` lists the registry, "
                           f"`lmforge data prepare` makes one")  # fmt: skip
    m = registry.get(name)
    if m.kind != "dataset":
        raise LmforgeError(
            f"{name!r} is a {m.kind} artifact, not a dataset; make one with `lmforge data prepare`"
        )
    folder = registry.artifact_dir(name)
    return [t for shard in sorted(folder.glob(f"{split}-*.parquet"))
            for t in pq.read_table(shard).column("text").to_pylist()]  # fmt: skip
