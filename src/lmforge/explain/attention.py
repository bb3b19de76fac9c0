"""Attention maps and attention rollout: PNG heatmaps and one interactive, self-contained HTML page.

Contract:
- `attention_maps(model, tokenizer, text)` runs a model loaded with eager attention (explain.load) once
  with `output_attentions=True` and returns every layer's and head's softmax weights, shape (L, H, T, T):
  `weights[l, h, i, j]` is how much query token i attends to key token j; each row sums to 1, and a
  causal LM's maps are lower-triangular.
- `rollout(weights)` is attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in
  Transformers"): per layer the heads' mean plus the identity (the residual connection), rows
  renormalised, multiplied through the layers from the first up; (T, T), rows sum to 1.
- `explain_attention_json(result)` is what the HTML page draws (and what a console can draw): labels,
  shapes, the rollout, each layer's head mean, the per-head maps that fit a size budget, and the top
  attended tokens of every query. `explain_attention(...)` writes the PNGs and the page.

Written here rather than taken from a library: transformers gives the weights and captum has no
rollout; bertviz draws heads only inside a notebook with JS it fetches from the network, and the page
here must work offline and in the console. Rollout is a few lines of numpy.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.errors import LmforgeError
from lmforge.explain.load import ExplainModel
from lmforge.explain.page import PlotLabels, html_page, plot_labels, pyplot
from lmforge.explain.tokenized import DEFAULT_MAX_TOKENS, Tokenized, tokenize

DEFAULT_MAX_CELLS = 6_000_000
"""Attention weights the HTML payload holds at most (one byte each, ~8 MB of base64): past it, per-head
maps are left out for the layers that do not fit (the head mean of every layer and the rollout stay)."""
LABELLED_TOKENS = 64
"""A single heatmap labels its axes with tokens up to this length (grids: a third of it); past it, indices."""


@dataclass
class AttentionResult:
    """Every attention map of one forward pass over one text."""

    tokens: Tokenized
    weights: np.ndarray
    """(L, H, T, T) float32: weights[l, h, i, j] = attention of query i to key j in layer l, head h."""

    @property
    def layers(self) -> int:
        return int(self.weights.shape[0])

    @property
    def heads(self) -> int:
        return int(self.weights.shape[1])

    @property
    def causal(self) -> bool:
        """True when no token attends to a later one (every map is lower-triangular)."""
        return bool(np.all(np.triu(self.weights, k=1) == 0))

    def check(self, layer: int | None, head: int | None) -> None:
        """Refuse a layer or head index the model does not have."""
        if layer is not None and not 0 <= layer < self.layers:
            raise LmforgeError(f"--layer {layer}: the model has layers 0..{self.layers - 1}")
        if head is not None and not 0 <= head < self.heads:
            raise LmforgeError(f"--head {head}: the model has heads 0..{self.heads - 1}")


def attention_maps(
    model: Any, tokenizer: Any, text: str, max_tokens: int = DEFAULT_MAX_TOKENS
) -> AttentionResult:
    """Run `model` (eager attention, eval mode) on `text` and collect its attention weights."""
    import torch

    impl = getattr(model.config, "_attn_implementation", None)
    if impl not in (None, "eager"):
        raise LmforgeError(f"the model computes attention with {impl!r}, which returns no weights: load it with "
                           "attn_implementation='eager' (lmforge.explain.load does)")  # fmt: skip
    context = getattr(model.config, "max_position_embeddings", None)
    toks = tokenize(tokenizer, text, max_tokens, int(context) if context else None)
    ids = torch.tensor([toks.ids])  # (1, T)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True)
    att = getattr(out, "attentions", None)
    if not att or any(a is None for a in att):
        raise LmforgeError(f"{type(model).__name__} returned no attention weights")
    weights = torch.stack([a[0] for a in att]).float().numpy()  # (L, H, T, T)
    return AttentionResult(tokens=toks, weights=weights)


def rollout(weights: np.ndarray) -> np.ndarray:
    """Attention rollout of (L, H, T, T) weights: (T, T), row i = how much of token i's representation
    at the top traces back to each input token."""
    if weights.ndim != 4 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(f"rollout takes (layers, heads, T, T) weights, got shape {weights.shape}")
    t = weights.shape[-1]
    eye = np.eye(t)
    flow = eye
    for layer in weights.astype(np.float64):  # (H, T, T), first layer first
        a = layer.mean(axis=0) + eye  # (T, T): heads averaged, the residual added
        a /= a.sum(axis=-1, keepdims=True)
        flow = a @ flow  # (T, T)
    return flow


def top_attended(matrix: np.ndarray, labels: list[str], k: int = 3) -> list[dict[str, Any]]:
    """For every query token (row), the k keys it attends to most: {query, token, top: [{key, token, weight}]}."""
    rows = []
    for i, row in enumerate(matrix):
        best = np.argsort(-row, kind="stable")[: min(k, len(row))]
        rows.append({"query": i, "token": labels[i],
                     "top": [{"key": int(j), "token": labels[j], "weight": round(float(row[j]), 4)} for j in best]})  # fmt: skip
    return rows


def _encode(m: np.ndarray) -> dict[str, Any]:
    """One (T, T) map as the page stores it: row-major bytes q, weight = q / 255 * max."""
    top = float(m.max()) if m.size else 0.0
    q = np.rint(m / top * 255).astype(np.uint8) if top > 0 else np.zeros(m.shape, np.uint8)
    return {"max": round(top, 6), "q": base64.b64encode(q.tobytes()).decode("ascii")}


def explain_attention_json(result: AttentionResult, layer: int | None = None, head: int | None = None,
                           max_cells: int = DEFAULT_MAX_CELLS, top_k: int = 3) -> dict[str, Any]:  # fmt: skip
    """The attention explanation as JSON-serialisable data (what the HTML page and a console draw).

    Maps are {"max", "q"}: q is base64 of T*T bytes, row-major (query, key), weight = byte / 255 * max.
    `top_attended` is computed from the full-precision map that `layer`/`head` select (rollout when
    neither is given; the layer's head mean when only the layer is; a head alone is of the last layer)."""
    result.check(layer, head)
    w, toks = result.weights, result.tokens
    n_layers, n_heads, t = w.shape[0], w.shape[1], w.shape[-1]
    if head is not None and layer is None:  # a head of the last layer
        layer = n_layers - 1
    roll = rollout(w)
    budget = max_cells - (n_layers + 1) * t * t
    order = ([layer] if layer is not None else []) + [x for x in reversed(range(n_layers)) if x != layer]
    head_maps: dict[str, list[dict[str, Any]]] = {}
    for x in order:
        if budget >= n_heads * t * t:
            head_maps[str(x)] = [_encode(w[x, h]) for h in range(n_heads)]
            budget -= n_heads * t * t
    left_out = sorted(x for x in range(n_layers) if str(x) not in head_maps)
    chosen = _selected(w, roll, layer, head)
    return {
        "tokens": toks.labels,
        "pieces": toks.pieces,
        "special": toks.special,
        "ids": toks.ids,
        "n_tokens": t,
        "layers": n_layers,
        "heads": n_heads,
        "causal": result.causal,
        "shape": {"attentions": [n_layers, n_heads, t, t], "rollout": [t, t]},
        "selected": {"layer": layer, "head": head, "map": _map_name(layer, head)},
        "rollout": _encode(roll),
        "layer_mean": [_encode(w[x].mean(axis=0)) for x in range(n_layers)],
        "head_maps": head_maps,
        "heads_left_out": left_out,
        "top_attended": top_attended(chosen, toks.labels, top_k),
    }


def _selected(w: np.ndarray, roll: np.ndarray, layer: int | None, head: int | None) -> np.ndarray:
    """The (T, T) map that --layer/--head name: the rollout, a layer's head mean, or one head."""
    if layer is None:
        return roll
    return w[layer, head] if head is not None else w[layer].mean(axis=0)


def _map_name(layer: int | None, head: int | None) -> str:
    if layer is None:
        return "rollout"
    return f"layer {layer}, " + ("head mean" if head is None else f"head {head}")


def explain_attention(em: ExplainModel, text: str, out: Path, layer: int | None = None, head: int | None = None,
                      max_tokens: int = DEFAULT_MAX_TOKENS, max_cells: int = DEFAULT_MAX_CELLS) -> dict[str, Any]:  # fmt: skip
    """Compute the maps of `text`, write the PNGs and attention.html into `out`; return the summary
    (`lmforge explain attention --json`): files, shapes, top attended tokens, notes."""
    result = attention_maps(em.model, em.tokenizer, text, max_tokens)
    result.check(layer, head)
    data = explain_attention_json(result, layer, head, max_cells)
    out.mkdir(parents=True, exist_ok=True)
    w, labels = result.weights, result.tokens.labels
    pl = plot_labels(labels)
    last = result.layers - 1
    pngs: list[Path] = []
    x = last if layer is None else layer
    if head is not None:  # one head: of --layer, or of the last layer
        pngs.append(heatmap_png(w[x, head], pl, out / f"attention-L{x}-H{head}.png",
                                f"{em.name}: layer {x}, head {head}"))  # fmt: skip
    else:
        pngs.append(grid_png(w[x], [f"head {h}" for h in range(result.heads)], pl, out / f"attention-L{x}-heads.png",
                             f"{em.name}: the heads of layer {x}"))  # fmt: skip
        if layer is None:
            pngs.append(grid_png(w.mean(axis=1), [f"layer {x} (head mean)" for x in range(result.layers)], pl,
                                 out / "attention-layers-mean.png", f"{em.name}: each layer, heads averaged"))  # fmt: skip
    pngs.append(
        heatmap_png(rollout(w), pl, out / "rollout.png", f"{em.name}: attention rollout (all layers)")
    )
    html = out / "attention.html"
    html.write_text(attention_html(data, em.name), encoding="utf-8")
    notes = [pl.note] if pl.note else []
    if len(labels) > LABELLED_TOKENS:
        notes.append(
            f"over {LABELLED_TOKENS} tokens the PNG axes show indices; the HTML page shows every token"
        )
    if data["heads_left_out"]:
        notes.append(f"the HTML page holds the head mean only for layers {data['heads_left_out']} "
                     f"(per-head maps past {max_cells:,} weights)")  # fmt: skip
    return {
        "model": em.name,
        "kind": em.kind,
        "n_tokens": len(labels),
        "tokens": labels,
        "causal": data["causal"],
        "shape": data["shape"],
        "selected": data["selected"],
        "files": {"html": str(html), "png": [str(p) for p in pngs]},
        "top_attended": data["top_attended"],
        "notes": notes,
    }


def _axes(ax: Any, m: np.ndarray, pl: PlotLabels, title: str, limit: int, size: float) -> Any:
    t = m.shape[-1]
    im = ax.imshow(m, cmap="viridis", vmin=0.0, vmax=float(m.max()) or 1.0, interpolation="nearest")
    if t <= limit:
        kw = {"fontsize": size, **pl.text_kw()}
        ax.set_xticks(range(t), pl.labels, rotation=90, **kw)
        ax.set_yticks(range(t), pl.labels, **kw)
    ax.set_title(title, fontsize=9)
    return im


def heatmap_png(m: np.ndarray, pl: PlotLabels, path: Path, title: str) -> Path:
    """One (T, T) map: queries down, keys across, tokens on both axes (up to LABELLED_TOKENS)."""
    plt = pyplot()
    t = m.shape[-1]
    side = min(16.0, max(5.0, 2.5 + 0.16 * t))
    fig, ax = plt.subplots(figsize=(side + 1.2, side), dpi=110)
    im = _axes(ax, m, pl, title, LABELLED_TOKENS, max(4.0, min(9.0, 360 / max(t, 1))))
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def grid_png(maps: np.ndarray, titles: list[str], pl: PlotLabels, path: Path, title: str) -> Path:
    """(N, T, T) maps side by side, four to a row, each with its own colour scale."""
    plt = pyplot()
    n, t = maps.shape[0], maps.shape[-1]
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.6 * rows + 0.6), dpi=110, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k < n:
            _axes(ax, maps[k], pl, titles[k], LABELLED_TOKENS // 3, max(3.5, min(7.0, 120 / max(t, 1))))
        else:
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1f2328}
h1{font-size:1.25rem;margin:0 0 .5rem} p.meta{color:#57606a;margin:.25rem 0 1rem}
.controls{display:flex;gap:1rem;align-items:center;margin-bottom:.75rem;flex-wrap:wrap}
select{font-size:.95rem;padding:.15rem .3rem}
#wrap{position:relative;display:inline-block} canvas{border:1px solid #d0d7de;cursor:crosshair}
#tip{position:absolute;pointer-events:none;background:#1f2328;color:#fff;font-size:.8rem;padding:.2rem .4rem;
 border-radius:.25rem;white-space:nowrap;display:none}
