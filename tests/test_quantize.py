"""`lmforge quantize`: GGUF types through llama.cpp's quantizer, int8 through torchao, nf4 through
bitsandbytes; every result registered with lineage and its measured size, decode speed and perplexity
delta, or refused when it lost more than the limit; requantizing a quantized GGUF is refused."""

from __future__ import annotations

import json

import pytest

from lmforge.compress.measure import MeasureConfig
from lmforge.compress.quantize import QuantizeConfig
from lmforge.compress.quantize import main as quantize
from lmforge.errors import LmforgeError
from lmforge.home import register_remote

FAST = MeasureConfig(max_tokens=128, decode_tokens=16, threads=1)


def cfg(to: str, **kw) -> QuantizeConfig:
    return QuantizeConfig(to=to, measure=FAST, **kw)


def test_gguf_q8_registered_with_its_three_numbers(tiny_home, capsys):
    from lmforge.cli import main as cli

    assert (
        cli(["quantize", "tiny", "--to", "gguf-q8_0", "--threads", "1", "--max-eval-tokens", "128", "--json"])
        == 0
    )
    m = json.loads(capsys.readouterr().out)
    assert m["name"] == "tiny-gguf-q8-0" and m["format"] == "gguf" and m["parents"] == ["tiny"]
    c = m["metrics"]["compress"]
    parent = tiny_home.get("tiny").metrics["compress"]  # the parent's numbers are measured and kept too
    assert c["size_bytes"] < 0.5 * parent["size_bytes"]  # fp32 -> 8.5 bits
    assert (
        c["decode_tps"] > 0
        and c["perplexity"] > 1
        and c["engine"] == "llamacpp"
        and parent["engine"] == "transformers"
    )
    assert abs(c["delta"]["ppl_increase"]) < 0.05  # q8_0 is near lossless
    assert c["delta"]["size_ratio"] == pytest.approx(c["size_bytes"] / parent["size_bytes"], rel=1e-3)
    assert tiny_home.get("tiny-gguf-q8-0").config["file_type"] == "Q8_0"


def test_quality_limit_refuses_and_stores_nothing(tiny_home):
    with pytest.raises(
        LmforgeError, match=r"lost too much: perplexity .* over the 0% limit\); not registered"
    ):
        quantize(tiny_home, "tiny", cfg("gguf-q4_0", max_ppl_increase=0.0))
    assert not tiny_home.exists("tiny-gguf-q4-0")
    assert not any(tiny_home.staging_dir.iterdir())
    m = quantize(tiny_home, "tiny", cfg("gguf-q4_0", max_ppl_increase=0.0, force=True))
    assert m.config["forced"] and m.metrics["compress"]["delta"]["ppl_increase"] > 0


def test_requantizing_a_quantized_gguf_is_refused_unless_forced(tiny_home):
    q = quantize(tiny_home, "tiny", cfg("gguf-q8_0", max_ppl_increase=1.0))
    with pytest.raises(LmforgeError, match="already quantized \\(Q8_0\\).*--force"):
        quantize(tiny_home, q.name, cfg("gguf-q4_0", max_ppl_increase=1.0))
    again = quantize(tiny_home, q.name, cfg("gguf-q4_0", force=True))
    assert again.parents == [q.name] and again.config["file_type"] == "Q4_0"
    f16 = quantize(tiny_home, "tiny", cfg("gguf-f16"))  # an unquantized GGUF quantizes directly
    assert quantize(tiny_home, f16.name, cfg("gguf-q8_0", max_ppl_increase=1.0)).parents == [f16.name]


@pytest.mark.parametrize("to", ["int8", "nf4"])
def test_int8_and_nf4_are_hf_folders_that_load_and_chat(tiny_home, to):
    from lmforge.infer.chat import greedy_text
    from lmforge.infer.loader import load_backend

    m = quantize(tiny_home, "tiny", cfg(to, max_ppl_increase=1.0))
    assert m.format == "hf" and m.config["engine"] == ("torchao" if to == "int8" else "bitsandbytes")
    config = json.loads((tiny_home.artifact_dir(m.name) / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == ("torchao" if to == "int8" else "bitsandbytes")
    c = m.metrics["compress"]
    assert c["engine"] == "transformers" and c["perplexity"] > 1 and c["decode_tps"] > 0
    backend = load_backend(tiny_home, m.name)
    assert isinstance(greedy_text(backend, [{"role": "user", "content": "hello"}], 4), str)


def test_bad_input(tiny_home, capsys):
    from lmforge.cli import main as cli

    assert cli(["quantize", "tiny", "--to", "q3_k"]) == 2
    assert "unknown quantization type 'q3_k'" in capsys.readouterr().err
    register_remote(tiny_home, "far", "http://127.0.0.1:9/v1", "upstream-model")
    assert cli(["quantize", "far", "--to", "int8"]) == 2
    assert "far is a remote model" in capsys.readouterr().err and not tiny_home.exists("far-int8")
    assert cli(["quantize", "nope", "--to", "int8"]) == 2
    assert "nope" in capsys.readouterr().err
