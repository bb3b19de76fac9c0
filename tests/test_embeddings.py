"""Embedding models through the same Backend protocol (tiny BERT built from a config)."""

import math

import pytest

from lmforge.errors import LmforgeError
from lmforge.home import register_local
from lmforge.infer.loader import load_backend
from lmforge.infer.sampling import SamplingParams


def test_embedding_model_registers_and_embeds(registry, tiny_bert_dir):
    m = register_local(registry, tiny_bert_dir, "tiny-embed")
    assert m.kind == "embedding"
    backend = load_backend(registry, "tiny-embed")
    texts = ["The fox counts boats.", "The fox counts boats.", "今天天气很好"]
    vecs = backend.embed(texts)
    assert len(vecs) == 3 and all(len(v) == 32 for v in vecs)
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in vecs)
    assert vecs[0] == pytest.approx(vecs[1], abs=1e-6)  # deterministic, padding does not leak in
    assert backend.embed(["今天天气很好"])[0] == pytest.approx(vecs[2], abs=1e-5)
    with pytest.raises(LmforgeError, match="embedding model"):
        list(backend.generate([1, 2, 3], SamplingParams()))
