"""Chat over any Backend: how local backends answer `chat()`, multi-turn sessions, greedy answers.

`local_chat` is the `chat()` of every in-process backend: OpenAI-style messages → the model's own
template (tools rendered as transformers does) → context fitting → `generate`, with
`response_format` turned into a grammar. When the conversation no longer fits the context (prompt
+ room for the answer), the oldest user/assistant turns are dropped and the stream's `notice` says
how many. The system prompt and the newest user message are never cut: if they alone do not fit,
the call fails with a clear error.

`greedy_text` is the one greedy-generation helper (RAG answers, evaluation, reranking): temperature
0 with a fixed seed, through `chat()`, so it works on every kind of model.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lmforge.data.chat_template import CHATML, render
from lmforge.errors import ContextOverflowError, LmforgeError
from lmforge.infer.base import Backend, CapabilityError, ChatOptions, ChatStream, Chunk, require
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


TEXT_PARTS = ("text", "input_text")


def _text_of(content: Any, backend: Backend) -> str:
    """Message content as text; a non-text part (image_url, input_audio, file) is refused by name."""
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in TEXT_PARTS:
            raise CapabilityError(
                backend.kind, backend.model_name, "multimodal",
                f"it got a {kind!r} content part; send text parts only",
            )  # fmt: skip
        parts.append(part.get("text") or "")
    return "".join(parts)


def template_messages(messages: list[dict[str, Any]], backend: Backend) -> list[dict[str, Any]]:
    """OpenAI messages → what chat templates expect: text content, 'developer' as 'system', tool-call
    arguments as objects (templates serialise them themselves)."""
    out = []
    for m in messages:
        role = m.get("role")
        d: dict[str, Any] = {
            "role": "system" if role == "developer" else role,
            "content": _text_of(m.get("content"), backend),
        }
        if m.get("tool_calls"):
            d["tool_calls"] = [
                {"id": c.get("id"), "type": "function",
                 "function": {"name": c["function"]["name"], "arguments": _maybe_json(c["function"].get("arguments"))}}
                for c in m["tool_calls"]
            ]  # fmt: skip
        for key in ("tool_call_id", "name"):
            if m.get(key):
                d[key] = m[key]
        out.append(d)
    return out


def _maybe_json(s: Any) -> Any:
    try:
        return json.loads(s)
    except (json.JSONDecodeError, TypeError):
        return s


def local_chat(
    backend: Backend, messages: list[dict[str, Any]], params: SamplingParams,
    cancel: threading.Event | None = None, options: ChatOptions | None = None,
) -> ChatStream:  # fmt: skip
    """`chat()` for in-process backends: template, fit, generate (eager fit: errors raise here)."""
    from lmforge.infer.structured import response_format_grammar

    opts = options or ChatOptions()
    require(backend, "chat")
    params.validate()
    if not messages:
        raise LmforgeError("messages must not be empty")
    kwargs: dict[str, Any] = {}
    grammar = response_format_grammar(opts.response_format)
    if grammar is not None:
        require(backend, "grammar", "serve it as a GGUF model on llama.cpp")
        kwargs["grammar"] = grammar
    if opts.logprobs is not None:
        require(backend, "logprobs", "serve it as a GGUF model on llama.cpp")
        kwargs["logprobs"] = opts.logprobs
    fitted = fit_messages(backend, template_messages(messages, backend), params,
                          allow_truncation=opts.allow_truncation, tools=opts.tools)  # fmt: skip
    chunks = backend.generate(fitted.ids, params, cancel, **kwargs)
    return ChatStream(
        chunks, prompt_tokens=len(fitted.ids), dropped_turns=fitted.dropped_turns, notice=fitted.notice
    )


def greedy_params(max_tokens: int, seed: int = 0) -> SamplingParams:
    """The decoding every greedy caller uses (answers, evaluation, reranking, arena pairs)."""
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=seed).validate()


def greedy_text(backend: Backend, messages: list[dict[str, Any]], max_tokens: int, *, seed: int = 0,
                allow_truncation: bool = False) -> str:  # fmt: skip
    """The greedy answer to `messages`, as one string."""
    stream = backend.chat(
        messages, greedy_params(max_tokens, seed), None, ChatOptions(allow_truncation=allow_truncation)
    )
    try:
        return "".join(c.text for c in stream)
    finally:
        stream.close()


@dataclass
class ChatSession:
    """History + system prompt; `send` streams one assistant turn and records it. Works on every
    backend with the `chat` capability (local or remote)."""

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
        stream = self.backend.chat(self.messages(user_text), self.params, cancel)
        self.last_notice = stream.notice
        if stream.dropped_turns:  # forget what no longer fits, so later turns stay consistent
            self.history = self.history[stream.dropped_turns :]
        parts: list[str] = []
        try:
            for chunk in stream:
                parts.append(chunk.text)
                yield chunk
        finally:
            stream.close()
        self.history += [
            {"role": "user", "content": user_text},
            {"role": "assistant", "content": "".join(parts)},
        ]
