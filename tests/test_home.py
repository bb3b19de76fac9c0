"""Registry: round trips, atomic publication (including kill -9), names, lineage."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

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
