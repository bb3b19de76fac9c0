"""llama.cpp backend (llama-cpp-python): the default for GGUF files on CPU.

Decode speed on CPU is bounded by memory bandwidth; llama.cpp gets close to that bound, so this
wrapper must add next to nothing per token: it drives `Llama.generate` (C-side sampler chain, KV
prefix reuse across chat turns) and only does end-of-generation checks, UTF-8 reassembly and stop
strings in Python. benchmarks/decode.py measures the overhead against a bare llama-cpp-python loop.
"""

from __future__ import annotations

import codecs
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.errors import LmforgeError
from lmforge.formats import inspect_gguf
from lmforge.infer.base import (
    DEFAULT_CTX,
    Capabilities,
    CapabilityError,
    ChatOptions,
    ChatStream,
    Chunk,
    check_token_ids,
    common_prefix,
    stream_tokens,
)
from lmforge.infer.sampling import SamplingParams

LOGSOFTMAX_BLOCK = 128
"""Rows per log-softmax block: a 150k-word vocabulary makes each row 600 kB."""


def log_normaliser(block: np.ndarray) -> np.ndarray:
    """log Σ exp of each row of float32 logits (B, V), in float64: (B,)."""
    m = block.max(axis=1, keepdims=True)
    return m[:, 0].astype(np.float64) + np.log(np.exp(block - m).sum(axis=1, dtype=np.float64))


def log_softmax_rows(rows: np.ndarray, targets: list[int], top: int) -> list[dict[str, Any]]:
    """For logits rows (B, V) and the token each row should have predicted: {'logprob', 'top'}
    with the `top` most likely alternatives, computed in float64 for the normaliser."""
    out = []
    for s in range(0, len(rows), LOGSOFTMAX_BLOCK):
        block = np.asarray(rows[s : s + LOGSOFTMAX_BLOCK], dtype=np.float32)  # (B, V)
        logz = log_normaliser(block)  # (B,)
        for r in range(len(block)):
            entry: dict[str, Any] = {"logprob": float(block[r, targets[s + r]] - logz[r]), "top": []}
            if top > 0:
                best = np.argpartition(-block[r], top)[:top]
                best = best[np.argsort(-block[r, best], kind="stable")]
                entry["top"] = [(int(t), float(block[r, t] - logz[r])) for t in best]
            out.append(entry)
    return out


