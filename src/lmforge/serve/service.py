"""Turn OpenAI requests into backend calls and typed OpenAI responses (chat, completions, embeddings).

Plain class, no web framework in here: routes call it from a worker thread. Every model is reached
through the one Backend contract: chat requests go to `backend.chat` (local engines render the
template and enforce `response_format` with a grammar; remote ones forward), completions need the
`tokens` capability (or are forwarded upstream by a remote model), echoed prompt log-probabilities
need `score`. Tool calls made by a local model are parsed from its output in the Hermes/Qwen
`<tool_call>{...}</tool_call>` form or as a bare JSON object naming a declared tool.
"""

from __future__ import annotations

import json
import queue
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from lmforge.errors import ContextOverflowError, LmforgeError
from lmforge.home import Registry
from lmforge.infer.base import Backend, ChatOptions, Chunk, require
from lmforge.infer.chat import greedy_params
from lmforge.infer.sampling import SamplingParams
from lmforge.infer.scheduler import Scheduler, Ticket
from lmforge.serve.protocol import (
    LMFORGE_SAMPLING,
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    EmbeddingData,
    EmbeddingList,
    EmbeddingRequest,
    Extension,
    Usage,
    finish_reason,
    new_id,
    now,
)

TOOL_CALL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)


def sampling_from(
    req: ChatCompletionRequest | CompletionRequest, max_tokens: int | None = None
) -> SamplingParams:
    """SamplingParams for a request: its fields where set, SamplingParams' defaults elsewhere."""
    d = SamplingParams()
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if max_tokens is None:
        max_tokens = getattr(req, "max_completion_tokens", None) or req.max_tokens or d.max_tokens
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=d.temperature if req.temperature is None else req.temperature,
        top_p=d.top_p if req.top_p is None else req.top_p,
        top_k=d.top_k if req.top_k is None else req.top_k,
        min_p=d.min_p if req.min_p is None else req.min_p,
        repetition_penalty=d.repetition_penalty if req.repetition_penalty is None else req.repetition_penalty,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        stop=stop,
        seed=req.seed,
    ).validate()


def parse_tool_calls(text: str, tool_names: set[str]) -> tuple[str, list[dict]]:
    """Split model output into (content, tool_calls)."""
    calls = []
    for m in TOOL_CALL_RE.finditer(text):
        call = _call_from(m.group(1), tool_names)
        if call:
            calls.append(call)
    if calls:
        return TOOL_CALL_RE.sub("", text).strip(), calls
    stripped = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    if stripped.startswith("{"):
        call = _call_from(stripped, tool_names)
        if call:
            return "", [call]
    return text, []


def _call_from(blob: str, tool_names: set[str]) -> dict | None:
    try:
        obj = json.loads(blob)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or obj.get("name") not in tool_names:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    return {
        "id": new_id("call"),
        "type": "function",
        "function": {
            "name": obj["name"],
            "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False),
        },
    }


def n_params(params: SamplingParams, n: int) -> list[SamplingParams]:
    """n > 1: distinct but reproducible sampler streams (seed, seed+1, ...)."""
    if n == 1:
        return [params]
    return [
        replace(params, seed=None if params.seed is None else (params.seed + i) % 2**32) for i in range(n)
    ]


class _Open:
    """An admitted request with its streams; `close()` cancels what still runs and frees the model."""

    def __init__(self, scheduler: Scheduler, ticket: Ticket) -> None:
        self.scheduler, self.ticket = scheduler, ticket
        self.streams: list[Iterator[Chunk]] = []
        self._closed = threading.Event()

    @property
    def backend(self) -> Backend:
        return self.ticket.model.backend

    def close(self) -> None:
        """Cancel every stream (engines free their slots at the next step) and release the model.
        Streams are not closed here: another thread may be iterating them."""
        self.ticket.cancel_all()
        if not self._closed.is_set():
            self._closed.set()
            self.scheduler.close(self.ticket)

    def chunks(self) -> Iterator[tuple[int, Chunk]]:
        """(stream index, chunk) from every stream, concurrently (they share the engine's batch)."""
        runs = [self.scheduler.stream(self.ticket, s) for s in self.streams]
        if len(runs) == 1:
            for c in runs[0]:
                yield 0, c
            return
        q: queue.Queue = queue.Queue()

        def worker(i: int) -> None:
            try:
                for c in runs[i]:
                    q.put((i, c))
            except Exception as e:  # handed to the consumer, which re-raises it
                q.put((i, e))
            finally:
                q.put((i, None))

        for i in range(len(runs)):
            threading.Thread(target=worker, args=(i,), daemon=True).start()
        remaining = len(runs)
        while remaining:
            i, item = q.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, Exception):
                self.ticket.cancel_all()
                raise item
            else:
                yield i, item


