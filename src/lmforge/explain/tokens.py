"""Per-token attributions (captum): which input tokens pushed the model toward one output.

Contract: `attributions(model, tokenizer, kind, text, cfg)` explains
- a sequence classifier (a classifier or a reward model): the output is the log-probability of one label
  (`cfg.target`, a name from config.id2label; default the predicted label);
- a causal LM's next token: the output is the log-probability of one next token (`cfg.target`, a token
  string; default the predicted token).
Methods (captum, on the input embedding layer): "ig" is LayerIntegratedGradients from a baseline text
(every token replaced by one neutral token, special tokens kept), with completeness: the scores sum to
f(text) − f(baseline) up to the reported convergence delta; "grad-x-input" is LayerGradientXActivation
(gradient × embedding; one backward pass, no completeness). A token's score is its attribution summed
over the embedding dimensions: positive raised the target's log-probability, negative lowered it.
`explain_tokens_json` is the JSON a console draws; `explain_tokens` also writes a PNG bar chart and an
HTML page of the text coloured by score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lmforge.errors import LmforgeError
from lmforge.explain.load import ExplainModel, ModelKind
from lmforge.explain.page import html_page, plot_labels, pyplot
from lmforge.explain.tokenized import DEFAULT_MAX_TOKENS, Tokenized, tokenize

Method = Literal["ig", "grad-x-input"]


@dataclass
class AttributionConfig:
    """What to attribute and how (`lmforge explain tokens` options)."""

    target: str | None = None
    """Classifier: a label name (config.id2label) or index; causal LM: the next token as a string. None: the
    model's own prediction."""
    method: Method = "ig"
    """ig: integrated gradients (completeness, convergence delta); grad-x-input: gradient × embedding."""
    steps: int = 50
    """Integrated gradients: points on the path from the baseline to the text (Gauss-Legendre)."""
    internal_batch_size: int = 16
    """Integrated gradients: path points run through the model at once (memory: this × T tokens)."""
    max_tokens: int = DEFAULT_MAX_TOKENS
    """The longest text accepted, in tokens."""

    def validate(self) -> None:
        problems = []
        if self.steps < 2:
            problems.append(f"--steps must be at least 2 (got {self.steps})")
        if self.internal_batch_size < 1:
            problems.append(f"internal_batch_size must be at least 1 (got {self.internal_batch_size})")
        if problems:
            raise LmforgeError("; ".join(problems))


@dataclass
class TokenAttribution:
    """How much each token of one text moved the target's log-probability."""

    tokens: Tokenized
    scores: np.ndarray
    """(T,) float64: attribution per token (summed over the embedding dimensions)."""
    kind: ModelKind
    method: Method
    target: str
    """The label name, or the next token as text."""
    target_id: int
    """Class index (classifier) or token id (causal LM)."""
    predicted: str
    """What the model itself predicts (label or next token)."""
    target_prob: float
    """p(target | text)."""
    output: float
    """f(text): log p(target | text), the attributed quantity."""
    baseline_output: float | None
    """Integrated gradients: f(baseline), log p(target | baseline text), the path's start; None for
    grad-x-input (it has no baseline)."""
    baseline_token: str | None
    """Integrated gradients: the token that replaces every non-special token of the text in the baseline."""
    delta: float | None = None
    """Integrated gradients' convergence delta: sum(scores) − (f(text) − f(baseline)); None for grad-x-input."""
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    """The model's top predictions: [{"label" or "token", "id", "prob"}]."""


def _forward(model: Any, kind: ModelKind, target_id: int) -> Any:
    import torch

    def f(ids: torch.Tensor) -> torch.Tensor:  # ids (B, T) → (B,) log p(target)
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        last = logits[:, -1, :] if kind == "causal" else logits  # (B, V) or (B, C)
        return torch.log_softmax(last.float(), dim=-1)[:, target_id]

    return f


