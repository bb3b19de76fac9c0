"""lmforge.explain and `lmforge explain`: attention maps, rollout, captum attributions, the pages, the refusals.

Real tiny models (the session's Qwen2 and BERT, and tiny sequence classifiers built here from the same
tokenizer): the assertions are on what the maths promises (rows of softmax and rollout sum to 1, a causal
model never attends forward, integrated gradients' completeness) and on what the files must be.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from lmforge.errors import LmforgeError
from lmforge.explain import (
    AttributionConfig,
    attention_maps,
    attributions,
    explain_attention,
    explain_attention_json,
    explain_tokens,
    load_folder,
    rollout,
)
from lmforge.explain.load import resolve
from lmforge.explain.tokenized import tokenize

TEXT = "The capital of France is"
LABELS = {0: "negative", 1: "positive"}


@pytest.fixture(scope="module")
def qwen(tiny_qwen2_dir):
    return load_folder(tiny_qwen2_dir)


@pytest.fixture(scope="module")
def bert(tiny_bert_dir):
    return load_folder(tiny_bert_dir)


def _classifier_dir(out: Path, tokenizer_dir: Path, arch: str) -> Path:
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
        Qwen2Config,
        Qwen2ForSequenceClassification,
    )

    torch.manual_seed(1)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    common = dict(vocab_size=len(tok), num_labels=2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
                  pad_token_id=tok.pad_token_id, num_hidden_layers=2)  # fmt: skip
    if arch == "qwen2":
        cfg = Qwen2Config(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=128, **common)  # fmt: skip
        model = Qwen2ForSequenceClassification(cfg)
    else:
        cfg = BertConfig(hidden_size=32, intermediate_size=64, num_attention_heads=2, max_position_embeddings=128,
                         **common)  # fmt: skip
        model = BertForSequenceClassification(cfg)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module", params=["qwen2", "bert"])
def classifier(request, tmp_path_factory, tiny_tokenizer_dir):
    folder = _classifier_dir(tmp_path_factory.mktemp(f"cls-{request.param}") / "model", tiny_tokenizer_dir,
                             request.param)  # fmt: skip
    return load_folder(folder)


# --- attention ---------------------------------------------------------------------------------------


def test_causal_attention_rows_are_distributions_and_lower_triangular(qwen):
    r = attention_maps(qwen.model, qwen.tokenizer, TEXT)
    t = len(r.tokens)
    assert qwen.kind == "causal"
    assert r.weights.shape == (2, 4, t, t)  # 2 layers, 4 query heads (GQA: 2 KV heads)
    np.testing.assert_allclose(r.weights.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(r.weights, k=1) == 0) and r.causal
    assert r.tokens.ids == qwen.tokenizer(TEXT)["input_ids"]


def test_bert_attends_both_ways(bert):
    r = attention_maps(bert.model, bert.tokenizer, TEXT)
    assert bert.kind == "encoder"  # the fixture saved a bare BertModel
    np.testing.assert_allclose(r.weights.sum(-1), 1.0, atol=1e-5)
    assert not r.causal and np.triu(r.weights, k=1).sum() > 0.1
    roll = rollout(r.weights)
    np.testing.assert_allclose(roll.sum(-1), 1.0, atol=1e-9)


def test_rollout_is_abnar_zuidema(qwen):
    w = attention_maps(qwen.model, qwen.tokenizer, TEXT).weights
    t = w.shape[-1]
    roll = rollout(w)
    assert roll.shape == (t, t)
    np.testing.assert_allclose(roll.sum(-1), 1.0, atol=1e-9)
    assert np.allclose(np.triu(roll, k=1), 0)  # causal flow stays causal
    # by hand: heads averaged, identity added, rows renormalised, layer 1 applied after layer 0
    a0, a1 = (w[k].mean(0) + np.eye(t) for k in (0, 1))
    a0, a1 = a0 / a0.sum(-1, keepdims=True), a1 / a1.sum(-1, keepdims=True)
    np.testing.assert_allclose(roll, a1 @ a0, atol=1e-6)
    # attention that only looks at itself leaves every token its own
    eye = np.broadcast_to(np.eye(3), (4, 2, 3, 3))
    np.testing.assert_allclose(rollout(eye), np.eye(3))


def test_tokens_cover_the_text_and_label_byte_pieces(qwen):
    text = "capital 你好"
    toks = tokenize(qwen.tokenizer, text)
    assert "".join(toks.pieces) == text
    assert [x for x in toks.labels if x.startswith("你")] == ["你 1/3", "你 2/3", "你 3/3"]
    assert "␣" in toks.labels  # a bare space is visible
    with pytest.raises(LmforgeError, match=r"the limit is 3: .*--max-tokens"):
        tokenize(qwen.tokenizer, text, max_tokens=3)
    with pytest.raises(LmforgeError, match="empty"):
        tokenize(qwen.tokenizer, "  ")


def _decode(m: dict, t: int) -> np.ndarray:
    q = np.frombuffer(base64.b64decode(m["q"]), dtype=np.uint8).reshape(t, t)
    return q / 255 * m["max"]


def test_payload_maps_decode_and_respect_the_budget(qwen):
    r = attention_maps(qwen.model, qwen.tokenizer, TEXT)
    t = len(r.tokens)
    full = explain_attention_json(r)
    assert sorted(full["head_maps"]) == ["0", "1"] and full["heads_left_out"] == []
    np.testing.assert_allclose(
        _decode(full["head_maps"]["1"][2], t), r.weights[1, 2], atol=full["head_maps"]["1"][2]["max"] / 255
    )
    np.testing.assert_allclose(_decode(full["rollout"], t).sum(-1), 1.0, atol=t / 255)
    assert full["top_attended"][0]["top"][0] == {
        "key": 0,
        "token": "The",
        "weight": 1.0,
    }  # the first token sees itself
    json.dumps(full)  # serialisable as is
    # room for the means, the rollout and one layer of heads: the selected layer wins
    small = explain_attention_json(r, layer=0, max_cells=(2 + 1 + 4) * t * t)
    assert list(small["head_maps"]) == ["0"] and small["heads_left_out"] == [1]
    with pytest.raises(LmforgeError, match=r"--head 9: the model has heads 0\.\.3"):
        explain_attention_json(r, layer=0, head=9)


def test_attention_files_and_self_contained_page(qwen, tmp_path):
    text = "The capital 你好"
    s = explain_attention(qwen, text, tmp_path / "out")
    html = Path(s["files"]["html"]).read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?://""", html, re.I)
    assert "<link" not in html and "<script src" not in html and "import(" not in html
    assert '<select id="layer">' in html and '<select id="head">' in html
    for label in s["tokens"]:
        assert json.dumps(label, ensure_ascii=False)[1:-1] in html
    names = sorted(Path(p).name for p in s["files"]["png"])
    assert names == ["attention-L1-heads.png", "attention-layers-mean.png", "rollout.png"]
    for p in s["files"]["png"]:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert s["shape"] == {
        "attentions": [2, 4, len(s["tokens"]), len(s["tokens"])],
        "rollout": [len(s["tokens"])] * 2,
    }
    one = explain_attention(qwen, text, tmp_path / "one", layer=0, head=1)
    assert [Path(p).name for p in one["files"]["png"]] == ["attention-L0-H1.png", "rollout.png"]
    assert one["selected"]["map"] == "layer 0, head 1"


