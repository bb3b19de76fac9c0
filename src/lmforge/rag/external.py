"""An external vector store for knowledge bases that outgrow one machine: Qdrant.

qdrant-client has one API for its embedded local mode (`QdrantClient(path=...)`) and for a
Qdrant server or cluster (`QdrantClient(url=...)`), so the code tested here against local mode is
the code that talks to a cluster. SQLite stays the truth (documents, chunks, versions); the
collection is brought in line with it after each change (`sync`: upsert what is missing, delete
what is gone), so a crash between the two can only leave work for the next sync, never a
wrong answer: results whose chunk no longer exists in SQLite are dropped by the retriever.

Store spec (KBConfig.store): "qdrant:local" (a folder inside the KB) or "qdrant:http://host:6333".
Access control is a payload filter inside the query: each point carries its document's groups
(or "*" for public documents) and a restricted caller's query matches only its groups and "*".
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lmforge.errors import LmforgeError

PUBLIC = "*"


class QdrantDense:
    def __init__(self, spec: str, folder: Path, collection: str, dim: int) -> None:
        try:
            from qdrant_client import QdrantClient, models
        except ImportError as e:
            raise LmforgeError("the qdrant store needs qdrant-client: pip install qdrant-client") from e
        target = spec.removeprefix("qdrant:")
        if target == "local":
            self.client = QdrantClient(path=str(folder / "qdrant"))
        elif target.startswith(("http://", "https://")):
            self.client = QdrantClient(url=target, api_key=os.environ.get("QDRANT_API_KEY"), timeout=30)
        else:
            raise LmforgeError(f"store {spec!r}: use qdrant:local or qdrant:http://host:6333")
        self.models = models
        self.collection = collection
        if not self.client.collection_exists(collection):
            self.client.create_collection(
                collection, vectors_config=models.VectorParams(size=dim, distance=models.Distance.DOT)
            )
            if target != "local":  # local mode ignores payload indexes (and warns)
                self.client.create_payload_index(collection, "groups", models.PayloadSchemaType.KEYWORD)

    def _ids(self) -> set[int]:
        ids: set[int] = set()
        offset = None
        while True:
            points, offset = self.client.scroll(self.collection, limit=10_000, offset=offset, with_payload=False,
                                                with_vectors=False)  # fmt: skip
            ids.update(int(p.id) for p in points)
            if offset is None:
                return ids

    def sync(self, rows_for: callable, all_ids: set[int], everything: bool = False) -> tuple[int, int]:  # type: ignore[valid-type]
        """Upsert chunks missing from the collection (every chunk with `everything`: their vectors changed in
        place, `kb reindex`), delete the ones gone; returns (upserted, removed)."""
        have = self._ids()
        gone = sorted(have - all_ids)
        if gone:
            self.client.delete(self.collection, points_selector=self.models.PointIdsList(points=gone))
        missing = sorted(all_ids if everything else all_ids - have)
        for start in range(0, len(missing), 1000):
            batch = rows_for(missing[start : start + 1000])  # [(id, vector bytes, groups)]
            self.client.upsert(self.collection, self.models.Batch(
                ids=[r[0] for r in batch],
                vectors=[np.frombuffer(r[1], dtype=np.float32).tolist() for r in batch],
                payloads=[{"groups": list(r[2]) or [PUBLIC]} for r in batch],
            ))  # fmt: skip
        return len(missing), len(gone)

    def search(self, q: np.ndarray, k: int, caller: frozenset[str] | None) -> list[tuple[int, float]]:
        m = self.models
        flt = None
        if caller is not None:
            flt = m.Filter(
                must=[m.FieldCondition(key="groups", match=m.MatchAny(any=[*sorted(caller), PUBLIC]))]
            )
        res = self.client.query_points(self.collection, query=q.tolist(), limit=k, query_filter=flt)
        return [(int(p.id), float(p.score)) for p in res.points]

    def close(self) -> None:
        self.client.close()
