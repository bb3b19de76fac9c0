"""Knowledge bases on disk and the ingestion pipeline.

A knowledge base is a registry artifact like any model (home.py): `LMFORGE_HOME/models/<name>/`
holds its manifest (kind 'kb', format 'lmforge-kb', parent = the embedder, config = the KBConfig,
metrics = its evaluations) beside its store, so `lmforge models ls/show` list it with its lineage.
`KnowledgeBases(registry)` holds every KB of a registry; KBs that older versions kept under
`LMFORGE_HOME/kb/<name>/` are moved into the registry (one rename each) the first time a newer
version opens that home. `KnowledgeBase.add(paths)` runs
load → chunk → embed → store in batches of `batch_docs` documents. Each batch is one SQLite
transaction and one KB version: killing the process mid-batch leaves the KB exactly as the last
committed batch left it, and running the same command again skips what is already in (the
content hash decides skip / replace). One writer at a time per KB (an flock on `.lock`).
"""

from __future__ import annotations

import fcntl
import glob
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lmforge.errors import LmforgeError, NotFoundError
from lmforge.home import MANIFEST, Manifest, Registry, check_name, file_sha256, tree_size
from lmforge.hub import DEFAULT_EMBEDDER
from lmforge.rag.chunking import ChunkConfig, chunk_blocks
from lmforge.rag.embed import Embedder, load_embedder
from lmforge.rag.lexical import Analyzer
from lmforge.rag.loaders import SUPPORTED, LoaderError, load
from lmforge.rag.store import DocRow, Store, require_dim

EMBED_BATCH = 64
CONTEXTS = ("title", "headings", "none")
LEGACY_CONTEXT = "headings"
"""What a KB built before contextual headers embedded with each chunk (its store has no 'context' meta)."""
KIND, FORMAT = "kb", "lmforge-kb"
"""How a knowledge base is marked in the registry."""


@dataclass(frozen=True)
class KBConfig:
    embedder: str = DEFAULT_EMBEDDER
    """Embedding model: 'multilingual-e5-small', a registered embedding model, or openai:<model>@<url>."""
    chunk_size: int = ChunkConfig.size
    """Estimated tokens per chunk."""
    chunk_overlap: int = ChunkConfig.overlap
    """Tokens repeated at the start of the next chunk."""
    shard_size: int = 65536
    """Chunks per shard; a query fans out over shards."""
    batch_docs: int = 32
    """Documents per committed batch (one KB version each)."""
    max_file_mb: int = 512
    """Larger files are refused."""
    store: str = "embedded"
    """Vector store: 'embedded' (numpy shards, no server) or 'qdrant:local' / 'qdrant:http://host:6333'."""
    redact_pii: bool = False
    """Personal data (ID numbers, phones, emails, bank cards, IPs) is replaced by tags before indexing."""
    context: str = "title"
    """Contextual chunk header embedded and indexed with each chunk: 'title' (document title + heading path),
    'headings' (heading path only: KBs built before contextual headers) or 'none'. Fixed when the first
    document goes in; `lmforge kb reindex NAME --context C` changes it."""

    def __post_init__(self) -> None:
        if self.context not in CONTEXTS:
            raise LmforgeError(f"unknown chunk context {self.context!r}: use {', '.join(CONTEXTS)}")
        if self.store != "embedded" and not self.store.startswith("qdrant:"):
            raise LmforgeError(
                f"unknown store {self.store!r}: use embedded, qdrant:local or qdrant:http://host:6333"
            )


@dataclass
class IngestProgress:
    files_done: int
    files_total: int
    chunks: int
    chunks_per_s: float
    eta_s: float | None
    current: str


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    """(name, the document already holding the same bytes): skipped, not an error (a re-synced folder)."""
    chunks: int = 0
    pages: int = 0
    seconds: float = 0.0
    version: int = 0
    redacted: int = 0
    """Personal-data spans replaced before indexing (KBConfig.redact_pii or the server's safety.yaml)."""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["failed"] = [{"document": n, "error": e} for n, e in self.failed]
        d["duplicates"] = [{"document": n, "same_as": t} for n, t in self.duplicates]
        return d


_BAD_NAME = re.compile(r"[\x00-\x1f\\]")


