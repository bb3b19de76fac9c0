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


# -- lmforge tokenizer extend (扩充词表) ---------------------------------------------------------------
DRUGS = ["metformin", "lisinopril", "atorvastatin", "amlodipine", "omeprazole", "levothyroxine"]
ZH_DRUGS = ["二甲双胍", "阿司匹林", "阿托伐他汀", "氨氯地平"]


@pytest.fixture()
def domain(registry, tmp_path):
    """A small clinical corpus (English and Chinese) full of words the tiny tokenizer never saw."""
    d = tmp_path / "clinic"
    d.mkdir()
    for i in range(40):
        drug, zh = DRUGS[i % len(DRUGS)], ZH_DRUGS[i % len(ZH_DRUGS)]
        en = (f"Patient {i} with hypertension received {drug} {5 * (i + 1)} mg daily; the cardiologist "
              f"recorded systolic pressure {110 + i} and noted tachycardia during the electrocardiogram.")  # fmt: skip
        cn = f"患者{i}号患有高血压，心内科医生开具{zh}每日{i + 1}片，并建议复查心电图和血压。"
        (d / f"{i:03d}.txt").write_text(en if i % 2 else cn, encoding="utf-8")
    prepare(registry, [d], "clinic", PrepareConfig(val_frac=0.25, min_chars=10, dedup="exact"))
    return "clinic"


@pytest.fixture()
def base_model(registry, tiny_llama_dir):
    from lmforge.home import register_local

    register_local(registry, tiny_llama_dir, "tiny-llama")
    return "tiny-llama"


def test_extend_adds_real_tokens_and_mean_initialised_rows(registry, domain, base_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmforge.data.prepare import dataset_texts
    from lmforge.tokenizer.extend import ExtendConfig, extend_registered

    m = extend_registered(registry, base_model, domain, "clinic-llama", ExtendConfig(add=40))
    assert m.parents == [base_model, domain] and m.format == "hf" and m.kind == registry.get(base_model).kind
    assert [a.name for _, a in registry.lineage("clinic-llama")] == ["clinic-llama", base_model, domain]
    assert m.config["added"] == 40 and len(m.config["tokens"]) == 40 and m.metrics["added_tokens"] == 40
    old_dir, new_dir = str(registry.model_path(registry.get(base_model))), str(registry.model_path(m))
    old_tok, new_tok = AutoTokenizer.from_pretrained(old_dir), AutoTokenizer.from_pretrained(new_dir)
    n_old = len(old_tok)
    assert len(new_tok) == n_old + 40 == m.metrics["vocab"] and m.metrics["before"]["vocab"] == n_old
    old, new = AutoModelForCausalLM.from_pretrained(old_dir), AutoModelForCausalLM.from_pretrained(new_dir)
    emb_old, emb_new = old.get_input_embeddings().weight, new.get_input_embeddings().weight  # (V, d)
    head_old, head_new = old.get_output_embeddings().weight, new.get_output_embeddings().weight  # untied
    assert emb_new.shape == head_new.shape == (n_old + 40, emb_old.shape[1]) == (new.config.vocab_size, 64)
    assert torch.equal(emb_new[:n_old], emb_old) and torch.equal(head_new[:n_old], head_old)
    # each new id is a real BPE vocabulary entry (no added tokens), its rows the mean of its old sub-tokens'
    added = {tid: piece for piece, tid in new_tok.get_vocab().items() if tid >= n_old}
    assert sorted(added) == list(range(n_old, n_old + 40)) and set(new_tok.added_tokens_decoder) == {0, 1, 2}
    for tid, piece in added.items():
        sub = [t.id for t in old_tok.backend_tokenizer.model.tokenize(piece)]
        assert len(sub) >= 2 and torch.allclose(emb_new[tid], emb_old[sub].mean(0))
        assert torch.allclose(head_new[tid], head_old[sub].mean(0))
        text = new_tok.decode([tid])
        if (
            "\ufffd" not in text
        ):  # whole characters: its sub-tokens are exactly what old encode gives the text
            assert old_tok.encode(text, add_special_tokens=False) == sub
            assert new_tok.encode(text, add_special_tokens=False) == [tid]
    # the domain text: shorter, lossless, and the model still runs on it
    held = dataset_texts(registry, domain, "validation")
    for t in held:
        ids = new_tok.encode(t, add_special_tokens=False)
        assert new_tok.decode(ids) == t and len(ids) < len(old_tok.encode(t, add_special_tokens=False))
    assert new_tok.decode(new_tok.encode(RARE, add_special_tokens=False)) == RARE
    after, before = m.metrics["chars_per_token"], m.metrics["before"]["chars_per_token"]
    assert set(before) == set(after) == {"all", "zh", "en"} and m.metrics["roundtrip_exact"] is True
    assert all(after[k] > before[k] for k in before)
    batch = new_tok("\n".join(held), return_tensors="pt")["input_ids"][:, :200]  # (1, T)
    with torch.no_grad():
        loss = new(input_ids=batch, labels=batch).loss
    assert torch.isfinite(loss) and batch.max() >= n_old


def test_extend_bad_input_stores_nothing(registry, domain, base_model, tmp_path):
    import random

    from lmforge.home import Manifest
    from lmforge.tokenizer.extend import ExtendConfig, extend_registered

    gguf = Manifest(name="g", kind="chat", format="gguf", path="m.gguf")
    registry.put(gguf, lambda s: (s / "m.gguf").write_bytes(b"GGUF"))
    known, rng = tmp_path / "known", random.Random(0)  # words the tiny tokenizer has as one token each
    known.mkdir()
    for i in range(10):
        words = " ".join(
            rng.choice(["fox", "the", "capital", "models", "learn", "fibonacci"]) for _ in range(12)
        )
        (known / f"{i}.txt").write_text(f"a {words}", encoding="utf-8")
    prepare(registry, [known], "known", PrepareConfig(min_chars=10, dedup="exact"))
    hf_only = "'g' is a gguf chat artifact; tokenizer extend needs a Hugging Face causal LM"
    cases = [
        ((base_model, "nope", "x1", ExtendConfig(add=5)), "^unknown dataset 'nope'; make one with"),
        (("g", domain, "x2", ExtendConfig(add=5)), hf_only),
        ((base_model, domain, "x3", ExtendConfig(add=0)), "^--add must be at least 1, got 0$"),
        ((base_model, domain, "x4", ExtendConfig(add=-2)), "^--add must be at least 1, got -2$"),
        ((base_model, domain, "g", ExtendConfig(add=5)), "^'g' already exists"),
        ((base_model, "known", "x5", ExtendConfig(add=5)), "^dataset 'known' yields no new tokens"),
        (
            (base_model, base_model, "x6", ExtendConfig(add=5)),
            "'tiny-llama' is a chat artifact, not a dataset",
        ),
    ]
    for args, message in cases:
        with pytest.raises(LmforgeError, match=message):
            extend_registered(registry, *args)
    left = {m.name for m in registry.list()}
    assert left == {"g", base_model, domain, "known"} and not list(registry.staging_dir.iterdir())


def test_extend_cli(registry, domain, base_model, capsys):
    assert main(["tokenizer", "extend", base_model, "--data", domain, "--add", "30", "--out", "cli-ext"]) == 0
    out = capsys.readouterr().out
    assert "registered model cli-ext: 30 tokens added" in out and "characters per token" in out
    assert main(["tokenizer", "extend", base_model, "--data", domain, "--add", "-3", "--out", "y"]) == 2
    assert "--add must be at least 1" in capsys.readouterr().err
