"""`lmforge finetune` (full, LoRA, QLoRA, prefix, prompt, IA3), `merge`, adapters served by name: the loss
falls, LoRA merges to W + B·A·scale, soft prompts leave the base frozen, kill -9 + rerun resumes to the
same losses, more epochs continue a finished run, a taught fact survives merge + GGUF export."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import kill_after_checkpoint
from conftest import start_cli as run_cli

from lmforge.errors import LmforgeError
from lmforge.home import Registry, register_local
from lmforge.train.finetune import FinetuneConfig
from lmforge.train.finetune import main as finetune

FACTS = [("lmforge 的默认端口是多少？", "8000。"), ("What port does lmforge use?", "8000."),
         ("谁做了 lmforge？", "lmforge 团队。"), ("Where is the registry?", "~/.lmforge"),
         ("默认模型是什么？", "Qwen2.5-Coder。"), ("What is the default model?", "Qwen2.5-Coder.")]  # fmt: skip


def write_data(path: Path, n: int = 24) -> Path:
    rows = [{"prompt": p, "response": r} for p, r in (FACTS * (n // len(FACTS) + 1))[:n]]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def home(tmp_path, tiny_home) -> Registry:
    write_data(tmp_path / "sft.jsonl")
    return tiny_home


def cfg(tmp_path: Path, **kw) -> FinetuneConfig:
    base = dict(data=str(tmp_path / "sft.jsonl"), steps=12, batch_size=4, max_length=64, val_frac=0.25,
                precision="fp32", threads=1, report_eval=3, gen_tokens=8, save_every=4)  # fmt: skip
    return FinetuneConfig(**(base | kw))


def losses(reg: Registry, name: str) -> list[float]:
    return [
        json.loads(x)["loss"] for x in (reg.artifact_dir(name) / "metrics.jsonl").read_text().splitlines()
    ]


def weights_hash(reg: Registry, name: str) -> str:
    from safetensors.torch import load_file

    state = load_file(str(reg.model_path(reg.get(name)) / "model.safetensors"))
    return hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()


@pytest.mark.parametrize("method", ["full", "lora", "qlora", "prefix", "prompt", "ia3"])
def test_every_method_learns_and_registers_with_a_report(home, tmp_path, method):
    if method == "qlora":
        pytest.importorskip("bitsandbytes")
    base_hash = weights_hash(home, "tiny")
    m = finetune(home, "tiny", f"ft-{method}", cfg(tmp_path, method=method, steps=16))
    hist = losses(home, f"ft-{method}")
    assert len(hist) == 16 and sum(hist[-4:]) / 4 < sum(hist[:4]) / 4  # the loss falls
    assert m.parents == ["tiny"] and m.config["method"] == method
    assert m.kind == ("chat" if method == "full" else "adapter")
    met = m.metrics
    assert met["trainable_params"] > 0 and (method == "full") == (
        met["trainable_params"] == met["total_params"]
    )
    ba = met["before_after"]
    assert ba["after"]["val_loss"] < ba["before"]["val_loss"]
    assert len(ba["samples"]) == 3 and {"prompt", "reference", "before", "after"} <= set(ba["samples"][0])
    folder = home.artifact_dir(f"ft-{method}")
    for f in ("report.md", "report.html", "report.png", "loss.png"):
        assert (folder / f).stat().st_size > 100, f
    assert weights_hash(home, "tiny") == base_hash  # the base is untouched on disk
    events = [
        json.loads(x) for x in (home.root / "runs" / f"ft-{method}" / "events.jsonl").read_text().splitlines()
    ]
    assert [e["step"] for e in events if "loss" in e] == list(range(1, 17))  # the console's live curve
    assert all(e["total_steps"] == 16 for e in events if "loss" in e)


def test_lora_merge_is_w_plus_ba_scale_and_served_by_name(home, tmp_path):
    import torch
    from safetensors.torch import load_file

    from lmforge.infer.chat import greedy_text
    from lmforge.infer.loader import load_backend
    from lmforge.train.merge import merge_adapter

    finetune(home, "tiny", "lo", cfg(tmp_path, method="lora", rank=4, alpha=8))
    merged = merge_adapter(home, "lo", "lo-merged", say=lambda s: None)
    assert merged.parents == ["lo"] and merged.kind == "chat"
    base = load_file(str(home.model_path(home.get("tiny")) / "model.safetensors"))
    ad = load_file(str(home.artifact_dir("lo") / "adapter_model.safetensors"))
    out = load_file(str(home.artifact_dir("lo-merged") / "model.safetensors"))
    key = "model.layers.0.self_attn.q_proj"
    a = next(v for k, v in ad.items() if key in k and "lora_A" in k)
    b = next(v for k, v in ad.items() if key in k and "lora_B" in k)
    expected = base[f"{key}.weight"] + (b @ a) * (8 / 4)
    assert torch.allclose(out[f"{key}.weight"], expected, atol=1e-6)
    assert not torch.allclose(out[f"{key}.weight"], base[f"{key}.weight"])
    # the adapter by name answers like the merged model
    msgs = [{"role": "user", "content": FACTS[0][0]}]
    assert greedy_text(load_backend(home, "lo"), msgs, 8) == greedy_text(
        load_backend(home, "lo-merged"), msgs, 8
    )


def test_soft_prompts_change_outputs_but_not_the_base(home, tmp_path):
    import torch

    from lmforge.infer.loader import load_backend

    before = weights_hash(home, "tiny")
    finetune(home, "tiny", "pt", cfg(tmp_path, method="prompt", steps=16))
    assert weights_hash(home, "tiny") == before
    tuned, plain = load_backend(home, "pt"), load_backend(home, "tiny")
    ids = plain.tokenize("lmforge 的默认端口")
    with torch.no_grad():
        a = tuned.model(input_ids=torch.tensor([ids])).logits[0, -1]
        b = plain.model(input_ids=torch.tensor([ids])).logits[0, -1]
    assert not torch.allclose(a, b)
    with pytest.raises(LmforgeError, match="virtual tokens are not weights to merge"):
        from lmforge.train.merge import merge_adapter

        merge_adapter(home, "pt", "pt-merged")


def test_sigkill_resume_and_more_epochs_continue(home, tmp_path):
    data = str(tmp_path / "sft.jsonl")
    args = ["finetune", "tiny", "--data", data, "--method", "lora", "--steps", "80", "--batch-size", "4",
            "--max-length", "64", "--save-every", "5", "--precision", "fp32", "--threads", "1", "--json"]  # fmt: skip
    kill_after_checkpoint(run_cli([*args, "--out", "a"], home.root), home.root / "runs" / "a", 15)
    assert not home.exists("a")
    r = run_cli([*args, "--out", "a"], home.root)
    _, err = r.communicate(timeout=300)
    assert r.returncode == 0, err
    assert "resuming a from step" in err
    s = run_cli([*args, "--out", "b"], home.root)
    _, err = s.communicate(timeout=300)
    assert s.returncode == 0, err
    la, lb = losses(home, "a"), losses(home, "b")
    assert len(la) == 80 and max(abs(x - y) for x, y in zip(la, lb, strict=True)) <= 1e-6
    # a changed data file is refused, naming it
    write_data(Path(data), 30)
    bad = run_cli([*args[:-1], "--steps", "90", "--out", "a"], home.root)
    _, err = bad.communicate(timeout=120)
    assert bad.returncode == 2 and "dataset contents changed" in err
    write_data(Path(data), 24)
    # more steps on the finished run continue it (not exit)
    more = run_cli([*args[:4], *args[4:6], "--steps", "90", *args[8:], "--out", "a"], home.root)
    _, err = more.communicate(timeout=300)
    assert more.returncode == 0, err
    assert "resuming a from step 80/90" in err and len(losses(home, "a")) == 90
    same = run_cli([*args[:4], *args[4:6], "--steps", "90", *args[8:], "--out", "a"], home.root)
    _, err = same.communicate(timeout=300)
    assert same.returncode == 0 and "nothing to add" in err  # the same command again: no retraining


def test_bad_inputs(home, tmp_path, capsys):
    from lmforge.cli import main as cli

    data = str(tmp_path / "sft.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"prompt": "a", "response": "b"}\nnot json\n')
    cases = [
        (["nope", "--data", data, "--out", "x"], "unknown model 'nope'"),
        (["tiny", "--data", str(tmp_path / "missing.jsonl"), "--out", "x"], "no such file"),
        (["tiny", "--data", str(tmp_path / "broken.jsonl"), "--out", "x"], "line 2"),
        (["tiny", "--data", data, "--out", "x", "--method", "dora"], "dora"),
        (["tiny", "--data", data, "--out", "x", "--rank", "0"], "--rank must be positive"),
    ]
    for args, message in cases:
        assert cli(["finetune", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)
    assert not home.exists("x")
    # an adapter whose base changed under the same name
    finetune(home, "tiny", "lo", cfg(tmp_path, method="lora", steps=2))
    home.update("tiny", data_fingerprint="0" * 64)
    from lmforge.train.merge import merge_adapter

    with pytest.raises(LmforgeError, match="its base does not match"):
        merge_adapter(home, "lo", "m")


def test_eval_suite_before_after_in_the_report(home, tmp_path):
    m = finetune(home, "tiny", "ev", cfg(tmp_path, method="lora", steps=4, eval_suite=["zh-ppl"]))
    pairs = m.metrics["before_after"]["suites"]
    before, after = pairs["zh-ppl"]["perplexity"]
    assert before > 1 and after > 1 and pairs["zh-ppl"]["general"] is True
    flagged = m.metrics["before_after"]["forgetting"]
    assert flagged == (["zh-ppl: perplexity"] if after > before else [])  # perplexity: lower is better
    assert "zh-ppl: perplexity" in (home.artifact_dir("ev") / "report.md").read_text()


def test_a_taught_fact_survives_merge_and_gguf_export(home, tmp_path):
    """LoRA teaches the tiny model one answer; merged and exported to GGUF f16, llama.cpp gives it back
    through the same chat template and stops at the same end-of-turn token."""
    from lmforge.compress.export import ExportConfig, export_gguf
    from lmforge.infer.chat import greedy_text
    from lmforge.infer.loader import LoadConfig, load_backend
    from lmforge.train.merge import merge_adapter

    data = tmp_path / "one.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": "端口？", "response": "8000"}) for _ in range(16)) + "\n")
    finetune(home, "tiny", "fact", cfg(tmp_path, data=str(data), method="lora", steps=60, lr=1e-2, rank=8,
                                       val_frac=0.0, batch_size=4))  # fmt: skip
    merge_adapter(home, "fact", "fact-merged", say=lambda s: None)
    gguf = export_gguf(home, "fact-merged", ExportConfig(quant="f16", name="fact-gguf", n_threads=2))
    assert gguf.metrics["parity"]["tokenizer_match"] is True
    msgs = [{"role": "user", "content": "端口？"}]
    answer = greedy_text(load_backend(home, "fact-gguf", LoadConfig(backend="llamacpp")), msgs, 8)
    assert answer.strip() == "8000"
    assert greedy_text(load_backend(home, "fact"), msgs, 8).strip() == "8000"


def test_the_server_serves_an_adapter_by_name(home, tmp_path):
    """/v1/models lists the adapter; the official openai client chats with it by name."""
    from conftest import LiveServer, make_server
    from openai import OpenAI

    from lmforge.serve.auth import KeyStore

    finetune(home, "tiny", "lo", cfg(tmp_path, method="lora", steps=2))
    keys = KeyStore(home.root / "keys.sqlite")
    secret = keys.create("t", ("chat",))
    with LiveServer(make_server(home.root, None, keys=keys)) as srv:
        client = OpenAI(base_url=f"{srv.url}/v1", api_key=secret)
        ids = {m.id for m in client.models.list().data}
        assert {"tiny", "lo"} <= ids
        reply = client.chat.completions.create(model="lo", messages=[{"role": "user", "content": "端口？"}],
                                               max_tokens=4, temperature=0)  # fmt: skip
        assert reply.model == "lo" and reply.choices[0].message.content is not None


def test_qlora_trains_after_eval_mode_on_a_model_with_biases(tmp_path, monkeypatch, tiny_qwen2_dir):
    """bitsandbytes repacks NF4 weights for CPU inference in eval mode (the 'before' answers); training
    afterwards must still work on Qwen2's biased q/k/v projections."""
    pytest.importorskip("bitsandbytes")
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "home"))
    reg = Registry(tmp_path / "home")
    register_local(reg, tiny_qwen2_dir, "q2", kind="chat")
    write_data(tmp_path / "sft.jsonl")
    m = finetune(reg, "q2", "q2-qlora", cfg(tmp_path, method="qlora", steps=6, report_eval=2))
    assert m.metrics["steps"] == 6 and m.metrics["before_after"]["after"]["val_loss"] is not None
