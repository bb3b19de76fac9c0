"""Prometheus metrics (prometheus_client, with a registry per app: no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lmforge_requests", "HTTP API requests", ["route", "model", "status"], registry=self.registry
        )
        self.tokens = Counter("lmforge_tokens", "Tokens processed", ["model", "kind"], registry=self.registry)
        self.latency = Histogram(
            "lmforge_request_latency_seconds", "Request latency (whole response)", ["route"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300), registry=self.registry,
        )  # fmt: skip
        self.queue = Gauge(
            "lmforge_queue_depth",
            "Requests admitted per model (running + waiting)",
            ["model"],
            registry=self.registry,
        )
        self.active = Gauge(
            "lmforge_active_sequences", "Sequences decoding now", ["model"], registry=self.registry
        )
        self.loaded = Gauge("lmforge_models_loaded", "Models loaded", registry=self.registry)

    def observe(self, route: str, model: str | None, status: int, usage: dict, seconds: float) -> None:
        m = model or ""
        self.requests.labels(route, m, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if usage:
            self.tokens.labels(m, "prompt").inc(usage.get("prompt_tokens", 0))
            self.tokens.labels(m, "completion").inc(usage.get("completion_tokens", 0))

    def render(self, depth: dict[str, int], ps: list[dict]) -> bytes:
        for model, n in depth.items():
            self.queue.labels(model).set(n)
        for e in ps:
            self.active.labels(e["name"]).set(e.get("active_sequences") or 0)
        self.loaded.set(len(ps))
        return generate_latest(self.registry)
