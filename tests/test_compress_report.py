"""`lmforge compress report`: the model and its compressed variants in one table (size, decode speed,
perplexity delta), a PNG, stored in the manifest and shown on the console's Models page."""

from __future__ import annotations

import json
from pathlib import Path

from lmforge.compress.measure import MeasureConfig
from lmforge.compress.prune import PruneConfig
from lmforge.compress.prune import main as prune
from lmforge.compress.quantize import QuantizeConfig
from lmforge.compress.quantize import main as quantize

FAST = MeasureConfig(max_tokens=128, decode_tokens=16, threads=1)


def test_report_builds_measures_and_stores(tiny_home, tmp_path, capsys):
    from conftest import corpus_lines

    from lmforge.cli import main as cli

    calib = tmp_path / "c.txt"
    calib.write_text("\n".join(corpus_lines() * 3), encoding="utf-8")
    prune(tiny_home, "tiny", PruneConfig(sparsity=0.5, data=str(calib), measure=FAST), say=lambda s: None)
    quantize(tiny_home, "tiny", QuantizeConfig(to="int8", force=True, measure=FAST), say=lambda s: None)
    args = ["compress", "report", "tiny", "--build", "gguf-q8_0,gguf-q4_0", "--threads", "1",
            "--max-eval-tokens", "128", "--json"]  # fmt: skip
    assert cli(args) == 0
    report = json.loads(capsys.readouterr().out)
    variants = [r["variant"] for r in report["rows"]]
    assert variants[0] == "hf" and set(variants) == {
        "hf",
        "pruned-structured-50",
        "int8",
        "gguf-q8_0",
        "gguf-q4_0",
    }
    rows = {r["variant"]: r for r in report["rows"]}
    assert rows["hf"]["ppl_increase_pct"] == 0.0
    assert rows["gguf-q4_0"]["size_bytes"] < rows["gguf-q8_0"]["size_bytes"] < rows["hf"]["size_bytes"]
    assert all(r["decode_tps"] > 0 and r["perplexity"] > 1 for r in report["rows"])
    stored = tiny_home.get("tiny").metrics["compress_report"]
    assert stored["rows"] == report["rows"]
    md = Path(report["markdown"]).read_text(encoding="utf-8")
    assert "| gguf-q4_0 |" in md and Path(report["png"]).read_bytes()[:4] == b"\x89PNG"
    # a second run re-uses every stored measurement (same text, same threads): nothing is rebuilt
    assert cli(["compress", "report", "tiny", "--threads", "1", "--max-eval-tokens", "128", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert [r["decode_tps"] for r in again["rows"]] == [r["decode_tps"] for r in report["rows"]]