def baseline_id(tokenizer: Any, model: Any, kind: ModelKind) -> int:
    """The neutral token of the baseline text. Padding for a causal LM; for a classifier any other neutral
    token, because decoder classifiers (Qwen2, Llama) read the label at the last non-padding token and a
    padding baseline would move where they read it."""
    pad_in_config = getattr(model.config, "pad_token_id", None)
    if kind == "causal":
        order = [
            tokenizer.pad_token_id,
            tokenizer.unk_token_id,
            tokenizer.eos_token_id,
            tokenizer.bos_token_id,
        ]
    else:
        order = [tokenizer.unk_token_id, tokenizer.mask_token_id, tokenizer.eos_token_id,
                 tokenizer.bos_token_id, tokenizer.pad_token_id]  # fmt: skip
    for tid in [*order, 0, 1]:
        if tid is not None and (kind == "causal" or tid != pad_in_config):
            return int(tid)
    raise LmforgeError("no token to build the baseline from")  # pragma: no cover - ids 0 and 1 always exist


def _target(
    model: Any, tokenizer: Any, kind: ModelKind, logp: np.ndarray, target: str | None
) -> tuple[int, str]:
    """(id, name) of the target: the prediction, a label (classifier) or a one-token string (causal LM)."""
    if kind == "classifier":
        names = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
        if target is None:
            best = int(np.argmax(logp))
            return best, names.get(best, str(best))
        for k, v in names.items():
            if v == target:
                return k, v
        if target.isdigit() and int(target) in names:
            return int(target), names[int(target)]
        raise LmforgeError(
            f"--target {target!r} is not a label of this classifier: {', '.join(names.values())}"
        )
    if target is None:
        best = int(np.argmax(logp))
        return best, tokenizer.decode([best])
    ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    if len(ids) == 1:
        return int(ids[0]), target
    vocab = tokenizer.get_vocab()
    if target in vocab:
        return int(vocab[target]), target
    pieces = tokenizer.convert_ids_to_tokens(ids)
    raise LmforgeError(f"--target {target!r} is {len(ids)} tokens ({' '.join(map(str, pieces))}); the next-token "
                       f"target must be one token, e.g. {tokenizer.decode(ids[:1])!r}")  # fmt: skip


def attributions(model: Any, tokenizer: Any, kind: ModelKind, text: str,
                 cfg: AttributionConfig | None = None) -> TokenAttribution:  # fmt: skip
    """Attribute the target's log-probability to each token of `text` (see the module docstring)."""
    import torch
    from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

    cfg = cfg or AttributionConfig()
    cfg.validate()
    if kind not in ("classifier", "causal"):
        what = "a masked LM (BERT)" if kind == "masked" else "an encoder without a task head"
        raise LmforgeError(f"token attributions explain a classifier's label or a causal LM's next token; this is "
                           f"{what}: `lmforge explain attention` works with it")  # fmt: skip
    context = getattr(model.config, "max_position_embeddings", None)
    toks = tokenize(tokenizer, text, cfg.max_tokens, int(context) if context else None)
    ids = torch.tensor([toks.ids])  # (1, T)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    last = logits[0, -1] if kind == "causal" else logits[0]  # (V,) or (C,)
    logp = torch.log_softmax(last.float(), dim=-1).numpy()
    target_id, target = _target(model, tokenizer, kind, logp, cfg.target)
    predicted_id = int(np.argmax(logp))
    f = _forward(model, kind, target_id)
    layer = model.get_input_embeddings()
    base_tok = baseline_id(tokenizer, model, kind)
    base = torch.tensor(
        [[t if sp else base_tok for t, sp in zip(toks.ids, toks.special, strict=True)]]
    )  # (1, T)
    delta = None
    if cfg.method == "ig":
        # a decoder classifier without pad_token_id refuses batches > 1 (it cannot find the last token)
        no_pad = kind == "classifier" and getattr(model.config, "pad_token_id", None) is None
        attr, d = LayerIntegratedGradients(f, layer).attribute(
            ids,
            baselines=base,
            n_steps=cfg.steps,
            internal_batch_size=1 if no_pad else cfg.internal_batch_size,
            return_convergence_delta=True,
        )  # attr (1, T, D)
        delta = float(d.reshape(-1)[0])
    else:
        attr = LayerGradientXActivation(f, layer).attribute(ids)  # (1, T, D)
    scores = attr[0].detach().double().sum(dim=-1).numpy()  # (T,)
    ig = cfg.method == "ig"
    with torch.no_grad():
        base_out = float(f(base)[0]) if ig else None
    return TokenAttribution(
        tokens=toks, scores=scores, kind=kind, method=cfg.method, target=target, target_id=target_id,
        predicted=_name(model, tokenizer, kind, predicted_id), target_prob=float(np.exp(logp[target_id])),
        output=float(logp[target_id]), baseline_output=base_out,
        baseline_token=str(tokenizer.convert_ids_to_tokens(base_tok)) if ig else None,
        delta=delta, alternatives=_top(model, tokenizer, kind, logp),
    )  # fmt: skip


