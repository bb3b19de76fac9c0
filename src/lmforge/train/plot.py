"""Training pictures: the loss / perplexity curve a person looks at instead of reading numbers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def loss_curve(
    history: list[dict[str, Any]], evals: list[dict[str, Any]], out: Path, title: str = ""
) -> Path:
    """PNG of training loss per step (raw and smoothed) and validation loss, perplexity on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    steps = [h["step"] for h in history]
    losses = [h["loss"] for h in history]
    ax.plot(steps, losses, color="#9bb7d4", linewidth=0.8, label="train loss")
    if len(losses) >= 10:
        k = max(2, len(losses) // 50)
        smooth = [
            sum(losses[max(0, i - k + 1) : i + 1]) / len(losses[max(0, i - k + 1) : i + 1])
            for i in range(len(losses))
        ]
        ax.plot(steps, smooth, color="#1f5f9f", linewidth=1.6, label=f"train loss ({k}-step mean)")
    val = [(e["step"], e["val_loss"]) for e in evals if e.get("val_loss") is not None]
    if val:
        ax.plot(*zip(*val, strict=True), "o-", color="#d2691e", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    if val:
        right = ax.twinx()
        lo, hi = ax.get_ylim()
        right.set_ylim(lo, hi)
        ticks = [t for t in ax.get_yticks() if lo <= t <= hi]
        right.set_yticks(ticks)
        right.set_yticklabels([_ppl_label(math.exp(min(t, 50))) for t in ticks])
        right.set_ylabel("perplexity")
    ax.set_title(title or "training")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _ppl_label(p: float) -> str:
    return f"{p:,.0f}" if p >= 100 else f"{p:.3g}"