def test_cjk_labels_fall_back_to_indices_without_a_font(monkeypatch):
    from lmforge.explain import page

    monkeypatch.setattr(page, "cjk_font", lambda: None)
    pl = page.plot_labels(["The", "你 1/3", "␣"])
    assert pl.labels == ["The", "#1", "␣"] and "CJK" in pl.note
    monkeypatch.setattr(page, "cjk_font", lambda: Path("/fonts/x.ttc"))
    assert page.plot_labels(["你"]).labels == ["你"]


# --- attributions ------------------------------------------------------------------------------------


def test_integrated_gradients_completeness_on_the_causal_lm(qwen):
    a = attributions(qwen.model, qwen.tokenizer, qwen.kind, TEXT, AttributionConfig(steps=24))
    assert a.scores.shape == (len(a.tokens),)
    assert a.target == a.predicted  # default: the predicted next token
    diff = a.output - a.baseline_output
    assert abs(diff) > 0.1  # the text matters to the prediction: the check below is not 0 ≈ 0
    assert a.scores.sum() == pytest.approx(diff, abs=0.02 * abs(diff))
    assert a.delta is not None and abs(a.delta) < 0.02 * abs(diff)
    assert a.delta == pytest.approx(a.scores.sum() - diff, abs=1e-3)


def test_grad_x_input_and_a_chosen_next_token(qwen):
    a = attributions(qwen.model, qwen.tokenizer, qwen.kind, TEXT,
                     AttributionConfig(method="grad-x-input", target="P"))  # fmt: skip
    assert a.scores.shape == (len(a.tokens),) and a.delta is None and a.baseline_output is None
    assert np.abs(a.scores).max() > 0 and a.target == "P"
    assert a.target_id == qwen.tokenizer("P", add_special_tokens=False)["input_ids"][0]
    with pytest.raises(LmforgeError, match="must be one token"):
        attributions(qwen.model, qwen.tokenizer, qwen.kind, TEXT, AttributionConfig(target="capital Paris"))


