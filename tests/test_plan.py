"""`lmforge plan`: the numbers a user relies on (weights, KV cache, per-GPU totals), every kind of input
(table name, size, config.json, registered HF and GGUF models), the verdict and its suggestions, training
methods and their ordering, the JSON contract, and the errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer

from lmforge import cli_plan
from lmforge.errors import LmforgeError
from lmforge.plan import (
    CONFIG_FIELDS,
    KNOWN_ARCHITECTURES,
    CpuFacts,
    PlanConfig,
    cpu_facts,
    estimate,
    resolve_model,
)
from lmforge.plan import main as plan_main

LLAMA_8B_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}  # fmt: skip


def run(args: list[str], capsys) -> str:
    """The command through a typer app, as cli.py mounts it."""
    app = typer.Typer()
    cli_plan.mount(app)

    @app.callback()
    def _root() -> None: ...

    app(args, standalone_mode=False)
    return capsys.readouterr().out


def plan_json(args: list[str], capsys) -> dict:
    return json.loads(run(["plan", *args, "--json"], capsys))


# -- known architectures ---------------------------------------------------------------------------
def test_parameter_counts_match_the_published_models():
    published = {"qwen2.5-0.5b": 0.494, "qwen2.5-1.5b": 1.54, "qwen2.5-7b": 7.62, "qwen2.5-14b": 14.77,
                 "qwen2.5-32b": 32.76, "qwen2.5-72b": 72.71, "llama-3.1-8b": 8.03, "llama-3.1-70b": 70.55,
                 "mistral-7b": 7.25, "smollm2-1.7b": 1.71}  # fmt: skip
    for name, billions in published.items():
        assert KNOWN_ARCHITECTURES[name].params / 1e9 == pytest.approx(billions, abs=0.006), name
    assert KNOWN_ARCHITECTURES["smollm2-135m"].params == 134_515_008  # exactly what transformers counts


def test_qwen_7b_serving_weights_and_kv_cache(capsys):
    d = plan_json(["qwen2.5-7b", "--context", "8192", "--concurrency", "20", "--precision", "bf16"], capsys)
    assert d["weights_gb"] == pytest.approx(7_615_616_512 * 2 / 1e9, abs=0.001)  # 15.23 GB
    # 2 (K, V) × 28 layers × 4 KV heads × 128 head dim × 2 bytes = 57,344 bytes per token (GQA: not 0.459 MB)
    assert d["kv_cache_gb"] == pytest.approx(57_344 * 8192 * 20 / 1e9, abs=0.001)  # 9.395 GB
    assert d["total_gb"] == pytest.approx(d["weights_gb"] + d["kv_cache_gb"] + d["overhead_gb"], abs=0.002)
    assert d["fits"] is False and d["device"] == "1× 24 GB GPU"
    assert d["naive_gb"] == pytest.approx(16 * 7.6156 + 2 * 20, abs=0.01)


def test_json_keys_are_stable(capsys):
    serve = plan_json(["7b"], capsys)
    for key in ("weights_gb", "kv_cache_gb", "total_gb", "overhead_gb", "per_device_gb", "fits", "verdict",
                "devices_needed", "suggestions", "naive_gb", "naive_note", "breakdown", "architecture", "settings"):  # fmt: skip
        assert key in serve, key
    train = plan_json(["7b", "--train", "lora", "--batch", "4", "--seq-len", "1024"], capsys)
    for key in ("weights_gb", "gradients_gb", "optimizer_gb", "activations_gb", "logits_gb", "total_gb",
                "trainable_params", "fits", "naive_gb"):  # fmt: skip
        assert key in train, key
    assert train["settings"]["seq_len"] == 1024 and train["mode"] == "train"


def test_sizes_and_hub_names_resolve_to_the_table():
    assert resolve_model("7b").arch == KNOWN_ARCHITECTURES["qwen2.5-7b"]
    assert resolve_model("Qwen/Qwen2.5-Coder-7B-Instruct").arch == KNOWN_ARCHITECTURES["qwen2.5-7b"]
    assert resolve_model("135M").arch.name == "smollm2-135m"


def test_unknown_architecture_asks_for_the_config_fields(tmp_path):
    with pytest.raises(LmforgeError) as e:
        resolve_model("gpt-neo-13b")
    for field in CONFIG_FIELDS:
        assert field in str(e.value)
    assert "qwen2.5-7b" in str(e.value)  # the known ones are listed
    partial = tmp_path / "config.json"
    partial.write_text(json.dumps({"hidden_size": 1024, "num_hidden_layers": 8}))
    with pytest.raises(LmforgeError, match="lacks num_attention_heads, intermediate_size, vocab_size"):
        resolve_model(str(partial))


# -- other inputs ----------------------------------------------------------------------------------
def test_config_json_input_matches_the_table(tmp_path):
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA_8B_CONFIG))
    for given in (str(folder / "config.json"), str(folder)):
        spec = resolve_model(given)
        assert spec.arch.params == KNOWN_ARCHITECTURES["llama-3.1-8b"].params
        assert spec.arch.kv_heads == 8 and spec.arch.head_dim == 128 and spec.source.startswith("config:")


def test_registered_hf_model(tiny_home, capsys):
    m = tiny_home.get("tiny")
    folder = tiny_home.model_path(m)
    cfg = json.loads((folder / "config.json").read_text())
    spec = resolve_model("tiny", tiny_home)
    assert (spec.arch.layers, spec.arch.hidden, spec.arch.heads, spec.arch.kv_heads) == (2, 64, 4, 2)
    assert spec.arch.vocab == cfg["vocab_size"] and spec.arch.params == m.params
    d = plan_json(["tiny", "--context", "128", "--concurrency", "2"], capsys)
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    assert d["settings"]["precision"] == "fp32"  # its own dtype
    assert d["weights_gb"] == pytest.approx(weights / 1e9, abs=1e-6)  # the file, not a formula
    assert d["kv_cache_gb"] == pytest.approx(2 * 2 * 2 * 16 * 2 * 128 * 2 / 1e9, abs=1e-6)


def write_gguf(path: Path) -> Path:
    """A small Qwen2-shaped GGUF (f16, untied output), written directly: metadata + tensors."""
    import gguf

    h, inter, vocab = 64, 128, 96
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_block_count(2)
    w.add_context_length(512)
    w.add_embedding_length(h)
    w.add_feed_forward_length(inter)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_token_list([f"t{i}" for i in range(vocab)])
    shapes = {"token_embd.weight": (vocab, h), "output.weight": (vocab, h), "output_norm.weight": (h,)}
    for b in range(2):
        shapes |= {f"blk.{b}.attn_q.weight": (h, h), f"blk.{b}.attn_q.bias": (h,), f"blk.{b}.attn_k.weight": (32, h),
                   f"blk.{b}.attn_v.weight": (32, h), f"blk.{b}.attn_output.weight": (h, h),
                   f"blk.{b}.ffn_gate.weight": (inter, h), f"blk.{b}.ffn_up.weight": (inter, h),
                   f"blk.{b}.ffn_down.weight": (h, inter), f"blk.{b}.attn_norm.weight": (h,)}  # fmt: skip
    for name, shape in shapes.items():
        w.add_tensor(name, np.zeros(shape, dtype=np.float16 if len(shape) == 2 else np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_registered_gguf_model(registry, tmp_path, capsys):
    from lmforge.home import register_local

    register_local(registry, write_gguf(tmp_path / "small.gguf"), "small-gguf")
    spec = resolve_model("small-gguf", registry)
    a = spec.arch
    assert (a.layers, a.hidden, a.heads, a.kv_heads, a.head_dim, a.intermediate, a.vocab) == (
        2,
        64,
        4,
        2,
        16,
        128,
        96,
    )
    assert not a.tied_embeddings and a.qkv_bias and a.context_length == 512
    assert spec.file_precision == "fp16"
    cpu = plan_json(["small-gguf", "--cpu", "--ram", "8"], capsys)
    assert cpu["settings"]["precision"] == "fp16"  # its own file on CPU
    assert cpu["weights_gb"] == pytest.approx((tmp_path / "small.gguf").stat().st_size / 1e9, abs=1e-6)
    assert cpu["settings"]["context"] == 512  # min(4096, what it was trained for), as `lmforge serve`
    gpu = plan_json(["small-gguf", "--precision", "q8_0"], capsys)
    assert (
        gpu["settings"]["precision"] == "q8_0"
    )  # another precision than the file's: from the parameter count
    assert gpu["weights_gb"] == pytest.approx(a.params * 8.5 / 8 / 1e9, abs=1e-6)


# -- verdicts and suggestions ----------------------------------------------------------------------
def test_the_verdict_follows_the_device_and_each_suggestion_is_recomputed():
    spec = resolve_model("qwen2.5-7b")
    big = estimate(spec, PlanConfig(precision="q4_k_m", context=4096, concurrency=4, gpu_memory_gb=24))
    assert big.fits and big.suggestions == [] and "yes" in big.verdict
    small = estimate(spec, PlanConfig(precision="bf16", context=4096, concurrency=4, gpu_memory_gb=12))
    assert not small.fits and "no (needs" in small.verdict
    lower = next(s for s in small.suggestions if s.change.startswith("--precision"))
    assert lower.change == "--precision int8" and lower.fits  # the least aggressive precision that fits
    again = estimate(spec, PlanConfig(precision="int8", context=4096, concurrency=4, gpu_memory_gb=12))
    assert lower.per_device_gb == pytest.approx(again.per_device_gb, abs=0.01)
    assert all(
        s.fits for s in small.suggestions[: sum(s.fits for s in small.suggestions)]
    )  # fitting ones first


def test_tensor_parallel_gpu_count():
    spec = resolve_model("qwen2.5-7b")
    one = estimate(spec, PlanConfig(precision="bf16", context=8192, concurrency=20, gpu_memory_gb=24))
    assert one.devices_needed == 2
    two = estimate(spec, PlanConfig(precision="bf16", context=8192, concurrency=20, gpu_memory_gb=24, gpus=2))
    assert two.fits and two.devices == 2
    assert two.per_device_gb == pytest.approx(
        (one.row("weights") + one.row("kv_cache")) / 2 + 1.0 + one.row("compute"), abs=0.01
    )
    seventy = estimate(resolve_model("llama-3.1-70b"), PlanConfig(precision="bf16", gpu_memory_gb=80))
    assert seventy.devices_needed == 2 and not seventy.fits


def test_cpu_serving_uses_this_machines_facts():
    spec = resolve_model("qwen2.5-0.5b")
    facts = CpuFacts(ram_gb=8.0, physical_cores=2, memory_bandwidth_gbs=30.0)
    p = estimate(spec, PlanConfig(cpu=True, context=2048, concurrency=1), facts)
    assert p.cfg.precision == "q4_k_m" and p.fits and p.device == "this machine's 8.0 GB RAM"
    assert p.row("server_context") == pytest.approx(p.row("kv_cache"))  # the server's extra single sequence
    assert p.cpu["threads"] == 2
    assert p.cpu["decode_tokens_per_s"] == pytest.approx(30.0 / p.cpu["bytes_per_token_gb"], rel=0.01)
    assert p.cpu["decode_tokens_per_s_full_context"] < p.cpu["decode_tokens_per_s"]
    tight = estimate(spec, PlanConfig(cpu=True, context=8192, concurrency=4, precision="fp32"),
                     CpuFacts(ram_gb=2.5, physical_cores=2, memory_bandwidth_gbs=30.0))  # fmt: skip
    assert not tight.fits and any(s.change.startswith("--precision q") and s.fits for s in tight.suggestions)


def test_hardware_json_keeps_every_measurement_and_survives_a_broken_file(registry):
    """hardware.py is the one reader/writer of hardware.json: a write keeps what other commands measured, and a
    broken file reads as nothing measured (it is measured again) instead of failing the command."""
    from lmforge.hardware import recall, remember

    path = registry.root / "hardware.json"
    path.write_text("{not json")
    assert recall(registry, "memory_bandwidth_gbs") is None
    remember(registry, "memory_bandwidth_gbs", 30.8)
    remember(registry, "cpu|judge|m|1", {"used": "bfloat16"})
    assert (
        recall(registry, "memory_bandwidth_gbs") == 30.8
        and recall(registry, "cpu|judge|m|1")["used"] == "bfloat16"
    )
    assert not list(registry.root.glob("hardware.*.tmp"))  # replaced atomically, nothing left behind


def test_bandwidth_is_measured_once_and_shares_hardware_json(registry, monkeypatch):
    path = registry.root / "hardware.json"
    path.write_text(json.dumps({"AMD EPYC|sft|lora|1|2|(4, 90)": {"used": "bf16"}}))
    calls = []
    monkeypatch.setattr("lmforge.plan.estimates.measure_memory_bandwidth", lambda: calls.append(1) or 12.5)
    assert cpu_facts(registry).memory_bandwidth_gbs == 12.5
    assert cpu_facts(registry).memory_bandwidth_gbs == 12.5 and len(calls) == 1
    saved = json.loads(path.read_text())
    assert saved["memory_bandwidth_gbs"] == 12.5 and "AMD EPYC|sft|lora|1|2|(4, 90)" in saved


# -- training --------------------------------------------------------------------------------------
def train(**kw) -> object:
    base = dict(train="full", batch=4, seq_len=1024, gpu_memory_gb=80)
    return estimate(resolve_model("qwen2.5-7b"), PlanConfig(**(base | kw)))


def test_lora_is_smaller_than_full_and_qlora_smaller_than_lora():
    full, lora, qlora = train(), train(train="lora"), train(train="qlora")
    assert full.per_device_gb > lora.per_device_gb > qlora.per_device_gb
    assert full.row("optimizer") == pytest.approx(7.6156 * 8, abs=0.01)  # AdamW: 8 bytes per parameter
    assert full.row("weights") == pytest.approx(7.6156 * 6, abs=0.01)  # bf16 + fp32 master copy
    assert lora.row("optimizer") < 0.5 and qlora.row("weights") < lora.row("weights")


def test_gradient_checkpointing_lowers_activations():
    plain, ckpt = train(train="lora"), train(train="lora", grad_checkpointing=True)
    assert ckpt.row("activations") < plain.row("activations") / 5
    assert ckpt.row("logits") == plain.row("logits")  # the loss still sees every logit


def test_zero3_divides_model_states_across_gpus():
    one, four = train(), train(zero=3, gpus=4)
    for key in ("weights", "gradients", "optimizer"):
        assert four.rows[[r.key for r in four.rows].index(key)].per_device_gb == pytest.approx(
            one.row(key) / 4
        )
    assert four.row("activations") == pytest.approx(
        one.row("activations") * 4
    )  # each GPU its own micro-batch
    assert four.per_device_gb < one.per_device_gb


def test_training_suggestions_when_full_does_not_fit():
    p = train(gpu_memory_gb=24)
    assert not p.fits
    changes = [s.change for s in p.suggestions]
    assert "--train lora" in changes and "--train qlora" in changes and "--grad-checkpointing" in changes
    assert any(c.startswith("--zero 3 --gpus") for c in changes)
    assert "16 bytes per parameter" in p.naive_note
    lora = train(train="lora", gpu_memory_gb=24)  # no single change is enough: the gentlest ones stacked
    stacked = next(s for s in lora.suggestions if s.fits)
    assert stacked.change == "--grad-checkpointing --batch 1"
    again = train(train="lora", gpu_memory_gb=24, grad_checkpointing=True, batch=1)
    assert again.fits and stacked.per_device_gb == pytest.approx(again.per_device_gb, abs=0.01)


def test_cpu_training_counts_what_lmforge_finetune_holds():
    spec = resolve_model("smollm2-135m")
    facts = CpuFacts(ram_gb=16.0, physical_cores=2, memory_bandwidth_gbs=None)
    lora = estimate(spec, PlanConfig(train="lora", batch=2, seq_len=256, cpu=True), facts)
    assert lora.cfg.precision == "fp32" and lora.fits
    assert lora.row("weights") == pytest.approx(spec.arch.params * 4 / 1e9 + lora.row("gradients"), rel=0.01)
    assert lora.row("logits") == pytest.approx(3 * 2 * 256 * 49152 * 4 / 1e9)
    qlora = estimate(spec, PlanConfig(train="qlora", batch=2, seq_len=256, cpu=True), facts)
    assert qlora.row("checkpoint_pages") > 0  # the bf16 checkpoint read while quantizing stays mapped


# -- errors ----------------------------------------------------------------------------------------
def test_bad_settings_are_reported_together():
    with pytest.raises(LmforgeError) as e:
        estimate(resolve_model("7b"), PlanConfig(concurrency=0, zero=5, train="lora", precision="q4_k_m"))
    msg = str(e.value)
    assert "--concurrency must be at least 1" in msg and "--zero must be 0, 1, 2 or 3" in msg
    assert "training precision" in msg


def test_remote_models_and_cli_errors(registry, capsys):
    from lmforge.home import register_remote

    register_remote(registry, "far", "https://example.invalid/v1", "gpt")
    with pytest.raises(LmforgeError, match="remote endpoint"):
        plan_main(registry, "far", PlanConfig())
    with pytest.raises(LmforgeError, match="num_hidden_layers"):
        run(["plan", "no-such-model"], capsys)


def test_text_output_shows_the_breakdown_and_the_naive_figure(capsys):
    out = run(
        ["plan", "qwen2.5-7b", "--context", "8192", "--concurrency", "20", "--precision", "bf16"], capsys
    )
    assert "KV cache (f16)" in out and "9.40" in out and "15.23" in out
    assert "fits on 1× 24 GB GPU: no" in out and "what to change:" in out
    assert "naive formula: 161.8 GB" in out
