"""`lmforge pretrain` (causal LM and masked LM), `fill-mask`: exact resume after a real SIGKILL,
refusal of a changed run, a full disk during a checkpoint, 2 processes x b == 1 process x 2b under
`accelerate launch`, continued pretraining with replay and a forgetting report, lineage."""

from __future__ import annotations

import errno
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import kill_after_checkpoint
from conftest import start_cli as run_cli

from lmforge.data.prepare import PrepareConfig, prepare
from lmforge.errors import LmforgeError
from lmforge.home import Registry
from lmforge.tokenizer.bpe import BPEConfig, train_registered
from lmforge.train.args import PretrainConfig, lr_factor
from lmforge.train.pretrain import main as pretrain

ZH = [
    "北京是中国的首都。",
    "上海是中国最大的城市。",
    "今天天气很好，我们去公园散步。",
    "春眠不觉晓，处处闻啼鸟。",
]
EN = ["The quick brown fox jumps over the lazy dog.", "Language models predict the next token.",
      "Data is cleaned before training.", "A tokenizer splits text into pieces."]  # fmt: skip
SIZE = {"hidden": 32, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate": 64, "context": 64}


def write_docs(folder: Path, n: int, seed: int, pool: list[str]) -> Path:
    rnd = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"d{i:04d}.txt").write_text(
            " ".join(rnd.choices(pool, k=6)) + f" 第{i}篇 number {i}", "utf-8"
        )
    return folder


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Registry:
    """A registry with a zh+en dataset 'corp', a BPE tokenizer 'tok' and a size file at tmp/size.json."""
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "home"))
    reg = Registry(tmp_path / "home")
    prepare(
        reg,
        [write_docs(tmp_path / "docs", 160, 0, ZH + EN)],
        "corp",
        PrepareConfig(dedup="none", val_frac=0.1),
    )
    train_registered(reg, "corp", "tok", BPEConfig(vocab_size=400))
    (tmp_path / "size.json").write_text(json.dumps(SIZE))
    return reg


def cfg(tmp_path: Path, **kw) -> PretrainConfig:
    base = dict(size=str(tmp_path / "size.json"), tokenizer="tok", data="corp", steps=12, batch_size=4,
                seq_len=32, eval_every=4, save_every=4, precision="fp32", threads=1)  # fmt: skip
    return PretrainConfig(**(base | kw))