def test_classifier_attributions_for_a_label(classifier):
    assert classifier.kind == "classifier"
    default = attributions(
        classifier.model, classifier.tokenizer, classifier.kind, TEXT, AttributionConfig(steps=24)
    )
    assert default.target == default.predicted and default.target in LABELS.values()
    a = attributions(classifier.model, classifier.tokenizer, classifier.kind, TEXT,
                     AttributionConfig(target="positive", steps=24))  # fmt: skip
    assert a.target_id == 1 and {x["label"] for x in a.alternatives} == set(LABELS.values())
    diff = a.output - a.baseline_output
    assert sum(x["prob"] for x in a.alternatives) == pytest.approx(1.0, abs=1e-4)
    assert a.scores.sum() == pytest.approx(diff, abs=1e-3 + 0.02 * abs(diff))
    assert abs(a.delta) < 1e-3 + 0.02 * abs(diff)
    # the baseline token is not the padding id the decoder classifier pools on
    assert (
        classifier.tokenizer.convert_tokens_to_ids(a.baseline_token) != classifier.model.config.pad_token_id
    )
    with pytest.raises(LmforgeError, match="not a label of this classifier: negative, positive"):
        attributions(
            classifier.model, classifier.tokenizer, classifier.kind, TEXT, AttributionConfig(target="joy")
        )


def test_tokens_refuses_a_model_without_a_task_head(bert):
    with pytest.raises(LmforgeError, match="explain attention"):
        attributions(bert.model, bert.tokenizer, bert.kind, TEXT)


def test_tokens_files(qwen, tmp_path):
    s = explain_tokens(qwen, TEXT, tmp_path, AttributionConfig(steps=8))
    html = Path(s["files"]["html"]).read_text(encoding="utf-8")
    assert not re.search(r"https?://", html)
    assert Path(s["files"]["png"]).read_bytes()[:4] == b"\x89PNG"
    assert [t["token"] for t in s["tokens"]] == tokenize(qwen.tokenizer, TEXT).labels
    assert s["sum"] == pytest.approx(sum(t["score"] for t in s["tokens"]), abs=1e-4)


# --- models that cannot be explained as they are -----------------------------------------------------


def _put(reg, name: str, fmt: str, kind: str = "base") -> None:
    from lmforge.home import Manifest

    path = "m.gguf" if fmt == "gguf" else ""
    reg.put(
        Manifest(name=name, kind=kind, format=fmt, path=path),
        lambda stage: (stage / "m.gguf").write_bytes(b"GGUF"),
    )


def test_gguf_is_refused_with_the_way_out(registry, monkeypatch):
    _put(registry, "lm-q8", "gguf")
    with pytest.raises(
        LmforgeError, match=r"GGUF must be dequantized first: add --dequantize to make lm-q8-hf"
    ):
        resolve("lm-q8", registry)
    _put(registry, "lm-q8-hf", "hf")
    with pytest.raises(LmforgeError, match=r"use lm-q8-hf \(its dequantized copy"):
        resolve("lm-q8", registry)
    calls = []

    def fake_hf_base(reg, name, say):
        calls.append(name)
        return reg.get("lm-q8-hf")

    monkeypatch.setattr("lmforge.train.finetune.hf_base", fake_hf_base)
    name, path = resolve("lm-q8", registry, dequantize=True)
    assert calls == ["lm-q8"] and name == "lm-q8-hf" and path == registry.artifact_dir("lm-q8-hf")


