"""Turn OpenAI requests into scheduler calls and OpenAI responses (chat, completions, embeddings).

Plain class, no web framework in here: routes call it from a worker thread. Structured output
(`response_format` json_object / json_schema) is enforced with a llama.cpp grammar during
sampling, so the text always parses. Tools are rendered through the model's own chat template
(`tools` variable, as transformers does) and tool calls are parsed from the output in the
Hermes/Qwen `<tool_call>{...}</tool_call>` form or as a bare JSON object naming a declared tool.
"""

from __future__ import annotations

import json
import queue
import re
import threading
from collections.abc import Iterator
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.home import Registry
from lmforge.infer.base import Chunk
from lmforge.infer.chat import FittedPrompt, fit_messages
from lmforge.infer.sampling import SamplingParams
from lmforge.infer.scheduler import Scheduler, Ticket
from lmforge.serve.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, new_id, now

TOOL_CALL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)
DEFAULT_MAX_TOKENS = 512


def sampling_from(req) -> SamplingParams:
    d = SamplingParams()
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    max_tokens = getattr(req, "max_completion_tokens", None) or req.max_tokens or DEFAULT_MAX_TOKENS
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


def grammar_for(req: ChatCompletionRequest) -> str | None:
    rf = req.response_format
    if rf is None or rf.type == "text":
        return None
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    if rf.type == "json_object":
        return JSON_GBNF
    schema = rf.json_schema.schema_ if rf.json_schema else None
    if not schema:
        raise LmforgeError("response_format json_schema needs json_schema.schema")
    try:
        # llama-cpp-python's converter lets raw control characters into strings, which JSON forbids
        return json_schema_to_gbnf(json.dumps(schema)).replace(
            'char ::= [^"\\\\] |', 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'
        )
    except (ValueError, KeyError, TypeError, NotImplementedError) as e:
        raise LmforgeError(f"response_format json_schema is not supported: {e}") from e


def template_messages(req: ChatCompletionRequest) -> list[dict[str, Any]]:
    out = []
    for m in req.messages:
        d: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        if m.tool_calls:
            d["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": _maybe_json(c.function.arguments)},
                }
                for c in m.tool_calls
            ]
        if m.tool_call_id:
            d["tool_call_id"] = m.tool_call_id
        if m.name:
            d["name"] = m.name
        out.append(d)
    return out


def _maybe_json(s: str) -> Any:
    try:
        return json.loads(s)
    except (json.JSONDecodeError, TypeError):
        return s


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


