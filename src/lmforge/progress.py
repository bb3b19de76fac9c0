"""Progress bars with rate and ETA for long work (downloads, assembly, export, training).

A thin layer over rich so every long task looks the same and writes to stderr (stdout stays
clean for the answer a script may capture).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


def stderr_console() -> Console:
    return Console(stderr=True)


def bytes_progress(console: Console | None = None) -> Progress:
    """Bytes done / total, MB/s and ETA."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console or stderr_console(),
        transient=False,
    )


def steps_progress(console: Console | None = None) -> Progress:
    """Items done / total, percentage and ETA."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=console or stderr_console(),
    )


def printer(enabled: bool) -> Callable[..., None]:
    """A print to stderr for the main process only; above a live progress bar when one is given."""

    def say(msg: str, bar: Any = None) -> None:
        if not enabled:
            return
        if bar is not None:
            bar.console.print(msg)
        else:
            print(msg, file=sys.stderr, flush=True)

    return say


def training_progress(enabled: bool, total: int, start: int) -> Any:
    """Optimizer steps done / total, loss, tokens/s and ETA (fields `loss`, `tps`); None when disabled."""
    if not enabled:
        return None
    bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[tps]:,.0f} tok/s"),
                   TimeRemainingColumn(), console=stderr_console())  # fmt: skip
    bar.add_task("train", total=total, completed=start, loss=float("nan"), tps=0.0)
    bar.start()
    return bar