def test_other_refusals(registry, tmp_path):
    _put(registry, "tune", "peft", kind="adapter")
    with pytest.raises(LmforgeError, match="lmforge merge tune"):
        resolve("tune", registry)
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(LmforgeError, match="GGUF must be dequantized first"):
        resolve(str(gguf), registry)
    with pytest.raises(LmforgeError, match="unknown model 'nope'"):
        resolve("nope", registry)


# --- the CLI -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli():
    from lmforge.cli_explain import mount

    app = typer.Typer()
    mount(app)
    return app


def test_cli_attention(cli, tiny_qwen2_dir, tmp_path):
    out = tmp_path / "att"
    r = CliRunner().invoke(
        cli, ["explain", "attention", str(tiny_qwen2_dir), TEXT, "--out", str(out), "--json"]
    )
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    t = s["n_tokens"]
    assert s["shape"]["attentions"] == [2, 4, t, t] and s["causal"] is True
    assert Path(s["files"]["html"]).is_file() and all(Path(p).is_file() for p in s["files"]["png"])
    assert len(s["top_attended"]) == t
    r = CliRunner().invoke(cli, ["explain", "attention", str(tiny_qwen2_dir), TEXT, "--out", str(out),
                                 "--layer", "1", "--head", "3"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "2 layers x 4 heads" in r.stdout and "layer 1, head 3: the last token" in r.stdout
    assert (out / "attention-L1-H3.png").is_file()
    r = CliRunner().invoke(cli, ["explain", "attention", str(tiny_qwen2_dir), TEXT, "--layer", "2"])
    assert isinstance(r.exception, LmforgeError) and "layers 0..1" in str(r.exception)
    r = CliRunner().invoke(cli, ["explain", "attention", str(tiny_qwen2_dir), TEXT, "--max-tokens", "2"])
    assert isinstance(r.exception, LmforgeError) and "the limit is 2" in str(r.exception)


def test_cli_tokens(cli, tiny_qwen2_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --out is ./explain-<model>-<hash>
    r = CliRunner().invoke(cli, ["explain", "tokens", str(tiny_qwen2_dir), TEXT, "--steps", "8"])
    assert r.exit_code == 0, r.output
    assert "integrated gradients convergence delta" in r.stdout and "│" in r.stdout
    (folder,) = tmp_path.glob("explain-model-*")
    assert sorted(p.suffix for p in folder.iterdir()) == [".html", ".png"]
    r = CliRunner().invoke(
        cli, ["explain", "tokens", str(tiny_qwen2_dir), TEXT, "--method", "grad-x-input", "--json"]
    )
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["method"] == "grad-x-input" and s["delta"] is None and s["tokens"][-1]["token"] == "␣is"
    r = CliRunner().invoke(cli, ["explain", "tokens", str(tiny_qwen2_dir), TEXT, "--method", "shap"])
    assert r.exit_code == 2  # not one of the Literal's choices


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="Debian chromium not installed (scripts/test.sh installs it)"
)
def test_pages_work_offline_in_a_browser(qwen, tmp_path):
    from playwright.sync_api import sync_playwright

    att = explain_attention(qwen, TEXT, tmp_path, head=2)
    tok = explain_tokens(qwen, TEXT, tmp_path, AttributionConfig(steps=8))
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--headless", "--no-sandbox"]
        )
        page = browser.new_page()
        errors, requests = [], []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(Path(att["files"]["html"]).as_uri())
        assert page.eval_on_selector_all("#layer option", "os => os.map(o => o.value)") == [
            "rollout",
            "0",
            "1",
        ]
        assert page.input_value("#layer") == "1" and page.input_value("#head") == "2"  # the --head chosen
        page.select_option("#layer", "0")
        assert page.eval_on_selector_all("#head option", "os => os.length") == 5  # mean + 4 heads
        page.select_option("#head", "3")
        assert page.inner_text("#what") == "layer 0, head 3"
        page.click("#row span >> nth=1")
        assert page.inner_text("#row").startswith("query #1 ")
        page.goto(Path(tok["files"]["html"]).as_uri())
        assert page.eval_on_selector_all("#text span", "s => s.length") == len(tok["tokens"])
        assert "convergence delta" in page.inner_text("#check")
        browser.close()
    assert errors == []
    assert all(u.startswith("file://") for u in requests)
