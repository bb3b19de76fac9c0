"""llama.cpp with parallel sequences: several requests decoded in one batch (continuous batching).

Decode on CPU is memory-bound: one decode step reads every weight once whatever the number of
sequences in the batch, so decoding N streams together costs little more than one. This engine
keeps `n_slots` sequences in one llama.cpp context (one KV region per sequence, like
llama-server's parallel slots); a single worker thread loops:

    admit waiting requests into free slots → build one llama_batch holding, per slot, either the
    next chunk of its prompt or its last sampled token → llama_decode → sample each slot with its
    own sampler chain (penalties, grammar, top-k/top-p/min-p/temperature, seeded dist) → hand the
    token to the request's queue.

Each request consumes its queue through the shared `stream_tokens` loop (stop strings, UTF-8,
budget), on the caller's thread, so `generate()` has the same contract as every Backend: it may be
called from many threads at once, and cancelling (or abandoning) one stream frees its slot at the
next step. Written here because llama-cpp-python exposes multi-sequence batches only at the C
level (its `Llama` object decodes one sequence) and llama-server is a separate C++ binary that
pip does not ship.
"""

from __future__ import annotations

import codecs
import ctypes
import queue
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.errors import LmforgeError
from lmforge.infer.base import (
    Capabilities,
    CapabilityError,
    ChatOptions,
    ChatStream,
    Chunk,
    check_token_ids,
    common_prefix,
    stream_tokens,
)
from lmforge.infer.llamacpp import LlamaCppBackend, log_softmax_rows
from lmforge.infer.sampling import SamplingParams

END = -1  # queue sentinel: the slot is finished


@dataclass
class _Request:
    prompt: list[int]
    params: SamplingParams
    budget: int
    grammar: str | None
    logprobs: int | None
    score_top: int | None = None
    """Set for a scoring request: logits for every prompt position, top-k alternatives, no sampling."""
    out: queue.Queue = field(default_factory=queue.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)
    external: threading.Event | None = None
    """The caller's cancel event: the worker frees the slot even if nobody reads the stream."""
    error: str | None = None
    prompt_lp: list[dict[str, Any]] = field(default_factory=list)

    def cancelled(self) -> bool:
        return self.cancel.is_set() or (self.external is not None and self.external.is_set())


@dataclass
class _Slot:
    seq: int
    req: _Request
    sampler: object
    n_past: int = 0
    fed: int = 0  # prompt tokens already decoded
    last: int | None = None  # last sampled token, to feed next step
    produced: int = 0


