"""Live training progress: one JSON object per line in the run folder's `events.jsonl`.

The trainers append a record per optimizer step (`{"step", "loss", "lr", "tokens", "total_steps",
"elapsed_s", ...}`) and one per evaluation (`{"step", "val_loss", ...}`) to
`LMFORGE_HOME/runs/<out>/events.jsonl`; `jobs.py` reads it while the worker runs, for the console's
loss curve, step/total, tokens/s and ETA. The file is the contract between the two processes:

- Each record is appended and flushed at once, so a reader sees whole lines (a kill can leave at
  most a torn last line, which readers skip). Only the main process writes.
- A fresh run truncates the file; a resumed run appends, repeating the steps after its checkpoint:
  readers keep the latest record of each step (`EventTail`).
- Non-finite numbers are written as null: the file is strict JSON, which a browser parses.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVENTS = "events.jsonl"
"""File name inside a run folder."""
RATE_WINDOW = 20
"""tokens/s and the ETA are measured over the last this-many step records (not the whole run:
a resumed run's clock includes time from before the restart)."""


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


class EventLog:
    """The writer a training loop calls: `log(record, **extra)` per step and per evaluation."""

    def __init__(self, run_dir: Path, *, enabled: bool = True, fresh: bool = True) -> None:
        """`enabled`: False on every process but the main one. `fresh`: truncate (a new run);
        False appends (a resumed run)."""
        self.path = run_dir / EVENTS
        self.enabled = enabled
        if enabled:
            run_dir.mkdir(parents=True, exist_ok=True)
            if fresh or not self.path.exists():
                self.path.write_text("", encoding="utf-8")

    def log(self, record: dict[str, Any], **extra: Any) -> None:
        if not self.enabled:
            return
        line = json.dumps({k: _finite(v) for k, v in (record | extra).items()}, ensure_ascii=False)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()


@dataclass
class TrainProgress:
    """What a reader shows of a run: where it is, how fast, the curves."""

    step: int = 0
    total: int | None = None
    """Planned optimizer steps (from the trainer's records; None before the first)."""
    tokens: int = 0
    elapsed_s: float = 0.0
    tokens_per_s: float | None = None
    eta_s: float | None = None
    """Seconds left at the recent pace (evaluations included), None until two steps are known."""
    loss: list[dict[str, Any]] = field(default_factory=list)
    """`{"step", "loss"}` points, thinned evenly to at most `max_points` (the last always kept)."""
    val: list[dict[str, Any]] = field(default_factory=list)
    """`{"step", "val_loss"}` points, one per evaluation."""


def _thin(points: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    if len(points) <= n:
        return points
    stride = math.ceil(len(points) / n)
    kept = points[::stride]
    return kept if kept[-1] is points[-1] else [*kept, points[-1]]


class EventTail:
    """Incremental reader of one events file: each `read()` parses only what was appended since."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.steps: list[dict[str, Any]] = []
        self.evals: list[dict[str, Any]] = []
        self._offset = 0
        self._inode: int | None = None

    def _reset(self) -> None:
        self.steps, self.evals, self._offset = [], [], 0

    def read(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._reset()
            return
        if st.st_ino != self._inode or st.st_size < self._offset:  # replaced or truncated: a new run
            self._reset()
            self._inode = st.st_ino
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return
        self._offset += end + 1
        for line in chunk[:end].splitlines():
            try:
                rec = json.loads(line)
            except ValueError:  # a line torn by a kill
                continue
            if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
                continue
            target = self.steps if "loss" in rec else self.evals if "val_loss" in rec else None
            if target is None:
                continue
            while target and target[-1]["step"] >= rec["step"]:  # a resumed run repeats steps
                target.pop()
            target.append(rec)

    def progress(self, max_points: int = 400) -> TrainProgress:
        if not self.steps:
            return TrainProgress(val=[{"step": e["step"], "val_loss": e.get("val_loss")} for e in self.evals])
        last = self.steps[-1]
        first = self.steps[-min(len(self.steps), RATE_WINDOW + 1)]
        total = last.get("total_steps")
        rate = eta = None
        dt = (last.get("elapsed_s") or 0.0) - (first.get("elapsed_s") or 0.0)
        if last is not first and dt > 0:
            # max: a resumed run may count its tokens from 0 again
            rate = max(0.0, (last.get("tokens") or 0) - (first.get("tokens") or 0)) / dt
            if isinstance(total, int):
                eta = max(0, total - last["step"]) * dt / (last["step"] - first["step"])
        elif last.get("elapsed_s"):
            rate = (last.get("tokens") or 0) / last["elapsed_s"]
        return TrainProgress(
            step=last["step"], total=total if isinstance(total, int) else None, tokens=last.get("tokens") or 0,
            elapsed_s=round(last.get("elapsed_s") or 0.0, 3), tokens_per_s=None if rate is None else round(rate, 1),
            eta_s=None if eta is None else round(eta, 1),
            loss=_thin([{"step": r["step"], "loss": r.get("loss")} for r in self.steps], max_points),
            val=[{"step": e["step"], "val_loss": e.get("val_loss")} for e in self.evals],
        )  # fmt: skip
