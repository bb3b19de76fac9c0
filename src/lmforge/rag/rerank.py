"""Pointwise reranking by a local LLM's probability of "yes" (`kb search --rerank MODEL --rerank-mode pointwise`):
for each candidate, p(yes) / (p(yes) + p(no)) after "Question … Passage … Does the passage answer the question?"
— one position's logits per candidate and no generation. The question comes first, so the prompt's shared
prefix (instructions + question) is evaluated once and its KV cache reused for every candidate (llama.cpp keeps
the common prefix of consecutive prompts); each candidate then costs only its passage's tokens, cut to
`max_passage_tokens`, and only the last position goes through the output layer (`next_logprobs`, the `judge`
capability: no logits_all context needed). A transformers model scores the candidates as one batch whose shared
prefix is evaluated once, its KV cache repeated for every row.

Backends without `judge` but with `score` (the server's batched engine) read the same probability from
`prompt_logprobs`, one candidate at a time. The listwise reranker (retrieve.LLMReranker) stays for remote models.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from lmforge.errors import LmforgeError
from lmforge.infer.base import require
from lmforge.rag.retrieve import Hit, rrf

if TYPE_CHECKING:
    from lmforge.home import Registry

INSTRUCTION = "Judge whether the passage answers the question. Reply with yes or no."


JUDGE_DTYPES = ("auto", "float32", "bfloat16")
"""Weights a transformers judge loads with; 'auto': whichever judges faster here (load_judge)."""


def load_judge(
    registry: Registry, model: str, dtype: str = "auto", say: Callable[[str], None] | None = None
) -> Any:
    """The backend the pointwise reranker judges with. `dtype` matters for transformers models only: 'float32',
    'bfloat16', or 'auto' — whichever scores a batch faster on this machine, measured once per (CPU, model) and
    remembered in LMFORGE_HOME/hardware.json (on an AVX512-BF16 CPU bf16 judged 3.6x faster than fp32; on CPUs
    without it bf16 is slower). `say` hears about a first measurement."""
    from lmforge.hardware import cpu_name, recall, remember
    from lmforge.infer.loader import LoadConfig, load_backend

    if dtype not in JUDGE_DTYPES:
        raise LmforgeError(f"unknown judge dtype {dtype!r}: use {', '.join(JUDGE_DTYPES)}")
    m = registry.get(model) if registry.exists(model) else None
    if m is None or m.format != "hf" or dtype != "auto":
        return load_backend(registry, model, LoadConfig(dtype="float32" if dtype == "auto" else dtype))
    key = f"{cpu_name()}|judge|{m.name}|{m.params}"
    known = recall(registry, key)
    if known is not None:
        return load_backend(registry, model, LoadConfig(dtype=known["used"]))
    if say:
        say(f"measuring whether {model} judges faster in float32 or bfloat16 on this machine (once) ...")
    backends = {d: load_backend(registry, model, LoadConfig(dtype=d)) for d in ("float32", "bfloat16")}
    seconds = {d: _time_judge(b) for d, b in backends.items()}
    used = "bfloat16" if seconds["bfloat16"] < 0.95 * seconds["float32"] else "float32"
    backends.pop("float32" if used == "bfloat16" else "bfloat16").close()
    remember(registry, key, {"used": used, "float32_s": round(seconds["float32"], 4),
                             "bfloat16_s": round(seconds["bfloat16"], 4)})  # fmt: skip
    return backends[used]


def _time_judge(backend: Any, rows: int = 8, shared: int = 32, own: int = 48) -> float:
    """Seconds for one judge batch shaped like the reranker's (a shared prefix, then each row's own tokens), the
    best of two after a warm-up."""
    vocab = int(backend.model.config.vocab_size)
    prefix = [(7 * i + 11) % vocab for i in range(shared)]
    prompts = [prefix + [(13 * (r * own + i) + 5) % vocab for i in range(own)] for r in range(rows)]
    backend.next_logprobs(prompts[:2], [0])
    best = math.inf
    for _ in range(2):
        t = time.perf_counter()
        backend.next_logprobs(prompts, [0])
        best = min(best, time.perf_counter() - t)
    return best


@dataclass(frozen=True)
class PointwiseConfig:
    max_passage_tokens: int = 48
    """Tokens of each passage shown (the start of the chunk). The judge's cost is these tokens times the
    candidates; on the hard set the default model judged as well from 48 as from 96 (hit@5 0.667 both, MRR 0.450
    against 0.436, transformers bf16) in 1.45 s for 20 candidates against 2.33 s (benchmarks/rerank.py)."""
    top: int = 20
    """Alternatives read at the answer position to find "no" beside "yes" (backends without `judge`)."""
    retrieval_weight: float = 1.0
    """> 0: the final order fuses the retrieval order (this weight) with the judge's (weight 1) by RRF, and a
    hit's score is the fused one; 0: the judge's p(yes) alone decides and is the score. Measured on the hard
    set with the default model (benchmarks/rag.py part 4): hit@5 0.500 / MRR 0.256 fused, 0.444 / 0.208 by
    p(yes) alone, 0.583 / 0.242 without reranking — fused is the less harmful, and reranking stays off."""
    rrf_k: int = 10
    """RRF constant of that fusion: small, because it fuses two orders of at most 2k candidates."""


class PointwiseReranker:
    """Reorders hits by the model's p(yes), fused with their retrieval order unless `retrieval_weight` is 0;
    `last_seconds` is the time of the last call."""

    def __init__(self, backend: Any, cfg: PointwiseConfig | None = None) -> None:
        if not backend.capabilities.judge:
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

    def prompts(self, question: str, texts: list[str]) -> list[list[int]]:
        """The judge's prompt for each passage: the question's head and the tail tokenized once for all."""
        head = self.backend.tokenize(self._head.format(q=question), add_special=False)
        tail = self.backend.tokenize(self._tail, add_special=False)
        return [head + self.backend.tokenize(t, add_special=False)[: self.cfg.max_passage_tokens] + tail
                for t in texts]  # fmt: skip

    def _prompt(self, question: str, text: str) -> list[int]:
        return self.prompts(question, [text])[0]

    def scores(self, question: str, texts: list[str]) -> list[float]:
        """p(yes) / (p(yes) + p(no)) for each passage."""
        prompts = self.prompts(question, texts)
        if not self.backend.capabilities.judge:
            return [self._scored(p) for p in prompts]
        out = []
        for row in self.backend.next_logprobs(prompts, self._yes + self._no):
            p_yes = sum(math.exp(x) for x in row[: len(self._yes)])
            p_no = sum(math.exp(x) for x in row[len(self._yes) :])
            out.append(p_yes / (p_yes + p_no) if p_yes + p_no > 0 else 0.0)
        return out

    def score(self, question: str, text: str) -> float:
        """p(yes) / (p(yes) + p(no)) for one passage."""
        return self.scores(question, [text])[0]

    def _scored(self, prompt: list[int]) -> float:
        """The same probability through `prompt_logprobs` (the top alternatives at the answer position)."""
        row = self.backend.prompt_logprobs(prompt + [self._yes[0]], top=self.cfg.top)[-1]
        top = dict(row["top"])
        yes = [top.get(i, row["logprob"] if i == self._yes[0] else -math.inf) for i in self._yes]
        no = [top.get(i, -math.inf) for i in self._no]
        p_yes = sum(math.exp(x) for x in yes if x > -math.inf)
        p_no = sum(math.exp(x) for x in no if x > -math.inf)
        return p_yes / (p_yes + p_no) if p_yes + p_no > 0 else 0.0

    def __call__(self, query: str, hits: list[Hit]) -> list[Hit]:
        t0 = time.perf_counter()
        judged = self.scores(query, [h.text for h in hits])
        if self.cfg.retrieval_weight > 0:  # fuse the judge's order with the retrieval order (RRF)
            by_judge = sorted(range(len(hits)), key=lambda i: (-judged[i], i))
            fused = rrf(
                [(self.cfg.retrieval_weight, list(range(len(hits)))), (1.0, by_judge)], self.cfg.rrf_k
            )
            scored = [(s, i, hits[i]) for i, s in fused]
        else:
            scored = sorted(((s, i, h) for i, (s, h) in enumerate(zip(judged, hits, strict=True))),
                            key=lambda x: (-x[0], x[1]))  # fmt: skip
        self.last_seconds = time.perf_counter() - t0
        return [replace(h, score=round(s, 6)) for s, _, h in scored]
