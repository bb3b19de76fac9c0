"""`lmforge explain attention|tokens MODEL TEXT`: interpretability (可解释性 · 注意力图 · 归因). cli.py mounts it.

Thin typer functions over lmforge.explain: the model is a registered name or an HF checkpoint folder,
loaded with eager attention (GGUF refused unless --dequantize). Both write PNGs and one self-contained
HTML page into --out (default ./explain-<model>-<hash of the text>) and print a summary; `--json` prints
the summary as JSON instead (paths, shapes, top attended tokens / scores).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from lmforge.explain.tokenized import DEFAULT_MAX_TOKENS
from lmforge.explain.tokens import AttributionConfig, Method

_ATTR = AttributionConfig()

Model = Annotated[
    str, typer.Argument(help="A registered model, or the path of a Hugging Face checkpoint folder.")
]
Text = Annotated[str, typer.Argument(help="The text to explain.")]
Out = Annotated[
    Path | None,
    typer.Option(help="Folder for the PNGs and the HTML page (default ./explain-<model>-<hash>)."),
]
MaxTokens = Annotated[int, typer.Option(min=1, help="Refuse texts longer than this many tokens.")]
Dequantize = Annotated[
    bool,
    typer.Option("--dequantize", help="GGUF model: make its fp32 HF copy NAME-hf (once) and explain that."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the summary as JSON (files, shapes, scores).")]


def _say(line: str) -> None:
    print(line, file=sys.stderr)


def attention(
    model: Model,
    text: Text,
    layer: Annotated[int | None, typer.Option(min=0, help="Only this layer (0 = first).")] = None,
    head: Annotated[int | None, typer.Option(min=0, help="Only this head (of --layer; of the last layer without it).")] = None,
    out: Out = None,
    max_tokens: MaxTokens = DEFAULT_MAX_TOKENS,
    dequantize: Dequantize = False,
    as_json: AsJson = False,
) -> None:  # fmt: skip
    """Attention heatmaps (PNG), attention rollout, and an interactive HTML page with layer/head selectors."""
    from lmforge.explain.attention import explain_attention
    from lmforge.explain.load import load_model
    from lmforge.explain.page import default_out

    em = load_model(model, dequantize=dequantize, say=_say)
    summary = explain_attention(em, text, out or default_out(em.name, text), layer, head, max_tokens)
    if as_json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
        return
    s = summary["shape"]["attentions"]
    causal = " (causal: each token sees only earlier ones)" if summary["causal"] else ""
    print(f"{em.name} ({em.kind}): {s[0]} layers x {s[1]} heads, {s[2]} tokens{causal}")
    last = summary["top_attended"][-1]
    tops = ", ".join(f"{t['token']!r} {t['weight']:.3f}" for t in last["top"])
    print(f"{summary['selected']['map']}: the last token {last['token']!r} attends most to {tops}")
    files = [summary["files"]["html"], *summary["files"]["png"]]
    print("wrote " + "\n      ".join(files))
    for note in summary["notes"]:
        print(f"note: {note}")


def tokens(
    model: Model,
    text: Text,
    target: Annotated[str | None, typer.Option(help="Classifier: a label (config id2label); causal LM: the next token. Default: the prediction.")] = None,
    method: Annotated[Method, typer.Option(help="ig (integrated gradients) | grad-x-input.")] = _ATTR.method,
    steps: Annotated[int, typer.Option(min=2, help="Integrated gradients: steps from the baseline to the text.")] = _ATTR.steps,
    out: Out = None,
    max_tokens: MaxTokens = DEFAULT_MAX_TOKENS,
    dequantize: Dequantize = False,
    as_json: AsJson = False,
) -> None:  # fmt: skip
    """Which tokens pushed a classifier toward a label, or a causal LM toward its next token (captum)."""
    from lmforge.explain.load import load_model
    from lmforge.explain.page import default_out
    from lmforge.explain.tokens import explain_tokens

    cfg = AttributionConfig(target=target, method=method, steps=steps, max_tokens=max_tokens)
    cfg.validate()
    em = load_model(model, dequantize=dequantize, say=_say)
    summary = explain_tokens(em, text, out or default_out(em.name, text), cfg)
    if as_json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
        return
    print(render(summary, steps))


def render(s: dict, steps: int) -> str:
    """The tokens summary as the terminal shows it: the target, the table with bars, the completeness check."""
    what = "label" if s["kind"] == "classifier" else "next token"
    how = f"{s['method']}, {steps} steps" if s["method"] == "ig" else s["method"]
    lines = [f"{s['model']} ({s['kind']}): {what} {s['target']!r} p={s['target_prob']:.4f} "
             f"(the model predicts {s['predicted']!r}); method {how}; score = effect on log p(target)"]  # fmt: skip
    scores = [t["score"] for t in s["tokens"]]
    peak = max(abs(x) for x in scores) or 1.0
    wide = max(5, min(16, max(len(t["token"]) for t in s["tokens"])))
    width = 20
    lines.append(f"{'#':>4}  {'token':<{wide}}  {'score':>9}  {'lowers':>{width}}│raises")
    for t in s["tokens"]:
        n = round(abs(t["score"]) / peak * width)
        bar = f"{'█' * n:>{width}}│" if t["score"] < 0 else f"{'':>{width}}│{'█' * n}"
        lines.append(f"{t['index']:>4}  {t['token'][:wide]:<{wide}}  {t['score']:>+9.4f}  {bar}")
    if s["baseline_output"] is None:
        lines.append(
            f"sum of scores {s['sum']:+.4f} (gradient x input has no completeness: compare tokens, not sums)"
        )
    else:
        diff = s["output"] - s["baseline_output"]
        lines.append(f"sum of scores {s['sum']:+.4f}; log p(target) {s['output']:.4f} on the text, "
                     f"{s['baseline_output']:.4f} on the baseline (every token -> {s['baseline_token']!r}): "
                     f"difference {diff:+.4f}")  # fmt: skip
        lines.append(
            f"integrated gradients convergence delta: {s['delta']:.2e} (sum of scores minus that difference)"
        )
        if abs(s["delta"]) > 0.1 * max(abs(diff), 1.0):
            lines.append("warning: the delta is large next to the difference: the path integral did not converge "
                         "(the model's output jumps along the path); raise --steps, or read the scores as a "
                         "ranking of tokens rather than amounts")  # fmt: skip
    lines.append(f"wrote {s['files']['png']}\n      {s['files']['html']}")
    lines += [f"note: {n}" for n in s["notes"]]
    return "\n".join(lines)


def mount(app: typer.Typer) -> None:
    """Add `explain attention` and `explain tokens` to `app`."""
    explain_app = typer.Typer(no_args_is_help=True, help="Attention maps and token attributions (可解释性).")
    explain_app.command("attention")(attention)
    explain_app.command("tokens")(tokens)
    app.add_typer(explain_app, name="explain")
