"""`lmforge quickstart`: every step of the build road on the bundled real data (a small slice of it and a
few training steps here; the full run is `lmforge quickstart`, about ten minutes)."""

from __future__ import annotations

import json

import pytest

from lmforge.data.bundled import locate_sources
from lmforge.errors import LmforgeError
from lmforge.home import Registry
from lmforge.quickstart import QuickstartConfig, names, run


def sources_or_skip():
    try:
        return locate_sources()
    except LmforgeError as e:
        pytest.skip(str(e))


def test_quickstart_builds_exports_generates_and_reruns(tmp_path, monkeypatch):
    sources_or_skip()
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "home"))
    reg = Registry(tmp_path / "home")
    size = tmp_path / "size.json"
    size.write_text(json.dumps({"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate": 128,
                                "context": 64}))  # fmt: skip
    cfg = QuickstartConfig(vocab=800, steps=6, seq_len=64, max_docs_per_source=12, threads=2, gen_tokens=6,
                           extra={"size": str(size), "precision": "fp32"}, sft_steps=4)  # fmt: skip
    lines: list[str] = []
    summary = run(reg, cfg, say=lines.append)
    n = names(cfg)
    lm = reg.get(n["lm"])
    assert [a.name for _, a in reg.lineage(n["gguf"])] == [n["gguf"], n["lm"], n["bpe"], n["data"]]
    assert lm.metrics["steps"] == 6 and summary["val_ppl"] == lm.metrics["val_ppl"] > 1
    gguf = reg.get(n["gguf"])
    assert gguf.format == "gguf" and gguf.metrics["parity"]["tokenizer_match"] is True
    assert len(summary["samples"]) == len(cfg.prompts)
    assert all(isinstance(s["text"], str) for s in summary["samples"])
    text = "\n".join(lines)
    for step in ("1/7", "2/7", "3/7", "4/7", "5/7", "6/7", "7/7"):
        assert step in text
    assert "peoples-daily-1998" in text and "licences-en" in text
    sft = reg.get(n["sft"])  # the closing SFT step: poem requests built from the bundled poems
    assert sft.parents == [n["lm"]] and sft.metrics["steps"] == 4 and sft.config["method"] == "full"
    # a second run reuses every finished step
    lines.clear()
    again = run(reg, cfg, say=lines.append)
    assert sum("already exists, reused" in ln for ln in lines) == 5
    assert again["val_ppl"] == summary["val_ppl"]
