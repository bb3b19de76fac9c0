"""Admission, timeouts and cancellation for generation requests across the loaded models.

Each model accepts `n_slots` running sequences plus `max_queue` waiting ones (FIFO inside the
engine); past that a request is refused at once with `QueueFullError` (HTTP 429 + Retry-After)
instead of piling up. Every admitted request has a deadline: when it passes, the request is
cancelled (its slot freed) and reported as timed out. Cancelling a stream (client disconnect)
frees the slot at the next decode step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from lmforge.errors import LmforgeError
from lmforge.infer.base import Chunk
from lmforge.infer.pool import Loaded, ModelPool


class QueueFullError(LmforgeError):
    def __init__(self, model: str, retry_after: float) -> None:
        super().__init__(f"{model} is busy: all slots and the queue are full; retry in {retry_after:.0f} s")
        self.retry_after = retry_after


class RequestTimeoutError(LmforgeError):
    pass


class EngineFailure(Exception):
    """The engine failed (not the user's fault): the request gets a 500, the model is reloaded."""


@dataclass
class SchedulerConfig:
    max_queue: int = 16
    """Requests allowed to wait per model beyond its running slots."""
    timeout_s: float = 600.0
    """Longest a request may run (queue time included) before it is cancelled."""


@dataclass
class Ticket:
    """One admitted request: holds the model in use until closed."""

    model: Loaded
    cancel: threading.Event = field(default_factory=threading.Event)
    streams: list[threading.Event] = field(default_factory=list)
    timed_out: bool = False
    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None

    def cancel_all(self) -> None:
        """Client gone or deadline passed: stop every stream of this request."""
        self.cancel.set()
        for ev in self.streams:
            ev.set()

    def stream_event(self) -> threading.Event:
        """A cancel event for one more stream of this request (n > 1: each choice has its own)."""
        ev = threading.Event()
        if self.cancel.is_set():
            ev.set()
        self.streams.append(ev)
        return ev


class Scheduler:
    def __init__(self, pool: ModelPool, cfg: SchedulerConfig | None = None) -> None:
        self.pool = pool
        self.cfg = cfg or SchedulerConfig()
        self._in_flight: dict[str, int] = {}
        self._lock = threading.Lock()

    def depth(self) -> dict[str, int]:
        """Requests admitted per model (running + waiting)."""
        with self._lock:
            return dict(self._in_flight)

    def admit(self, name: str) -> Ticket:
        capacity = self.pool.cfg.n_slots + self.cfg.max_queue
        with self._lock:
            if self._in_flight.get(name, 0) >= capacity:
                raise QueueFullError(name, retry_after=5)
            self._in_flight[name] = self._in_flight.get(name, 0) + 1
        try:
            loaded = self.pool.acquire(name)
        except BaseException:
            self._done(name)
            raise
        return Ticket(loaded)

    def _done(self, name: str) -> None:
        with self._lock:
            self._in_flight[name] = max(0, self._in_flight.get(name, 0) - 1)

    def stream(self, ticket: Ticket, chunks: Iterator[Chunk]) -> Iterator[Chunk]:
        """Iterate one generation of `ticket` (made with a `ticket.stream_event()`) under its deadline;
        an engine fault becomes EngineFailure and the model is reloaded on the next request."""
        timer = threading.Timer(self.cfg.timeout_s, self._expire, args=(ticket,))
        timer.daemon = True
        timer.start()
        try:
            for chunk in chunks:
                if ticket.first_token_at is None:
                    ticket.first_token_at = time.monotonic()
                yield chunk
            if ticket.timed_out:
                raise RequestTimeoutError(f"request exceeded the {self.cfg.timeout_s:.0f} s time limit")
        except LmforgeError:
            raise
        except (RuntimeError, OSError, ValueError) as e:
            self.pool.mark_broken(ticket.model.name)
            raise EngineFailure(f"the {ticket.model.name} engine failed: {e}") from e
        finally:
            timer.cancel()
            close = getattr(chunks, "close", None)  # a generator frees its engine slot on close
            if close is not None:
                close()

    def _expire(self, ticket: Ticket) -> None:
        ticket.timed_out = True
        ticket.cancel_all()

    def close(self, ticket: Ticket) -> None:
        ticket.cancel_all()
        self.pool.release(ticket.model)
        self._done(ticket.model.name)
