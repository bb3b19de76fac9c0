"""The embedded knowledge-base store: SQLite is the truth, shards are derived indexes.

Layout of a KB folder:
    kb.sqlite                 documents, chunks (text, metadata, lexical terms, vector), KB version
    index/s{shard}-v{ver}/    per shard: vectors.npy (n, dim) float32, ids.npy, docs.npy, bm25/, and
                              ann.faiss (HNSW graph) when the shard has >= AnnConfig.min_rows chunks
    manifest.json             registry manifest (kind 'kb', parent = the embedder)

Why this shape (measured, benchmarks/rag.py): exact numpy search over 100k × 384 float32 takes
~8 ms on 2 cores, faster than faiss flat, sqlite-vec, lancedb without an index and qdrant-client's
local mode, and it needs no server. SQLite gives crash safety for free: an ingest batch is one
transaction, so `kill -9` leaves the KB exactly as it was before that batch; indexes are rebuilt
from SQLite when their version is stale, so they can never disagree with it for long.

Approximate search (rag.ann, measured in benchmarks/rag_ann.py): a shard of at least
`AnnConfig.min_rows` chunks also gets an HNSW graph (faiss), and its dense search goes through the
graph (recall@10 >= 0.95 against the exact scan at 1M chunks); the graph holds the vectors, so
vectors.npy is then memory-mapped and read only by the exact fallback of a masked search. Smaller
shards, and shard folders written before ann.faiss existed, are scanned exactly. A change to a
shard rebuilds its graph with the rest of its indexes.

Sharding: chunks are assigned to shards of `shard_size`; a change rebuilds only the shards it
touched; a query fans out over shards and merges the top-k. Access control: each chunk row knows
its document; a caller's visible-document mask is applied to the scores before the top-k is taken,
so hidden documents never reach ranking, counts or the cache.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmforge.errors import LmforgeError
from lmforge.rag import ann
from lmforge.rag.ann import AnnConfig, AnnIndex
from lmforge.rag.lexical import LexicalIndex

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, sha256 TEXT NOT NULL, title TEXT NOT NULL,
  groups_ TEXT NOT NULL, pages INTEGER, chunks INTEGER NOT NULL, bytes INTEGER NOT NULL,
  encoding TEXT, added REAL NOT NULL, version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
  id INTEGER PRIMARY KEY, doc_id INTEGER NOT NULL REFERENCES docs(id), ord INTEGER NOT NULL,
  text TEXT NOT NULL, page INTEGER, heading TEXT NOT NULL, kind TEXT NOT NULL, tokens INTEGER NOT NULL,
  terms TEXT NOT NULL, vec BLOB NOT NULL, shard INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE INDEX IF NOT EXISTS chunks_shard ON chunks(shard);
CREATE TABLE IF NOT EXISTS shards (id INTEGER PRIMARY KEY, version INTEGER NOT NULL, n INTEGER NOT NULL);
"""


@dataclass
class DocRow:
    id: int
    name: str
    sha256: str
    title: str
    groups: tuple[str, ...]
    pages: int | None
    chunks: int
    bytes: int
    encoding: str | None
    added: float
    version: int

    def public(self) -> dict:
        return {"name": self.name, "title": self.title, "groups": list(self.groups), "pages": self.pages,
                "chunks": self.chunks, "bytes": self.bytes, "encoding": self.encoding, "sha256": self.sha256,
                "added": self.added, "version": self.version}  # fmt: skip


@dataclass
class ChunkRow:
    id: int
    doc: str
    title: str
    ord: int
    text: str
    page: int | None
    heading: str
    kind: str


def visible(doc_groups: tuple[str, ...], caller: frozenset[str] | None) -> bool:
    """None = unrestricted caller (local use, admin). A document without groups is public."""
    return caller is None or not doc_groups or bool(caller.intersection(doc_groups))


