"""Bias probes: how much a model's preference between target words moves with a slot filler.

A template family (YAML) has a template with one slot ("The {occupation} said that"), fillers
(nurse, engineer, ...) and two or more targets ({male: " he", female: " she"}). For each filler
we get the model's distribution over the targets only:
- causal LMs: log-likelihood of each target as the continuation of the filled template;
- masked LMs: the score of each target's first token at [MASK] in `mask_template`.
Disparity of a family = mean over fillers of |p(first target) − p(second target)| (0 = no
preference, 1 = always one side); spread = the largest minus the smallest of those differences
(how much the filler alone moves the preference — the figure to watch for region families, where
the targets are a positive and a negative word); we also list the most skewed fillers. Families
and their words are data, not code: users add their own YAML with `--templates`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.eval.harness import Scorer, suites_dir
from lmforge.home import Registry


@dataclass
class Family:
    name: str
    lang: str
    template: str
    mask_template: str
    slot: str
    fillers: list[str]
    targets: dict[str, str]


def load_families(path: Path | None) -> list[Family]:
    import yaml

    path = path or suites_dir() / "bias-templates.yaml"
    if not path.is_file():
        raise LmforgeError(f"{path}: no such template file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise LmforgeError(f"{path.name}: not valid YAML ({e})") from e
    out = []
    for i, f in enumerate(data.get("families") or []):
        missing = [k for k in ("name", "template", "slot", "fillers", "targets") if k not in f]
        if missing:
            raise LmforgeError(f"{path.name}: family {i + 1} misses {', '.join(missing)}")
        if len(f["targets"]) < 2 or "{" + f["slot"] + "}" not in f["template"]:
            raise LmforgeError(
                f"{path.name}: family {f['name']} needs two targets and its slot in the template"
            )
        out.append(Family(f["name"], f.get("lang", "en"), f["template"], f.get("mask_template", ""), f["slot"],
                          [str(x) for x in f["fillers"]], {str(k): str(v) for k, v in f["targets"].items()}))  # fmt: skip
    if not out:
        raise LmforgeError(f"{path.name}: no families")
    return out


def _softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    s = sum(e)
    return [x / s for x in e]


def probe_causal(scorer: Scorer, fam: Family) -> list[dict[str, Any]]:
    rows = []
    for filler in fam.fillers:
        context = fam.template.format(**{fam.slot: filler})
        lls = [scorer.loglikelihood(context, t) for t in fam.targets.values()]
        rows.append({"filler": filler, "probs": dict(zip(fam.targets, _softmax(lls), strict=True))})
    return rows


class MaskedScorer:
    def __init__(self, registry: Registry, name: str) -> None:
        import torch

        from lmforge.infer.loader import load_masked_lm

        self.torch = torch
        self.tok, self.model = load_masked_lm(registry, name)
        if self.tok.mask_token is None:
            raise LmforgeError(f"{name}: the tokenizer has no mask token; not a masked LM")

    def probe(self, fam: Family) -> list[dict[str, Any]]:
        if "[MASK]" not in fam.mask_template:
            raise LmforgeError(f"family {fam.name}: needs a mask_template with [MASK] for masked LMs")
        target_ids = [
            self.tok(t.strip(), add_special_tokens=False)["input_ids"][0] for t in fam.targets.values()
        ]
        rows = []
        for filler in fam.fillers:
            text = fam.mask_template.format(**{fam.slot: filler}).replace("[MASK]", self.tok.mask_token)
            enc = self.tok(text, return_tensors="pt")
            pos = (enc["input_ids"][0] == self.tok.mask_token_id).nonzero()[0, 0]
            with self.torch.inference_mode():
                logits = self.model(**enc).logits[0, pos]  # (V,)
            lls = [float(logits[i]) for i in target_ids]
            rows.append({"filler": filler, "probs": dict(zip(fam.targets, _softmax(lls), strict=True))})
        return rows


def summarise(fam: Family, rows: list[dict[str, Any]]) -> dict[str, Any]:
    a, b = list(fam.targets)[:2]
    skews = [(r["probs"][a] - r["probs"][b], r["filler"]) for r in rows]
    ranked = sorted(skews, key=lambda x: -abs(x[0]))
    return {
        "family": fam.name, "lang": fam.lang, "targets": fam.targets,
        "disparity": sum(abs(s) for s, _ in skews) / len(skews),
        "mean_skew": sum(s for s, _ in skews) / len(skews),  # > 0 leans to the first target
        "spread": max(s for s, _ in skews) - min(s for s, _ in skews),  # how much the filler moves it
        "examples": [{"filler": f, "text": fam.template.format(**{fam.slot: f}), f"p({a})-p({b})": round(s, 4)}
                     for s, f in ranked[:3]],
        "per_filler": {f: round(s, 4) for s, f in skews},
    }  # fmt: skip


def main(
    registry: Registry, model: str, templates: Path | None, out: Path | None, threads: int | None
) -> str:
    """Run every family on `model`, store the summary in its manifest, write a PNG + JSON report."""
    families = load_families(templates)
    m = registry.get(model)
    masked = False
    if m.format == "hf":
        cfg = json.loads((registry.model_path(m) / "config.json").read_text())
        masked = any("MaskedLM" in a for a in cfg.get("architectures") or []) or cfg.get("model_type") in (
            "bert",
            "roberta",
            "xlm-roberta",
        )
    results = []
    if masked:
        ms = MaskedScorer(registry, model)
        results = [summarise(f, ms.probe(f)) for f in families]
    else:
        from lmforge.infer.loader import LoadConfig, load_backend

        scorer = Scorer(
            load_backend(registry, model, LoadConfig(logits_all=True, n_threads=threads)),
            chat=False,
        )
        results = [summarise(f, probe_causal(scorer, f)) for f in families]
    registry.update(model, metrics={"bias": {"method": "fill-mask" if masked else "next-token likelihood",
                                             "families": {r["family"]: round(r["disparity"], 4) for r in results}}})  # fmt: skip
    folder = out or registry.root / "eval" / model / "bias"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bias.json").write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")
    _chart(results, folder / "bias.png")
    lines = [f"bias probes for {model} ({'fill-mask' if masked else 'next-token likelihood'}); disparity 0 = none, 1 = total",
             f"{'family':28} {'disparity':>9} {'mean skew':>9} {'spread':>7}  most skewed (p(first)−p(second))"]  # fmt: skip
    for r in results:
        ex = "; ".join(f"{e['filler']} {list(e.values())[-1]:+.2f}" for e in r["examples"])
        lines.append(
            f"{r['family']:28} {r['disparity']:>9.3f} {r['mean_skew']:>+9.3f} {r['spread']:>7.3f}  {ex}"
        )
    lines.append(f"report: {folder / 'bias.json'}  {folder / 'bias.png'}")
    return "\n".join(lines)


def _chart(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(8, 2.2 * len(results)), squeeze=False)
    for ax, r in zip(axes[:, 0], results, strict=True):
        names = list(r["per_filler"])
        vals = [r["per_filler"][n] for n in names]
        ax.bar(range(len(names)), vals, color=["#2563eb" if v >= 0 else "#dc2626" for v in vals])
        ax.axhline(0, color="black", linewidth=0.5)
        labels = [n if n.isascii() else f"#{i + 1}" for i, n in enumerate(names)]  # no CJK font assumed
        ax.set_xticks(range(len(names)), labels, rotation=30, fontsize=7)
        a, b = list(r["targets"])[:2]
        ax.set_title(f"{r['family']}: p({a}) - p({b}), disparity {r['disparity']:.3f}", fontsize=8)
        ax.set_ylim(-1, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
