"""Training checkpoints that survive kill -9 and a full disk.

A run folder (LMFORGE_HOME/runs/NAME) holds `run.json` (the config, dataset and tokenizer
fingerprints the run started with) and `checkpoint.pt` (weights, optimizer, step, history).
A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed over
the old one: a kill or a failed write (ENOSPC) at any moment leaves the previous checkpoint whole.
`checkpoint.json` (step, time) is renamed in after it, for people and tests watching a run.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.train.args import changed_fields

RUN_STATE = "run.json"
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_INFO = "checkpoint.json"


def _fsync_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@dataclass
class RunFolder:
    path: Path

    def state(self) -> dict[str, Any] | None:
        p = self.path / RUN_STATE
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None

    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).is_file()

    def start(self, state: dict[str, Any]) -> None:
        """Record what this run is; refuse if a checkpoint of a different run is here."""
        self.path.mkdir(parents=True, exist_ok=True)
        _fsync_write(self.path / RUN_STATE, lambda f: f.write(json.dumps(state, indent=2).encode()))

    def begin(self, state: dict[str, Any], *, resume: bool) -> bool:
        """Start this run, or check that its checkpoint belongs to the same run (same config and
        inputs). True when a checkpoint is there to resume from; `resume` insists on one."""
        resuming = self.has_checkpoint()
        if resume and not resuming:
            raise LmforgeError(f"--resume: no checkpoint of {self.path.name!r} in {self.path}")
        if resuming:
            self.check_same(state)
        else:
            self.start(state)
        return resuming

    def check_same(self, state: dict[str, Any]) -> None:
        """A checkpoint exists: the config and inputs must be the ones it started with."""
        saved = self.state() or {}
        problems = [f"--{k.replace('_', '-')} ({saved['config'].get(k)!r} -> {state['config'].get(k)!r})"
                    for k in changed_fields(saved.get("config", {}), state["config"])]  # fmt: skip
        for key, what in (("data_fingerprint", "dataset"), ("tokenizer_fingerprint", "tokenizer"),
                          ("init_fingerprint", "--init model"), ("replay_fingerprint", "replay dataset")):  # fmt: skip
            if saved.get(key) != state.get(key):
                problems.append(f"{what} contents changed since the checkpoint")
        if problems:
            raise LmforgeError(f"cannot resume {self.path.name}: changed since its checkpoint: {'; '.join(problems)}. "
                               f"Run with the original settings, or --restart to discard the checkpoint")  # fmt: skip

    def save(self, payload: dict[str, Any], step: int) -> None:
        """Atomically replace the checkpoint; on a failed write the previous one stays valid."""
        import torch

        try:
            _fsync_write(self.path / CHECKPOINT, lambda f: torch.save(payload, f))
        except OSError as e:
            prev = self.info()
            kept = (
                f"the checkpoint of step {prev['step']} is intact" if prev else "no earlier checkpoint exists"
            )
            raise LmforgeError(f"could not write the checkpoint of step {step}: {e.strerror or e}; {kept} "
                               f"(free space and run the same command again to resume)") from e  # fmt: skip
        info = {"step": step, "time": time.time()}
        with contextlib.suppress(OSError):  # informational; the .pt is the truth
            _fsync_write(self.path / CHECKPOINT_INFO, lambda f: f.write(json.dumps(info).encode()))

    def load(self) -> dict[str, Any]:
        import torch

        try:
            return torch.load(self.path / CHECKPOINT, map_location="cpu", weights_only=False)
        except (OSError, RuntimeError, EOFError) as e:
            raise LmforgeError(
                f"checkpoint {self.path / CHECKPOINT} is unreadable ({e}); use --restart"
            ) from e

    def info(self) -> dict[str, Any] | None:
        p = self.path / CHECKPOINT_INFO
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def discard(self) -> None:
        for name in (CHECKPOINT, CHECKPOINT_INFO, RUN_STATE):
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
