"""Evaluation: metric functions against their reference implementations, the suite harness on
tiny real models (llama.cpp and transformers must agree), reports, bias probes, bad suites."""

from __future__ import annotations

import json
import math

import pytest

from lmforge.errors import LmforgeError
from lmforge.eval import metrics as M
from lmforge.eval.harness import EvalConfig, Scorer, load_suite, parse_entities, run_suite

# ------------------------------------------------------------------ metrics vs references


def test_squad_style_em_f1():
    # values from the official SQuAD v1.1 evaluation script's definitions
    assert M.exact_match("The Eiffel Tower!", "eiffel tower") == 1.0
    assert M.token_f1("the cat sat on the mat", "a cat on a mat") == pytest.approx(
        2 * (3 / 4) * (3 / 3) / (3 / 4 + 1)
    )
    assert M.token_f1("北京市", "北京") == pytest.approx(0.8)  # characters for Chinese: P=2/3, R=1
    assert M.token_f1("", "x") == 0.0 and M.exact_match("", "") == 1.0


def test_bleu_chrf_match_sacrebleu():
    import sacrebleu

    hyp, ref = (
        ["the cat is on the mat", "他今天去了北京。"],
        ["there is a cat on the mat", "他昨天去了上海。"],
    )
    assert M.bleu(hyp[:1], ref[:1]) == pytest.approx(sacrebleu.corpus_bleu(hyp[:1], [ref[:1]]).score)
    assert M.bleu(hyp[1:], ref[1:], "zh") == pytest.approx(
        sacrebleu.corpus_bleu(hyp[1:], [ref[1:]], tokenize="zh").score
    )
    assert M.bleu(hyp[1:], ref[1:], "zh") > M.bleu(hyp[1:], ref[1:], "en")  # 13a cannot split Chinese
    assert M.chrf(hyp, ref) == pytest.approx(sacrebleu.corpus_chrf(hyp, [ref]).score)


def test_rouge_matches_rouge_score_and_handles_chinese():
    from rouge_score import rouge_scorer

    ref = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True).score(
        "the quick brown fox jumps", "the quick fox jumped over"
    )
    ours = M.rouge(["the quick fox jumped over"], ["the quick brown fox jumps"])
    assert ours == {k: pytest.approx(ref[k].fmeasure) for k in ("rouge1", "rouge2", "rougeL")}
    zh = M.rouge(["我们明天去上海开会"], ["明天我们去上海开会"], "zh")
    assert zh["rouge1"] == pytest.approx(1.0) and zh["rouge2"] < 1.0  # same words, other order
    assert (
        M.rouge(["今天北京天气很好"], ["北京今天天气很好"], "en")["rouge1"] == 0.0
    )  # why zh needs segmentation


def test_entity_f1_matches_seqeval():
    from seqeval.metrics import f1_score

    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O", "B-PER"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["O", "B-ORG", "I-ORG", "O", "B-LOC"]]
    assert M.seq_f1(pred, gold) == pytest.approx(f1_score(gold, pred))
    odd = [["I-PER", "I-PER", "B-LOC", "I-ORG"]]  # I- after O / after another type starts an entity
    assert M.seq_f1(odd, [["B-PER", "I-PER", "B-LOC", "B-ORG"]]) == pytest.approx(
        f1_score([["B-PER", "I-PER", "B-LOC", "B-ORG"]], odd)
    )
    assert parse_entities("人名：江泽民\n地名：北京、上海\nnoise\nORG: 新华社") == {
        ("PER", "江泽民"), ("LOC", "北京"), ("LOC", "上海"), ("ORG", "新华社"),
    }  # fmt: skip


