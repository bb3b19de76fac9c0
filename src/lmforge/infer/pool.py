"""Loaded models for a server: load on first use, unload when idle or over a memory budget (LRU).

Like Ollama's keep-alive: a model stays loaded `keep_alive_s` after its last use, and loading a
new model that would exceed `memory_budget_bytes` first unloads the least recently used idle
ones. A model whose engine died (worker thread gone) is dropped and reloaded on the next request,
so one crash never takes the server down.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from lmforge.errors import LmforgeError
from lmforge.home import Manifest, Registry
from lmforge.infer.base import Backend
from lmforge.infer.loader import LoadConfig, load_backend
from lmforge.infer.vllm import VllmConfig


@dataclass
class PoolConfig:
    n_slots: int = 4
    """Parallel sequences per llama.cpp model (continuous batching)."""
    n_ctx: int | None = None
    """Context per sequence; default min(4096, trained)."""
    n_threads: int | None = None
    keep_alive_s: float = 300.0
    """Unload a model this long after its last request; <= 0 keeps models loaded forever."""
    memory_budget_bytes: int | None = None
    """Total estimated bytes of loaded models; default 75% of physical memory."""
    engine: Literal["auto", "vllm"] = "auto"
    """'auto' (llama.cpp for GGUF, transformers for HF folders) or 'vllm' (HF folders on GPU hosts)."""
    vllm: VllmConfig = field(default_factory=VllmConfig)

    def load_config(self, fmt: str) -> LoadConfig:
        """How the pool loads a model of format `fmt` through the one loader."""
        backend = "vllm" if self.engine == "vllm" and fmt == "hf" else "auto"
        return LoadConfig(backend=backend, n_ctx=self.n_ctx, ctx_is_ceiling=True, n_threads=self.n_threads,
                          n_slots=self.n_slots, vllm=self.vllm)  # fmt: skip


@dataclass
class Loaded:
    name: str
    backend: Backend
    manifest: Manifest
    est_bytes: int
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    in_use: int = 0


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_loader(registry: Registry, name: str, cfg: PoolConfig) -> Backend:
    """The pool's loader: `infer.loader.load_backend` with the server's settings."""
    return load_backend(registry, name, cfg.load_config(registry.get(name).format))


class ModelPool:
    def __init__(
        self, registry: Registry, cfg: PoolConfig | None = None,
        loader: Callable[[Registry, str, PoolConfig], Backend] = default_loader,
    ) -> None:  # fmt: skip
        self.registry = registry
        self.cfg = cfg or PoolConfig()
        self.budget = self.cfg.memory_budget_bytes or int(physical_memory() * 0.75)
        self._loader = loader
        self._loaded: dict[str, Loaded] = {}
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def acquire(self, name: str) -> Loaded:
        """The loaded model `name` (loading it if needed), marked in use until `release`."""
        manifest = self.registry.get(name)  # unknown model → LmforgeError before any loading
        with self._lock:
            entry = self._loaded.get(name)
            if entry is not None and not entry.backend.alive:
                self._unload_locked(name)
                entry = None
            if entry is not None:
                entry.in_use += 1
                entry.last_used = time.time()
                return entry
            gate = self._loading.setdefault(name, threading.Lock())
        with gate:  # one loader per model; others wait for it
            with self._lock:
                entry = self._loaded.get(name)
                if entry is not None:
                    entry.in_use += 1
                    return entry
            est = self._estimate(manifest)
            self._make_room(est)
            backend = self._loader(self.registry, name, self.cfg)
            entry = Loaded(name, backend, manifest, est, in_use=1)
            with self._lock:
                self._loaded[name] = entry
            return entry

    def release(self, entry: Loaded) -> None:
        with self._lock:
            entry.in_use = max(0, entry.in_use - 1)
            entry.last_used = time.time()

    def mark_broken(self, name: str) -> None:
        """A request saw the engine fail: drop it so the next request reloads."""
        with self._lock:
            self._unload_locked(name)

    def _estimate(self, m: Manifest) -> int:
        slots = self.cfg.n_slots if m.format == "gguf" else 1
        return int(m.size_bytes * 1.1) + 64 * 2**20 * slots

    def _make_room(self, need: int) -> None:
        with self._lock:
            used = sum(e.est_bytes for e in self._loaded.values())
            for e in sorted(self._loaded.values(), key=lambda e: e.last_used):
                if used + need <= self.budget:
                    break
                if e.in_use == 0:
                    used -= e.est_bytes
                    self._unload_locked(e.name)
            if used + need > self.budget:
                raise LmforgeError(
                    f"not enough memory budget to load this model ({need / 1e9:.1f} GB needed, "
                    f"{(self.budget - used) / 1e9:.1f} GB free of {self.budget / 1e9:.1f} GB)"
                )

    def _unload_locked(self, name: str) -> None:
        entry = self._loaded.pop(name, None)
        if entry is not None:
            threading.Thread(target=entry.backend.close, daemon=True).start()

    def reap_idle(self) -> list[str]:
        """Unload models idle for longer than keep_alive_s; returns their names."""
        if self.cfg.keep_alive_s <= 0:
            return []
        now = time.time()
        with self._lock:
            idle = [
                n
                for n, e in self._loaded.items()
                if e.in_use == 0 and now - e.last_used > self.cfg.keep_alive_s
            ]
            for n in idle:
                self._unload_locked(n)
        return idle

    def ps(self) -> list[dict]:
        now = time.time()
        with self._lock:
            return [
                {
                    "name": e.name,
                    "backend": e.backend.kind,
                    "est_bytes": e.est_bytes,
                    "in_use": e.in_use,
                    "active_sequences": e.backend.active,
                    "loaded_s": round(now - e.loaded_at, 1),
                    "idle_s": round(now - e.last_used, 1),
                    "unloads_in_s": None
                    if self.cfg.keep_alive_s <= 0 or e.in_use
                    else round(max(0.0, self.cfg.keep_alive_s - (now - e.last_used)), 1),
                }
                for e in self._loaded.values()
            ]

    def close(self) -> None:
        with self._lock:
            for n in list(self._loaded):
                entry = self._loaded.pop(n)
                entry.backend.close()