class BatchedLlamaEngine:
    """A GGUF model serving up to `n_slots` concurrent generations. Implements Backend."""

    kind = "llamacpp"
    capabilities = Capabilities(chat=True, tokens=True, score=True, logprobs=True, grammar=True, tools=True)

    def __init__(
        self,
        path: Path,
        *,
        model_name: str = "",
        n_slots: int = 4,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_batch: int = 512,
    ) -> None:
        import llama_cpp
        from llama_cpp import _internals

        if n_slots < 1:
            raise LmforgeError("n_slots must be >= 1")
        # The single-sequence backend gives us the loaded model, tokenizer, template and metadata.
        self._base = LlamaCppBackend(path, model_name=model_name, n_ctx=n_ctx, n_threads=n_threads)
        self.model_name = self._base.model_name
        self._lc = llama_cpp
        self._per_slot = self._base.context_length
        # Start from the single-sequence context's own parameters (flash attention off, YaRN values as the
        # file says), so a request that runs alone decodes exactly as `lmforge generate` does: the
        # library default (flash attention AUTO, i.e. on for CPU) sums attention in fp16 and changes
        # greedy outputs after a few tokens.
        cp = llama_cpp.llama_context_params.from_buffer_copy(self._base._llama.context_params)
        cp.n_ctx = self._per_slot * n_slots
        cp.n_batch = n_batch
        cp.n_ubatch = n_batch
        cp.n_seq_max = n_slots
        threads = self._base._llama.n_threads
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.kv_unified = False
        model = self._base._llama._model
        self._model = model
        self._ctx = _internals.LlamaContext(model=model, params=cp, verbose=False)
        self._n_batch = n_batch
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(model.vocab)
        self.n_slots = n_slots
        self.cached_tokens = 0
        """Prompt tokens served from the prefix cache so far (not decoded again)."""
        self._waiting: queue.Queue[_Request] = queue.Queue()
        self._free = list(range(n_slots))
        self._kv: dict[int, list[int]] = {
            i: [] for i in range(n_slots)
        }  # tokens whose KV each sequence holds
        self._slots: list[_Slot] = []
        self._piece_cache: dict[int, bytes] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._worker = threading.Thread(target=self._loop, name=f"llama-batch-{self.model_name}", daemon=True)
        self._worker.start()

    # -- Backend protocol ---------------------------------------------------------------------
    @property
    def context_length(self) -> int:
        return self._per_slot

    @property
    def chat_template(self) -> str | None:
        return self._base.chat_template

    @property
    def special_tokens(self) -> dict[str, str]:
        return self._base.special_tokens

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return self._base.tokenize(text, add_special=add_special)

    def detokenize(self, ids: list[int]) -> str:
        return self._base.detokenize(ids)

    def embed(self, texts: list[str], *, is_query: bool = False) -> list[list[float]]:
        return self._base.embed(texts, is_query=is_query)

    @property
    def active(self) -> int:
        """Sequences decoding now (for metrics / `lmforge ps`)."""
        return len(self._slots)

    @property
    def alive(self) -> bool:
        """False once the decode thread died: the pool drops the model and reloads it."""
        return self._worker.is_alive()

    def chat(
        self, messages: list[dict[str, Any]], params: SamplingParams, cancel: threading.Event | None = None,
        options: ChatOptions | None = None,
    ) -> ChatStream:  # fmt: skip
        from lmforge.infer.chat import local_chat

        return local_chat(self, messages, params, cancel, options)

    def _check_prompt(self, prompt: list[int], room: int) -> None:
        if not prompt:
            raise LmforgeError("empty prompt: nothing to continue from")
        if len(prompt) > self._per_slot - room:
            raise LmforgeError(
                f"prompt is {len(prompt)} tokens but the context holds {self._per_slot}; shorten it or raise --ctx"
            )
        check_token_ids(prompt, self._n_vocab)
        if self._stop.is_set():
            raise LmforgeError(f"{self.model_name} has been unloaded")

    def score(self, ids: list[int]) -> list[float]:
        return [r["logprob"] for r in self.prompt_logprobs(ids)[1:]]  # type: ignore[index]

    def prompt_logprobs(self, ids: list[int], top: int = 0) -> list[dict | None]:
        """Log-probabilities of every prompt token (None for the first), computed in the shared batch."""
        self._check_prompt(ids, 0)
        req = _Request(ids, SamplingParams(max_tokens=1), 0, None, None, score_top=top)
        self._waiting.put(req)
        self._wake.set()
        while req.out.get() != END:
            pass
        if req.error:
            raise LmforgeError(req.error)
        return [None, *req.prompt_lp]

    def generate(
        self,
        prompt: list[int],
        params: SamplingParams,
        cancel: threading.Event | None = None,
        *,
        grammar: str | None = None,
        logprobs: int | None = None,
    ) -> Iterator[Chunk]:
        """Stream a generation. `grammar` (GBNF) constrains the output; `logprobs` = k asks for the
        chosen token's log-probability and the top-k alternatives on each chunk."""
        params.validate()
        self._check_prompt(prompt, 1)
        req = _Request(
            prompt,
            params,
            min(params.max_tokens, self._per_slot - len(prompt)),
            grammar,
            logprobs,
            external=cancel,
        )
        if grammar is not None:
            self._check_grammar(grammar)
        self._waiting.put(req)
        self._wake.set()
        return self._consume(req, cancel)

    def _consume(self, req: _Request, cancel: threading.Event | None) -> Iterator[Chunk]:
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        extras: dict[int, dict] = {}

        def tokens() -> Iterator[int]:
            while True:
                if cancel is not None and cancel.is_set():
                    req.cancel.set()
                item = req.out.get()
                if item == END:
                    if req.error:
                        raise LmforgeError(req.error)
                    return
                tok, info = item
                if info is not None:
                    extras[tok] = info
                yield tok

        try:
            for chunk in stream_tokens(
                tokens(),
                piece=lambda t: utf8.decode(self._piece(t)),
                final_piece=lambda: utf8.decode(b"", final=True),
                is_end=self._base.is_end_of_generation,
                prompt_len=len(req.prompt),
                budget=req.budget,
                stop=req.params.stop,
                cancel=cancel,
            ):
                if chunk.token_id is not None and chunk.token_id in extras:
                    chunk.logprobs = extras.pop(chunk.token_id)
                elif chunk.end_token is not None and chunk.end_token in extras:
                    chunk.logprobs = extras.pop(chunk.end_token)
                yield chunk
        finally:
            req.cancel.set()  # stop string, budget, cancel, or the caller walked away: free the slot
            self._wake.set()

    def score_text(self, text: str, start: int = 0) -> tuple[float, int]:
        raise CapabilityError(self.kind, self.model_name, "score_text")

    def forward_completions(self, body: dict[str, Any]) -> dict[str, Any] | Iterator[dict[str, Any]]:
        raise CapabilityError(self.kind, self.model_name, "upstream")

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._worker.join(timeout=30)
        self._lc.llama_batch_free(self._batch)
        self._ctx.close()
        self._base.close()

    # -- worker ---------------------------------------------------------------------------------
    def _piece(self, tok: int) -> bytes:
        p = self._piece_cache.get(tok)
        if p is None:
            p = self._base._llama.detokenize([tok])
            self._piece_cache[tok] = p
        return p

    def _check_grammar(self, grammar: str) -> None:
        sampler = self._lc.llama_sampler_init_grammar(self._model.vocab, grammar.encode(), b"root")
        if not sampler:
            raise LmforgeError("the output grammar could not be parsed")
        self._lc.llama_sampler_free(sampler)

    def _make_sampler(self, req: _Request):
        from llama_cpp import _internals

        p = req.params
        s = _internals.LlamaSampler()
        s.add_penalties(
            n_vocab=self._n_vocab,
            penalty_last_n=64,
            penalty_repeat=p.repetition_penalty,
            penalty_freq=p.frequency_penalty,
            penalty_present=p.presence_penalty,
        )
        if req.grammar is not None:
            g = self._lc.llama_sampler_init_grammar(self._model.vocab, req.grammar.encode(), b"root")
            self._lc.llama_sampler_chain_add(s.sampler, g)
        if p.temperature == 0:
            s.add_greedy()
        else:
            if p.top_k > 0:
                s.add_top_k(p.top_k)
            s.add_top_p(p.top_p, 1)
            if p.min_p > 0:
                s.add_min_p(p.min_p, 1)
            s.add_temp(p.temperature)
            s.add_dist(p.seed if p.seed is not None else random.getrandbits(32))
        return s

    def _admit(self) -> None:
        while self._free:
            try:
                req = self._waiting.get_nowait()
            except queue.Empty:
                return
            if req.cancelled():
                req.out.put(END)
                continue
            # prefix cache: reuse the free sequence whose KV shares the longest prefix with this prompt
            # (the next chat turn, or requests with a common system prompt, skip re-reading it)
            seq = max(self._free, key=lambda s: common_prefix(self._kv[s], req.prompt))
            keep = min(common_prefix(self._kv[seq], req.prompt), len(req.prompt) - 1)
            if req.score_top is not None:
                keep = 0  # every prompt position needs its logits
            self._free.remove(seq)
            if not self._lc.llama_memory_seq_rm(self._ctx.memory, seq, keep, -1):
                keep = 0  # this cache type cannot cut a sequence in the middle: start over
                self._lc.llama_memory_seq_rm(self._ctx.memory, seq, -1, -1)
            del self._kv[seq][keep:]
            self.cached_tokens += keep
            self._slots.append(_Slot(seq, req, self._make_sampler(req), n_past=keep, fed=keep))

    def _release(self, slot: _Slot) -> None:
        slot.req.out.put(END)
        slot.sampler.close()
        self._slots.remove(slot)
        self._free.append(slot.seq)  # its KV stays, for prefix reuse by a later request

    def _loop(self) -> None:
        b = self._batch
        while not self._stop.is_set():
            for slot in [s for s in self._slots if s.req.cancelled()]:
                self._release(slot)
            self._admit()
            if not self._slots:
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            # one batch: decoding slots first (1 token each), then prompt chunks in the room left
            b.n_tokens = 0
            rows: list[tuple[_Slot, int]] = []  # (slot, batch row whose logits it samples from)

            for slot in self._slots:
                if slot.last is not None:
                    self._add(slot, slot.last, True, rows)
            scored: list[tuple[_Slot, int, int]] = []  # (slot, batch row, prompt position)
            for slot in self._slots:
                if slot.last is None:
                    room = self._n_batch - b.n_tokens
                    score = slot.req.score_top is not None
                    # the last prompt token gets a decode step of its own, as on a prefix-cache hit (and
                    # in LlamaCppBackend): a repeated request then computes exactly what a fresh one does
                    end = (
                        len(slot.req.prompt)
                        if score or slot.fed >= len(slot.req.prompt) - 1
                        else len(slot.req.prompt) - 1
                    )
                    todo = slot.req.prompt[slot.fed : min(slot.fed + room, end)]
                    for k, tok in enumerate(todo):
                        pos = slot.fed + k
                        if score:
                            if pos < len(slot.req.prompt) - 1:
                                scored.append((slot, b.n_tokens, pos))
                            self._add(slot, tok, pos < len(slot.req.prompt) - 1, [])
                        else:
                            self._add(slot, tok, pos == len(slot.req.prompt) - 1, rows)
                    slot.fed += len(todo)
            if b.n_tokens == 0:
                continue
            rc = self._lc.llama_decode(self._ctx.ctx, b)
            if rc != 0:  # KV full or internal error: fail the requests in this batch, keep serving
                for slot in list(self._slots):
                    slot.req.error = f"llama.cpp could not decode this request (llama_decode returned {rc})"
                    self._release(slot)
                for seq in self._kv:  # the KV state is no longer trustworthy: forget it all
                    self._lc.llama_memory_seq_rm(self._ctx.memory, seq, -1, -1)
                    self._kv[seq] = []
                continue
            for slot, i, pos in scored:
                row = self._logits_row(i)[None, :]  # (1, V)
                slot.req.prompt_lp += log_softmax_rows(
                    row, [slot.req.prompt[pos + 1]], slot.req.score_top or 0
                )
            for slot in [s for s in self._slots if s.req.score_top is not None]:
                if slot.fed >= len(slot.req.prompt):
                    self._release(slot)
            for slot, i in rows:
                tok = self._lc.llama_sampler_sample(slot.sampler.sampler, self._ctx.ctx, i)
                info = self._logprobs(i, tok, slot.req.logprobs) if slot.req.logprobs is not None else None
                slot.req.out.put((tok, info))
                slot.last = tok
                slot.produced += 1
                if slot.produced >= slot.req.budget or self._base.is_end_of_generation(tok):
                    self._release(slot)

    def _add(self, slot: _Slot, tok: int, want_logits: bool, rows: list[tuple[_Slot, int]]) -> None:
        b = self._batch
        i = b.n_tokens
        b.token[i] = tok
        b.pos[i] = slot.n_past
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = slot.seq
        b.logits[i] = want_logits
        b.n_tokens = i + 1
        slot.n_past += 1
        self._kv[slot.seq].append(tok)
        if want_logits:
            rows.append((slot, i))

    def _logits_row(self, row: int) -> np.ndarray:
        """The logits of batch row `row` (a view into llama.cpp's buffer: use before the next decode)."""
        ptr = self._lc.llama_get_logits_ith(self._ctx.ctx, row)
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self._n_vocab,))

    def _logprobs(self, row: int, tok: int, k: int) -> dict:
        return log_softmax_rows(self._logits_row(row)[None, :], [tok], k)[0]