class ChatService:
    def __init__(self, registry: Registry, scheduler: Scheduler) -> None:
        self.registry = registry
        self.scheduler = scheduler

    def _admit(self, model: str, start: Callable[[_Open], None]) -> _Open:
        """Admit a request and start its streams; on any error nothing stays held."""
        req = _Open(self.scheduler, self.scheduler.admit(model))
        try:
            start(req)
        except BaseException:
            req.close()
            raise
        return req

    @staticmethod
    def _logprob_entry(backend: Backend, tok: int, info: dict) -> dict:
        def item(t: int, lp: float) -> dict:
            s = backend.detokenize([t])
            return {"token": s, "logprob": lp, "bytes": list(s.encode())}

        return {**item(tok, info["logprob"]), "top_logprobs": [item(t, lp) for t, lp in info["top"]]}

    # -- chat -----------------------------------------------------------------------------------
    def _open_chat(self, req: ChatCompletionRequest) -> tuple[_Open, Extension | None, set[str]]:
        params = sampling_from(req)
        tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
        if req.tool_choice == "none":
            tools = None
        fmt = (
            req.response_format.model_dump(by_alias=True, exclude_none=True) if req.response_format else None
        )
        opts = ChatOptions(tools=tools, response_format=fmt, allow_truncation=req.truncate,
                           logprobs=(req.top_logprobs or 0) if req.logprobs else None)  # fmt: skip
        messages = [m.model_dump(exclude_none=True) for m in req.messages]
        ext: list[Extension | None] = [None]

        def start(o: _Open) -> None:
            if tools:
                require(o.backend, "tools")
            for p in n_params(params, req.n):
                stream = o.backend.chat(messages, p, o.ticket.stream_event(), opts)
                o.streams.append(stream)
                if stream.notice:
                    ext[0] = Extension(notice=stream.notice, dropped_messages=stream.dropped_turns)

        o = self._admit(req.model, start)
        return o, ext[0], {t["function"]["name"] for t in tools} if tools else set()

    def chat(self, req: ChatCompletionRequest) -> ChatCompletion:
        o, ext, names = self._open_chat(req)
        texts = [""] * req.n
        reasons: list[str | None] = [None] * req.n
        upstream_calls: list[list[dict] | None] = [None] * req.n
        lps: list[list[dict]] = [[] for _ in range(req.n)]
        prompt_tokens = completion = 0
        try:
            for i, c in o.chunks():
                texts[i] += c.text
                if c.logprobs is not None and c.token_id is not None:
                    lps[i].append(self._logprob_entry(o.backend, c.token_id, c.logprobs))
                if c.finish_reason:
                    reasons[i], upstream_calls[i] = c.finish_reason, c.tool_calls
                    completion += c.completion_tokens
                    prompt_tokens = c.prompt_tokens
        finally:
            o.close()
        choices = []
        for i in range(req.n):
            content, calls = parse_tool_calls(texts[i], names) if names else (texts[i], [])
            calls = upstream_calls[i] or calls
            message = AssistantMessage(
                content=(content or None) if calls else texts[i], tool_calls=calls or None
            )
            choices.append(ChatChoice(index=i, message=message, logprobs={"content": lps[i]} if req.logprobs else None,
                                      finish_reason=finish_reason(reasons[i], bool(calls))))  # fmt: skip
        return ChatCompletion(id=new_id("chatcmpl"), created=now(), model=req.model, choices=choices,
                              usage=Usage.of(prompt_tokens, completion), lmforge=ext)  # fmt: skip

    def chat_stream(
        self, req: ChatCompletionRequest
    ) -> tuple[Iterator[ChatCompletionChunk], Callable[[], None]]:
        o, ext, names = self._open_chat(req)
        cid, created = new_id("chatcmpl"), now()

        def chunk(choices: list[ChunkChoice], **more: Any) -> ChatCompletionChunk:
            return ChatCompletionChunk(id=cid, created=created, model=req.model, choices=choices, **more)

        def events() -> Iterator[ChatCompletionChunk]:
            completion = prompt_tokens = 0
            buffered = [""] * req.n
            try:
                for i in range(req.n):
                    yield chunk(
                        [ChunkChoice(index=i, delta={"role": "assistant", "content": ""})], lmforge=ext
                    )
                for i, c in o.chunks():
                    delta: dict[str, Any] = {}
                    if names:  # tool calls can only be recognised on the whole text
                        buffered[i] += c.text
                    elif c.text:
                        delta["content"] = c.text
                    reason = None
                    if c.finish_reason:
                        completion += c.completion_tokens
                        prompt_tokens = c.prompt_tokens
                        content, calls = parse_tool_calls(buffered[i], names) if names else ("", [])
                        calls = c.tool_calls or calls
                        if calls:
                            delta["tool_calls"] = [{"index": k, **call} for k, call in enumerate(calls)]
                        if content:
                            delta["content"] = content
                        reason = finish_reason(c.finish_reason, bool(calls))
                    lp = None
                    if c.logprobs is not None and c.token_id is not None:
                        lp = {"content": [self._logprob_entry(o.backend, c.token_id, c.logprobs)]}
                    if delta or reason or lp:
                        yield chunk([ChunkChoice(index=i, delta=delta, logprobs=lp, finish_reason=reason)])
                if req.stream_options and req.stream_options.include_usage:
                    yield chunk([], usage=Usage.of(prompt_tokens, completion))
            finally:
                o.close()

        return events(), o.close

    # -- completions ----------------------------------------------------------------------------
    @staticmethod
    def _prompts(req: CompletionRequest) -> list[str | list[int]]:
        p = req.prompt
        if isinstance(p, str):
            prompts: list[str | list[int]] = [p]
        elif p and all(isinstance(x, int) for x in p):
            prompts = [list(p)]  # type: ignore[arg-type]
        else:
            prompts = list(p)  # type: ignore[arg-type]
        if not prompts or any(len(x) == 0 for x in prompts):
            raise LmforgeError("prompt must be a non-empty string, list of strings, or list of token ids")
        if req.max_tokens == 0 and not req.echo:
            raise LmforgeError(
                "max_tokens 0 generates nothing: send echo=true (with logprobs) to score the prompt"
            )
        return prompts

    def _open_completion(self, req: CompletionRequest) -> tuple[_Open, list[dict[str, Any]], Any]:
        """Admit, tokenize, score echoed prompts, start generations. Returns the request, per-choice
        state {'ids', 'text', 'prompt_lp', 'stream' index or None}, and for a model without token
        access whose upstream speaks OpenAI, the upstream's answer instead (forwarded as-is)."""
        prompts = self._prompts(req)
        generate = req.max_tokens != 0
        params = sampling_from(req, None if generate else 1)
        states: list[dict[str, Any]] = []
        forwarded: list[Any] = [None]

        def start(o: _Open) -> None:
            backend = o.backend
            if not backend.capabilities.tokens and backend.capabilities.upstream:
                body = req.model_dump(exclude_none=True)
                extra = {k: body.pop(k) for k in LMFORGE_SAMPLING if k in body}
                forwarded[0] = backend.forward_completions(body | ({"extra_body": extra} if extra else {}))
                return
            require(backend, "tokens")
            for prompt in prompts:
                ids = backend.tokenize(prompt) if isinstance(prompt, str) else prompt
                if len(ids) + (1 if generate else 0) > backend.context_length:
                    raise ContextOverflowError(
                        f"prompt is {len(ids)} tokens but the context holds {backend.context_length}",
                        prompt_tokens=len(ids), context_length=backend.context_length,
                    )  # fmt: skip
                prompt_lp = None
                if req.echo and req.logprobs is not None:
                    require(backend, "score")
                    prompt_lp = backend.prompt_logprobs(ids, req.logprobs)
                text = prompt if isinstance(prompt, str) else backend.detokenize(ids)
                for p in n_params(params, req.n):
                    stream = None
                    if generate:
                        kw = {"logprobs": req.logprobs} if req.logprobs is not None else {}
                        o.streams.append(backend.generate(ids, p, o.ticket.stream_event(), **kw))
                        stream = len(o.streams) - 1
                    states.append({"ids": ids, "text": text, "prompt_lp": prompt_lp, "stream": stream})

        o = self._admit(req.model, start)
        return o, states, forwarded[0]

    def _choice_logprobs(self, backend: Backend, state: dict, generated: list[tuple[int, dict]],
                         echo: bool) -> CompletionLogprobs:  # fmt: skip
        """Legacy completions logprobs: echoed prompt tokens first (the first has null logprob),
        then generated ones; text_offset counts characters of the choice's text."""
        out = CompletionLogprobs()
        parts: list[tuple[int, list[tuple[int, dict | None]]]] = []  # (character base, entries)
        if echo:
            parts.append(
                (0, list(zip(state["ids"], state["prompt_lp"] or [None] * len(state["ids"]), strict=True)))
            )
        parts.append((len(state["text"]) if echo else 0, list(generated)))
        for base, entries in parts:
            ids = [t for t, _ in entries]
            for k, (tok, info) in enumerate(entries):
                # the characters before this token: decoding the prefix keeps multi-byte characters whole
                out.text_offset.append(base + (len(backend.detokenize(ids[:k])) if k else 0))
                out.tokens.append(backend.detokenize([tok]))
                out.token_logprobs.append(None if info is None else info["logprob"])
                out.top_logprobs.append(
                    None if info is None else {backend.detokenize([a]): b for a, b in info["top"]}
                )
        return out

    def complete(self, req: CompletionRequest) -> Completion | dict:
        o, states, forwarded = self._open_completion(req)
        if forwarded is not None:
            o.close()
            return forwarded
        texts = [""] * len(o.streams)
        reasons: list[str | None] = [None] * len(o.streams)
        toks: list[list[tuple[int, dict]]] = [[] for _ in o.streams]
        completion = 0
        try:
            for i, c in o.chunks() if o.streams else iter(()):
                texts[i] += c.text
                if c.logprobs is not None and c.token_id is not None:
                    toks[i].append((c.token_id, c.logprobs))
                elif c.logprobs is not None and c.end_token is not None:  # listed as OpenAI/vLLM do
                    toks[i].append((c.end_token, c.logprobs))
                if c.finish_reason:
                    reasons[i] = c.finish_reason
                    completion += c.completion_tokens
            choices = []
            for k, st in enumerate(states):
                s = st["stream"]
                text = (st["text"] if req.echo else "") + (texts[s] if s is not None else "")
                lp = None
                if req.logprobs is not None:
                    lp = self._choice_logprobs(o.backend, st, toks[s] if s is not None else [], req.echo)
                reason = finish_reason(reasons[s]) if s is not None else "length"
                choices.append(CompletionChoice(text=text, index=k, logprobs=lp, finish_reason=reason))
        finally:
            o.close()
        prompt_tokens = sum(len(st["ids"]) for st in states[:: req.n])
        return Completion(id=new_id("cmpl"), created=now(), model=req.model, choices=choices,
                          usage=Usage.of(prompt_tokens, completion))  # fmt: skip

    def complete_stream(
        self, req: CompletionRequest
    ) -> tuple[Iterator[Completion | dict], Callable[[], None]]:
        o, states, forwarded = self._open_completion(req)
        if forwarded is not None:

            def relay() -> Iterator[dict]:
                try:
                    yield from forwarded
                finally:
                    o.close()

            return relay(), o.close
        cid, created = new_id("cmpl"), now()

        def event(choices: list[CompletionChoice], usage: Usage | None = None) -> Completion:
            return Completion(id=cid, created=created, model=req.model, choices=choices, usage=usage)

        def events() -> Iterator[Completion]:
            completion = 0
            try:
                for k, st in enumerate(states):  # echoed prompts (and score-only choices) come first
                    if req.echo or st["stream"] is None:
                        lp = (
                            self._choice_logprobs(o.backend, st, [], True)
                            if req.logprobs is not None
                            else None
                        )
                        reason = None if st["stream"] is not None else "length"
                        yield event([CompletionChoice(text=st["text"] if req.echo else "", index=k, logprobs=lp,
                                                      finish_reason=reason)])  # fmt: skip
                index = {st["stream"]: k for k, st in enumerate(states) if st["stream"] is not None}
                for s, c in o.chunks() if o.streams else iter(()):
                    reason = None
                    if c.finish_reason:
                        completion += c.completion_tokens
                        reason = finish_reason(c.finish_reason)
                    if c.text or reason:
                        yield event([CompletionChoice(text=c.text, index=index[s], finish_reason=reason)])
                if req.stream_options and req.stream_options.include_usage:
                    p = sum(len(st["ids"]) for st in states[:: req.n])
                    yield event([], Usage.of(p, completion))
            finally:
                o.close()

        return events(), o.close

    # -- embeddings -----------------------------------------------------------------------------
    def embed(self, req: EmbeddingRequest) -> EmbeddingList:
        texts = [req.input] if isinstance(req.input, str) else list(req.input)
        if any(not isinstance(t, str) or not t for t in texts):
            raise LmforgeError("input must be a non-empty string or a list of non-empty strings")
        manifest = self.registry.get(req.model)
        if manifest.kind != "embedding":
            raise LmforgeError(f"{req.model} is a {manifest.kind} model, not an embedding model")
        o = self._admit(req.model, lambda o: require(o.backend, "embed"))
        try:
            backend = o.backend
            vecs: list[Any] = backend.embed(texts, is_query=req.input_type == "query")
            if backend.capabilities.tokens:
                n_tokens = sum(len(backend.tokenize(t)) for t in texts)
            else:  # the engine keeps its tokens to itself: count words
                n_tokens = sum(len(t.split()) for t in texts)
        finally:
            o.close()
        if req.encoding_format == "base64":  # what the openai SDK asks for: little-endian float32
            import base64

            import numpy as np

            vecs = [base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() for v in vecs]
        data = [EmbeddingData(index=i, embedding=v) for i, v in enumerate(vecs)]
        return EmbeddingList(data=data, model=req.model, usage=Usage.of(n_tokens, 0))

    # -- greedy answers for knowledge bases, reranking and the arena -----------------------------
    def greedy_stream(
        self, model: str, messages: list[dict], max_tokens: int
    ) -> tuple[Iterator[str], Callable[[], None]]:
        """Text pieces of the greedy answer (scheduled like any request: queue, deadline, cancel)."""
        params = greedy_params(max_tokens)

        def start(o: _Open) -> None:
            o.streams.append(o.backend.chat(messages, params, o.ticket.stream_event(),
                                            ChatOptions(allow_truncation=False)))  # fmt: skip

        o = self._admit(model, start)

        def pieces() -> Iterator[str]:
            try:
                for _, c in o.chunks():
                    if c.text:
                        yield c.text
            finally:
                o.close()

        return pieces(), o.close

    def chat_view(self, model: str) -> ScheduledChat:
        """A Backend-shaped view of served `model` for code that calls `chat` (the task engine)."""
        return ScheduledChat(self, model)

    def greedy(self, model: str, messages: list[dict], max_tokens: int) -> str:
        pieces, _close = self.greedy_stream(model, messages, max_tokens)
        return "".join(pieces)


class ScheduledChat:
    """`capabilities` and `chat` of a served model, each chat admitted through the scheduler like an
    API request (queue, deadline, slot), so server-side callers such as /v1/tasks share the batching
    engine with everyone else instead of holding a model of their own."""

    def __init__(self, service: ChatService, model: str) -> None:
        self._service, self._model = service, model
        o = service._admit(model, lambda o: None)  # loads the model if it is not; nothing is generated
        try:
            self.capabilities = o.backend.capabilities
            self.context_length = o.backend.context_length
            self._tokenize = o.backend.tokenize
        finally:
            o.close()

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return self._tokenize(text, add_special=add_special)

    def chat(self, messages: list[dict[str, Any]], params: SamplingParams, cancel: Any = None,
             options: ChatOptions | None = None) -> Iterator[Chunk]:  # fmt: skip
        def start(o: _Open) -> None:
            o.streams.append(o.backend.chat(messages, params, o.ticket.stream_event(), options))

        o = self._service._admit(self._model, start)

        def chunks() -> Iterator[Chunk]:
            try:
                for _, c in o.chunks():
                    yield c
            finally:
                o.close()

        return chunks()