#row{margin-top:1rem;line-height:2.1} #row span{padding:.1rem .25rem;margin:.08rem;border-radius:.2rem;
 border:1px solid #d0d7de;white-space:pre;cursor:pointer} #row span.q{outline:2px solid #cf222e}
.note{color:#9a6700}
"""

_BODY = """
<h1 id="title"></h1>
<p class="meta" id="meta"></p>
<div class="controls">
 <label>layer <select id="layer"></select></label>
 <label>head <select id="head"></select></label>
 <span id="what"></span>
</div>
<div id="wrap"><canvas id="map"></canvas><div id="tip"></div></div>
<p class="meta">Rows: the query token (attending); columns: the key token (attended to); each row sums to 1.
Colours are scaled to the largest weight of the map shown. Click a cell or a token below to read one query's row.</p>
<div id="row"></div>
<p class="note" id="note"></p>
"""

_SCRIPT = """
const $ = id => document.getElementById(id);
const T = DATA.n_tokens, LAB = DATA.tokens;
function decode(m){const s=atob(m.q),a=new Float32Array(s.length);for(let i=0;i<s.length;i++)a[i]=s.charCodeAt(i)/255*m.max;return a;}
const cache=new Map();
function mapOf(L,H){const key=L+'/'+H;if(!cache.has(key)){const m=L==='rollout'?DATA.rollout:
 (H==='mean'?DATA.layer_mean[+L]:DATA.head_maps[L][+H]);cache.set(key,{w:decode(m),max:m.max});}return cache.get(key);}
function option(sel,value,text){const o=document.createElement('option');o.value=value;o.textContent=text;sel.appendChild(o);}
option($('layer'),'rollout','rollout (all layers)');
for(let l=0;l<DATA.layers;l++)option($('layer'),String(l),'layer '+l);
function fillHeads(){const L=$('layer').value,h=$('head');h.textContent='';option(h,'mean','mean of heads');
 if(L!=='rollout'&&DATA.head_maps[L])for(let k=0;k<DATA.heads;k++)option(h,String(k),'head '+k);h.disabled=L==='rollout';}
const sel=DATA.selected;
if(sel.layer!==null||sel.head!==null)$('layer').value=String(sel.layer===null?DATA.layers-1:sel.layer);
fillHeads();if(sel.head!==null&&!$('head').disabled)$('head').value=String(sel.head);
let query=T-1;
const cell=Math.max(2,Math.min(28,Math.floor(640/T))),labelled=cell>=10,pad=labelled?120:4;
function colour(v){const a=[247,251,255],b=[8,48,107];return 'rgb('+a.map((x,i)=>Math.round(x+(b[i]-x)*v)).join(',')+')';}
function draw(){const {w,max}=mapOf($('layer').value,$('head').value),c=$('map'),g=c.getContext('2d');
 c.width=pad+T*cell;c.height=pad+T*cell;g.fillStyle='#fff';g.fillRect(0,0,c.width,c.height);
 for(let i=0;i<T;i++)for(let j=0;j<T;j++){g.fillStyle=colour(max>0?w[i*T+j]/max:0);g.fillRect(pad+j*cell,pad+i*cell,cell,cell);}
 g.strokeStyle='#cf222e';g.lineWidth=2;g.strokeRect(pad,pad+query*cell,T*cell,cell);
 if(labelled){g.fillStyle='#1f2328';g.font=Math.min(12,cell-1)+'px system-ui,sans-serif';g.textBaseline='middle';
  for(let i=0;i<T;i++){g.textAlign='right';g.fillText(LAB[i].slice(0,14),pad-4,pad+i*cell+cell/2);
   g.save();g.translate(pad+i*cell+cell/2,pad-4);g.rotate(-Math.PI/2);g.textAlign='left';g.fillText(LAB[i].slice(0,14),0,0);g.restore();}}
 $('what').textContent=$('layer').value==='rollout'?'attention rollout (Abnar & Zuidema 2020)':
  ('layer '+$('layer').value+', '+($('head').value==='mean'?'mean of heads':'head '+$('head').value));
 row(w);}
function row(w){const r=$('row');r.textContent='';let m=0;for(let j=0;j<T;j++)m=Math.max(m,w[query*T+j]);
 const head=document.createElement('div');head.textContent='query #'+query+' '+LAB[query]+' attends to:';r.appendChild(head);
 for(let j=0;j<T;j++){const s=document.createElement('span'),v=w[query*T+j];s.textContent=LAB[j];
  s.style.background=colour(m>0?v/m:0);s.style.color=m>0&&v/m>0.55?'#fff':'#1f2328';s.title='#'+j+'  '+v.toFixed(4);
  if(j===query)s.className='q';s.onclick=()=>{query=j;draw();};r.appendChild(s);}}
function cellAt(e){const b=$('map').getBoundingClientRect(),x=e.clientX-b.left-pad,y=e.clientY-b.top-pad;
 const i=Math.floor(y/cell),j=Math.floor(x/cell);return (i>=0&&j>=0&&i<T&&j<T)?[i,j]:null;}
$('map').onmousemove=e=>{const ij=cellAt(e),tip=$('tip');if(!ij){tip.style.display='none';return;}
 const {w}=mapOf($('layer').value,$('head').value);const [i,j]=ij;
 tip.textContent='#'+i+' '+LAB[i]+' \\u2192 #'+j+' '+LAB[j]+': '+w[i*T+j].toFixed(4);tip.style.display='block';
 tip.style.left=(e.offsetX+12)+'px';tip.style.top=(e.offsetY+12)+'px';};
$('map').onmouseleave=()=>{$('tip').style.display='none';};
$('map').onclick=e=>{const ij=cellAt(e);if(ij){query=ij[0];draw();}};
$('layer').onchange=()=>{fillHeads();draw();};$('head').onchange=draw;
$('title').textContent='Attention: '+DATA.model;
$('meta').textContent=DATA.layers+' layers x '+DATA.heads+' heads, '+T+' tokens'+(DATA.causal?' (causal: no token sees a later one)':'');
if(DATA.heads_left_out.length)$('note').textContent='Per-head maps of layers '+DATA.heads_left_out.join(', ')+
 ' are left out to keep this page small; their head mean is here.';
draw();
"""


def attention_html(data: dict[str, Any], model_name: str) -> str:
    """The interactive page over `explain_attention_json` data: layer/head selectors, a heatmap with
    tooltips, one query's row as coloured tokens. Self-contained: nothing is fetched."""
    return html_page(f"attention: {model_name}", _STYLE, _BODY, {**data, "model": model_name}, _SCRIPT)
