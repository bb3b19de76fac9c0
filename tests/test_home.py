"""Registry: round trips, atomic publication (including kill -9), names, lineage."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import pytest
from conftest import put_lineage_chain

from lmforge.errors import LmforgeError
from lmforge.home import Manifest, Registry


def _put(reg, name, parents=(), payload=b"weights"):
    m = Manifest(name=name, kind="base", format="gguf", path="m.gguf", parents=list(parents))
    return reg.put(m, lambda stage: (stage / "m.gguf").write_bytes(payload))


def test_put_get_list_remove_round_trip(registry):
    _put(registry, "alpha")
    m = registry.get("alpha")
    assert m.size_bytes == len(b"weights") and m.created and m.lmforge_version
    assert [x.name for x in registry.list()] == ["alpha"]
    assert registry.model_path(m).read_bytes() == b"weights"
    registry.remove("alpha")
    assert registry.list() == []
    with pytest.raises(LmforgeError, match="unknown model 'alpha'"):
        registry.get("alpha")


def test_failed_fill_registers_nothing(registry):
    def boom(stage):
        (stage / "m.gguf").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        registry.put(Manifest(name="beta", kind="base", format="gguf", path="m.gguf"), boom)
    assert not registry.exists("beta")
    assert list(registry.staging_dir.iterdir()) == []


def test_duplicate_name_refused_and_original_kept(registry):
    _put(registry, "alpha", payload=b"first")
    with pytest.raises(LmforgeError, match="already exists"):
        _put(registry, "alpha", payload=b"second")
    assert registry.model_path(registry.get("alpha")).read_bytes() == b"first"


@pytest.mark.parametrize("bad", ["../escape", "a/b", "", ".hidden", "x" * 200, "名字"])
def test_unsafe_names_rejected(registry, bad):
    with pytest.raises(LmforgeError, match="invalid artifact name"):
        _put(registry, bad)
    assert not (registry.root.parent / "escape").exists()


def test_update_merges_metrics_atomically(registry):
    _put(registry, "alpha")
    registry.update("alpha", metrics={"ppl": 3.5})
    registry.update("alpha", metrics={"bleu": 20.0})
    assert registry.get("alpha").metrics == {"ppl": 3.5, "bleu": 20.0}
    assert not [p for p in (registry.models_dir / "alpha").iterdir() if p.name.startswith(".tmp")]


def test_lineage_walks_parents(registry):
    _put(registry, "base")
    _put(registry, "lora", parents=["base"])
    _put(registry, "merged-q4", parents=["lora"])
    chain = [(d, m.name) for d, m in registry.lineage("merged-q4")]
    assert chain == [(0, "merged-q4"), (1, "lora"), (2, "base")]


def _shape(nodes):
    """A drawn tree as nested tuples: (name, flags, children); flags: * focus, ? missing, ^parent repeat."""
    out = []
    for n in nodes:
        flags = (
            ("*" if n.focus else "") + ("?" if n.missing else "") + (f"^{n.drawn_under}" if n.repeat else "")
        )
        out.append((n.name, flags, _shape(n.children)))
    return out


def test_lineage_tree_has_ancestors_descendants_a_diamond_and_missing_parents(registry):
    put_lineage_chain(registry)
    assert [m.name for m in registry.children("lm")] == ["lm-q8", "lm-chat"]  # oldest first
    assert [m.name for m in registry.children("corpus")] == ["bpe", "lm"]
    tree = registry.lineage_tree("lm")
    assert tree.ancestors == ["bpe", "corpus", "gone"]  # nearest first, each once despite the diamond
    assert tree.descendants == ["lm-q8", "lm-chat"] and tree.missing == ["gone"]
    assert _shape(tree.roots) == [
        ("gone", "?", [("bpe", "^corpus", [])]),  # a missing parent: a root of its own, marked missing
        ("corpus", "", [
            ("bpe", "", [("lm", "*", [("lm-q8", "", []), ("lm-chat", "", [])])]),  # lm under its deepest parent
            ("lm", "*^bpe", []),  # the diamond's other edge: a reference, not a second copy
        ]),
    ]  # fmt: skip
    gone = tree.roots[0]
    assert (gone.kind, gone.format, gone.facts) == ("?", "?", type(gone.facts)())
    # from the middle and from the ends of the chain
    assert registry.lineage_tree("corpus").descendants == ["bpe", "lm", "lm-q8", "lm-chat"]
    leaf = registry.lineage_tree("lm-q8")
    assert leaf.descendants == [] and leaf.ancestors == ["lm", "bpe", "corpus", "gone"]
    assert "lm-chat" not in str(_shape(leaf.roots))  # a sibling is not part of lm-q8's chain
    assert _shape(registry.lineage_tree("unrelated").roots) == [("unrelated", "*", [])]
    with pytest.raises(LmforgeError, match="unknown model 'nope'"):
        registry.lineage_tree("nope")


def test_lineage_tree_ends_on_a_cycle(registry):
    """`put` cannot make a cycle, but a hand-edited manifest can: the tree still ends, each node once."""
    _put(registry, "a", parents=["b"])
    _put(registry, "b", parents=["a"])
    _put(registry, "c", parents=["a"])
    tree = registry.lineage_tree("c")
    assert sorted(tree.ancestors) == ["a", "b"] and tree.descendants == []
    full: list[str] = []

    def walk(nodes):
        for n in nodes:
            if not n.repeat:
                full.append(n.name)
            walk(n.children)

    walk(tree.roots)
    assert sorted(full) == ["a", "b", "c"]


def test_key_facts_read_each_kind(registry):
    from lmforge.home import key_facts

    put_lineage_chain(registry)
    facts = {m.name: key_facts(m) for m in registry.list()}
    assert facts["corpus"].config == ["dedup=near"]
    assert facts["corpus"].metrics == ["100 documents (90 train / 10 val)", "zh 60, en 40"]
    assert facts["bpe"].config == ["vocab_size=8,000"]
    assert facts["bpe"].metrics == ["chars/token zh 1.52, en 3.91", "lossless"]
    assert facts["lm"].config == ["12.3M params", "objective=clm", "steps=2,000"]
    assert facts["lm"].metrics == ["val_ppl=14.23"]
    assert facts["lm-q8"].config == ["12.3M params", "quant=q8_0"]
    assert facts["lm-q8"].metrics == ["parity greedy 4/5, ppl 1.23% apart"]
    assert facts["lm-chat"].metrics == ["zh-sentiment accuracy=0.75"]
    kb = Manifest(name="kb", kind="kb", format="lmforge-kb", path="", config={"chunk_size": 200},
                  metrics={"eval:qa": {"hybrid": {"k": 5, "hit@k": 0.9, "mrr": 0.8}}})  # fmt: skip
    assert asdict(key_facts(kb)) == {"config": ["chunk_size=200"], "metrics": ["qa hybrid hit@k=0.9"]}


def test_groups_and_ages():
    from datetime import datetime

    from lmforge.home import age_seconds, group_of, grouped, human_age

    kinds = ["kb", "chat", "dataset", "eval-report", "tokenizer", "embedding", "adapter", "base", "masked-lm"]
    ms = [Manifest(name=f"{k}-1", kind=k, format="x", path="") for k in kinds]
    assert [(g, [m.name for m in members]) for g, members in grouped(ms)] == [
        ("dataset", ["dataset-1"]), ("tokenizer", ["tokenizer-1"]),
        ("model", ["base-1", "chat-1", "embedding-1", "masked-lm-1"]), ("adapter", ["adapter-1"]), ("kb", ["kb-1"]),
        ("other", ["eval-report-1"]),
    ]  # fmt: skip
    assert group_of("chat") == "model" and group_of("whatever") == "other"
    m = Manifest(name="x", kind="base", format="hf", path="", created="2026-01-01T00:00:00+0000")
    now = datetime.fromisoformat(m.created).timestamp()
    assert [human_age(age_seconds(m, now + s)) for s in (5, 300, 3 * 3600, 2 * 86400, 400 * 86400)] == [
        "just now", "5 min ago", "3 h ago", "2 d ago", "1 y ago"
    ]  # fmt: skip
    assert human_age(age_seconds(Manifest(name="y", kind="base", format="hf", path=""))) == "-"


def test_corrupt_manifest_is_a_clear_error(registry):
    _put(registry, "alpha")
    (registry.models_dir / "alpha" / "manifest.json").write_text("{not json")
    with pytest.raises(LmforgeError, match="unreadable"):
        registry.get("alpha")
    assert registry.list() == []  # listing skips it instead of crashing


def test_kill_9_mid_put_leaves_no_half_model(tmp_path):
    home = tmp_path / "home"
    code = f"""