class LlamaCppBackend:
    kind = "llamacpp"

    def __init__(
        self,
        path: Path,
        *,
        model_name: str = "",
        n_ctx: int | None = None,
        n_threads: int | None = None,
        embedding: bool = False,
        logits_all: bool = False,
        n_batch: int = 512,
    ) -> None:
        import llama_cpp

        info = inspect_gguf(path)  # clear error for corrupt / truncated files before llama.cpp sees them
        trained = info.context_length or DEFAULT_CTX
        ctx = min(n_ctx or DEFAULT_CTX, trained)
        if n_ctx is not None and n_ctx > trained:
            raise LmforgeError(f"context {n_ctx} exceeds what {path.name} was trained for ({trained})")
        threads = n_threads or os.cpu_count() or 1
        try:
            self._llama = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=ctx,
                n_batch=min(n_batch, ctx),
                n_threads=threads,
                n_threads_batch=threads,
                embedding=embedding,
                logits_all=logits_all,
                verbose=False,
            )
        except (ValueError, RuntimeError) as e:
            raise LmforgeError(f"llama.cpp could not load {path}: {e}") from e
        self._llama_cpp = llama_cpp
        self.model_name = model_name or path.stem
        self.path = path
        self.info = info
        self._embedding = embedding
        self._logits_all = logits_all
        self._lock = threading.Lock()  # one generation at a time per loaded context
        self.capabilities = Capabilities(
            chat=not embedding, tokens=True, score=logits_all, grammar=not embedding, tools=not embedding,
            embed=embedding, judge=not embedding,
        )  # fmt: skip

    @property
    def alive(self) -> bool:
        return True

    @property
    def active(self) -> int:
        return int(self._lock.locked())

    def chat(
        self, messages: list[dict[str, Any]], params: SamplingParams, cancel: threading.Event | None = None,
        options: ChatOptions | None = None,
    ) -> ChatStream:  # fmt: skip
        from lmforge.infer.chat import local_chat

        return local_chat(self, messages, params, cancel, options)

    @property
    def context_length(self) -> int:
        return int(self._llama.n_ctx())

    @property
    def chat_template(self) -> str | None:
        return self._llama.metadata.get("tokenizer.chat_template")

    @property
    def special_tokens(self) -> dict[str, str]:
        def piece(tok: int) -> str:
            if tok < 0:
                return ""
            return self._llama.detokenize([tok], special=True).decode("utf-8", errors="replace")

        return {"bos_token": piece(self._llama.token_bos()), "eos_token": piece(self._llama.token_eos())}

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return self._llama.tokenize(text.encode("utf-8"), add_bos=add_special, special=True)

    def detokenize(self, ids: list[int]) -> str:
        check_token_ids(ids, self._llama.n_vocab())
        return self._llama.detokenize(ids).decode("utf-8", errors="replace")

    def is_end_of_generation(self, token: int) -> bool:
        return bool(self._llama_cpp.llama_vocab_is_eog(self._llama._model.vocab, token))

    def generate(
        self, prompt: list[int], params: SamplingParams, cancel: threading.Event | None = None, *,
        grammar: str | None = None, logprobs: int | None = None,
    ) -> Iterator[Chunk]:  # fmt: skip
        params.validate()
        if logprobs is not None:
            raise CapabilityError(
                self.kind, self.model_name, "logprobs", "the server's batched engine has them"
            )
        if self._embedding:
            raise CapabilityError(self.kind, self.model_name, "chat")
        if not prompt:
            raise LmforgeError("empty prompt: nothing to continue from")
        n_ctx = self.context_length
        if len(prompt) >= n_ctx:
            raise LmforgeError(
                f"prompt is {len(prompt)} tokens but the context holds {n_ctx}; shorten it or raise --ctx"
            )
        budget = min(params.max_tokens, n_ctx - len(prompt))
        check_token_ids(prompt, self._llama.n_vocab())
        compiled = None
        if grammar is not None:
            from llama_cpp.llama_grammar import LlamaGrammar

            try:
                compiled = LlamaGrammar.from_string(grammar, verbose=False)
            except ValueError as e:
                raise LmforgeError(f"the output grammar could not be parsed: {e}") from e
        return self._generate(prompt, params, cancel, budget, compiled)

    def _prefill(self, prompt: list[int]) -> None:
        """Decode all but the last prompt token (reusing a cached prefix); `Llama.generate` then
        decodes the last one on its own. A cache hit does exactly that, so splitting every prompt the
        same way makes a repeated request compute what a fresh one does (and what the batched
        engine computes)."""
        llama = self._llama
        head = prompt[:-1]
        keep = common_prefix(list(llama.input_ids[: llama.n_tokens]), head)
        if keep < len(head):
            if keep:
                llama.n_tokens = keep  # eval() drops the KV cells past this point
            else:
                llama.reset()
            llama.eval(head[keep:])

    def _generate(self, prompt, params, cancel, budget, grammar) -> Iterator[Chunk]:  # noqa: ANN001
        with self._lock:
            self._prefill(prompt)
            self._llama.set_seed(params.seed if params.seed is not None else random.getrandbits(32))
            utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
            gen = self._llama.generate(
                prompt,
                top_k=params.top_k,
                top_p=params.top_p,
                min_p=params.min_p,
                temp=params.temperature,
                repeat_penalty=params.repetition_penalty,
                presence_penalty=params.presence_penalty,
                frequency_penalty=params.frequency_penalty,
                reset=True,
                grammar=grammar,
            )
            try:
                yield from stream_tokens(
                    gen,
                    piece=lambda tok: utf8.decode(self._llama.detokenize([tok])),
                    final_piece=lambda: utf8.decode(b"", final=True),
                    is_end=self.is_end_of_generation,
                    prompt_len=len(prompt),
                    budget=budget,
                    stop=params.stop,
                    cancel=cancel,
                )
            finally:
                gen.close()

    def score(self, ids: list[int]) -> list[float]:
        """log p(ids[i] | ids[:i]) for i = 1..len-1 (needs the backend built with logits_all=True)."""
        return [r["logprob"] for r in self._rows(ids, 0)]

    def prompt_logprobs(self, ids: list[int], top: int = 0) -> list[dict | None]:
        return [None, *self._rows(ids, top)]

    def _rows(self, ids: list[int], top: int) -> list[dict[str, Any]]:
        if not self._logits_all:
            raise CapabilityError(self.kind, self.model_name, "score", "load it with logits_all (LoadConfig)")
        if len(ids) > self.context_length:
            raise LmforgeError(f"{len(ids)} tokens do not fit the {self.context_length}-token context")
        check_token_ids(ids, self._llama.n_vocab())
        with self._lock:
            # reuse the KV cache (and the logits rows) of a shared prefix with the previous call: the
            # choices of a multiple-choice question share their whole context
            self._eval_reusing(ids)
            # llama.scores is (n_ctx, V) float32, a view: read it before the next eval
            return log_softmax_rows(self._llama.scores[: len(ids) - 1], ids[1:], top)

    def _eval_reusing(self, ids: list[int]) -> None:
        """Evaluate `ids`, keeping the KV cache of the prefix they share with what the context holds; at least
        the last token is decoded, so its logits are fresh. Call under the lock."""
        llama = self._llama
        keep = common_prefix(list(llama.input_ids[: llama.n_tokens]), ids[:-1])
        if keep > 0:
            llama.n_tokens = keep  # eval() drops the KV cells past this point
        else:
            llama.reset()
        llama.eval(ids[keep:])

    def next_logprobs(self, prompts: list[list[int]], tokens: list[int]) -> list[list[float]]:
        """log p(token | prompt) for each prompt and each of `tokens`. Prompts run one after another on this
        context, each reusing the KV cache of what it shares with the one before (put the shared part first:
        instructions and question, then the passage), and only the last position's logits are read."""
        if self._embedding:
            raise CapabilityError(self.kind, self.model_name, "judge", "it was loaded as an embedding model")
        n_vocab = self._llama.n_vocab()
        check_token_ids(tokens, n_vocab)
        out = []
        with self._lock:
            llama = self._llama
            for ids in prompts:
                if not ids or len(ids) > self.context_length:
                    raise LmforgeError(
                        f"a prompt of {len(ids)} tokens does not fit the {self.context_length}-token context"
                    )
                check_token_ids(ids, n_vocab)
                self._eval_reusing(ids)  # logits of the last position only (unless logits_all)
                row = np.ctypeslib.as_array(llama._ctx.get_logits_ith(-1), shape=(1, n_vocab))
                logz = log_normaliser(row)[0]
                out.append([float(row[0, t] - logz) for t in tokens])
        return out

    def embed(self, texts: list[str], *, is_query: bool = False) -> list[list[float]]:
        if not self._embedding:
            raise CapabilityError(
                self.kind, self.model_name, "embed", "it was not loaded as an embedding model"
            )
        out = []
        for t in texts:
            v = np.asarray(self._llama.embed(t), dtype=np.float32)
            if v.ndim == 2:  # no pooling in the model: mean over tokens
                v = v.mean(axis=0)
            out.append((v / (np.linalg.norm(v) or 1.0)).tolist())
        return out

    def score_text(self, text: str, start: int = 0) -> tuple[float, int]:
        raise CapabilityError(self.kind, self.model_name, "score_text")

    def forward_completions(self, body: dict[str, Any]) -> dict[str, Any] | Iterator[dict[str, Any]]:
        raise CapabilityError(self.kind, self.model_name, "upstream")

    def close(self) -> None:
        self._llama.close()