def _name(model: Any, tokenizer: Any, kind: ModelKind, i: int) -> str:
    if kind == "classifier":
        return str((model.config.id2label or {}).get(i, i))
    return tokenizer.decode([i])


def _top(model: Any, tokenizer: Any, kind: ModelKind, logp: np.ndarray, k: int = 5) -> list[dict[str, Any]]:
    key = "label" if kind == "classifier" else "token"
    best = np.argsort(-logp, kind="stable")[:k]
    return [{key: _name(model, tokenizer, kind, int(i)), "id": int(i), "prob": round(float(np.exp(logp[i])), 6)}
            for i in best]  # fmt: skip


def explain_tokens_json(a: TokenAttribution) -> dict[str, Any]:
    """The attribution as JSON-serialisable data (`--json`, the console)."""
    total = float(a.scores.sum())
    return {
        "kind": a.kind,
        "method": a.method,
        "target": a.target,
        "target_id": a.target_id,
        "target_prob": round(a.target_prob, 6),
        "predicted": a.predicted,
        "alternatives": a.alternatives,
        "attributed": "log p(target)",
        "output": round(a.output, 6),
        "baseline_output": None if a.baseline_output is None else round(a.baseline_output, 6),
        "baseline_token": a.baseline_token,
        "sum": round(total, 6),
        "delta": None if a.delta is None else float(f"{a.delta:.3e}"),
        "tokens": [
            {"index": i, "token": lab, "piece": p, "special": sp, "score": round(float(s), 6)}
            for i, (lab, p, sp, s) in enumerate(
                zip(a.tokens.labels, a.tokens.pieces, a.tokens.special, a.scores, strict=True)
            )
        ],
    }


