"""`lmforge distill`: with a shared tokenizer the KL to the teacher falls and the distilled student beats
the same student trained without the teacher on held-out perplexity; the teacher's logits are cached and
reused by a second student (same losses as without the cache when k covers the vocabulary); different
tokenizers choose sequence-level distillation, or refuse an explicit --mode logit; an interrupted run
resumes to the same losses and a changed one is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import build_tiny_model, corpus_lines

from lmforge.errors import LmforgeError
from lmforge.home import Registry, register_local
from lmforge.train.distill import DistillConfig
from lmforge.train.distill import main as distill

# continuations of the teacher's corpus: it knows them, a fresh student has 4 of them to learn from
ROWS = [("Continue: The capital of France is Paris.", "The capital of Italy is Rome. The capital of Japan is Tokyo."),
        ("Continue: Once upon a time there was", "a little fox who lived at the edge of a quiet forest."),
        ("续写：中国的首都是北京。", "日本的首都是东京。法国的首都是巴黎。"),
        ("Continue: Machine learning models learn", "patterns from data, and small models learn small patterns."),
        ("Continue: The fox liked to watch", "the river, and every morning he counted the boats that passed by."),
        ("续写：今天天气很好", "，我们一起去公园散步吧。"),
        ("续写：小狐狸住在安静的森", "林边上，每天早上都去河边数来往的船。"),
        ("Continue: The quick brown fox jumps", "over the lazy dog while the cat sleeps in the sun."),
        ("续写：我喜欢读书，也", "喜欢在周末和朋友们一起爬山。"),
        ("Continue: Private language models keep", "data on your own machine, where it belongs."),
        ("续写：数据留在自己的机", "器上，模型也在自己的机器上运行。")]  # fmt: skip
N_TRAIN = 4
SIZE = {"hidden": 32, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate": 64, "context": 128}


def write_rows(path: Path, rows: list[tuple[str, str]]) -> str:
    path.write_text("".join(json.dumps({"prompt": p, "response": r}, ensure_ascii=False) + "\n" for p, r in rows),
                    encoding="utf-8")  # fmt: skip
    return str(path)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A tiny Llama trained longer than conftest's default: it knows the corpus well (perplexity ~6)."""
    return build_tiny_model(
        tmp_path_factory.mktemp("teacher") / "model", tiny_tokenizer_dir, "llama", steps=200
    )


@pytest.fixture(scope="module")
def other_student_dir(tmp_path_factory) -> Path:
    """A tiny Llama with a tokenizer of its own (another vocabulary size)."""
    from lmforge.tokenizer.bpe import BPEConfig, train_bpe

    tok = tmp_path_factory.mktemp("tok300")
    train_bpe(corpus_lines() * 4, tok, BPEConfig(vocab_size=300, min_frequency=2))
    return build_tiny_model(tmp_path_factory.mktemp("student300") / "model", tok, "llama", steps=20)


@pytest.fixture()
def home(tmp_path, monkeypatch, teacher_dir) -> Registry:
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "home"))
    reg = Registry(tmp_path / "home")
    register_local(reg, teacher_dir, "teacher", kind="chat")
    write_rows(tmp_path / "train.jsonl", ROWS[:N_TRAIN])
    write_rows(tmp_path / "heldout.jsonl", ROWS[N_TRAIN:])
    (tmp_path / "size.json").write_text(json.dumps(SIZE))
    return reg


def cfg(tmp_path: Path, **kw) -> DistillConfig:
    base = dict(data=str(tmp_path / "train.jsonl"), eval_data=str(tmp_path / "heldout.jsonl"), steps=40,
                batch_size=4, lr=3e-3, alpha=0.9, temperature=2.0, max_length=96, precision="fp32", threads=1,
                save_every=10, eval_every=10)  # fmt: skip
    return DistillConfig(**(base | kw))


def history(reg: Registry, name: str) -> list[dict]:
    return [json.loads(x) for x in (reg.artifact_dir(name) / "metrics.jsonl").read_text().splitlines()]


