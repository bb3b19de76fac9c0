"""What was measured about this machine, remembered in LMFORGE_HOME/hardware.json: the memory bandwidth (the
planner), the faster training precision per model shape (pretrain / finetune / distill) and the faster precision
of a transformers relevance judge (the reranker). One file, shared; every write re-reads it and replaces it
atomically, so measurements made by different commands never erase each other."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lmforge.home import Registry

FILE = "hardware.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def recall(registry: Registry, key: str) -> Any:
    """The value remembered under `key`; None if nothing was measured yet."""
    return _read(registry.root / FILE).get(key)


def remember(registry: Registry, key: str, value: Any) -> None:
    """Store `value` under `key`, keeping every other measurement in the file."""
    path = registry.root / FILE
    known = _read(path)
    known[key] = value
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def cpu_name() -> str:
    """The CPU's model name and the bf16 features that decide whether bf16 pays ('AMD EPYC avx512_bf16'); 'cpu'
    when /proc/cpuinfo cannot be read."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "cpu"
    for line in info.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip() + (" avx512_bf16" if "avx512_bf16" in info else "") + (
                " amx" if "amx_bf16" in info else "")  # fmt: skip
    return "cpu"
