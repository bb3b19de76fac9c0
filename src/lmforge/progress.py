"""Progress bars with rate and ETA for long work (downloads, assembly, export, training).

A thin layer over rich so every long task looks the same and writes to stderr (stdout stays
clean for the answer a script may capture).
"""

from __future__ import annotations

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
