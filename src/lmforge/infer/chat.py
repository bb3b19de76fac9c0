"""Multi-turn chat over any Backend: the model's own template, and honest context fitting.

When the conversation no longer fits the context (prompt + room for the answer), the oldest
user/assistant turns are dropped, and `ChatTurn.notice` says how many. The system prompt and the
newest user message are never cut: if they alone do not fit, the turn fails with a clear error.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lmforge.data.chat_template import CHATML, render
from lmforge.errors import ContextOverflowError
from lmforge.infer.base import Backend, Chunk
from lmforge.infer.sampling import SamplingParams


@dataclass
class FittedPrompt:
    ids: list[int]
    messages: list[dict[str, Any]]
    dropped_turns: int
    """How many of the oldest messages were left out to fit the context."""
    notice: str
    """Empty when nothing was dropped; otherwise one line to show the user."""


def answer_room(params: SamplingParams, context_length: int) -> int:
    """Tokens kept free for the answer: max_tokens, but never more than half the context."""
    return min(params.max_tokens, context_length // 2)


def fit_messages(
    backend: Backend,
    messages: list[dict[str, Any]],
    params: SamplingParams,
    *,
    allow_truncation: bool = True,
    tools: list[dict[str, Any]] | None = None,
) -> FittedPrompt:
    """Render `messages` with the model's template, dropping the oldest turns if needed (or, with
    `allow_truncation=False`, raising ContextOverflowError instead of dropping anything)."""
    template = backend.chat_template or CHATML
    specials = backend.special_tokens
    ctx = backend.context_length
    room = answer_room(params, ctx)
    system = [m for m in messages[:1] if m["role"] == "system"]
    rest = messages[len(system) :]
    dropped = 0
    while True:
        kept = system + rest
        text = render(template, kept, special_tokens=specials, tools=tools)
        ids = backend.tokenize(text, add_special=False)
        bos = specials.get("bos_token")
        if ids and bos and not text.startswith(bos):  # templates without BOS: let the model add it
            with_bos = backend.tokenize(text, add_special=True)
            ids = with_bos if len(with_bos) > len(ids) else ids
        if len(ids) + room <= ctx:
            break
        if not allow_truncation:
            raise ContextOverflowError(
                f"the messages take {len(ids)} tokens; with {room} kept for the answer that exceeds the "
                f"{ctx}-token context. Shorten them, lower max_tokens, or send truncate=true to drop the oldest turns",
                prompt_tokens=len(ids),
                context_length=ctx,
            )
        if len(rest) <= 1:
            what = "the system prompt and your message take" if system else "your message takes"
            raise ContextOverflowError(
                f"{what} {len(ids)} tokens; with {room} kept for the answer that exceeds the "
                f"{ctx}-token context. Shorten it, lower max_tokens, or load the model with a larger --ctx",
                prompt_tokens=len(ids),
                context_length=ctx,
            )
        # drop the oldest turn: a user message and the assistant reply that followed it
        cut = 2 if len(rest) > 2 and rest[1]["role"] != "user" else 1
        rest = rest[cut:]
        dropped += cut
    notice = ""
    if dropped:
        notice = (
            f"[context full: left out the {dropped} oldest message(s) to fit the {ctx}-token context; "
            "the system prompt is kept]"
        )
    if backend.chat_template is None:
        notice = (notice + " " if notice else "") + "[model has no chat template; using ChatML]"
    return FittedPrompt(ids=ids, messages=kept, dropped_turns=dropped, notice=notice)


@dataclass
class ChatSession:
    """History + system prompt; `send` streams one assistant turn and records it."""

    backend: Backend
    params: SamplingParams = field(default_factory=SamplingParams)
    system: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    last_notice: str = ""

    def reset(self) -> None:
        self.history.clear()
        self.last_notice = ""

    def messages(self, user_text: str) -> list[dict[str, Any]]:
        sys_msgs = [{"role": "system", "content": self.system}] if self.system else []
        return sys_msgs + self.history + [{"role": "user", "content": user_text}]

    def send(self, user_text: str, cancel: threading.Event | None = None) -> Iterator[Chunk]:
        """Stream the answer to `user_text`. `last_notice` tells what was dropped to fit."""
        fitted = fit_messages(self.backend, self.messages(user_text), self.params)
        self.last_notice = fitted.notice
        if fitted.dropped_turns:  # forget what no longer fits, so later turns stay consistent
            self.history = self.history[fitted.dropped_turns :]
        parts: list[str] = []
        for chunk in self.backend.generate(fitted.ids, self.params, cancel):
            parts.append(chunk.text)
            yield chunk
        self.history += [
            {"role": "user", "content": user_text},
            {"role": "assistant", "content": "".join(parts)},
        ]
