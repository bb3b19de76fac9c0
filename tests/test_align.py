"""`lmforge align --method reward|dpo` on tiny models: reward accuracy rises on a separable toy set, the DPO
margin grows (full and LoRA), the losses are the published formulas, `lmforge reward score` works."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lmforge.errors import LmforgeError
from lmforge.home import Registry
from lmforge.train.align import AlignConfig, dpo_loss, score
from lmforge.train.align import main as align


def write_pairs(path: Path, n: int = 40) -> Path:
    rows = []
    for i in range(n):
        q = f"问题 {i}：今天天气怎么样？" if i % 2 else f"Question {i}: how is the weather?"
        good = "很好，谢谢你的问题。" if i % 2 else "It is sunny, thank you for asking."
        bad = "不知道。走开。" if i % 2 else "No idea. Go away."
        rows.append({"prompt": q, "chosen": good, "rejected": bad})
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def home(tmp_path, tiny_home) -> Registry:
    write_pairs(tmp_path / "pairs.jsonl")
    return tiny_home


def cfg(tmp_path: Path, **kw) -> AlignConfig:
    base = dict(data=str(tmp_path / "pairs.jsonl"), steps=30, batch_size=4, max_length=64, val_frac=0.25,
                threads=1, save_every=10)  # fmt: skip
    return AlignConfig(**(base | kw))


def test_reward_model_learns_to_rank_and_scores(home, tmp_path, capsys):
    from lmforge.cli import main as cli

    m = align(home, "tiny", "rm", cfg(tmp_path, method="reward", lr=1e-3))
    assert m.kind == "reward" and m.parents == ["tiny"]
    assert m.metrics["after"]["accuracy"] == 1.0 and m.metrics["after"]["loss"] < m.metrics["before"]["loss"]
    assert cli(["reward", "score", "rm", "--prompt", "Question 99: how is the weather?",
                "--response", "It is sunny, thank you for asking."]) == 0  # fmt: skip
    good = float(capsys.readouterr().out)
    assert (
        cli(
            [
                "reward",
                "score",
                "rm",
                "--prompt",
                "Question 99: how is the weather?",
                "--response",
                "No idea. Go away.",
            ]
        )
        == 0
    )
    bad = float(capsys.readouterr().out)
    assert good > bad
    assert cli(["chat", "rm"]) == 2
    assert "scores answers rather than writing them" in capsys.readouterr().err


@pytest.mark.parametrize("lora", [False, True])
def test_dpo_margin_grows(home, tmp_path, lora):
    from lmforge.infer.loader import load_backend

    m = align(
        home,
        "tiny",
        f"dpo-{lora}",
        cfg(tmp_path, method="dpo", lora=lora, lr=5e-3 if lora else 1e-3, beta=0.5),
    )
    before, after = m.metrics["before"], m.metrics["after"]
    assert before["margin"] == pytest.approx(0.0, abs=1e-4)  # the policy starts as its reference
    assert after["margin"] > 0.5 and after["accuracy"] == 1.0 and after["loss"] < before["loss"]
    assert m.kind == ("adapter" if lora else "chat") and m.parents == ["tiny"]
    backend = load_backend(home, m.name)  # served by name like any model or adapter
    assert backend.capabilities.chat
    assert (home.artifact_dir(m.name) / "loss.png").exists()
    report = (home.artifact_dir(m.name) / "report.md").read_text()
    assert (
        "| accuracy | 0 | 1 |" in report and (home.artifact_dir(m.name) / "report.html").stat().st_size > 1000
    )


def test_report_judges_tuned_against_base_with_a_reward_model(home, tmp_path):
    """The aligned model and its base answer the held-out prompts; the reward model trained on the same
    pairs judges them (win rate), and a generation suite runs on both: all in the manifest and report."""
    align(home, "tiny", "judge-rm", cfg(tmp_path, method="reward", lr=1e-3))
    with pytest.raises(LmforgeError, match="not a registered reward model"):
        align(home, "tiny", "bad-judge", cfg(tmp_path, method="dpo", judge="tiny"))
    assert not home.exists("bad-judge")
    m = align(home, "tiny", "judged", cfg(tmp_path, method="dpo", lr=1e-3, beta=0.5, judge="judge-rm",
                                          judge_prompts=6, judge_tokens=12, eval_suite=["zh-ppl"]))  # fmt: skip
    j = m.metrics["judged"]
    assert j["judge"] == "judge-rm" and j["prompts"] == 6 and j["wins"] + j["ties"] + j["losses"] == 6
    assert j["win_rate"] == pytest.approx((j["wins"] + j["ties"] / 2) / 6)
    for s in j["samples"]:  # each score is the judge's score of that answer
        assert s["tuned_score"] == pytest.approx(score(home, "judge-rm", s["prompt"], s["tuned"]), abs=1e-3)
    assert j["wins"] > j["losses"]  # DPO moved the policy towards what the judge prefers
    before, after = m.metrics["suite_pairs"]["zh-ppl"]["perplexity"]
    assert before > 1 and after > 1
    report = (home.artifact_dir("judged") / "report.md").read_text()
    assert "Win rate judged by judge-rm" in report and "zh-ppl: perplexity" in report


def test_dpo_loss_is_the_published_formula():
    import torch

    pc, pr, rc, rr = torch.tensor([-3.0]), torch.tensor([-5.0]), torch.tensor([-4.0]), torch.tensor([-4.5])
    loss, margin = dpo_loss(pc, pr, rc, rr, beta=0.2)
    expected_margin = 0.2 * ((-3.0 + 4.0) - (-5.0 + 4.5))
    assert float(margin) == pytest.approx(expected_margin)
    assert float(loss) == pytest.approx(-math.log(1 / (1 + math.exp(-expected_margin))))


def test_bad_input(home, tmp_path, capsys):
    from lmforge.cli import main as cli

    (tmp_path / "same.jsonl").write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "a"}) + "\n")
    assert cli(["align", "tiny", "--data", str(tmp_path / "same.jsonl"), "--out", "x"]) == 2
    assert "same answer" in capsys.readouterr().err
    assert (
        cli(["align", "tiny", "--data", str(tmp_path / "pairs.jsonl"), "--out", "x", "--method", "ppo"]) == 2
    )
    assert "ppo" in capsys.readouterr().err
    with pytest.raises(LmforgeError, match="no such file"):
        align(home, "tiny", "x", cfg(tmp_path, data=str(tmp_path / "missing.jsonl")))
    assert not home.exists("x")


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_policy_optimisation_raises_the_mean_reward_on_a_learnable_rule(home, tmp_path, method):
    """A user rule (FILE.py:FUNCTION) rewarding vowels: the sampled mean reward rises within a few steps."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"say something {i}"}) for i in range(16)) + "\n")
    rules = tmp_path / "rules.py"
    rules.write_text("def vowels(prompt, completion, example):\n"
                     "    return sum(c in 'aeiou' for c in completion) / max(1, len(completion))\n")  # fmt: skip
    m = align(home, "tiny", f"pol-{method}", cfg(tmp_path, method=method, data=str(prompts), reward=f"{rules}:vowels",
                                                 steps=20, batch_size=2, generations=4, max_new_tokens=8, lr=1e-2,
                                                 eval_prompts=4))  # fmt: skip
    met = m.metrics
    assert met["sampled_reward_last"] > met["sampled_reward_first"] + 0.05
    assert {"mean_reward"} <= set(met["before"]) and m.kind == "chat"