def check_doc_name(name: str) -> str:
    """A document name is a relative POSIX path without '..', drive letters or control characters."""
    parts = name.split("/")
    if (
        not name
        or len(name) > 512
        or name.startswith("/")
        or _BAD_NAME.search(name)
        or re.match(r"^[A-Za-z]:", name)
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise LmforgeError(
            f"invalid document name {name!r}: no '..', absolute paths, backslashes or control characters"
        )
    return name


def expand(paths: Iterable[str | Path]) -> list[tuple[Path, str]]:
    """(file, document name) for files, folders (recursive; hidden and unsupported files skipped)
    and glob patterns. Names are relative to the folder given, or the bare file name."""
    out: list[tuple[Path, str]] = []
    for raw in paths:
        raw = str(raw)
        matches = (
            [Path(p) for p in sorted(glob.glob(raw, recursive=True))] if glob.has_magic(raw) else [Path(raw)]
        )
        if not matches:
            raise LmforgeError(f"{raw}: no file matches")
        for p in matches:
            if p.is_dir():
                for f in sorted(p.rglob("*")):
                    rel = f.relative_to(p)
                    if (
                        f.is_file()
                        and f.suffix.lower() in SUPPORTED
                        and not any(s.startswith(".") for s in rel.parts)
                    ):
                        out.append((f, f"{p.name}/{rel.as_posix()}" if p.name else rel.as_posix()))
            elif p.is_file():
                out.append((p, p.name))
            else:
                raise LmforgeError(f"{p}: no such file or folder")
    return out


def embed_text(title: str, heading: tuple[str, ...], text: str, context: str = "title") -> str:
    """What the embedder and BM25 see: the chunk with its contextual header in front — the document title
    and heading path for 'title', the heading path alone for 'headings', nothing for 'none'."""
    if context == "none":
        return text
    path = [h for h in heading if h]
    if context == "title" and title and (not path or path[0] != title):
        path.insert(0, title)
    elif context == "headings" and path == [title]:
        path = []
    return f"{' > '.join(path)}\n{text}" if path else text


@dataclass
class ReindexReport:
    chunks: int
    seconds: float
    version: int
    context: str
    previous: str


LEXICAL_FEATURES = {
    "pinyin": "the pinyin of Chinese titles and headings was indexed (English questions naming 杜甫 as 'Du Fu' find it)",
    "han_pieces": "Chinese words that jieba joins by guess were also indexed by their two-character pieces (瓜洲 is "
    "found in 夜雪瓜洲渡)",
}
"""Features of the BM25 index of Chinese text (store meta KEY = "1") that KBs built before them lack, and what each
brings. A KB is built with all of them; an older one says which it lacks (`upgrade_hint`) and `kb reindex` adds
them; until then its queries and the documents added to it follow the index it has, so a KB never mixes the two."""


class KnowledgeBase:
    def __init__(
        self, name: str, folder: Path, cfg: KBConfig, embedders: EmbedderCache,
        on_change: Callable[[], None] | None = None,
    ) -> None:  # fmt: skip
        """`on_change` runs after each add/remove, under the writer lock (the registry's size)."""
        self.name, self.folder, self.cfg = name, folder, cfg
        self.store = Store(folder, shard_size=cfg.shard_size, external=cfg.store)
        self._embedders = embedders
        self._on_change = on_change
        self._write_lock = threading.Lock()
        self.redact: Callable[[str], tuple[str, int]] | None = None
        """Set by the server when its safety.yaml applies PII redaction at ingestion: text -> (redacted, spans)."""
        self._langs: tuple[int, set[str]] | None = None

    def languages(self) -> set[str]:
        """The languages its chunks are written in (zh, en), from an even sample of ~300 chunks; per version."""
        from lmforge.rag.rewrite import kb_languages

        v = self.version
        if self._langs is None or self._langs[0] != v:
            n = self.store.read("SELECT count(*) FROM chunks")[0][0]
            rows = self.store.read("SELECT text FROM chunks WHERE id % ? = 0 LIMIT 300", (max(1, n // 300),))
            self._langs = (v, kb_languages([r[0][:300] for r in rows]))
        return self._langs[1]

    @property
    def context(self) -> str:
        """The contextual chunk header this KB's index was built with (CONTEXTS)."""
        ctx = self.store.meta("context")
        if ctx:
            return ctx
        return self.cfg.context if self.store.meta("embedder") is None else LEGACY_CONTEXT

    def upgrade_hint(self) -> str | None:
        """What to run when the index predates the current default chunk context; None when it is current."""
        if self.store.meta("embedder") is None:
            return None
        how = f"`lmforge kb reindex {self.name}` upgrades it in place, no source files needed"
        if not self.store.meta("context"):
            return (
                f"knowledge base {self.name!r} was built before contextual chunk headers (document title + heading "
                f"path with each chunk); {how}"
            )
        missing = [what for feature, what in LEXICAL_FEATURES.items() if not self._has(feature)]
        if missing and "zh" in self.languages():
            return f"knowledge base {self.name!r} was built before {missing[0]}; {how}"
        return None

    def _terms(self, title: str, heading: str, indexed: str, context: str, pinyin: bool, pieces: bool) -> str:
        """BM25 terms of a chunk: its indexed text (with `pieces`, guessed Chinese words also by their pieces:
        Analyzer.terms), the title too where the header left it out ('headings': how KBs before contextual
        headers indexed it), and with `pinyin` the pinyin of its title and heading path (a question in Latin
        letters names 杜甫 'Du Fu')."""
        terms = self.analyzer.terms(
            f"{title}\n{indexed}" if context == "headings" else indexed, pieces=pieces
        )
        if pinyin:
            terms += self.analyzer.pinyin_terms(f"{title}\n{heading}")
        return " ".join(terms)

    def term_weights(self, terms: Iterable[str]) -> dict[str, float]:
        """Each term's inverse document frequency over this KB's chunks, ln(1 + N / (1 + df)): how much finding it
        says (a rare name weighs more than a word every chunk holds)."""
        shards = self.store.shards()
        n = sum(s.lexical.n for s in shards)
        return {t: math.log(1 + n / (1 + sum(s.lexical.doc_freq(t) for s in shards))) for t in set(terms)}

    def _has(self, feature: str) -> bool:
        """Whether this KB's index has one of the LEXICAL_FEATURES (an empty KB will be built with all of them)."""
        return self.store.meta(feature) == "1" or self.store.meta("embedder") is None

    @property
    def pinyin(self) -> bool:
        """Whether this KB's index holds the pinyin of titles and headings (LEXICAL_FEATURES)."""
        return self._has("pinyin")

    @property
    def han_pieces(self) -> bool:
        """Whether this KB's index holds the two-character pieces of Chinese words jieba joined by guess
        (LEXICAL_FEATURES)."""
        return self._has("han_pieces")

    def reindex(
        self, context: str | None = None, progress: Callable[[int, int], None] | None = None, batch: int = 256
    ) -> ReindexReport:
        """Embed and index every chunk again with `context` (default: the KBConfig's) from the text the KB
        already holds, in one transaction: readers see the old index until it commits, and a killed run leaves
        the KB as it was. `progress(done, total)` after each batch of chunks."""
        context = context or self.cfg.context
        if context not in CONTEXTS:
            raise LmforgeError(f"unknown chunk context {context!r}: use {', '.join(CONTEXTS)}")
        previous = self.context
        embedder = self.embedder
        t0 = time.monotonic()
        with self._writer(), self.store.connect() as db:
            require_dim(self.store, embedder.dim, embedder.identity)
            version = self.store.begin(db)
            try:
                total = db.execute("SELECT count(*) FROM chunks").fetchone()[0]
                done, last = 0, -1
                while True:
                    rows = db.execute(
                        "SELECT c.id, d.title, c.heading, c.text FROM chunks c JOIN docs d ON d.id = c.doc_id "
                        "WHERE c.id > ? ORDER BY c.id LIMIT ?",
                        (last, batch),
                    ).fetchall()
                    if not rows:
                        break
                    texts = [embed_text(t, tuple(h.split(" > ")), x, context) for _, t, h, x in rows]
                    vectors = embedder.passages(texts)
                    db.executemany(
                        "UPDATE chunks SET vec=?, terms=? WHERE id=?",
                        [(v.astype(np.float32).tobytes(), self._terms(r[1], r[2], t, context, True, True), r[0])
                         for r, t, v in zip(rows, texts, vectors, strict=True)],
                    )  # fmt: skip
                    done += len(rows)
                    last = rows[-1][0]
                    if progress:
                        progress(done, total)
                db.execute("UPDATE shards SET version=?", (version,))
                self.store.set_meta(db, "context", context)
                for feature in LEXICAL_FEATURES:
                    self.store.set_meta(db, feature, "1")
                self.store.set_meta(db, "external_reupload", "1")  # an external index re-uploads every vector
                self.store.commit(db, version)
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            if self._on_change:
                self._on_change()
        self.store.shards()  # rebuild the indexes now, so the first query is fast
        return ReindexReport(done, time.monotonic() - t0, version, context, previous)

    @property
    def embedder(self) -> Embedder:
        return self._embedders.get(self.cfg.embedder)

    @property
    def analyzer(self) -> Analyzer:
        return self._embedders.analyzer()

    @property
    def version(self) -> int:
        return self.store.version

    def info(self, caller: frozenset[str] | None = None) -> dict:
        docs = self.store.documents(caller)
        return {"name": self.name, "embedder": self.cfg.embedder, "version": self.version,
                "documents": len(docs), "chunks": sum(d.chunks for d in docs), "context": self.context,
                "upgrade": self.upgrade_hint(), "config": asdict(self.cfg)}  # fmt: skip

    # -- writing -------------------------------------------------------------------------------
    def add(
        self,
        paths: Iterable[str | Path],
        *,
        groups: Iterable[str] = (),
        names: list[str] | None = None,
        progress: Callable[[IngestProgress], None] | None = None,
    ) -> IngestReport:
        files = (
            expand(paths)
            if names is None
            else [(Path(p), check_doc_name(n)) for p, n in zip(paths, names, strict=True)]
        )
        groups_t = tuple(sorted({g.strip() for g in groups if g.strip()}))
        report = IngestReport()
        t0 = time.monotonic()
        embedder = self.embedder
        with self._writer():
            require_dim(self.store, embedder.dim, embedder.identity)
            for start in range(0, len(files), self.cfg.batch_docs):
                batch = files[start : start + self.cfg.batch_docs]
                self._batch(batch, groups_t, embedder, report, t0, start, len(files), progress)
            if self._on_change and (report.added or report.replaced):
                self._on_change()
        report.seconds = time.monotonic() - t0
        report.version = self.version
        self.store.shards()  # build the indexes now, so the first query is fast
        return report

    def _batch(self, batch, groups, embedder, report, t0, done_before, total, progress) -> None:  # noqa: ANN001
        with self.store.connect() as db:
            version = self.store.begin(db)
            try:
                if self.store.meta("embedder") is None:
                    self.store.set_meta(db, "embedder", embedder.identity)
                    self.store.set_meta(db, "dim", str(embedder.dim))
                    self.store.set_meta(db, "context", self.cfg.context)
                    for feature in LEXICAL_FEATURES:
                        self.store.set_meta(db, feature, "1")
                changed = False
                for i, (path, name) in enumerate(batch):
                    if progress:
                        el = time.monotonic() - t0
                        rate = report.chunks / el if el > 0 else 0.0
                        left = (
                            (total - done_before - i) * (el / max(1, done_before + i))
                            if done_before + i
                            else None
                        )
                        progress(IngestProgress(done_before + i, total, report.chunks, rate, left, name))
                    changed |= self._one(db, path, name, groups, embedder, version, report)
                if changed:
                    self.store.commit(db, version)
                else:
                    db.execute("ROLLBACK")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        if progress:
            el = time.monotonic() - t0
            progress(
                IngestProgress(
                    done_before + len(batch), total, report.chunks, report.chunks / max(el, 1e-9), 0.0, ""
                )
            )

    def _one(
        self, db, path: Path, name: str, groups, embedder: Embedder, version: int, report: IngestReport
    ) -> bool:  # noqa: ANN001
        try:
            size = path.stat().st_size
            if size > self.cfg.max_file_mb * 2**20:
                raise LoaderError(
                    f"{name}: {size / 2**20:.0f} MB is over the {self.cfg.max_file_mb} MB limit"
                )
            sha = file_sha256(path)
        except OSError as e:
            report.failed.append((name, f"cannot read: {e.strerror}"))
            return False
        existing = self.store.document(name)
        if existing and existing.sha256 == sha and existing.groups == groups:
            report.unchanged.append(name)
            return False
        twin = db.execute("SELECT name FROM docs WHERE sha256=? AND name<>?", (sha, name)).fetchone()
        if twin and not existing:
            report.duplicates.append((name, twin[0]))
            return False
        db.execute("SAVEPOINT doc")
        try:
            doc = load(path)
            redact = self.redact or (_default_redact if self.cfg.redact_pii else None)
            if redact is not None:
                blocks = list(doc.blocks)  # may be a generator
                for b in blocks:
                    b.text, n_red = redact(b.text)
                    report.redacted += n_red
                doc.blocks = blocks
            context, pinyin, pieces = self.context, self.pinyin, self.han_pieces
            if existing:
                self.store.delete_doc(db, existing.id, version)
            doc_id = self.store.insert_doc(db, name=name, sha256=sha, title=doc.title, groups=groups, pages=doc.pages,
                                           nbytes=size, encoding=doc.encoding, version=version)  # fmt: skip
            n = 0
            for chunks in _batched(
                chunk_blocks(doc.blocks, ChunkConfig(self.cfg.chunk_size, self.cfg.chunk_overlap)),
                EMBED_BATCH,
            ):
                texts = [embed_text(doc.title, c.heading, c.text, context) for c in chunks]
                vectors = embedder.passages(texts)
                headings = [" > ".join(h for h in c.heading if h) for c in chunks]
                rows = [(c.ord, c.text, c.page, h, c.kind, c.tokens, self._terms(doc.title, h, t, context, pinyin, pieces))
                        for c, h, t in zip(chunks, headings, texts, strict=True)]  # fmt: skip
                self.store.insert_chunks(db, doc_id, version, rows, vectors)
                n += len(chunks)
            if n == 0:
                raise LoaderError(f"{name}: no text found")
        except LoaderError as e:
            db.execute("ROLLBACK TO doc")
            db.execute("RELEASE doc")
            report.failed.append((name, str(e).removeprefix(f"{path.name}: ")))
            return False
        db.execute("RELEASE doc")
        (report.replaced if existing else report.added).append(name)
        report.chunks += n
        report.pages += doc.pages or 1
        return True

    def remove(self, name: str) -> int:
        """Remove a document from the KB and every index; returns the new version."""
        with self._writer(), self.store.connect() as db:
            doc = self.store.document(name)
            if doc is None:
                raise NotFoundError(f"no document {name!r} in knowledge base {self.name!r}")
            version = self.store.begin(db)
            try:
                self.store.delete_doc(db, doc.id, version)
                self.store.commit(db, version)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            if self._on_change:
                self._on_change()
        self.store.shards()
        return version

    def documents(self, caller: frozenset[str] | None = None) -> list[DocRow]:
        return self.store.documents(caller)

    def _writer(self):  # noqa: ANN202 - context manager
        return _Writer(self.folder / ".lock", self._write_lock)

    def close(self) -> None:
        self.store.close()


class _Writer:
    """Thread lock + flock: one writer per KB across threads and processes."""

    def __init__(self, path: Path, lock: threading.Lock) -> None:
        self.path, self.lock, self.fh = path, lock, None

    def __enter__(self) -> None:
        self.lock.acquire()
        self.fh = self.path.open("a")
        fcntl.flock(self.fh, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        assert self.fh is not None
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()
        self.lock.release()


def _default_redact(text: str) -> tuple[str, int]:
    from lmforge.safety.pii import PiiScanner

    return PiiScanner().redact_text(text)


def _batched(items: Iterator, n: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


class EmbedderCache:
    """Embedders and the analyzer are loaded once per process and shared by every KB."""

    def __init__(self, loader: Callable[[str], Embedder] | None = None) -> None:
        self._loader = loader or load_embedder
        self._embedders: dict[str, Embedder] = {}
        self._analyzer: Analyzer | None = None
        self._lock = threading.Lock()

    def get(self, name: str) -> Embedder:
        with self._lock:
            if name not in self._embedders:
                self._embedders[name] = self._loader(name)
            return self._embedders[name]

    def analyzer(self) -> Analyzer:
        with self._lock:
            if self._analyzer is None:
                self._analyzer = Analyzer()
            return self._analyzer

    def close(self) -> None:
        for e in self._embedders.values():
            e.close()
        self._embedders.clear()


class KnowledgeBases:
    """Every knowledge base of a registry (default: LMFORGE_HOME's).

    `where` may also be a folder: a collection of KBs of its own (tests, benchmarks); `root` is the
    folder holding the KB folders either way, so `KnowledgeBases(kbs.root)` opens the same KBs."""

    def __init__(self, where: Registry | Path | None = None, embedders: EmbedderCache | None = None) -> None:
        if isinstance(where, Registry):
            self.registry = where
            self.embedders = embedders or EmbedderCache(lambda n: load_embedder(n, where))
        else:
            self.registry = Registry(models_dir=where) if where is not None else Registry()
            self.embedders = embedders or EmbedderCache()
        self.root = self.registry.models_dir
        self._open: dict[str, KnowledgeBase] = {}
        self._lock = threading.Lock()
        self.redact: Callable[[str], tuple[str, int]] | None = None
        """PII redaction for every ingestion through this collection (the server's safety.yaml), on top of
        each KB's own redact_pii."""
        self._adopt_legacy()

    def _adopt_legacy(self) -> None:
        """Register the KBs older versions kept in LMFORGE_HOME/kb/<name>/ (hand-written manifest).

        A home's registry moves each into models/ (manifest rewritten, then one rename); a collection
        opened on that very folder (`KnowledgeBases(home / "kb")`) upgrades the manifests in place.
        Any other folder of its own is left alone."""
        old_root = self.registry.root / "kb"
        in_place = old_root == self.root
        if not old_root.is_dir() or not (
            in_place or self.registry.models_dir == self.registry.root / "models"
        ):
            return
        for d in sorted(old_root.iterdir()):
            try:
                data = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
                config = data["config"]
            except (OSError, json.JSONDecodeError, KeyError, TypeError):
                continue  # not a knowledge base
            if "path" in data:  # a registry manifest already (written by a newer version)
                if in_place or data.get("kind") != KIND:
                    continue
                m = Manifest.from_dict({**data, "name": d.name})
            else:
                m = Manifest(name=d.name, kind=KIND, format=FORMAT, path="", parents=data.get("parents", []),
                             source=f"embedder:{data.get('embedder', '?')}", config=config,
                             metrics=data.get("metrics", {}), created=data.get("created", ""))  # fmt: skip
            if not in_place and self.registry.exists(d.name):
                continue  # the name is taken: open() explains
            try:
                self.registry.adopt(d, m)
            except (FileNotFoundError, LmforgeError):
                continue  # another process moved it first

    def names(self) -> list[str]:
        return [m.name for m in self.registry.list() if m.kind == KIND]

    def create(self, name: str, cfg: KBConfig | None = None) -> KnowledgeBase:
        check_name(name)
        cfg = cfg or KBConfig()
        if self.registry.exists(name):
            kind = self.registry.get(name).kind
            raise LmforgeError(
                f"knowledge base {name!r} already exists"
                if kind == KIND
                else f"{name!r} is already a registered {kind} model; pick another name for the knowledge base"
            )
        embedder = self.embedders.get(cfg.embedder)  # fail now if the embedder cannot load
        manifest = Manifest(name=name, kind=KIND, format=FORMAT, path="", parents=[cfg.embedder],
                            source=f"embedder:{embedder.identity}", config=asdict(cfg))  # fmt: skip
        self.registry.put(manifest, lambda stage: Store(stage).close())
        return self.open(name)

    def _manifest(self, name: str) -> Manifest:
        check_name(name)
        if not self.registry.exists(name):
            legacy = self.registry.root / "kb" / name
            if (legacy / MANIFEST).is_file():
                raise LmforgeError(
                    f"knowledge base {name!r} is still in {legacy}, where older versions kept them; "
                    f"move it to {self.root / name} (or remove the model of that name first)"
                )
            known = ", ".join(self.names()) or "none yet"
            raise NotFoundError(
                f"unknown knowledge base {name!r} (have: {known}); create it with `lmforge kb create`"
            )
        m = self.registry.get(name)
        if m.kind != KIND:
            raise NotFoundError(f"{name!r} is a {m.kind} model, not a knowledge base")
        return m

    def open(self, name: str) -> KnowledgeBase:
        with self._lock:
            if name in self._open:
                self._open[name].redact = self.redact
                return self._open[name]
            m = self._manifest(name)
            folder = self.registry.artifact_dir(name)
            kb = KnowledgeBase(name, folder, KBConfig(**m.config), self.embedders,
                               on_change=lambda: self.registry.update(name, size_bytes=tree_size(folder)))  # fmt: skip
            kb.redact = self.redact
            self._open[name] = kb
            return kb

    def manifest(self, name: str) -> dict:
        """The registry manifest of KB `name`, as a dict."""
        return asdict(self._manifest(name))

    def update_metrics(self, name: str, metrics: dict) -> None:
        """Merge `metrics` into the manifest (atomic rewrite, under the KB's writer lock)."""
        with self.open(name)._writer():
            self.registry.update(name, metrics=metrics)

    def drop(self, name: str) -> None:
        """Delete the KB: its registry entry, store and indexes."""
        kb = self.open(name)
        with kb._writer():
            with self._lock:
                self._open.pop(name, None)
            kb.close()
            self.registry.remove(name)

    def close(self) -> None:
        for kb in self._open.values():
            kb.close()
        self._open.clear()
        self.embedders.close()
