"""What every training run leaves in its registered folder, and how its losses are shown: one place
for pretrain, finetune, align and distill.

`write_history` writes metrics.jsonl (one JSON object per optimizer step) and loss.png (train/plot.py);
`perplexity` turns a mean token loss into the perplexity the trainers report.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def perplexity(loss: float | None) -> float | None:
    """exp(mean token loss), rounded; capped at e^50 so a diverged run still prints a number."""
    return round(math.exp(min(loss, 50.0)), 3) if loss is not None else None


def fmt_loss(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def write_history(
    folder: Path, history: list[dict[str, Any]], evals: list[dict[str, Any]], title: str
) -> None:
    """metrics.jsonl and loss.png of a run, into `folder` (the artifact's staging folder)."""
    from lmforge.train.plot import loss_curve

    with open(folder / "metrics.jsonl", "w", encoding="utf-8") as f:
        for rec in history:
            f.write(json.dumps(rec) + "\n")
    loss_curve(history, evals, folder / "loss.png", title=title)
