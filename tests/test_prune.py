"""`lmforge prune`: magnitude pruning zeroes weights (and says the file does not shrink); structured
pruning removes whole KV groups and MLP neurons, so the saved model is smaller, loads in transformers,
exports to GGUF (llama.cpp agrees with transformers) and is registered with its measured numbers."""

from __future__ import annotations

import json

import pytest

from lmforge.compress.measure import MeasureConfig
from lmforge.compress.prune import PruneConfig
from lmforge.compress.prune import main as prune
from lmforge.errors import LmforgeError
from lmforge.home import register_local

FAST = MeasureConfig(max_tokens=128, decode_tokens=16, threads=1)


@pytest.fixture()
def calib(tmp_path):
    from conftest import corpus_lines

    path = tmp_path / "calib.txt"
    path.write_text("\n".join(corpus_lines() * 3), encoding="utf-8")
    return str(path)


def test_magnitude_zeroes_weights_and_says_the_file_stays_dense(tiny_home, calib, capsys):
    import torch
    from safetensors.torch import load_file

    m = prune(tiny_home, "tiny", PruneConfig(sparsity=0.5, method="magnitude", data=calib, measure=FAST),
              say=lambda s: print(s))  # fmt: skip
    assert "does not shrink" in capsys.readouterr().out
    assert m.metrics["prune"]["zeroed_fraction"] == pytest.approx(0.5, abs=0.01)
    sd = load_file(str(tiny_home.artifact_dir(m.name) / "model.safetensors"))
    w = sd["model.layers.0.mlp.up_proj.weight"]
    assert float((w == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
    parent = load_file(str(tiny_home.model_path(tiny_home.get("tiny")) / "model.safetensors"))
    assert torch.equal(sd["model.embed_tokens.weight"], parent["model.embed_tokens.weight"])  # blocks only
    c = m.metrics["compress"]
    assert c["delta"]["size_ratio"] == pytest.approx(1.0, abs=0.02)  # dense: same size


def test_structured_removes_groups_and_neurons_and_exports(tiny_home, calib, tiny_qwen2_dir):
    from lmforge.compress.export import ExportConfig, export_gguf
    from lmforge.infer.chat import greedy_text
    from lmforge.infer.loader import load_backend

    register_local(tiny_home, tiny_qwen2_dir, "tq", kind="chat")  # Qwen2: q/k/v biases are sliced too
    m = prune(tiny_home, "tq", PruneConfig(sparsity=0.5, method="structured", data=calib, recover_steps=3,
                                           measure=FAST), say=lambda s: None)  # fmt: skip
    config = json.loads((tiny_home.artifact_dir(m.name) / "config.json").read_text())
    # tiny: 4 query heads in 2 KV groups, 128 neurons -> one group (2 heads) and 64 neurons removed per layer
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"],
            config["intermediate_size"]) == (2, 1, 16, 64)  # fmt: skip
    p = m.metrics["prune"]
    assert p["params_after"] < p["params_before"] and p["kv_groups_removed"] == 1
    assert p["recovery"]["steps"] == 3
    c = m.metrics["compress"]
    assert c["delta"]["size_ratio"] < 0.9 and c["perplexity"] > 1
    assert isinstance(
        greedy_text(load_backend(tiny_home, m.name), [{"role": "user", "content": "hi"}], 4), str
    )
    g = export_gguf(tiny_home, m.name, ExportConfig(quant="f16"))
    parity = g.metrics["parity"]
    assert parity["tokenizer_match"] and parity["ppl_rel_diff"] < 0.01  # llama.cpp reads the new shape


def test_bad_input(tiny_home, calib, capsys):
    from lmforge.cli import main as cli

    assert cli(["prune", "tiny", "--sparsity", "1.5"]) == 2
    assert "--sparsity must be between 0 and 1" in capsys.readouterr().err
    assert cli(["prune", "tiny", "--sparsity", "0"]) == 2
    with pytest.raises(LmforgeError, match="cannot remove 2 KV groups per layer: tiny has 2"):
        prune(
            tiny_home,
            "tiny",
            PruneConfig(sparsity=0.3, heads=2, data=calib, measure=FAST),
            say=lambda s: None,
        )
    assert cli(["prune", "tiny", "--method", "random"]) == 2
    assert not [m for m in tiny_home.list() if m.name.startswith("tiny-pruned")]
