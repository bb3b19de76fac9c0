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

from lmforge.errors import LmforgeError
from lmforge.formats import inspect_gguf
from lmforge.infer.base import Chunk, stream_tokens
from lmforge.infer.sampling import SamplingParams

DEFAULT_CTX = 4096


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
        return self._llama.detokenize(ids).decode("utf-8", errors="replace")

    def is_end_of_generation(self, token: int) -> bool:
        return bool(self._llama_cpp.llama_vocab_is_eog(self._llama._model.vocab, token))

    def generate(
        self, prompt: list[int], params: SamplingParams, cancel: threading.Event | None = None
    ) -> Iterator[Chunk]:
        params.validate()
        if not prompt:
            raise LmforgeError("empty prompt: nothing to continue from")
        n_ctx = self.context_length
        if len(prompt) >= n_ctx:
            raise LmforgeError(
                f"prompt is {len(prompt)} tokens but the context holds {n_ctx}; shorten it or raise --ctx"
            )
        budget = min(params.max_tokens, n_ctx - len(prompt))
        with self._lock:
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
        if not self._logits_all:
            raise LmforgeError(f"{self.model_name} was loaded without logits_all; it cannot score text")
        import numpy as np

        if len(ids) > self.context_length:
            raise LmforgeError(f"{len(ids)} tokens do not fit the {self.context_length}-token context")
        out: list[float] = []
        with self._lock:
            # reuse the KV cache (and the logits rows) of a shared prefix with the previous call: the
            # choices of a multiple-choice question share their whole context
            llama = self._llama
            cached = np.asarray(llama.input_ids[: llama.n_tokens])
            n = min(len(cached), len(ids) - 1)  # always decode at least the last token
            same = cached[:n] == np.asarray(ids[:n])
            keep = n if same.all() else int(np.argmin(same))
            if keep > 0:
                llama.n_tokens = keep  # eval() drops the KV cells past this point
            else:
                llama.reset()
            llama.eval(ids[keep:])
            scores = llama.scores  # (n_ctx, V) float32, a view: read it before the next eval
            for s in range(0, len(ids) - 1, 128):  # log-softmax in blocks: a 150k vocabulary is big
                block = np.asarray(scores[s : min(s + 128, len(ids) - 1)], dtype=np.float32)  # (B, V)
                m = block.max(axis=1, keepdims=True)
                logz = m[:, 0].astype(np.float64) + np.log(np.exp(block - m).sum(axis=1, dtype=np.float64))
                target = block[np.arange(len(block)), ids[s + 1 : s + 1 + len(block)]]
                out.extend((target - logz).tolist())
        return out

    def embed(self, texts: list[str], *, is_query: bool = False) -> list[list[float]]:
        if not self._embedding:
            raise LmforgeError(f"{self.model_name} was not loaded as an embedding model")
        import numpy as np

        out = []
        for t in texts:
            v = np.asarray(self._llama.embed(t), dtype=np.float32)
            if v.ndim == 2:  # no pooling in the model: mean over tokens
                v = v.mean(axis=0)
            out.append((v / (np.linalg.norm(v) or 1.0)).tolist())
        return out

    def close(self) -> None:
        self._llama.close()