class Shard:
    """One shard's derived indexes, held in memory."""

    def __init__(self, sid: int, version: int, ids: np.ndarray, docs: np.ndarray, vectors: np.ndarray,
                 lexical: LexicalIndex, ann_index: AnnIndex | None = None) -> None:  # fmt: skip
        self.id, self.version = sid, version
        self.ids = ids  # (n,) int64 chunk ids
        self.docs = docs  # (n,) int64 doc ids
        self.vectors = vectors  # (n, dim) float32, L2-normalised (memory-mapped when ann is set)
        self.lexical = lexical
        self.ann = ann_index
        """HNSW graph over `vectors`; None = exact search."""

    def dense(self, q: np.ndarray, k: int, mask: np.ndarray | None) -> list[tuple[int, float]]:
        """(chunk id, cosine) best first, at most k, none that `mask` hides."""
        if self.ann is not None:
            found = self.ann.search(self.vectors, q, k, mask)
        else:
            found = ann.exact(self.vectors, q, k, mask)
        return [(int(self.ids[row]), score) for row, score in found]

    def lexical_search(self, terms: list[str], k: int, mask: np.ndarray | None) -> list[tuple[int, float]]:
        weights = None if mask is None else mask.astype(np.float32)
        return [(int(self.ids[row]), s) for row, s in self.lexical.search(terms, k, weights)]


