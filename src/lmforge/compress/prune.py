"""`lmforge prune MODEL --sparsity S --method magnitude|structured [--recover-steps N] --out NAME`.

- magnitude (unstructured): in every linear layer of the decoder blocks the fraction S of weights
  with the smallest |w| is set to zero (per matrix). The file is saved dense, so it does NOT shrink
  and dense kernels do not run faster; the zeros only pay off with sparse kernels or as a step
  before compression. The result says so.
- structured: whole attention KV groups (a key/value head with the query heads that share it — GQA
  leaves no smaller unit that keeps the layout) and whole MLP neurons are removed, by an importance
  score measured on calibration text (never the held-out text): for neuron j of a layer,
  mean|a_j| · ‖W_down[:, j]‖₂ (a_j its activation, act(gate)·up); for a KV group, the sum over its
  query heads of mean‖o_h‖₂ · ‖W_o[:, h]‖_F (o_h the head's output before o_proj). Transformers and
  llama.cpp need the same shape in every layer, so each layer loses the same number (its own least
  important ones): round(S × intermediate) neurons and floor(S × kv_heads) groups (or --heads N). The
  config is rewritten (num_attention_heads, num_key_value_heads, head_dim kept explicit,
  intermediate_size) and the weights sliced, so the saved model is really smaller and faster, loads
  in transformers and exports to GGUF. Transformers 5 removed its own head pruning; this works on
  the weights of Llama-layout decoders (Llama, Qwen2, Mistral: q/k/v/o + gate/up/down).
- --recover-steps N: a short language-modelling fine-tune on --data (default: the calibration
  text) to win back quality; for magnitude pruning the zeros are kept (the mask is re-applied).
- Registered with lineage and the same three measured numbers as quantization (compress/measure.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmforge.compress.measure import MeasureConfig, begin, delta, measure_model, measure_path
from lmforge.errors import LmforgeError
from lmforge.home import Manifest, Registry

PruneMethod = Literal["magnitude", "structured"]
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class PruneConfig:
    sparsity: float = 0.3
    """Fraction removed: of each matrix's weights (magnitude), of MLP neurons and KV groups (structured)."""
    method: PruneMethod = "structured"
    out: str | None = None
    heads: int | None = None
    """structured: KV groups removed per layer (default floor(sparsity × kv_heads)); 0 = MLP only."""
    recover_steps: int = 0
    """Language-modelling steps after pruning (0 = none)."""
    data: str | None = None
    """Calibration and recovery text: a .txt/.md file or JSONL with "text"; default the bundled corpus."""
    calibration_tokens: int = 4096
    seq_len: int = 256
    batch_size: int = 4
    lr: float = 2e-5
    seed: int = 0
    measure: MeasureConfig = field(default_factory=MeasureConfig)

    def validate(self) -> None:
        problems = []
        if self.method not in ("magnitude", "structured"):
            problems.append(f"unknown --method {self.method!r}: magnitude or structured")
        if not 0 < self.sparsity < 1:
            problems.append(f"--sparsity must be between 0 and 1 (exclusive), not {self.sparsity}")
        if self.recover_steps < 0 or self.calibration_tokens < 64 or self.seq_len < 16 or self.batch_size < 1:
            problems.append("--recover-steps must be >= 0, --seq-len >= 16, --batch-size >= 1")
        if self.heads is not None and self.heads < 0:
            problems.append("--heads must be >= 0")
        if self.data and not Path(self.data).is_file():
            problems.append(f"--data {self.data}: no such file")
        if problems:
            raise LmforgeError("; ".join(problems))


def calibration_text(cfg: PruneConfig) -> str:
    """--data's text, or a zh+en sample of the bundled corpus (People's Daily 1998 + licence texts)."""
    import json

    if cfg.data:
        raw = Path(cfg.data).read_text(encoding="utf-8")
        if Path(cfg.data).suffix == ".jsonl":
            return "\n\n".join(json.loads(x)["text"] for x in raw.splitlines() if x.strip())
        return raw
    from lmforge.data.bundled import locate_sources, peoples_daily_documents

    src = locate_sources()
    zh = [d for _, d in zip(range(40), peoples_daily_documents(src.peoples_daily), strict=False)]
    en = [p.read_text(encoding="utf-8", errors="replace")[:6000] for p in src.licences[:4]]
    return "\n\n".join(x for pair in zip(zh, en + [""] * len(zh), strict=False) for x in pair if x)