def tokens_png(a: TokenAttribution, path: Path, title: str) -> tuple[Path, str]:
    """Bar chart of the scores, one bar per token (green raised the target, red lowered it); also the
    labelling note ('' or why CJK tokens show as indices)."""
    plt = pyplot()
    pl = plot_labels(a.tokens.labels)
    t = len(a.scores)
    fig, ax = plt.subplots(figsize=(min(18.0, max(6.0, 1.5 + 0.32 * t)), 4.2), dpi=110)
    colours = ["#1a7f37" if s >= 0 else "#cf222e" for s in a.scores]
    ax.bar(range(t), a.scores, color=colours)
    ax.axhline(0, color="#57606a", linewidth=0.8)
    if t <= 80:
        ax.set_xticks(
            range(t), pl.labels, rotation=90, fontsize=max(5.0, min(9.0, 500 / max(t, 1))), **pl.text_kw()
        )
    ax.set_ylabel(f"attribution to log p({a.target!r})"[:60])
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path, pl.note


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1f2328;max-width:70rem}
h1{font-size:1.25rem;margin:0 0 .5rem} .meta{color:#57606a}
#text{margin:1rem 0;line-height:2.2;font-size:1.1rem}
#text span{padding:.12rem .05rem;border-radius:.2rem;white-space:pre-wrap;cursor:default}
#text span.special{font-size:.8rem;color:#57606a;border:1px dashed #d0d7de;padding:.1rem .25rem;margin:0 .1rem}
.legend span{display:inline-block;width:1.4rem;height:.9rem;vertical-align:middle;border:1px solid #d0d7de}
table{border-collapse:collapse;margin-top:1rem;font-size:.9rem} td,th{padding:.15rem .6rem;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
"""

_BODY = """
<h1 id="title"></h1>
<p class="meta" id="meta"></p>
<p class="legend"><span style="background:rgba(207,34,46,.8)"></span> lowered the target
 &nbsp; <span style="background:rgba(26,127,55,.8)"></span> raised it (colour ∝ |score| / largest |score|)</p>
<div id="text"></div>
<p class="meta" id="check"></p>
<table><thead><tr><th>#</th><th>token</th><th>score</th></tr></thead><tbody id="rows"></tbody></table>
"""

_SCRIPT = """
const $ = id => document.getElementById(id);
const peak = Math.max(1e-12, ...DATA.tokens.map(t => Math.abs(t.score)));
function bg(s){const v=Math.abs(s)/peak;return s>=0?`rgba(26,127,55,${(0.85*v).toFixed(3)})`:`rgba(207,34,46,${(0.85*v).toFixed(3)})`;}
$('title').textContent='Token attributions: '+DATA.model;
$('meta').textContent=(DATA.kind==='classifier'?'label ':'next token ')+JSON.stringify(DATA.target)+
 ' (p='+DATA.target_prob.toFixed(4)+'; the model predicts '+JSON.stringify(DATA.predicted)+') · method '+DATA.method+
 ' · attributed: '+DATA.attributed;
for(const t of DATA.tokens){const s=document.createElement('span');
 s.textContent=t.special?t.token:(t.piece||'\u2027');if(t.special)s.className='special';
 s.style.background=bg(t.score);s.title='#'+t.index+' '+t.token+'  '+t.score.toFixed(5);$('text').appendChild(s);
 const tr=document.createElement('tr');for(const [v,c] of [[t.index,'n'],[t.token,''],[t.score.toFixed(5),'n']]){
  const td=document.createElement('td');td.textContent=v;td.className=c;tr.appendChild(td);}
 tr.style.background=bg(t.score);$('rows').appendChild(tr);}
$('check').textContent='sum of scores '+DATA.sum.toFixed(5)+(DATA.baseline_output===null?
 ' (gradient × input: no completeness, the sum need not match any difference)':
 '; f(text) − f(baseline) = '+(DATA.output-DATA.baseline_output).toFixed(5)+' (baseline: every token → '+
 DATA.baseline_token+'); integrated gradients convergence delta '+DATA.delta.toExponential(2));
"""


def tokens_html(data: dict[str, Any], model_name: str) -> str:
    """The text coloured by attribution (hover: token and score), with the table and the completeness check.
    Self-contained: nothing is fetched."""
    return html_page(
        f"token attributions: {model_name}", _STYLE, _BODY, {**data, "model": model_name}, _SCRIPT
    )


def explain_tokens(
    em: ExplainModel, text: str, out: Path, cfg: AttributionConfig | None = None
) -> dict[str, Any]:
    """Attribute, write tokens-<method>-<target id>.png/.html into `out`; return the `--json` summary
    (explain_tokens_json plus model, files, notes)."""
    cfg = cfg or AttributionConfig()
    a = attributions(em.model, em.tokenizer, em.kind, text, cfg)
    data = explain_tokens_json(a)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"tokens-{a.method}-{'label' if a.kind == 'classifier' else 'token'}{a.target_id}"
    png, note = tokens_png(a, out / f"{stem}.png", f"{em.name}: {a.method} attributions to {a.target!r}")
    html = out / f"{stem}.html"
    html.write_text(tokens_html(data, em.name), encoding="utf-8")
    return {
        "model": em.name,
        **data,
        "files": {"png": str(png), "html": str(html)},
        "notes": [note] if note else [],
    }