def test_classification_and_intervals():
    pred, gold = ["pos", "pos", "neg", "neg"], ["pos", "neg", "neg", "neg"]
    assert M.accuracy(pred, gold) == 0.75
    assert M.macro_f1(pred, gold) == pytest.approx((2 / 3 + 0.8) / 2)  # pos: P=1/2 R=1, neg: P=1 R=2/3
    lo, hi = M.wilson_interval(8, 10)
    assert (round(lo, 3), round(hi, 3)) == (0.49, 0.943)  # the textbook Wilson interval for 8/10
    assert M.bits_per_byte(math.log(2) * 8, 8) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        M.accuracy(["a"], ["a", "b"])


# ------------------------------------------------------------------ suites


def _suite(tmp_path, name, task, items, **desc):
    import yaml

    (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items))
    (tmp_path / f"{name}.yaml").write_text(
        yaml.safe_dump({"name": name, "task": task, "data": f"{name}.jsonl", **desc})
    )
    return tmp_path / f"{name}.yaml"


def test_bad_suites_are_refused(tmp_path):
    with pytest.raises(LmforgeError, match="missing choices, answer"):
        load_suite(_suite(tmp_path, "a", "multiple_choice", [{"question": "q"}], prompt="{question}"))
    with pytest.raises(LmforgeError, match="label 'meh' is not in the label set"):
        load_suite(_suite(tmp_path, "b", "classification", [{"text": "x", "label": "meh"}], prompt="{text}",
                          labels={"pos": "good", "neg": "bad"}))  # fmt: skip
    with pytest.raises(LmforgeError, match="empty reference"):
        load_suite(
            _suite(tmp_path, "c", "generation", [{"source": "x", "reference": " "}], prompt="{source}")
        )
    with pytest.raises(LmforgeError, match="do not apply"):
        load_suite(_suite(tmp_path, "d", "perplexity", [{"text": "x"}], metrics=["bleu"]))
    with pytest.raises(LmforgeError, match="no suite 'nope'"):
        load_suite("nope")
    (tmp_path / "e.jsonl").write_text('{"text": "a"}\n{broken\n')
    (tmp_path / "e.yaml").write_text("name: e\ntask: perplexity\ndata: e.jsonl\n")
    with pytest.raises(LmforgeError, match="line 2"):
        load_suite(tmp_path / "e.yaml")


@pytest.fixture(scope="module")
def scorers(tiny_gguf, tiny_qwen2_dir):
    from lmforge.infer.hf import TransformersBackend
    from lmforge.infer.llamacpp import LlamaCppBackend

    cpp = LlamaCppBackend(tiny_gguf, model_name="tiny", n_ctx=256, n_threads=2, logits_all=True)
    hf = TransformersBackend(tiny_qwen2_dir, model_name="tiny-hf", n_threads=2)
    yield Scorer(cpp, chat=False), Scorer(hf, chat=False)
    cpp.close()


def test_perplexity_agrees_across_backends_and_windows(tmp_path, scorers):
    cpp, hf = scorers
    text = "The cat sat on the mat. 小猫坐在垫子上。" * 12
    suite = load_suite(_suite(tmp_path, "p", "perplexity", [{"text": text}]))
    a = run_suite(cpp, suite, "tiny", EvalConfig(window=64, stride=32))
    b = run_suite(hf, suite, "tiny-hf", EvalConfig(window=64, stride=32))
    assert a.metrics["perplexity"] == pytest.approx(
        b.metrics["perplexity"], rel=2e-3
    )  # f16 GGUF vs fp32 torch
    assert a.items[0]["tokens"] == len(cpp.tokens(text))  # every token scored exactly once
    full = run_suite(cpp, suite, "tiny", EvalConfig(window=256))
    disjoint = run_suite(cpp, suite, "tiny", EvalConfig(window=32, stride=31))
    assert full.metrics["perplexity"] < disjoint.metrics["perplexity"]  # more context, lower perplexity
    assert full.metrics["bits_per_byte"] == pytest.approx(
        full.items[0]["nll"] / math.log(2) / len(text.encode())
    )


