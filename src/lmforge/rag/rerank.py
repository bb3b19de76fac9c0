"""Pointwise reranking by a local LLM's probability of "yes" (`kb search --rerank MODEL --rerank-mode pointwise`):
for each candidate, p(yes) / (p(yes) + p(no)) after "Question … Passage … Does the passage answer the question?"
— one scoring pass per candidate and no generation. The question comes first, so the prompt's shared prefix
(instructions + question) is evaluated once and its KV cache reused for every candidate (the llama.cpp backends
keep the common prefix of consecutive calls); each candidate then costs only its passage's tokens, cut to
`max_passage_tokens`.

Needs a backend with the `score` capability (a local GGUF loaded with logits for every position, or the
server's batched engine). The listwise reranker (retrieve.LLMReranker) stays for remote models.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.infer.base import require
from lmforge.rag.retrieve import Hit

INSTRUCTION = "Judge whether the passage answers the question. Reply with yes or no."


@dataclass(frozen=True)
class PointwiseConfig:
    max_passage_tokens: int = 96
    """Tokens of each passage shown (the start of the chunk)."""
    top: int = 20
    """Alternatives read at the answer position to find "no" beside "yes"."""


class PointwiseReranker:
    """Reorders hits by the model's p(yes); `last_seconds` is the time of the last call."""

    def __init__(self, backend: Any, cfg: PointwiseConfig | None = None) -> None:
        require(backend, "score", "pointwise reranking reads the model's next-token probabilities")
        self.backend = backend
        self.cfg = cfg or PointwiseConfig()
        self.last_seconds = 0.0
        chatml = "<|im_start|>" in (backend.chat_template or "")
        if chatml:
            self._head = (
                f"<|im_start|>system\n{INSTRUCTION}<|im_end|>\n<|im_start|>user\nQuestion: {{q}}\nPassage: "
            )
            self._tail = "\nDoes the passage answer the question?<|im_end|>\n<|im_start|>assistant\n"
        else:
            self._head = f"{INSTRUCTION}\n\nQuestion: {{q}}\nPassage: "
            self._tail = "\nDoes the passage answer the question? Answer:"
        self._yes = self._first(["yes", "Yes", " yes"])
        self._no = self._first(["no", "No", " no"])

    def _first(self, words: list[str]) -> list[int]:
        """The token ids that start each spelling of the word (a single token in real vocabularies; the first
        piece where a tiny vocabulary splits it)."""
        ids: list[int] = []
        for w in words:
            t = self.backend.tokenize(w, add_special=False)
            if t and t[0] not in ids:
                ids.append(t[0])
        if not ids:
            raise LmforgeError(
                f"{self.backend.model_name}: cannot tokenize {words[0]!r} for pointwise reranking"
            )
        return ids

    def score(self, question: str, text: str) -> float:
        """p(yes) / (p(yes) + p(no)) for one passage."""
        head = self.backend.tokenize(self._head.format(q=question), add_special=False)
        body = self.backend.tokenize(text, add_special=False)[: self.cfg.max_passage_tokens]
        tail = self.backend.tokenize(self._tail, add_special=False)
        ids = head + body + tail + [self._yes[0]]
        row = self.backend.prompt_logprobs(ids, top=self.cfg.top)[-1]
        top = dict(row["top"])
        yes = [top.get(i, row["logprob"] if i == self._yes[0] else -math.inf) for i in self._yes]
        no = [top.get(i, -math.inf) for i in self._no]
        p_yes = sum(math.exp(x) for x in yes if x > -math.inf)
        p_no = sum(math.exp(x) for x in no if x > -math.inf)
        return p_yes / (p_yes + p_no) if p_yes + p_no > 0 else 0.0

    def __call__(self, query: str, hits: list[Hit]) -> list[Hit]:
        t0 = time.perf_counter()
        scored = [(self.score(query, h.text), i, h) for i, h in enumerate(hits)]
        scored.sort(key=lambda x: (-x[0], x[1]))
        self.last_seconds = time.perf_counter() - t0
        return [replace(h, score=round(s, 6)) for s, _, h in scored]