class ChatService:
    def __init__(self, registry: Registry, scheduler: Scheduler) -> None:
        self.registry = registry
        self.scheduler = scheduler

    # -- shared ---------------------------------------------------------------------------------
    def _engine_kwargs(self, ticket: Ticket, grammar: str | None, logprobs: int | None) -> dict:
        kwargs: dict[str, Any] = {}
        if grammar is not None or logprobs is not None:
            if not getattr(ticket.model.backend, "supports_grammar", False):
                raise LmforgeError(
                    f"{ticket.model.name} runs on {ticket.model.backend.kind}; response_format and logprobs "
                    "need a GGUF model on llama.cpp"
                )
            kwargs = {"grammar": grammar, "logprobs": logprobs}
        return kwargs

    def _runs(self, ticket: Ticket, prompts: list, params: list[SamplingParams], kwargs: dict) -> list:
        """One `run(cancel)` per choice: token ids through `generate`, or messages through a remote `chat`."""
        backend = ticket.model.backend
        if hasattr(backend, "chat"):
            return [
                lambda ev, m=m, p=p: backend.chat(m, p, ev, **kwargs)
                for m, p in zip(prompts, params, strict=True)
            ]
        return [
            lambda ev, x=x, p=p: backend.generate(x, p, ev, **kwargs)
            for x, p in zip(prompts, params, strict=True)
        ]

    def _run_many(
        self, ticket: Ticket, prompts: list, params: list[SamplingParams], kwargs: dict
    ) -> Iterator[tuple[int, Chunk]]:
        """Run several generations concurrently (they share the engine's batch); yield (index, chunk)."""
        runs = self._runs(ticket, prompts, params, kwargs)
        if len(runs) == 1:
            for c in self.scheduler.stream(ticket, runs[0]):
                yield 0, c
            return
        q: queue.Queue = queue.Queue()

        def worker(i: int) -> None:
            try:
                for c in self.scheduler.stream(ticket, runs[i]):
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
                ticket.cancel_all()
                raise item
            else:
                yield i, item

    @staticmethod
    def _n_params(params: SamplingParams, n: int) -> list[SamplingParams]:
        if n == 1:
            return [params]
        out = []
        for i in range(n):  # distinct but reproducible streams for n > 1
            seed = None if params.seed is None else (params.seed + i) % 2**32
            out.append(SamplingParams(**{**params.__dict__, "seed": seed}))
        return out

    def _logprob_entry(self, backend, tok: int, info: dict) -> dict:
        def item(t: int, lp: float) -> dict:
            s = backend.detokenize([t])
            return {"token": s, "logprob": lp, "bytes": list(s.encode())}

        return {**item(tok, info["logprob"]), "top_logprobs": [item(t, lp) for t, lp in info["top"]]}

    def _closer(self, ticket: Ticket):
        closed = threading.Event()

        def close() -> None:
            ticket.cancel_all()
            if not closed.is_set():
                closed.set()
                self.scheduler.close(ticket)

        return close

    # -- chat -----------------------------------------------------------------------------------
    def _prepare_chat(self, req: ChatCompletionRequest):
        params = sampling_from(req)
        grammar = grammar_for(req)
        tools = [t.model_dump() for t in req.tools] if req.tools else None
        if req.tool_choice == "none":
            tools = None
        ticket = self.scheduler.admit(req.model)
        try:
            backend = ticket.model.backend
            if hasattr(backend, "chat"):  # remote: the upstream applies its template and counts tokens
                msgs = [m.model_dump(exclude_none=True) for m in req.messages]
                fitted = FittedPrompt(ids=[], messages=msgs, dropped_turns=0, notice="")
                fmt = (
                    req.response_format.model_dump(by_alias=True, exclude_none=True)
                    if req.response_format
                    else None
                )
                kwargs = {"response_format": fmt, "tools": tools}
            else:
                fitted = fit_messages(
                    backend, template_messages(req), params, allow_truncation=req.truncate, tools=tools
                )
                lp = (req.top_logprobs or 0) if req.logprobs else None
                kwargs = self._engine_kwargs(ticket, grammar, lp)
        except BaseException:
            self.scheduler.close(ticket)
            raise
        extra = (
            {"lmforge": {"notice": fitted.notice, "dropped_messages": fitted.dropped_turns}}
            if fitted.notice
            else {}
        )
        names = {t["function"]["name"] for t in tools} if tools else set()
        return ticket, fitted, self._n_params(params, req.n), kwargs, extra, names

    def chat(self, req: ChatCompletionRequest) -> dict:
        ticket, fitted, plist, kwargs, extra, names = self._prepare_chat(req)
        backend = ticket.model.backend
        texts = [""] * req.n
        prompt_tokens = len(fitted.ids)
        finish: list[str | None] = [None] * req.n
        lps: list[list[dict]] = [[] for _ in range(req.n)]
        completion = 0
        try:
            for i, c in self._run_many(ticket, [fitted.ids or fitted.messages] * req.n, plist, kwargs):
                texts[i] += c.text
                if c.logprobs is not None and c.token_id is not None:
                    lps[i].append(self._logprob_entry(backend, c.token_id, c.logprobs))
                if c.finish_reason:
                    finish[i] = c.finish_reason
                    completion += c.completion_tokens
                    prompt_tokens = c.prompt_tokens
        finally:
            self.scheduler.close(ticket)
        choices = []
        for i in range(req.n):
            message: dict[str, Any] = {"role": "assistant", "content": texts[i]}
            reason = finish[i] if finish[i] in ("stop", "length") else "stop"
            if names:
                content, calls = parse_tool_calls(texts[i], names)
                if calls:
                    message = {"role": "assistant", "content": content or None, "tool_calls": calls}
                    reason = "tool_calls"
            choices.append({"index": i, "message": message, "logprobs": {"content": lps[i]} if req.logprobs else None,
                            "finish_reason": reason})  # fmt: skip
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        }
        return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": now(), "model": req.model,
                "choices": choices, "usage": usage, **extra}  # fmt: skip

    def chat_stream(self, req: ChatCompletionRequest):
        ticket, fitted, plist, kwargs, extra, names = self._prepare_chat(req)
        close = self._closer(ticket)
        backend = ticket.model.backend
        cid, created = new_id("chatcmpl"), now()

        def chunk(choices: list[dict], **more) -> dict:
            return {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": req.model,
                "choices": choices,
                **more,
            }

        def events() -> Iterator[dict]:
            completion = 0
            prompt_tokens = len(fitted.ids)
            buffered = [""] * req.n
            try:
                for i in range(req.n):
                    yield chunk(
                        [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
                        **extra,
                    )
                for i, c in self._run_many(ticket, [fitted.ids or fitted.messages] * req.n, plist, kwargs):
                    delta: dict[str, Any] = {}
                    if names:  # tool calls can only be recognised on the whole text
                        buffered[i] += c.text
                    elif c.text:
                        delta["content"] = c.text
                    reason = None
                    if c.finish_reason:
                        completion += c.completion_tokens
                        prompt_tokens = c.prompt_tokens
                        reason = c.finish_reason if c.finish_reason in ("stop", "length") else "stop"
                        if names:
                            content, calls = parse_tool_calls(buffered[i], names)
                            if calls:
                                delta["tool_calls"] = [{"index": k, **call} for k, call in enumerate(calls)]
                                reason = "tool_calls"
                            if content:
                                delta["content"] = content
                    lp = None
                    if c.logprobs is not None and c.token_id is not None:
                        lp = {"content": [self._logprob_entry(backend, c.token_id, c.logprobs)]}
                    if delta or reason or lp:
                        yield chunk([{"index": i, "delta": delta, "logprobs": lp, "finish_reason": reason}])
                if req.stream_options and req.stream_options.include_usage:
                    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                             "total_tokens": prompt_tokens + completion}  # fmt: skip
                    yield chunk([], usage=usage)
            finally:
                close()

        return events(), close

    # -- completions ----------------------------------------------------------------------------
    def _prepare_completion(self, req: CompletionRequest):
        params = sampling_from(req)
        prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        if not prompts or any(not p for p in prompts):
            raise LmforgeError("prompt must be a non-empty string (or list of them)")
        ticket = self.scheduler.admit(req.model)
        try:
            backend = ticket.model.backend
            ids = [backend.tokenize(p) for p in prompts]
            for x in ids:
                if len(x) >= backend.context_length:
                    from lmforge.errors import ContextOverflowError

                    raise ContextOverflowError(
                        f"prompt is {len(x)} tokens but the context holds {backend.context_length}",
                        prompt_tokens=len(x),
                        context_length=backend.context_length,
                    )
            kwargs = self._engine_kwargs(ticket, None, req.logprobs)
        except BaseException:
            self.scheduler.close(ticket)
            raise
        all_ids = [x for x in ids for _ in range(req.n)]
        all_prompts = [p for p in prompts for _ in range(req.n)]
        return ticket, all_prompts, all_ids, self._n_params(params, req.n) * len(prompts), kwargs

    @staticmethod
    def _completion_logprobs(backend, toks: list[tuple[int, dict]]) -> dict:
        tokens, lps, tops, offsets, pos = [], [], [], [], 0
        for t, info in toks:
            s = backend.detokenize([t])
            tokens.append(s)
            lps.append(info["logprob"])
            tops.append({backend.detokenize([a]): b for a, b in info["top"]})
            offsets.append(pos)
            pos += len(s)
        return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}

    def complete(self, req: CompletionRequest) -> dict:
        ticket, prompts, ids, plist, kwargs = self._prepare_completion(req)
        backend = ticket.model.backend
        texts = [""] * len(ids)
        finish: list[str] = ["stop"] * len(ids)
        toks: list[list[tuple[int, dict]]] = [[] for _ in ids]
        completion = 0
        try:
            for i, c in self._run_many(ticket, ids, plist, kwargs):
                texts[i] += c.text
                if c.logprobs is not None and c.token_id is not None:
                    toks[i].append((c.token_id, c.logprobs))
                if c.finish_reason:
                    finish[i] = c.finish_reason if c.finish_reason in ("stop", "length") else "stop"
                    completion += c.completion_tokens
        finally:
            self.scheduler.close(ticket)
        choices = [
            {
                "index": i,
                "text": (prompts[i] if req.echo else "") + texts[i],
                "logprobs": self._completion_logprobs(backend, toks[i]) if req.logprobs is not None else None,
                "finish_reason": finish[i],
            }  # fmt: skip
            for i in range(len(ids))
        ]
        prompt_tokens = sum(len(x) for x in ids[:: req.n])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        }
        return {"id": new_id("cmpl"), "object": "text_completion", "created": now(), "model": req.model,
                "choices": choices, "usage": usage}  # fmt: skip

    def complete_stream(self, req: CompletionRequest):
        ticket, prompts, ids, plist, kwargs = self._prepare_completion(req)
        close = self._closer(ticket)
        cid, created = new_id("cmpl"), now()

        def events() -> Iterator[dict]:
            completion = 0
            try:
                for i, c in self._run_many(ticket, ids, plist, kwargs):
                    reason = None
                    if c.finish_reason:
                        completion += c.completion_tokens
                        reason = c.finish_reason if c.finish_reason in ("stop", "length") else "stop"
                    if c.text or reason:
                        yield {"id": cid, "object": "text_completion", "created": created, "model": req.model,
                               "choices": [{"index": i, "text": c.text, "logprobs": None, "finish_reason": reason}]}  # fmt: skip
                if req.stream_options and req.stream_options.include_usage:
                    p = sum(len(x) for x in ids[:: req.n])
                    yield {"id": cid, "object": "text_completion", "created": created, "model": req.model, "choices": [],
                           "usage": {"prompt_tokens": p, "completion_tokens": completion, "total_tokens": p + completion}}  # fmt: skip
            finally:
                close()

        return events(), close

    # -- embeddings -----------------------------------------------------------------------------
    def embed(self, req: EmbeddingRequest) -> dict:
        texts = [req.input] if isinstance(req.input, str) else list(req.input)
        if any(not isinstance(t, str) or not t for t in texts):
            raise LmforgeError("input must be a non-empty string or a list of non-empty strings")
        manifest = self.registry.get(req.model)
        if manifest.kind != "embedding":
            raise LmforgeError(f"{req.model} is a {manifest.kind} model, not an embedding model")
        ticket = self.scheduler.admit(req.model)
        try:
            backend = ticket.model.backend
            vecs = backend.embed(texts, is_query=req.input_type == "query")
            try:
                n_tokens = sum(len(backend.tokenize(t)) for t in texts)
            except LmforgeError:
                n_tokens = sum(len(t.split()) for t in texts)
        finally:
            self.scheduler.close(ticket)
        if req.encoding_format == "base64":  # what the openai SDK asks for: little-endian float32
            import base64

            import numpy as np

            vecs = [base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() for v in vecs]
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vecs)]
        return {
            "object": "list",
            "data": data,
            "model": req.model,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
        }