class Store:
    """One KB's SQLite database and shard indexes. Not thread-safe for writers: one ingest at a
    time (the KB lock in `pipeline` guarantees it); readers may run concurrently."""

    def __init__(self, folder: Path, *, shard_size: int = 65536, external: str = "embedded",
                 ann_cfg: AnnConfig | None = None) -> None:  # fmt: skip
        self.folder = folder
        self.shard_size = shard_size
        self.ann_cfg = ann_cfg or AnnConfig()  # when a shard gets an HNSW graph, and how it is searched
        self.external_spec = external  # "embedded", or an external vector store (rag.external)
        self._external = None
        self.index_dir = folder / "index"
        self.index_dir.mkdir(parents=True, exist_ok=True)
        self._db_path = folder / "kb.sqlite"
        with self.connect() as db:
            db.executescript(SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('uid', ?)", (uuid.uuid4().hex,))
        self._reader = sqlite3.connect(
            self._db_path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self._read_lock = threading.Lock()
        self._index_lock = threading.Lock()
        self.uid = self.meta("uid")  # distinguishes a KB from a dropped one of the same name
        self._shards: dict[int, Shard] = {}
        self._masks: dict[tuple[int, int, frozenset[str]], np.ndarray] = {}

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self._db_path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield db
        finally:
            db.close()

    def read(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        """Run a SELECT on the shared reader connection (sees every committed write)."""
        with self._read_lock:
            return self._reader.execute(sql, args).fetchall()

    def close(self) -> None:
        self._reader.close()
        if self._external is not None:
            self._external.close()
            self._external = None

    # -- meta ----------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        rows = self.read("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    @property
    def version(self) -> int:
        return int(self.meta("version") or 0)

    # -- documents -----------------------------------------------------------------------------
    def documents(self, caller: frozenset[str] | None = None) -> list[DocRow]:
        rows = self.read("SELECT * FROM docs ORDER BY name")
        docs = [_doc(r) for r in rows]
        return [d for d in docs if visible(d.groups, caller)]

    def document(self, name: str) -> DocRow | None:
        rows = self.read("SELECT * FROM docs WHERE name=?", (name,))
        return _doc(rows[0]) if rows else None

    def chunks(self, ids: list[int]) -> dict[int, ChunkRow]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.read(
            f"SELECT c.id, d.name, d.title, c.ord, c.text, c.page, c.heading, c.kind "
            f"FROM chunks c JOIN docs d ON d.id = c.doc_id WHERE c.id IN ({marks})",
            ids,
        )
        return {r[0]: ChunkRow(*r) for r in rows}

    def doc_chunks(self, name: str) -> list[ChunkRow]:
        rows = self.read(
            "SELECT c.id, d.name, d.title, c.ord, c.text, c.page, c.heading, c.kind FROM chunks c "
            "JOIN docs d ON d.id = c.doc_id WHERE d.name=? ORDER BY c.ord",
            (name,),
        )
        return [ChunkRow(*r) for r in rows]

    # -- writing (inside one transaction opened by the caller) ---------------------------------
    def begin(self, db: sqlite3.Connection) -> int:
        """Start a write batch; returns the version this batch will commit as."""
        db.execute("BEGIN IMMEDIATE")
        return int((db.execute("SELECT value FROM meta WHERE key='version'").fetchone() or ["0"])[0]) + 1

    def delete_doc(self, db: sqlite3.Connection, doc_id: int, version: int) -> None:
        for sid, n in db.execute(
            "SELECT shard, count(*) FROM chunks WHERE doc_id=? GROUP BY shard", (doc_id,)
        ):
            db.execute("UPDATE shards SET version=?, n=n-? WHERE id=?", (version, n, sid))
        db.execute("DELETE FROM chunks WHERE doc_id=?", (doc_id,))
        db.execute("DELETE FROM docs WHERE id=?", (doc_id,))

    def insert_doc(self, db: sqlite3.Connection, *, name: str, sha256: str, title: str, groups: tuple[str, ...],
                   pages: int | None, nbytes: int, encoding: str | None, version: int) -> int:  # fmt: skip
        cur = db.execute(
            "INSERT INTO docs(name, sha256, title, groups_, pages, chunks, bytes, encoding, added, version) "
            "VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
            (name, sha256, title, ",".join(groups), pages, nbytes, encoding, time.time(), version),
        )
        return int(cur.lastrowid)

    def insert_chunks(self, db: sqlite3.Connection, doc_id: int, version: int,
                      rows: list[tuple[int, str, int | None, str, str, int, str]], vectors: np.ndarray) -> None:  # fmt: skip
        """rows: (ord, text, page, heading, kind, tokens, terms); vectors: (len(rows), dim)."""
        i = 0
        while i < len(rows):
            sid, n = self._open_shard(db, version)
            room = self.shard_size - n
            batch = rows[i : i + room]
            db.executemany(
                "INSERT INTO chunks(doc_id, ord, text, page, heading, kind, tokens, terms, vec, shard) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(doc_id, *r, vectors[i + j].astype(np.float32).tobytes(), sid) for j, r in enumerate(batch)],
            )
            db.execute("UPDATE shards SET n=n+?, version=? WHERE id=?", (len(batch), version, sid))
            i += len(batch)
        db.execute("UPDATE docs SET chunks=chunks+? WHERE id=?", (len(rows), doc_id))

    def _open_shard(self, db: sqlite3.Connection, version: int) -> tuple[int, int]:
        row = db.execute("SELECT id, n FROM shards ORDER BY id DESC LIMIT 1").fetchone()
        if row and row[1] < self.shard_size:
            return int(row[0]), int(row[1])
        sid = (row[0] + 1) if row else 0
        db.execute("INSERT INTO shards(id, version, n) VALUES (?, ?, 0)", (sid, version))
        return sid, 0

    def commit(self, db: sqlite3.Connection, version: int) -> None:
        self.set_meta(db, "version", str(version))
        db.execute("COMMIT")

    # -- derived indexes -----------------------------------------------------------------------
    def shards(self) -> list[Shard]:
        """Shards current with SQLite, rebuilding any that are stale (after a change or a crash)."""
        wanted = {int(s): int(v) for s, v in self.read("SELECT id, version FROM shards")}
        with self._index_lock:
            shards = self._refresh(wanted)
            if self.external_spec != "embedded":
                self._sync_external()
            return shards

    @property
    def external_index(self):  # noqa: ANN201 - rag.external.QdrantDense
        """The external dense index (None for the embedded store); `shards()` brings it in line
        with SQLite, so read it after that call."""
        return self._external

    def _sync_external(self) -> None:
        version = self.version
        if self._external is None:
            from lmforge.rag.external import QdrantDense

            self._external = QdrantDense(
                self.external_spec, self.folder, f"lmforge-{self.uid}", int(self.meta("dim") or 384)
            )
        if self.meta("external_synced") == str(version):
            return

        def rows_for(ids: list[int]) -> list[tuple[int, bytes, tuple[str, ...]]]:
            marks = ",".join("?" * len(ids))
            rows = self.read(
                f"SELECT c.id, c.vec, d.groups_ FROM chunks c JOIN docs d ON d.id = c.doc_id WHERE c.id IN ({marks})",
                ids,
            )
            return [(r[0], r[1], tuple(g for g in r[2].split(",") if g)) for r in rows]

        everything = self.meta("external_reupload") == "1"
        self._external.sync(rows_for, {int(r[0]) for r in self.read("SELECT id FROM chunks")}, everything)
        with self.connect() as db:
            self.set_meta(db, "external_synced", str(version))
            self.set_meta(db, "external_reupload", "0")

    def _refresh(self, wanted: dict[int, int]) -> list[Shard]:
        for sid in list(self._shards):
            if sid not in wanted:
                del self._shards[sid]
        for sid, ver in wanted.items():
            have = self._shards.get(sid)
            if have is None or have.version != ver:
                self._shards[sid] = self._load_or_build(sid, ver)
        return [self._shards[s] for s in sorted(self._shards)]

    def _load_or_build(self, sid: int, version: int) -> Shard:
        folder = self.index_dir / f"s{sid}-v{version}"
        if not (folder / "done").exists():
            self._build(sid, version, folder)
        ids = np.load(folder / "ids.npy")
        ann_index = None
        if (folder / ann.FILE).exists() and len(ids) >= self.ann_cfg.min_rows:
            ann_index = AnnIndex.load(folder / ann.FILE, self.ann_cfg)
        # with a graph (which holds its own copy) the vectors are only read by the exact fallback
        vectors = np.load(folder / "vectors.npy", mmap_mode="r" if ann_index is not None else None)
        shard = Shard(sid, version, ids, np.load(folder / "docs.npy"), np.asarray(vectors),
                      LexicalIndex.load(folder / "bm25", len(ids)), ann_index)  # fmt: skip
        shard.lexical.search(["warmup"], 1)  # compile the numba scorer now, not on a user's query
        for old in self.index_dir.glob(f"s{sid}-v*"):
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
        return shard

    def _build(self, sid: int, version: int, folder: Path) -> None:
        with self.connect() as db:
            rows = db.execute(
                "SELECT id, doc_id, vec, terms FROM chunks WHERE shard=? ORDER BY id", (sid,)
            ).fetchall()
        dim = int(self.meta("dim") or 0)
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        docs = np.array([r[1] for r in rows], dtype=np.int64)
        vectors = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        lexical = LexicalIndex.build([r[3].split(" ") if r[3] else [] for r in rows])
        tmp = self.index_dir / f".tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        np.save(tmp / "ids.npy", ids)
        np.save(tmp / "docs.npy", docs)
        np.save(tmp / "vectors.npy", vectors)
        lexical.save(tmp / "bm25")
        # an external store answers dense queries itself: no graph for it
        graph = self.external_spec == "embedded" and len(rows) >= self.ann_cfg.min_rows
        if graph:
            AnnIndex.build(vectors, self.ann_cfg).save(tmp / ann.FILE)
        (tmp / "done").write_text(json.dumps({"rows": len(rows), "version": version, "ann": graph}))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)

    def mask(self, shard: Shard, caller: frozenset[str] | None) -> np.ndarray | None:
        """Boolean row mask of the chunks `caller` may see in `shard` (None = all)."""
        if caller is None:
            return None
        # any change to the documents of a shard bumps its version, so (shard, version, caller)
        # identifies the mask without asking SQLite for the KB version
        key = (shard.id, shard.version, caller)
        mask = self._masks.get(key)
        if mask is None:
            allowed = np.array([d.id for d in self.documents(caller)], dtype=np.int64)
            mask = self._masks[key] = np.isin(shard.docs, allowed)
            if len(self._masks) > 64:
                self._masks.pop(next(iter(self._masks)), None)
        return mask


def _doc(r: tuple) -> DocRow:
    return DocRow(
        r[0], r[1], r[2], r[3], tuple(g for g in r[4].split(",") if g), r[5], r[6], r[7], r[8], r[9], r[10]
    )


def require_dim(store: Store, dim: int, identity: str) -> None:
    have = store.meta("embedder")
    if have is not None and have != identity:
        raise LmforgeError(
            f"this knowledge base was embedded with {have}; refusing to mix in vectors from {identity} "
            "(use the same --embed, or re-embed the KB with `lmforge kb reembed`)"
        )