def main(registry: Registry, model: str, cfg: PruneConfig, *, say=print) -> Manifest:
    """Prune registered `model`, register the result with its measured numbers."""
    import torch

    from lmforge.infer.hf import load_pretrained, load_tokenizer
    from lmforge.train.finetune import hf_base

    cfg.validate()
    out = cfg.out or f"{model}-pruned-{cfg.method}-{round(cfg.sparsity * 100)}"
    pm = begin(registry, model, out)
    source = hf_base(registry, model, say) if pm.format == "gguf" else pm
    src = registry.model_path(source)
    tok, model_ = load_pretrained(src, "causal")
    layers = _layers(model_)
    shape = _shape(model_.config)
    if cfg.method == "structured":
        heads = cfg.heads if cfg.heads is not None else math.floor(cfg.sparsity * shape["kv_heads"])
        if heads >= shape["kv_heads"]:
            raise LmforgeError(f"cannot remove {heads} KV groups per layer: {model} has {shape['kv_heads']} "
                               f"(each with {shape['heads'] // shape['kv_heads']} query heads); at least one must stay")  # fmt: skip
    say(f"measuring the parent {source.name} ...")
    parent = measure_model(registry, source.name, cfg.measure)
    if cfg.measure.threads:
        torch.set_num_threads(cfg.measure.threads)
    started = time.time()
    text = calibration_text(cfg)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) < cfg.seq_len + 1:
        raise LmforgeError(f"calibration text too short: {len(ids)} tokens, need at least {cfg.seq_len + 1}")
    masks: dict[str, Any] = {}
    if cfg.method == "magnitude":
        masks = magnitude_prune(layers, cfg.sparsity)
        zero = sum(int((~m).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
        summary = {"zeroed_fraction": round(zero, 4), "dense_file": True}
        say(f"magnitude: {zero:.1%} of the decoder's linear weights are now zero. The file is saved dense, so it "
            f"does not shrink and dense kernels are not faster: pruning pays off with sparse kernels or as a step "
            f"before compression")  # fmt: skip
    else:
        imp = importance(model_, layers, ids[: cfg.calibration_tokens], cfg.seq_len, shape)
        n_neurons = round(cfg.sparsity * shape["intermediate"])
        model_, summary = structured_prune(model_, imp, n_neurons, heads, shape)
        say(f"structured: removed {heads} of {shape['kv_heads']} KV groups ({summary['heads_removed']} query heads) "
            f"and {n_neurons} of {shape['intermediate']} MLP neurons in each of {len(layers)} layers; "
            f"{summary['params_before']:,} -> {summary['params_after']:,} parameters")  # fmt: skip
        if heads == 0 and cfg.heads is None:
            say(f"(no attention heads removed: {cfg.sparsity} × {shape['kv_heads']} KV groups rounds down to 0; "
                f"--heads N removes N per layer)")  # fmt: skip
    if cfg.recover_steps:
        summary["recovery"] = recover(model_, tok, ids, cfg, masks, say)
    manifest = Manifest(name=out, kind=pm.kind, format="hf", path="", parents=[source.name],
                        source=f"prune:{cfg.method}", notes=f"{cfg.method} pruning of {source.name}",
                        config={"method": cfg.method, "sparsity": cfg.sparsity, "parent": source.name,
                                "recover_steps": cfg.recover_steps, "calibration": cfg.data or "bundled corpus"})  # fmt: skip

    def fill(stage: Path) -> None:
        model_.save_pretrained(str(stage))
        load_tokenizer(src).save_pretrained(str(stage))
        manifest.params = sum(p.numel() for p in model_.parameters())
        say(f"measuring {out} ...")
        got = measure_path(stage, "hf", cfg.measure)
        manifest.metrics["compress"] = got.as_dict() | {"parent": source.name, "delta": delta(parent, got),
                                                        "seconds": round(time.time() - started, 1)}  # fmt: skip
        manifest.metrics["prune"] = summary

    return registry.put(manifest, fill)


def _layers(model: Any) -> list[Any]:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None or not all(hasattr(layer, "self_attn") and hasattr(layer, "mlp") for layer in layers):
        raise LmforgeError(f"pruning works on Llama-layout decoders (Llama, Qwen2, Mistral); this is a "
                           f"{model.config.model_type}")  # fmt: skip
    for layer in layers:
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            if not hasattr(layer.self_attn, name):
                raise LmforgeError(f"{model.config.model_type}: attention without {name}; not a Llama layout")
        for name in ("gate_proj", "up_proj", "down_proj"):
            if not hasattr(layer.mlp, name):
                raise LmforgeError(f"{model.config.model_type}: MLP without {name}; not a Llama layout")
    return list(layers)


def _shape(config: Any) -> dict[str, int]:
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return {"heads": heads, "kv_heads": kv, "head_dim": head_dim, "intermediate": config.intermediate_size}


def magnitude_prune(layers: list[Any], sparsity: float) -> dict[str, Any]:
    """Zero the smallest |w| of each linear weight; return {param name: keep mask}."""
    import torch

    masks = {}
    with torch.no_grad():
        for i, layer in enumerate(layers):
            for part in (layer.self_attn, layer.mlp):
                for name in LINEARS:
                    lin = getattr(part, name, None)
                    if lin is None:
                        continue
                    w = lin.weight
                    k = int(sparsity * w.numel())
                    if k == 0:
                        continue
                    cut = w.abs().flatten().kthvalue(k).values
                    keep = w.abs() > cut
                    w.mul_(keep)
                    masks[f"{i}.{name}"] = keep
    return masks


def importance(model: Any, layers: list[Any], ids: list[int], seq_len: int, shape: dict[str, int]) -> list[dict[str, Any]]:  # fmt: skip
    """Per layer: {"neurons": (intermediate,), "heads": (heads,)} importance scores on calibration ids."""
    import torch

    acc = [
        {"neurons": torch.zeros(shape["intermediate"]), "heads": torch.zeros(shape["heads"]), "n": 0}
        for _ in layers
    ]
    hooks = []
    hd = shape["head_dim"]
    for i, layer in enumerate(layers):

        def on_down(mod: Any, args: Any, i: int = i) -> None:
            a = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            acc[i]["neurons"] += a.abs().sum(0)
            acc[i]["n"] += a.shape[0]

        def on_o(mod: Any, args: Any, i: int = i) -> None:
            x = args[0].detach().reshape(-1, shape["heads"], hd).float()
            acc[i]["heads"] += x.norm(dim=-1).sum(0)

        hooks += [layer.mlp.down_proj.register_forward_pre_hook(on_down),
                  layer.self_attn.o_proj.register_forward_pre_hook(on_o)]  # fmt: skip
    try:
        with torch.no_grad():
            for s in range(0, max(1, len(ids) - seq_len), seq_len):
                model(input_ids=torch.tensor([ids[s : s + seq_len]]))
    finally:
        for h in hooks:
            h.remove()
    out = []
    for layer, a in zip(layers, acc, strict=True):
        n = max(1, a["n"])
        w_down = layer.mlp.down_proj.weight.detach().float()  # (hidden, intermediate)
        w_o = layer.self_attn.o_proj.weight.detach().float().reshape(w_down.shape[0], shape["heads"], hd)
        out.append({"neurons": a["neurons"] / n * w_down.norm(dim=0),
                    "heads": a["heads"] / n * w_o.norm(dim=(0, 2))})  # fmt: skip
    return out


def structured_prune(model: Any, imp: list[dict[str, Any]], n_neurons: int, n_groups: int,
                     shape: dict[str, int]) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """A new, smaller model of the same class with each layer's least important neurons and KV groups
    removed (the same counts in every layer), the other weights copied."""
    import copy

    import torch

    heads, kv, hd = shape["heads"], shape["kv_heads"], shape["head_dim"]
    per_group = heads // kv
    before = sum(p.numel() for p in model.parameters())
    sd = model.state_dict()
    new_sd = dict(sd)
    for i, a in enumerate(imp):
        p = f"model.layers.{i}."
        keep_n = torch.sort(a["neurons"].argsort(descending=True)[: shape["intermediate"] - n_neurons]).values
        group_score = a["heads"].reshape(kv, per_group).sum(1)
        keep_g = torch.sort(group_score.argsort(descending=True)[: kv - n_groups]).values
        keep_h = torch.cat([torch.arange(g * per_group, (g + 1) * per_group) for g in keep_g.tolist()])
        rows_q = torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in keep_h.tolist()])
        rows_kv = torch.cat([torch.arange(g * hd, (g + 1) * hd) for g in keep_g.tolist()])
        for name, rows in (("q_proj", rows_q), ("k_proj", rows_kv), ("v_proj", rows_kv)):
            new_sd[f"{p}self_attn.{name}.weight"] = sd[f"{p}self_attn.{name}.weight"][rows].clone()
            if f"{p}self_attn.{name}.bias" in sd:
                new_sd[f"{p}self_attn.{name}.bias"] = sd[f"{p}self_attn.{name}.bias"][rows].clone()
        new_sd[f"{p}self_attn.o_proj.weight"] = sd[f"{p}self_attn.o_proj.weight"][:, rows_q].clone()
        for name in ("gate_proj", "up_proj"):
            new_sd[f"{p}mlp.{name}.weight"] = sd[f"{p}mlp.{name}.weight"][keep_n].clone()
        new_sd[f"{p}mlp.down_proj.weight"] = sd[f"{p}mlp.down_proj.weight"][:, keep_n].clone()
    config = copy.deepcopy(model.config)
    config.num_attention_heads = heads - n_groups * per_group
    config.num_key_value_heads = kv - n_groups
    config.head_dim = hd
    config.intermediate_size = shape["intermediate"] - n_neurons
    new = type(model)(config)
    missing, unexpected = new.load_state_dict(new_sd, strict=False)
    if unexpected or [k for k in missing if not k.endswith("lm_head.weight")]:
        raise LmforgeError(
            f"pruned weights do not fit the new shape: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    if config.tie_word_embeddings:
        new.tie_weights()
    new.eval()
    after = sum(p.numel() for p in new.parameters())
    return new, {"heads_removed": n_groups * per_group, "kv_groups_removed": n_groups, "neurons_removed": n_neurons,
                 "params_before": before, "params_after": after}  # fmt: skip


def recover(model: Any, tok: Any, ids: list[int], cfg: PruneConfig, masks: dict[str, Any], say: Any) -> dict[str, Any]:  # fmt: skip
    """A short LM fine-tune on the calibration/recovery ids (masks re-applied after each step)."""
    import torch

    from lmforge.progress import steps_progress

    torch.manual_seed(cfg.seed)
    chunks = [ids[s : s + cfg.seq_len] for s in range(0, len(ids) - cfg.seq_len, cfg.seq_len)]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    layers = _layers(model)
    model.train()
    losses = []
    with steps_progress() as bar:
        task = bar.add_task("recovery fine-tune", total=cfg.recover_steps)
        for step in range(cfg.recover_steps):
            batch = torch.tensor(
                [chunks[(step * cfg.batch_size + j) % len(chunks)] for j in range(cfg.batch_size)]
            )
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if masks:
                with torch.no_grad():
                    for i, layer in enumerate(layers):
                        for part in (layer.self_attn, layer.mlp):
                            for name in LINEARS:
                                if f"{i}.{name}" in masks:
                                    getattr(part, name).weight.mul_(masks[f"{i}.{name}"])
            losses.append(float(loss.detach()))
            bar.advance(task)
    model.eval()
    say(f"recovery: {cfg.recover_steps} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return {"steps": cfg.recover_steps, "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4)}