def test_logit_distillation_kl_falls_and_beats_the_no_teacher_baseline(home, tmp_path, capsys):
    from lmforge.cli import main as cli
    from lmforge.infer.chat import greedy_text
    from lmforge.infer.loader import load_backend

    args = ["distill", "--teacher", "teacher", "--student", f"new:{tmp_path / 'size.json'}",
            "--data", str(tmp_path / "train.jsonl"), "--eval-data", str(tmp_path / "heldout.jsonl"), "--out", "s",
            "--temperature", "2", "--alpha", "0.9", "--steps", "40", "--lr", "3e-3", "--max-length", "96",
            "--precision", "fp32", "--threads", "1", "--eval-every", "10", "--eval-suite", "zh-ppl"]  # fmt: skip
    assert cli(args) == 0
    printed = capsys.readouterr()
    assert "mode: logit — teacher and student share the tokenizer" in printed.err
    m = home.get("s")
    assert m.parents == ["teacher"] and m.source == "distill:logit" and m.kind == "chat"
    assert m.config["size_resolved"] == SIZE and m.config["alpha"] == 0.9
    c = m.metrics["comparison"]
    # the teacher knows this text; 4 examples are too few for the student alone, the soft targets carry
    # the teacher's knowledge of the rest (measured: 243 vs 463; ratios 0.62-0.75 over seeds 0-2)
    assert c["teacher_ppl"] < c["student_ppl"] < 0.85 * c["baseline_ppl"], c
    for line in ("teacher", "student (distilled)", "student (no teacher)"):
        assert line in printed.out
    assert f"{c['student_ppl']}" in printed.out and "11 computed" in printed.out
    hist = history(home, "s")
    kl = [h["kl"] for h in hist]
    assert len(hist) == 40 and sum(kl[-5:]) / 5 < 0.85 * sum(kl[:5]) / 5  # the KL to the teacher falls
    assert all(h["loss"] == pytest.approx(0.9 * 4 * h["kl"] + 0.1 * h["ce"], rel=1e-6) for h in hist)
    events = [json.loads(x) for x in (home.root / "runs" / "s" / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if "loss" in e] == list(range(1, 41))
    assert all("baseline_loss" in e and e["total_steps"] == 40 for e in events if "loss" in e)
    assert (home.artifact_dir("s") / "loss.png").stat().st_size > 1000
    assert m.metrics["peak_rss_mb"] > 0 and m.metrics["teacher_cache"]["computed"] == 11
    # the report: teacher / distilled / no-teacher, perplexity and the suite on all three
    suites = m.metrics["suites"]
    assert set(suites) == {"teacher", "s", "s-baseline"} and not home.exists("s-baseline")
    assert all(suites[who]["zh-ppl"]["perplexity"] > 1 for who in suites)
    report = (home.artifact_dir("s") / "report.md").read_text()
    assert (
        "| perplexity | " in report
        and "zh-ppl: perplexity" in report
        and "beats the one trained without" in report
    )
    assert (home.artifact_dir("s") / "report.html").stat().st_size > 1000
    # the student is a working model
    assert isinstance(greedy_text(load_backend(home, "s"), [{"role": "user", "content": ROWS[0][0]}], 4), str)


def test_a_second_student_reuses_the_cache_and_matches_the_uncached_loss(home, tmp_path):
    quick = dict(steps=8, baseline=False, top_k=1024)  # k covers the vocabulary (400)
    a = distill(home, "teacher", f"new:{tmp_path / 'size.json'}", "a", cfg(tmp_path, **quick), progress=False)
    b = distill(home, "teacher", f"new:{tmp_path / 'size.json'}", "b", cfg(tmp_path, **quick), progress=False)
    c = distill(home, "teacher", f"new:{tmp_path / 'size.json'}", "c", cfg(tmp_path, **quick, cache=False),
                progress=False)  # fmt: skip
    assert (a.metrics["teacher_cache"]["hits"], a.metrics["teacher_cache"]["computed"]) == (0, 11)
    assert (b.metrics["teacher_cache"]["hits"], b.metrics["teacher_cache"]["computed"]) == (11, 0)
    assert c.metrics["teacher_cache"] == {"used": False}
    folder = Path(a.metrics["teacher_cache"]["dir"])
    assert (
        folder.parent == home.root / "cache" / "teacher-logits"
        and len(list(folder.glob("*.safetensors"))) == 11
    )
    la, lb, lc = history(home, "a"), history(home, "b"), history(home, "c")
    assert [h["loss"] for h in la] == [h["loss"] for h in lb]  # the same cached targets
    # full logits on the fly: the same losses but for the cache's float16 rounding
    assert max(abs(x["loss"] - y["loss"]) / y["loss"] for x, y in zip(la, lc, strict=True)) < 1e-3
    assert a.metrics["comparison"]["teacher_ppl"] == pytest.approx(
        c.metrics["comparison"]["teacher_ppl"], rel=1e-4
    )


class Interrupt(Exception):
    pass


def interrupt_at(monkeypatch, step: int) -> None:
    """Stop a run when it reaches optimizer step `step` (as a crash would)."""
    import lmforge.train.distill as dm

    real = dm.lr_factor

    def factor(s, *a):
        if s == step:
            raise Interrupt
        return real(s, *a)

    monkeypatch.setattr(dm, "lr_factor", factor)


def test_an_interrupted_run_resumes_to_the_same_losses_and_a_changed_one_is_refused(
    home, tmp_path, monkeypatch
):
    settings = dict(steps=12, save_every=3, grad_accum=2, batch_size=2)
    student = f"new:{tmp_path / 'size.json'}"
    with monkeypatch.context() as mp:
        interrupt_at(mp, 7)
        with pytest.raises(Interrupt):
            distill(home, "teacher", student, "r", cfg(tmp_path, **settings), progress=False)
    assert json.loads((home.root / "runs" / "r" / "checkpoint.json").read_text())["step"] == 6
    with pytest.raises(LmforgeError, match=r"changed since its checkpoint: --alpha \(0.9 -> 0.5\)"):
        distill(home, "teacher", student, "r", cfg(tmp_path, **settings, alpha=0.5), progress=False)
    write_rows(tmp_path / "train.jsonl", ROWS[: N_TRAIN + 1])
    with pytest.raises(LmforgeError, match="dataset contents changed"):
        distill(home, "teacher", student, "r", cfg(tmp_path, **settings), progress=False)
    write_rows(tmp_path / "train.jsonl", ROWS[:N_TRAIN])
    resumed = distill(home, "teacher", student, "r", cfg(tmp_path, **settings), resume=True, progress=False)
    straight = distill(home, "teacher", student, "straight", cfg(tmp_path, **settings), progress=False)
    hr, hs = history(home, "r"), history(home, "straight")
    assert len(hr) == 12
    for key in ("loss", "kl", "ce", "baseline_loss"):
        assert max(abs(x[key] - y[key]) for x, y in zip(hr, hs, strict=True)) <= 1e-6, key
    assert resumed.metrics["comparison"] == straight.metrics["comparison"]
    assert not (home.root / "runs" / "r" / "checkpoint.pt").exists()  # registered: the checkpoint is gone


def test_sequence_mode_is_chosen_when_the_tokenizers_differ(home, tmp_path, other_student_dir, capsys):
    register_local(home, other_student_dir, "small", kind="chat")
    m = distill(home, "teacher", "small", "seq",
                cfg(tmp_path, steps=4, lr=1e-3, gen_tokens=12, report_eval=1, eval_suite=["zh-ppl"]), progress=False)  # fmt: skip
    err = capsys.readouterr().err
    assert "mode: sequence — the tokenizers differ (vocab" in err
    assert m.source == "distill:sequence" and m.parents == ["small", "teacher"] and m.kind == "chat"
    assert m.metrics["mode"] == "sequence" and m.config["distill"]["teacher"] == "teacher"
    c = m.metrics["comparison"]
    assert all(
        isinstance(c[k], float) and c[k] > 1 for k in ("teacher_ppl", "student_ppl", "baseline_ppl")
    ), c
    assert set(m.metrics["suites"]) == {"teacher", "seq", "seq-baseline"}
    assert "student without teacher" in (home.artifact_dir("seq") / "report.md").read_text()
    answers = m.metrics["teacher_answers"]
    assert answers["prompts"] == N_TRAIN and answers["answered"] + answers["empty"] == N_TRAIN
    assert (
        not home.exists("seq-baseline") and not (home.root / "runs" / "seq-baseline").exists()
    )  # measured, removed
    assert (home.artifact_dir("seq") / "loss.png").exists()  # fine-tuning's report, on the teacher's answers
    folder = Path(m.config["distill"]["answers"])
    taught = [json.loads(x)["messages"] for x in (folder / "teacher.jsonl").read_text().splitlines()]
    assert [t[0]["content"] for t in taught] == [p for p, _ in ROWS[:N_TRAIN]][: len(taught)]
    assert (home.root / "runs" / "seq" / "events.jsonl").exists()


def test_explicit_logit_mode_with_different_tokenizers_is_a_clear_error(
    home, tmp_path, other_student_dir, capsys
):
    from transformers import AutoTokenizer

    from lmforge.cli import main as cli

    register_local(home, other_student_dir, "small", kind="chat")
    vocabs = [
        len(AutoTokenizer.from_pretrained(str(d)))
        for d in (home.model_path(home.get("teacher")), other_student_dir)
    ]
    common = ["distill", "--teacher", "teacher", "--data", str(tmp_path / "train.jsonl"), "--out", "x"]
    cases = [
        (["--student", "small", "--mode", "logit"],
         f"teacher and student tokenizers differ (vocab {vocabs[0]} vs {vocabs[1]}): logit distillation needs a "
         f"shared tokenizer; use --mode sequence"),
        (["--student", "new:tiny", "--method", "lora"], "a new student is trained in full"),
        (["--student", "new:tiny", "--alpha", "1.5"], "--alpha must be in [0, 1]"),
        (["--student", "nope"], "unknown model 'nope'"),
    ]  # fmt: skip
    for extra, message in cases:
        assert cli([*common, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
    assert not home.exists("x")


def test_a_new_student_takes_the_qwen2_teachers_architecture_and_exports_to_gguf(
    home, tmp_path, tiny_qwen2_dir
):
    """A Qwen teacher gets a Qwen2 student (q/k/v biases, its tokenizer and chat template), which
    llama.cpp reads: the GGUF export's parity check compares it with transformers."""
    from lmforge.compress.export import ExportConfig, export_gguf

    register_local(home, tiny_qwen2_dir, "qteacher", kind="chat")
    m = distill(home, "qteacher", f"new:{tmp_path / 'size.json'}", "qstudent",
                cfg(tmp_path, steps=3, baseline=False), progress=False)  # fmt: skip
    config = json.loads((home.artifact_dir("qstudent") / "config.json").read_text())
    assert config["model_type"] == "qwen2" and m.config["architecture"] == "qwen2"
    g = export_gguf(home, "qstudent", ExportConfig(quant="f16"))
    assert g.format == "gguf" and g.parents == ["qstudent"]


def test_the_logit_cache_is_keyed_by_the_teachers_weights(home, tmp_path, teacher_dir):
    """Two teachers with the same (empty) data fingerprint — merged or dequantized models carry none —
    must not share cached logits: the key is the hash of the weight files."""
    import shutil

    other = tmp_path / "other-teacher"
    shutil.copytree(teacher_dir, other)
    from safetensors.torch import load_file, save_file

    sd = load_file(str(other / "model.safetensors"))
    sd = {k: v * 1.5 if k.endswith("embed_tokens.weight") else v for k, v in sd.items()}
    save_file(sd, str(other / "model.safetensors"), metadata={"format": "pt"})
    register_local(home, other, "teacher2", kind="chat")
    for name in ("teacher", "teacher2"):
        home.update(name, data_fingerprint="")
    quick = dict(steps=2, baseline=False)
    a = distill(
        home, "teacher", f"new:{tmp_path / 'size.json'}", "ka", cfg(tmp_path, **quick), progress=False
    )
    b = distill(
        home, "teacher2", f"new:{tmp_path / 'size.json'}", "kb", cfg(tmp_path, **quick), progress=False
    )
    assert a.metrics["teacher_cache"]["dir"] != b.metrics["teacher_cache"]["dir"]
    assert b.metrics["teacher_cache"]["hits"] == 0
    assert a.config["teacher_fingerprint"] != b.config["teacher_fingerprint"]