def test_multiple_choice_and_classification(tmp_path, scorers):
    cpp, _ = scorers
    mc = load_suite(_suite(tmp_path, "mc", "multiple_choice",
                           [{"question": "The cat sat on the", "choices": ["mat", "sky", "idea"], "answer": 0}] * 3,
                           prompt="{question}"))  # fmt: skip
    r = run_suite(cpp, mc, "tiny", EvalConfig())
    ll = r.items[0]["loglik"]
    ids = cpp.tokens("The cat sat on the mat")
    manual = sum(cpp.backend.score(ids)[len(cpp.tokens("The cat sat on the")) - 1 :])
    assert ll[0] == pytest.approx(manual, abs=1e-4)
    assert r.metrics["accuracy"] == float(max(range(3), key=lambda j: ll[j]) == 0)
    cls = load_suite(_suite(tmp_path, "cls", "classification",
                            [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"}, {"text": "c", "label": "neg"}],
                            prompt="Review: {text}\nSentiment:", labels={"pos": "good", "neg": "bad"}))  # fmt: skip
    r = run_suite(cpp, cls, "tiny", EvalConfig(limit=2))
    assert r.n == 2 and set(r.metrics) == {"accuracy", "macro_f1"}
    # the expected numbers from the raw token scores: the label whose verbalizer (after a space) is
    # likelier after the prompt wins
    labels = list(cls.labels)  # the suite's order (YAML sorts the keys: neg, pos)
    assert sorted(labels) == ["neg", "pos"]
    preds = []
    for text in ("a", "b"):
        context = f"Review: {text}\nSentiment:"
        lls = []
        for label in labels:
            ids, n = cpp.tokens(context + " " + cls.labels[label]), len(cpp.tokens(context))
            assert ids[:n] == cpp.tokens(context)  # the verbalizer starts on a token boundary
            lls.append(sum(cpp.backend.score(ids)[n - 1 :]))
        assert r.items[len(preds)]["loglik"] == pytest.approx(lls, abs=1e-4)
        preds.append(labels[lls.index(max(lls))])
    gold = ["pos", "neg"]
    assert r.metrics["accuracy"] == sum(p == g for p, g in zip(preds, gold, strict=True)) / 2
    assert r.metrics["macro_f1"] == pytest.approx(M.macro_f1(preds, gold, labels))
    assert r.config["prompt"] == "Review: {text}\nSentiment:" and r.config["limit"] == 2


def test_generation_and_ner_are_reproducible(tmp_path, scorers):
    cpp, _ = scorers
    gen = load_suite(_suite(tmp_path, "g", "generation",
                            [{"source": "The cat", "reference": "sat on the mat"}, {"source": "小猫", "reference": "坐在垫子上"}],
                            prompt="{source}", metrics=["bleu", "chrf", "exact_match", "f1", "rouge1"]))  # fmt: skip
    a = run_suite(cpp, gen, "tiny", EvalConfig(max_tokens=8))
    b = run_suite(cpp, gen, "tiny", EvalConfig(max_tokens=8))
    assert a.metrics == b.metrics and set(a.metrics) == {"bleu", "chrf", "exact_match", "f1", "rouge1"}
    assert a.items[0]["output"] == b.items[0]["output"]
    ner = load_suite(_suite(tmp_path, "n", "ner", [{"text": "江泽民在北京", "entities": [{"type": "PER", "text": "江泽民", "start": 0}]}],
                            prompt="{text}"))  # fmt: skip
    r = run_suite(cpp, ner, "tiny", EvalConfig(max_tokens=8))
    assert set(r.metrics) == {"entity_f1", "entity_precision", "entity_recall"}


def test_remote_model_cannot_score(tmp_path):
    """A remote chat model scores through its upstream (tests/test_remote.py); one without even that
    (a remote embedding model) is refused by name, and generation needs `chat` too."""
    from lmforge.infer.remote import OpenAIRemoteBackend

    remote = OpenAIRemoteBackend(base_url="http://127.0.0.1:9/v1", model="m", api_key="k", model_name="r",
                                 embedding=True)  # fmt: skip
    scorer = Scorer(remote, chat=True)
    with pytest.raises(LmforgeError, match="cannot score log-likelihoods"):
        scorer.loglikelihood("The capital of France is", " Paris")
    with pytest.raises(LmforgeError, match="cannot score log-likelihoods"):
        scorer.rolling("some text", 8, 4)
    with pytest.raises(LmforgeError, match="cannot generate text"):
        scorer.generate("The capital of France is", 4, 0)


# ------------------------------------------------------------------ CLI, manifest, report, bias


def _tiny_mlm(folder, tokenizer_dir):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tok.add_special_tokens({"mask_token": "[MASK]"})
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, pad_token_id=tok.pad_token_id)  # fmt: skip
    BertForMaskedLM(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def test_eval_cli_compare_report_and_bias(
    tmp_path, registry, tiny_gguf, tiny_bert_dir, tiny_tokenizer_dir, capsys, scorers
):
    from lmforge.cli import main
    from lmforge.home import register_local

    register_local(registry, tiny_gguf, "a")
    register_local(registry, tiny_gguf, "b")
    register_local(registry, tiny_bert_dir, "encoder", kind="base")
    register_local(registry, _tiny_mlm(tmp_path / "mlm", tiny_tokenizer_dir), "mlm", kind="base")
    suite = _suite(
        tmp_path,
        "ppl",
        "perplexity",
        [{"text": "The cat sat on the mat. " * 5}, {"text": "小猫坐在垫子上。" * 5}],
    )
    assert main(["eval", "a", "--suite", str(suite)]) == 0
    assert main(["eval", "b", "--suite", str(suite), "--window", "16", "--stride", "8"]) == 0
    stored = registry.get("a").metrics["eval:ppl"]
    assert stored["config"]["suite_sha256"] and stored["n"] == 2 and stored["metrics"]["perplexity"] > 1
    assert main(["eval", "a", "--suite", str(suite)]) == 0  # a rerun gives the same numbers
    assert registry.get("a").metrics["eval:ppl"]["metrics"] == stored["metrics"]
    capsys.readouterr()
    out = tmp_path / "report"
    assert main(["eval", "compare", "a", "b", "--suite", str(suite), "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "perplexity" in table and "bits_per_byte" in table and "*" in table
    assert (out / "ppl.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert main(["eval", "compare", "a", "nobody", "--suite", str(suite)]) == 2
    # bias probes: a causal model and a masked one, with user templates
    tpl = tmp_path / "bias.yaml"
    tpl.write_text(
        "families:\n  - name: occ-en\n    lang: en\n    template: 'The {occupation} said that'\n"
        "    mask_template: 'The {occupation} said that [MASK] is late.'\n    slot: occupation\n"
        "    fillers: [nurse, engineer, teacher]\n    targets: {male: ' he', female: ' she'}\n"
    )
    assert main(["eval", "bias", "a", "--templates", str(tpl), "--out", str(tmp_path / "bias")]) == 0
    assert "occ-en" in capsys.readouterr().out
    result = json.loads((tmp_path / "bias" / "bias.json").read_text())[0]
    # expected: per filler, p(he) - p(she) with the two likelihoods normalised against each other
    cpp, _ = scorers  # the same GGUF
    skew = {}
    for filler in ("nurse", "engineer", "teacher"):
        he, she = (cpp.loglikelihood(f"The {filler} said that", t) for t in (" he", " she"))
        skew[filler] = (math.exp(he) - math.exp(she)) / (math.exp(he) + math.exp(she))
    assert result["per_filler"] == pytest.approx(skew, abs=1e-3)
    assert result["disparity"] == pytest.approx(sum(abs(v) for v in skew.values()) / 3, abs=1e-3)
    assert result["spread"] == pytest.approx(max(skew.values()) - min(skew.values()), abs=1e-3)
    assert registry.get("a").metrics["bias"]["method"] == "next-token likelihood"
    assert main(["eval", "bias", "mlm", "--templates", str(tpl)]) == 0
    assert registry.get("mlm").metrics["bias"]["method"] == "fill-mask"
    assert main(["eval", "bias", "encoder", "--templates", str(tpl)]) == 2  # no mask token: said, not guessed
    assert "no mask token" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("families:\n  - name: x\n")
    assert main(["eval", "bias", "a", "--templates", str(tmp_path / "bad.yaml")]) == 2
    assert main(["eval", "a"]) == 2  # no suite


# ------------------------------------------------------------------ human preference


def test_votes_win_rate_and_dpo_export(tmp_path):
    import random

    from lmforge.eval.human import VoteStore

    store = VoteStore(tmp_path / "votes.sqlite")
    rng = random.Random(1)
    shown = []
    for i in range(10):
        p = store.new_pair(f"prompt {i}", ("big", "small"), lambda m, q: f"{m} says {q}", rng=rng)
        assert set(p) == {"pair_id", "prompt", "answers"}  # blind: no model names
        side = "A" if p["answers"]["A"].startswith("big") else "B"
        shown.append(side)
        store.vote(p["pair_id"], side if i < 7 else ("tie" if i == 7 else ("B" if side == "A" else "A")))
    assert set(shown) == {"A", "B"}  # the sides really are shuffled
    [row] = store.stats()
    assert (row["model"], row["wins"], row["losses"], row["ties"], row["n"]) == ("big", 7, 2, 1, 10)
    assert row["win_rate"] == pytest.approx(0.75) and row["ci95"][0] < 0.75 < row["ci95"][1]
    rows = store.export()
    assert len(rows) == 9 and all(r["chosen"].startswith("big") for r in rows[:7])
    assert store.export_jsonl(tmp_path / "dpo.jsonl") == 9
    with pytest.raises(LmforgeError, match="already has a vote"):
        store.vote(p["pair_id"], "A")
    with pytest.raises(LmforgeError, match="winner must be"):
        store.vote(p["pair_id"], "C")
    with pytest.raises(LmforgeError, match="no pair"):
        store.vote("nope", "A")
    with pytest.raises(LmforgeError, match="two different models"):
        store.new_pair("x", ("big", "big"), lambda m, q: "")


def test_compare_warns_when_tokenizers_differ(tmp_path, registry, tiny_gguf, tiny_gguf_long):
    from lmforge.eval.report import compare
    from lmforge.home import register_local

    register_local(registry, tiny_gguf, "a")
    register_local(registry, tiny_gguf_long, "c")
    for name, probe in (("a", "aaaa"), ("c", "cccc")):
        registry.update(
            name,
            metrics={
                "eval:ppl": {
                    "metrics": {"perplexity": 3.0, "bits_per_byte": 1.0},
                    "config": {"tokenizer": probe},
                }
            },
        )
    _suite(tmp_path, "ppl", "perplexity", [{"text": "x"}])
    text, _ = compare(registry, ["a", "c"], [str(tmp_path / "ppl.yaml")], tmp_path / "r")
    assert "tokenizers differ" in text and "bits_per_byte" in text


def test_scoring_reuses_a_shared_prefix_without_changing_results(scorers):
    cpp, _ = scorers
    b = cpp.backend
    x = cpp.tokens("The cat sat on the mat and looked at the dog.")
    y = cpp.tokens("The cat sat on the mat and then it slept for hours.")
    b.score(cpp.tokens("Something unrelated first."))
    fresh_x = b.score(x)
    b.score(cpp.tokens("Another unrelated text."))
    fresh_y = b.score(y)
    after_x = (b.score(x), b.score(y), b.score(x), b.score(x[:5]))  # prefix hits, and a shorter prefix
    assert after_x[0] == pytest.approx(fresh_x, abs=1e-4) and after_x[2] == pytest.approx(fresh_x, abs=1e-4)
    assert after_x[1] == pytest.approx(fresh_y, abs=1e-4)
    assert after_x[3] == pytest.approx(fresh_x[:4], abs=1e-4)