import time
from pathlib import Path
from lmforge.home import Manifest, Registry
reg = Registry(Path({str(home)!r}))
def fill(stage):
    with (stage / "m.gguf").open("wb") as f:
        f.write(b"x" * 1000); f.flush()
        print("filling", flush=True)
        time.sleep(60)
reg.put(Manifest(name="victim", kind="base", format="gguf", path="m.gguf"), fill)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "filling"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reg = Registry(home)
    assert not reg.exists("victim") and reg.list() == []
    # a later put of the same name succeeds
    reg.put(Manifest(name="victim", kind="base", format="gguf", path="m.gguf"),
            lambda s: (s / "m.gguf").write_bytes(b"ok"))  # fmt: skip
    assert json.loads((reg.models_dir / "victim" / "manifest.json").read_text())["name"] == "victim"
    # stale staging folders are swept after a day
    stale = list(reg.staging_dir.iterdir())
    assert stale
    old = time.time() - 2 * 24 * 3600
    for p in stale:
        os.utime(p, (old, old))
    Registry(home)
    assert list(reg.staging_dir.iterdir()) == []


def test_adopt_publishes_an_existing_folder(registry, tmp_path):
    folder = registry.root / "elsewhere" / "old"
    folder.mkdir(parents=True)
    (folder / "data.bin").write_bytes(b"12345")
    m = registry.adopt(folder, Manifest(name="old", kind="base", format="gguf", path="data.bin"))
    assert not folder.exists() and registry.model_path(registry.get("old")).read_bytes() == b"12345"
    assert m.size_bytes == 5 and m.created
    other = registry.root / "elsewhere" / "again"
    other.mkdir()
    with pytest.raises(LmforgeError, match="already exists"):
        registry.adopt(other, Manifest(name="old", kind="base", format="gguf", path=""))