def test_reward_rules_and_their_errors(tmp_path):
    from lmforge.train.rewards import call, exact_answer, json_schema, resolve

    assert exact_answer("3+4=", "答案是 7。", {"answer": 7}) == 1.0
    assert exact_answer("3+4=", "8", {"answer": 7}) == 0.0
    assert exact_answer("3+4=", "3 + 4 = 7", {"answer": 7}) == 1.0  # the last number is the answer
    schema = {"type": "object", "required": ["name"]}
    assert json_schema("", '{"name": "x"}', {"schema": schema}) == 1.0
    assert json_schema("", '{"age": 3}', {"schema": schema}) == 0.5 and json_schema("", "nope", {}) == 0.0
    rules = tmp_path / "rules.py"
    rules.write_text("def shout(prompt, completion, example):\n    return float(completion.isupper())\n"
                     "def broken(prompt, completion, example):\n    raise ValueError('boom')\n"
                     "def wrong(prompt, completion, example):\n    return 'high'\n")  # fmt: skip
    assert call(resolve(f"{rules}:shout"), "shout", "p", "HI", {}, 1) == 1.0
    with pytest.raises(LmforgeError, match="raised ValueError: boom on the record at line 7"):
        call(resolve(f"{rules}:broken"), "broken", "p", "x", {}, 7)
    with pytest.raises(LmforgeError, match="returned 'high' \\(not a finite number\\)"):
        call(resolve(f"{rules}:wrong"), "wrong", "p", "x", {}, 3)
    with pytest.raises(LmforgeError, match="unknown --reward"):
        resolve("vibes")


def test_dpo_resume_after_a_crash_gives_the_same_losses(home, tmp_path, monkeypatch):
    import lmforge.train.align as al

    real = al.lr_factor

    class Crash(Exception):
        pass

    def crash_at_13(step, *a):
        if step == 13:
            raise Crash
        return real(step, *a)

    with monkeypatch.context() as mp:
        mp.setattr(al, "lr_factor", crash_at_13)
        with pytest.raises(Crash):
            align(home, "tiny", "r", cfg(tmp_path, method="dpo", lr=1e-3))
    assert json.loads((home.root / "runs" / "r" / "checkpoint.json").read_text())["step"] == 10
    with pytest.raises(LmforgeError, match=r"--beta \(0.1 -> 0.2\)"):
        align(home, "tiny", "r", cfg(tmp_path, method="dpo", lr=1e-3, beta=0.2))
    resumed = align(home, "tiny", "r", cfg(tmp_path, method="dpo", lr=1e-3))
    straight = align(home, "tiny", "s", cfg(tmp_path, method="dpo", lr=1e-3))

    def losses(name):
        return [
            json.loads(x)["loss"]
            for x in (home.artifact_dir(name) / "metrics.jsonl").read_text().splitlines()
        ]

    assert losses(resumed.name) == pytest.approx(losses(straight.name), abs=1e-6)