def losses(m) -> list[float]:
    folder = Registry().artifact_dir(m.name)
    return [json.loads(line)["loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_clm_pretrain_registers_a_model_with_lineage_that_generates(home, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = pretrain(home, "lm", cfg(tmp_path, steps=40, eval_every=10, lr=3e-3))
    assert m.kind == "base" and m.format == "hf" and m.parents == ["tok", "corp"]
    assert m.data_fingerprint == home.get("corp").data_fingerprint
    met = m.metrics
    hist = losses(m)
    assert len(hist) == 40 and met["steps"] == 40 and met["tokens"] == 40 * 4 * 32
    assert sum(hist[-5:]) / 5 < sum(hist[:5]) / 5 - 0.5  # it learns
    assert [e["step"] for e in met["evals"]] == [10, 20, 30, 40] and met["val_ppl"] < 400
    assert met["precision"]["used"] == "fp32"
    folder = home.artifact_dir("lm")
    assert (folder / "loss.png").stat().st_size > 5000
    assert not (home.root / "runs" / "lm" / "checkpoint.pt").exists()  # run folder cleaned once registered
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    ids = tok("北京是", return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 5 or tok.eos_token_id in out[0].tolist()
    assert [a.name for _, a in home.lineage("lm")] == ["lm", "tok", "corp"]


def test_sigkill_then_rerun_resumes_with_identical_losses(home, tmp_path):
    """A real kill -9 mid-run; the same command again continues from the checkpoint and every later
    step's loss equals the uninterrupted run's (CPU fp32, to 1e-6)."""
    args = ["pretrain", "--data", "corp", "--tokenizer", "tok", "--size", str(tmp_path / "size.json"),
            "--steps", "150", "--batch-size", "4", "--seq-len", "32", "--eval-every", "50", "--save-every", "10",
            "--precision", "fp32", "--threads", "1", "--dropout", "0.1", "--json"]  # fmt: skip
    ck_step = kill_after_checkpoint(run_cli([*args, "--out", "a"], home.root), home.root / "runs" / "a", 30)
    assert not home.exists("a")
    resumed = run_cli([*args, "--out", "a"], home.root)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"resuming a from the checkpoint of step {ck_step}/150" in err
    straight = run_cli([*args, "--out", "b"], home.root)
    out_b, err_b = straight.communicate(timeout=300)
    assert straight.returncode == 0, err_b
    a, b = losses(home.get("a")), losses(home.get("b"))
    assert len(a) == len(b) == 150
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 1e-6
    assert json.loads(out)["name"] == "a"


class Interrupt(Exception):
    pass


def interrupt_at(monkeypatch, step: int) -> None:
    """Stop a run when it reaches optimizer step `step` (as a crash would)."""
    import lmforge.train.pretrain as pt

    real = pt.lr_factor

    def factor(s, *a):
        if s == step:
            raise Interrupt
        return real(s, *a)

    monkeypatch.setattr(pt, "lr_factor", factor)


def test_resume_with_changed_config_or_data_is_refused_naming_it(home, tmp_path, monkeypatch):
    with monkeypatch.context() as mp:
        interrupt_at(mp, 9)
        with pytest.raises(Interrupt):
            pretrain(home, "r", cfg(tmp_path))
    with pytest.raises(LmforgeError, match=r"changed since its checkpoint: --lr \(0.001 -> 0.002\)"):
        pretrain(home, "r", cfg(tmp_path, lr=2e-3))
    with pytest.raises(LmforgeError, match="--batch-size"):
        pretrain(home, "r", cfg(tmp_path, batch_size=2))
    # the dataset changed under the same name
    home.update("corp", data_fingerprint="0" * 64)
    with pytest.raises(LmforgeError, match="dataset contents changed"):
        pretrain(home, "r", cfg(tmp_path))
    assert (home.root / "runs" / "r" / "checkpoint.pt").exists()  # the refusal lost nothing
    m = pretrain(home, "r", cfg(tmp_path), restart=True)  # --restart discards and starts over
    assert m.metrics["steps"] == 12


def test_failed_checkpoint_write_keeps_the_previous_one(home, tmp_path, monkeypatch):
    import torch

    import lmforge.train.checkpoint as ckmod

    real_save = torch.save
    calls = {"n": 0}

    def disk_full(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint: half written, then ENOSPC
            f.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(LmforgeError, match="No space left on device; the checkpoint of step 4 is intact"):
        pretrain(home, "d", cfg(tmp_path))
    run = home.root / "runs" / "d"
    assert ckmod.RunFolder(run).load()["step"] == 4
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []
    monkeypatch.setattr(torch, "save", real_save)
    resumed = pretrain(home, "d", cfg(tmp_path))
    straight = pretrain(home, "d2", cfg(tmp_path))
    assert losses(resumed) == pytest.approx(losses(straight), abs=1e-6)


def test_two_processes_reach_the_same_losses_as_one_with_twice_the_batch(home, tmp_path):
    """`accelerate launch --num_processes 2` (gloo on CPU) with batch b == one process with batch 2b."""
    common = ["pretrain", "--data", "corp", "--tokenizer", "tok", "--size", str(tmp_path / "size.json"),
              "--steps", "8", "--seq-len", "32", "--eval-every", "4", "--precision", "fp32", "--threads", "1"]  # fmt: skip
    env = os.environ | {"LMFORGE_HOME": str(home.root)}
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    two = subprocess.run([accelerate, "launch", "--num_processes", "2", "-m", "lmforge", *common, "--out", "two",
                          "--batch-size", "2"], env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "lmforge", *common, "--out", "one", "--batch-size", "4"],
                         env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    assert home.get("two").metrics["processes"] == 2 and home.get("one").metrics["processes"] == 1
    assert losses(home.get("two")) == pytest.approx(losses(home.get("one")), rel=1e-5)
    assert home.get("two").metrics["val_loss"] == pytest.approx(home.get("one").metrics["val_loss"], rel=1e-5)


def test_gradient_accumulation_equals_the_larger_batch_for_mlm(home, tmp_path):
    """Masked tokens vary per sequence: the step's loss is normalised by the whole step's count, so
    2 micro-batches of 2 equal one batch of 4."""
    big = pretrain(home, "mlm4", cfg(tmp_path, objective="mlm", steps=6))
    acc = pretrain(home, "mlm22", cfg(tmp_path, objective="mlm", steps=6, batch_size=2, grad_accum=2))
    assert losses(acc) == pytest.approx(losses(big), rel=1e-5)


def test_mlm_pretrain_and_fill_mask(home, tmp_path, capsys):
    from lmforge.cli import main as cli

    m = pretrain(home, "bert", cfg(tmp_path, objective="mlm", steps=60, lr=3e-3, eval_every=20))
    assert m.kind == "masked-lm" and m.config["architecture"] == "BertForMaskedLM"
    assert m.metrics["val_ppl"] is not None
    hist = losses(m)
    assert sum(hist[-5:]) < sum(hist[:5])
    assert cli(["fill-mask", "bert", "北京是中国的[MASK]都。", "--top-k", "3", "--json"]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert len(preds) == 1 and len(preds[0]) == 3
    probs = [c["probability"] for c in preds[0]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert all("[MASK]" not in c["sequence"] for c in preds[0])
    assert cli(["fill-mask", "bert", "no mask here"]) == 2
    assert "has no [MASK]" in capsys.readouterr().err
    assert cli(["generate", "bert", "北京"]) == 2  # an encoder does not generate
    assert "is a masked LM (BERT)" in capsys.readouterr().err
    assert cli(["export", "bert", "--format", "gguf"]) == 2
    assert "GGUF export covers causal LMs" in capsys.readouterr().err
    assert cli(["generate", "corp", "北京"]) == 2
    assert "corp is a dataset, not a model" in capsys.readouterr().err


def test_continued_pretraining_with_replay_reports_forgetting(home, tmp_path):
    pretrain(home, "base", cfg(tmp_path, steps=20, lr=3e-3))
    prepare(home, [write_docs(tmp_path / "domain", 80, 1, ["合同法规定当事人应当遵循公平原则。", "违约方应当承担违约责任。"])],
            "legal", PrepareConfig(dedup="none", val_frac=0.1))  # fmt: skip
    m = pretrain(home, "base-legal", cfg(tmp_path, tokenizer=None, init="base", data="legal", replay="corp",
                                         replay_frac=0.3, steps=20, lr=3e-3))  # fmt: skip
    f = m.metrics["forgetting"]
    assert f["domain_ppl_after"] < f["domain_ppl_before"]
    assert f["general_ppl_before"] > 0 and f["general_ppl_after"] > 0
    assert m.parents == ["base", "legal", "corp"]


def test_bad_inputs_are_one_clear_line_and_store_nothing(home, tmp_path, capsys):
    from lmforge.cli import main as cli

    base = ["pretrain", "--tokenizer", "tok", "--steps", "2", "--out", "x"]
    cases = [
        (["--data", "nope"], "--data 'nope' is not in the registry"),
        (["--data", "tok"], "'tok' is a tokenizer artifact, not a dataset"),
        (["--data", "corp", "--size", "huge"], "unknown size 'huge'"),
        (["--data", "corp", "--size", str(tmp_path / "missing.json")], "does not exist"),
        (["--data", "corp", "--resume"], "no checkpoint"),
        (["--data", "corp", "--steps", "0"], "--steps must be positive"),
    ]
    for extra, message in cases:
        assert cli([*base[:-2], *extra, "--out", "x"]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
    (tmp_path / "bad.json").write_text(
        '{"hidden": 30, "layers": 1, "heads": 4, "intermediate": 8, "context": 8}'
    )
    assert cli([*base[:-2], "--data", "corp", "--size", str(tmp_path / "bad.json"), "--out", "x"]) == 2
    assert "must divide by heads" in capsys.readouterr().err
    # a corpus with less text than one sequence
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / "a.txt").write_text("一句很短的话，只有这么多。")
    prepare(home, [tmp_path / "short"], "short", PrepareConfig(dedup="none", val_frac=0.0, min_chars=5))
    assert cli(["pretrain", "--data", "short", "--tokenizer", "tok", "--size", str(tmp_path / "size.json"),
                "--seq-len", "32", "--steps", "2", "--out", "x"]) == 2  # fmt: skip
    assert "fewer than one sequence" in capsys.readouterr().err
    # tokenizer/model mismatch: a 500-token tokenizer on a model with 400 embedding rows
    pretrain(home, "small-lm", cfg(tmp_path, steps=2))
    train_registered(home, "corp", "tok500", BPEConfig(vocab_size=500))
    with pytest.raises(LmforgeError, match="tokenizer/model mismatch"):
        pretrain(home, "y", cfg(tmp_path, tokenizer="tok500", init="small-lm"))
    with pytest.raises(LmforgeError, match="already exists"):
        pretrain(home, "small-lm", cfg(tmp_path))
    assert not home.exists("x") and not home.exists("y")


def test_schedules():
    warm = [lr_factor(s, 100, 10, "cosine", 0.1, 20) for s in range(10)]
    assert warm == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lr_factor(10, 100, 10, "cosine", 0.1, 20) == pytest.approx(1.0)
    assert lr_factor(100, 100, 10, "cosine", 0.1, 20) == pytest.approx(0.1)
    assert lr_factor(55, 100, 10, "linear", 0.1, 20) == pytest.approx(0.55)
    assert lr_factor(70, 100, 10, "constant", 0.1, 20) == 1.0
    cyc = [lr_factor(s, 100, 0, "cyclic", 0.1, 20) for s in (0, 10, 20, 30)]
    assert cyc == pytest.approx([1.0, 0.1, 1.0, 0.1])


def test_early_stopping_keeps_the_best_evaluation(home, tmp_path):
    """A learning rate far too high makes validation worse; the run stops and registers the best weights."""
    from transformers import AutoModelForCausalLM

    m = pretrain(home, "es", cfg(tmp_path, steps=60, eval_every=3, early_stop=2, lr=0.3, grad_clip=0.0,
                                 schedule="constant", warmup=0))  # fmt: skip
    met = m.metrics
    assert met["stopped_early"] is True and met["steps"] < 60
    assert met["val_loss"] == met["best_val_loss"] == min(e["val_loss"] for e in met["evals"])
    assert AutoModelForCausalLM.from_pretrained(str(home.artifact_dir("es"))) is not None