def test_separate_models_dir_keeps_staging_beside_it(tmp_path):
    reg = Registry(models_dir=tmp_path / "kbs")
    assert (
        reg.models_dir == (tmp_path / "kbs").resolve()
        and reg.staging_dir == (tmp_path / ".staging").resolve()
    )
    _put(reg, "alpha")
    assert (tmp_path / "kbs" / "alpha" / "manifest.json").is_file()
    assert [m.name for m in Registry(models_dir=tmp_path / "kbs").list()] == ["alpha"]


# -- knowledge bases are registry artifacts ------------------------------------------------------
def _fake_embedders():
    import numpy as np

    from lmforge.rag.embed import Embedder
    from lmforge.rag.pipeline import EmbedderCache

    def encode(texts, is_query):
        return np.array([[len(t), t.count("e") + 1.0, 1.0] for t in texts], dtype=np.float32)

    return EmbedderCache(lambda name: Embedder(name=name, dim=3, _encode=encode))


def test_kb_manifest_lives_in_the_registry(registry, tmp_path):
    from lmforge.rag.pipeline import KBConfig, KnowledgeBases

    kbs = KnowledgeBases(registry, _fake_embedders())
    kb = kbs.create("notes", KBConfig(embedder="fake-embed", chunk_size=64))
    (tmp_path / "a.txt").write_text("The kitchen closes at ten. " * 20)
    empty_size = registry.get("notes").size_bytes
    kb.add([tmp_path / "a.txt"])
    m = registry.get("notes")
    assert (m.kind, m.format, m.parents, m.path) == ("kb", "lmforge-kb", ["fake-embed"], "")
    assert (
        m.config == asdict(KBConfig(embedder="fake-embed", chunk_size=64))
        and m.source == "embedder:fake-embed/3"
    )
    assert m.size_bytes > empty_size  # refreshed after ingestion
    assert [(d, a.name) for d, a in registry.lineage("notes")] == [(0, "notes"), (1, "fake-embed")]
    kbs.update_metrics("notes", {"eval:qa.jsonl": {"hybrid": {"mrr": 1.0}}})
    assert registry.get("notes").metrics == {"eval:qa.jsonl": {"hybrid": {"mrr": 1.0}}}
    assert kbs.names() == ["notes"] and kbs.root == registry.models_dir
    _put(registry, "a-model")
    assert kbs.names() == ["notes"]  # models are not knowledge bases
    with pytest.raises(LmforgeError, match="'a-model' is a base model, not a knowledge base"):
        kbs.open("a-model")
    with pytest.raises(LmforgeError, match="already a registered base model"):
        kbs.create("a-model")
    kbs.drop("notes")
    assert not registry.exists("notes") and registry.exists("a-model")
    kbs.close()


