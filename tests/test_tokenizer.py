"""`lmforge tokenizer train`: byte-level BPE on a registered dataset, registered with lineage, loadable
by transformers, lossless on Chinese (no unknown characters), compared with another tokenizer."""

import pytest
from conftest import corpus_lines

from lmforge.cli import main
from lmforge.data.prepare import PrepareConfig, prepare
from lmforge.errors import LmforgeError
from lmforge.tokenizer.bpe import BPEConfig, train_registered

RARE = "𠀀𪚥 龘 — naïve café ½ 😀 <|im_start|> tab\tend"


@pytest.fixture()
def dataset(registry, tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    lines = corpus_lines()
    for i in range(0, len(lines), 3):
        (d / f"{i:04d}.txt").write_text("\n".join(lines[i : i + 3]), encoding="utf-8")
    prepare(registry, [d], "tiny-corpus", PrepareConfig(val_frac=0.2, min_chars=10))
    return "tiny-corpus"


def test_train_registers_a_lossless_tokenizer_with_lineage(registry, dataset, tiny_qwen2_dir):
    from transformers import AutoTokenizer

    from lmforge.home import register_local

    register_local(registry, tiny_qwen2_dir, "ref")
    m = train_registered(registry, dataset, "tok", BPEConfig(vocab_size=400), compare="ref")
    assert m.kind == "tokenizer" and m.parents == [dataset] and m.metrics["vocab"] == 400
    assert [a.name for _, a in registry.lineage("tok")] == ["tok", dataset]
    assert m.metrics["roundtrip_exact"] is True
    cpt = m.metrics["chars_per_token"]
    assert cpt["en"] > 1.0 and m.metrics["reference"]["model"] == "ref"
    tok = AutoTokenizer.from_pretrained(str(registry.artifact_dir("tok")))
    ids = tok(RARE, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids and tok.decode(ids) == RARE  # every byte is reachable
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False).startswith(
        "<|im_start|>user"
    )
    assert tok.eos_token == "<|im_end|>"


def test_bad_input_stores_nothing(registry, dataset):
    with pytest.raises(LmforgeError, match="smaller than the byte alphabet"):
        train_registered(registry, dataset, "t1", BPEConfig(vocab_size=200))
    with pytest.raises(LmforgeError, match="unknown model 'nope'"):
        train_registered(registry, "nope", "t2", BPEConfig(vocab_size=400))
    train_registered(registry, dataset, "t3", BPEConfig(vocab_size=400))
    with pytest.raises(LmforgeError, match="is a tokenizer artifact, not a dataset"):
        train_registered(registry, "t3", "t4", BPEConfig(vocab_size=400))
    with pytest.raises(LmforgeError, match="already exists"):
        train_registered(registry, dataset, "t3", BPEConfig(vocab_size=400))
    assert not any(registry.exists(n) for n in ("t1", "t2", "t4")) and not list(
        registry.staging_dir.iterdir()
    )


def test_cli(registry, dataset, capsys):
    assert main(["tokenizer", "train", "--data", dataset, "--vocab", "400", "--out", "cli-tok"]) == 0
    out = capsys.readouterr().out
    assert "registered tokenizer cli-tok: 400 tokens" in out and "characters per token" in out
    assert main(["tokenizer", "train", "--data", dataset, "--vocab", "100", "--out", "x"]) == 2
    assert "byte alphabet" in capsys.readouterr().err
