"""Fine-tuned task heads (`lmforge finetune --task classification|ner`) and their use by `lmforge task` and
/v1/tasks: trained for real on tiny models, on data they can learn; checked on held-out items."""

from __future__ import annotations

import json
import random

import pytest

POS = ["happy", "warm", "bright", "kind", "calm", "quiet"]
NEG = ["sad", "cold", "dark", "angry", "loud", "tired"]
PEOPLE = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank"]
CITIES = ["Paris", "Rome", "Tokyo", "London", "Berlin", "Madrid"]


def sentiment_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["positive", "negative"])
        word = rng.choice(POS if label == "positive" else NEG)
        rows.append({"text": f"the fox was {word} by the river", "label": label})
    return rows


def ner_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        p, c = rng.choice(PEOPLE), rng.choice(CITIES)
        text = f"{p} lived in {c} by the river"
        rows.append({"text": text, "entities": [{"text": p, "label": "PER", "start": 0, "end": len(p)},
                                                {"text": c, "label": "LOC", "start": text.index(c),
                                                 "end": text.index(c) + len(c)}]})  # fmt: skip
    return rows


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture()
def heads_home(registry, tiny_bert_dir, tiny_qwen2_dir):
    from lmforge.home import register_local

    register_local(registry, tiny_bert_dir, "bert", kind="masked-lm")
    register_local(registry, tiny_qwen2_dir, "qwen", kind="base")
    return registry


def test_classification_head_on_a_masked_lm_is_used_by_task(heads_home, tmp_path, capsys):
    from lmforge.cli import main as cli

    data = write(tmp_path / "train.jsonl", sentiment_rows(160, 0))
    held = write(tmp_path / "held.jsonl", sentiment_rows(40, 1))
    assert cli(["finetune", "bert", "--task", "classification", "--data", data, "--eval-data", held,
                "--method", "full", "--steps", "60", "--lr", "2e-3", "--out", "bert-sent", "--json"]) == 0  # fmt: skip
    m = json.loads(capsys.readouterr().out)
    assert m["kind"] == "classifier" and m["config"]["labels"] == ["negative", "positive"]
    assert m["metrics"]["held_out"]["accuracy"] >= 0.9, m["metrics"]
    assert cli(["task", "sentiment", "bert-sent", "the fox was angry by the river", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["label"] == "negative" and 0.5 < got["score"] <= 1
    # a classifier does not tag entities, and does not invent labels it was not trained on
    assert cli(["task", "ner", "bert-sent", "Alice lived in Paris"]) == 2
    assert (
        "fine-tuned classification model: it answers sentiment and classify, not ner"
        in capsys.readouterr().err
    )
    assert cli(["task", "classify", "bert-sent", "--labels", "sports,finance", "x"]) == 2
    assert "trained on the labels negative, positive" in capsys.readouterr().err
    # it is not a chat model
    assert cli(["generate", "bert-sent", "hi"]) == 2
    assert "fine-tuned classification model" in capsys.readouterr().err


def test_ner_head_on_a_decoder_with_lora_finds_offsets(heads_home, tmp_path, capsys):
    from lmforge.cli import main as cli
    from lmforge.tasks.heads import load_head

    data = write(tmp_path / "ner.jsonl", ner_rows(200, 0))
    assert cli(["finetune", "qwen", "--task", "ner", "--data", data, "--method", "lora", "--steps", "80",
                "--lr", "1e-2", "--out", "qwen-ner", "--json"]) == 0  # fmt: skip
    m = json.loads(capsys.readouterr().out)
    assert m["config"]["labels"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert m["metrics"]["held_out"]["entity_f1"] >= 0.8, m["metrics"]
    assert m["metrics"]["trainable_params"] < m["params"] / 4  # LoRA, merged into a plain model afterwards
    head = load_head(heads_home, "qwen-ner")
    text = "Dave lived in Tokyo by the river"
    ents = head.run("ner", text)["entities"]
    assert {(e["label"], e["text"]) for e in ents} == {("PER", "Dave"), ("LOC", "Tokyo")}
    assert all(text[e["start"] : e["end"]] == e["text"] for e in ents)


def test_bad_head_data_is_refused_by_line(heads_home, tmp_path, capsys):
    from lmforge.cli import main as cli

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok", "label": "a"}\n{"text": "no label"}\n', encoding="utf-8")
    assert cli(["finetune", "bert", "--task", "classification", "--data", str(bad), "--out", "x"]) == 2
    assert 'line 2: needs a "label"' in capsys.readouterr().err
    one = write(tmp_path / "one.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}])
    assert cli(["finetune", "bert", "--task", "classification", "--data", one, "--out", "x"]) == 2
    assert "one label only" in capsys.readouterr().err
    span = tmp_path / "span.jsonl"
    span.write_text(
        '{"text": "Bob ran", "entities": [{"label": "PER", "start": 0, "end": 2, "text": "Bob"}]}\n'
    )
    assert cli(["finetune", "bert", "--task", "ner", "--data", str(span), "--out", "x"]) == 2
    assert "does not match text[0:2]" in capsys.readouterr().err
    assert not heads_home.exists("x")


def test_task_eval_and_compare_on_a_suite(heads_home, tmp_path, capsys, tiny_gguf_long):
    """`task eval` scores a model on a suite with the eval metrics; `task compare` puts zero-shot, few-shot
    and the fine-tuned head side by side on the same items and writes Markdown, HTML and PNG."""
    from lmforge.cli import main as cli
    from lmforge.home import register_local

    register_local(heads_home, tiny_gguf_long, "tg", kind="chat")
    data = write(tmp_path / "train.jsonl", sentiment_rows(160, 0))
    assert cli(["finetune", "bert", "--task", "classification", "--data", data, "--method", "full",
                "--steps", "60", "--lr", "2e-3", "--out", "bert-sent"]) == 0  # fmt: skip
    capsys.readouterr()
    held = [
        {"id": f"s{i}", "text": r["text"], "label": r["label"][:3]}
        for i, r in enumerate(sentiment_rows(12, 5))
    ]
    write(tmp_path / "mini.jsonl", held)
    (tmp_path / "mini.yaml").write_text(
        "name: mini\ntask: classification\nlang: en\ndata: mini.jsonl\nprompt: '{text}'\n"
        "labels: {pos: positive, neg: negative}\nmetrics: [accuracy, macro_f1]\n",
        encoding="utf-8",
    )
    suite = str(tmp_path / "mini.yaml")
    assert cli(["task", "eval", "sentiment", "bert-sent", "--suite", suite, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)["results"][0]
    assert res["n"] == 12 and res["strategy"] == "fine-tuned" and res["metrics"]["accuracy"] >= 0.9
    assert cli(["task", "eval", "ner", "bert-sent", "--suite", suite]) == 2
    assert "classification suite: it scores sentiment, classify, not ner" in capsys.readouterr().err
    out = tmp_path / "cmp"
    assert cli(["task", "compare", "sentiment", "tg", "--suite", suite, "--examples", data, "--shots", "2",
                "--finetuned", "bert-sent", "--no-cot", "--out", str(out), "--json"]) == 0  # fmt: skip
    got = json.loads(capsys.readouterr().out)
    assert [r["strategy"] for r in got["results"]] == [
        "zero-shot",
        "few-shot (2 random)",
        "fine-tuned (bert-sent)",
    ]
    assert all(r["n"] == 12 for r in got["results"])
    md = (out / "compare.md").read_text(encoding="utf-8")
    assert "| fine-tuned (bert-sent) | bert-sent |" in md
    assert (out / "compare.png").stat().st_size > 5000 and "<table>" in (out / "compare.html").read_text()