def _legacy_kb(registry, tmp_path, name="legacy"):
    """A KB as older versions left it: LMFORGE_HOME/kb/<name>/ with a hand-written manifest."""
    from lmforge.rag.pipeline import KBConfig, KnowledgeBases

    kbs = KnowledgeBases(registry, _fake_embedders())
    (tmp_path / "a.txt").write_text("Breakfast is served from seven until nine. " * 10)
    kbs.create(name, KBConfig(embedder="fake-embed")).add([tmp_path / "a.txt"])
    kbs.close()
    old = registry.root / "kb" / name
    old.parent.mkdir(exist_ok=True)
    os.rename(registry.models_dir / name, old)
    cfg = asdict(KBConfig(embedder="fake-embed"))
    (old / "manifest.json").write_text(json.dumps({
        "name": name, "kind": "kb", "format": "lmforge-kb", "parents": ["fake-embed"], "config": cfg,
        "embedder": "fake-embed/3", "created": "2025-01-02T03:04:05+0000", "metrics": {"eval:x": 1},
    }))  # fmt: skip
    assert not registry.exists(name)
    return old, cfg


def test_kb_from_an_older_version_is_moved_into_the_registry(registry, tmp_path):
    from lmforge.rag.pipeline import KnowledgeBases

    old, cfg = _legacy_kb(registry, tmp_path)
    (old.parent / "junk").mkdir()
    (old.parent / "junk" / "manifest.json").write_text("{not json")  # skipped, not a crash
    again = KnowledgeBases(registry, _fake_embedders())
    m = registry.get("legacy")
    assert (m.kind, m.parents, m.config, m.metrics) == ("kb", ["fake-embed"], cfg, {"eval:x": 1})
    assert (
        m.created == "2025-01-02T03:04:05+0000" and m.source == "embedder:fake-embed/3" and not old.exists()
    )
    assert [d.name for d in again.open("legacy").documents()] == ["a.txt"]
    again.close()


def test_kb_folder_opened_directly_is_upgraded_in_place_and_others_left_alone(registry, tmp_path):
    from lmforge.rag.pipeline import KnowledgeBases

    old, _ = _legacy_kb(registry, tmp_path)
    here = KnowledgeBases(registry.root / "kb", _fake_embedders())  # what the server did before
    assert here.names() == ["legacy"] and json.loads((old / "manifest.json").read_text())["path"] == ""
    assert [d.name for d in here.open("legacy").documents()] == ["a.txt"]
    here.close()
    KnowledgeBases(registry.root / "other", _fake_embedders()).close()  # a collection of its own
    assert old.exists() and not registry.exists("legacy")
    home = KnowledgeBases(registry, _fake_embedders())  # the home's registry takes it over
    assert home.names() == ["legacy"] and not old.exists()
    home.close()
