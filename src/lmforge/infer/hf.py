"""transformers backend: any Hugging Face checkpoint (or a GGUF dequantized by transformers).

Used for training-time evaluation, for models llama.cpp cannot run, and as the reference side of
the GGUF export parity check. Generation is a plain KV-cached loop (not `model.generate`) so that
it streams, can be cancelled between tokens and shares `stream_tokens` with the other backends;
the sampling steps themselves are transformers' own logits processors.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

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
from lmforge.infer.sampling import SamplingParams

Head = Literal["causal", "masked", "embedding"]


def load_tokenizer(path: Path) -> Any:
    """The tokenizer of an HF folder, or of a GGUF file (transformers reads it out of the file)."""
    from transformers import AutoTokenizer

    folder, gguf_file = (path.parent, path.name) if path.is_file() else (path, None)
    try:
        return AutoTokenizer.from_pretrained(str(folder), **({"gguf_file": gguf_file} if gguf_file else {}))
    except (OSError, ValueError, KeyError) as e:
        raise LmforgeError(f"transformers could not read the tokenizer of {path}: {e}") from e


def load_pretrained(path: Path, head: Head, dtype: str = "float32", adapter: Path | None = None,
                    merge_adapter: bool = True) -> tuple[Any, Any]:  # fmt: skip
    """(tokenizer, model in eval mode) for an HF folder or a GGUF file that transformers dequantizes,
    with a peft `adapter` folder attached (merged into the weights when it can be). The one place
    lmforge calls `from_pretrained` for inference."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

    folder, gguf_file = (path.parent, path.name) if path.is_file() else (path, None)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    cls = {"causal": AutoModelForCausalLM, "masked": AutoModelForMaskedLM, "embedding": AutoModel}[head]
    tokenizer = load_tokenizer(path)
    try:
        model = cls.from_pretrained(str(folder), dtype=getattr(torch, dtype), **kwargs).eval()
    except (OSError, ValueError, KeyError) as e:
        raise LmforgeError(f"transformers could not load {path}: {e}") from e
    if adapter is not None:
        from lmforge.train.merge import attach

        model = attach(model, adapter, adapter.name, merge=merge_adapter)
        tokenizer = load_tokenizer(adapter) if (adapter / "tokenizer_config.json").exists() else tokenizer
    return tokenizer, model


class TransformersBackend:
    kind = "transformers"

    def __init__(
        self,
        path: Path,
        *,
        model_name: str = "",
        n_ctx: int | None = None,
        n_threads: int | None = None,
        embedding: bool = False,
        dtype: str = "float32",
        adapter: Path | None = None,
        merge_adapter: bool = True,
    ) -> None:
        """`adapter`: a peft folder run on top of the model at `path` (merged on load when it can be)."""
        import torch

        if n_threads:
            torch.set_num_threads(n_threads)
        self._torch = torch
        self.tokenizer, self.model = load_pretrained(path, "embedding" if embedding else "causal", dtype, adapter,
                                                     merge_adapter)  # fmt: skip
        self.model_name = model_name or path.name
        self._embedding = embedding
        trained = int(getattr(self.model.config, "max_position_embeddings", 0) or 2048)
        if n_ctx is not None and n_ctx > trained:
            raise LmforgeError(f"context {n_ctx} exceeds what {path.name} was trained for ({trained})")
        self._ctx = n_ctx or trained
        eos = self.model.generation_config.eos_token_id if not embedding else None
        eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self._eos = eos_ids
        self._lock = threading.Lock()
        self.capabilities = Capabilities(
            chat=not embedding,
            tokens=True,
            score=not embedding,
            tools=not embedding,
            embed=embedding,
            judge=not embedding,
        )

    @property
    def alive(self) -> bool:
        return self.model is not None

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
        return self._ctx

    @property
    def chat_template(self) -> str | None:
        tmpl = getattr(self.tokenizer, "chat_template", None)
        return tmpl if isinstance(tmpl, str) else None

    @property
    def special_tokens(self) -> dict[str, str]:
        return {"bos_token": self.tokenizer.bos_token or "", "eos_token": self.tokenizer.eos_token or ""}

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def detokenize(self, ids: list[int]) -> str:
        self._check_ids(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _processors(self, p: SamplingParams):
        from transformers.generation.logits_process import (
            LogitsProcessorList,
            MinPLogitsWarper,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        procs = LogitsProcessorList()
        if p.repetition_penalty != 1.0:
            procs.append(RepetitionPenaltyLogitsProcessor(p.repetition_penalty))
        if p.temperature > 0:
            procs.append(TemperatureLogitsWarper(p.temperature))
            if p.top_k > 0:
                procs.append(TopKLogitsWarper(p.top_k))
            if p.top_p < 1.0:
                procs.append(TopPLogitsWarper(p.top_p))
            if p.min_p > 0:
                procs.append(MinPLogitsWarper(p.min_p))
        return procs

    def _token_ids(self, prompt: list[int], p: SamplingParams) -> Iterator[int]:
        torch = self._torch
        gen = torch.Generator()
        gen.manual_seed(p.seed if p.seed is not None else int(torch.seed() % 2**32))
        procs = self._processors(p)
        ids = torch.tensor([prompt])  # (1, T)
        seen = ids
        counts: dict[int, int] = {}
        with torch.inference_mode():
            out = self.model(input_ids=ids, use_cache=True)
            while True:
                logits = out.logits[:, -1, :].float()  # (1, V)
                if counts and (p.presence_penalty or p.frequency_penalty):
                    idx = torch.tensor(list(counts))
                    cnt = torch.tensor(list(counts.values()), dtype=logits.dtype)
                    logits[0, idx] -= p.presence_penalty + p.frequency_penalty * cnt
                scores = procs(seen, logits)
                if p.temperature == 0:
                    tok = int(scores.argmax(dim=-1))
                else:
                    probs = torch.softmax(scores, dim=-1)
                    tok = int(torch.multinomial(probs, 1, generator=gen))
                counts[tok] = counts.get(tok, 0) + 1
                yield tok
                nxt = torch.tensor([[tok]])  # (1, 1)
                seen = torch.cat([seen, nxt], dim=1)
                out = self.model(input_ids=nxt, cache=out.cache, use_cache=True)

    def generate(
        self, prompt: list[int], params: SamplingParams, cancel: threading.Event | None = None, *,
        grammar: str | None = None, logprobs: int | None = None,
    ) -> Iterator[Chunk]:  # fmt: skip
        params.validate()
        if self._embedding:
            raise CapabilityError(self.kind, self.model_name, "chat")
        if grammar is not None:
            raise CapabilityError(
                self.kind, self.model_name, "grammar", "serve it as a GGUF model on llama.cpp"
            )
        if logprobs is not None:
            raise CapabilityError(
                self.kind, self.model_name, "logprobs", "serve it as a GGUF model on llama.cpp"
            )
        if not prompt:
            raise LmforgeError("empty prompt: nothing to continue from")
        if len(prompt) >= self._ctx:
            raise LmforgeError(
                f"prompt is {len(prompt)} tokens but the context holds {self._ctx}; shorten it or raise --ctx"
            )
        self._check_ids(prompt)
        return self._generate(prompt, params, cancel)

    def _check_ids(self, ids: list[int]) -> None:
        check_token_ids(ids, int(self.model.config.vocab_size))

    def _generate(
        self, prompt: list[int], params: SamplingParams, cancel: threading.Event | None
    ) -> Iterator[Chunk]:
        generated: list[int] = []
        shown = [""]

        def piece(tok: int) -> str:
            # Decode the whole answer so far and hand out the new tail; hold a trailing
            # replacement char (a multi-byte character split across tokens) until it completes.
            generated.append(tok)
            full = self.tokenizer.decode(generated, skip_special_tokens=True)
            if full.endswith("\ufffd"):
                return ""
            new, shown[0] = full[len(shown[0]) :], full
            return new

        def final_piece() -> str:
            full = self.tokenizer.decode(generated, skip_special_tokens=True)
            return full[len(shown[0]) :]

        with self._lock:
            yield from stream_tokens(
                self._token_ids(prompt, params),
                piece=piece,
                final_piece=final_piece,
                is_end=lambda t: t in self._eos,
                prompt_len=len(prompt),
                budget=min(params.max_tokens, self._ctx - len(prompt)),
                stop=params.stop,
                cancel=cancel,
            )

    def score(self, ids: list[int]) -> list[float]:
        """log p(ids[i] | ids[:i]) for i = 1..len-1 (natural log)."""
        return [r["logprob"] for r in self._rows(ids, 0)]

    def prompt_logprobs(self, ids: list[int], top: int = 0) -> list[dict | None]:
        return [None, *self._rows(ids, top)]

    def _rows(self, ids: list[int], top: int) -> list[dict[str, Any]]:
        if self._embedding:
            raise CapabilityError(self.kind, self.model_name, "score")
        self._check_ids(ids)
        torch = self._torch
        with self._lock, torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids])).logits[0, :-1].float()  # (T-1, V)
            logp = torch.log_softmax(logits, dim=-1)  # (T-1, V)
            chosen = logp.gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1).tolist()  # (T-1,)
            rows: list[dict[str, Any]] = [{"logprob": lp, "top": []} for lp in chosen]
            if top > 0:
                values, index = logp.topk(top, dim=-1)  # (T-1, top)
                for r, (v, i) in enumerate(zip(values.tolist(), index.tolist(), strict=True)):
                    rows[r]["top"] = list(zip(i, v, strict=True))
            return rows

    def next_logprobs(
        self, prompts: list[list[int]], tokens: list[int], batch: int = 32, share_prefix: bool = True
    ) -> list[list[float]]:
        """log p(token | prompt) for each prompt and each of `tokens`: prompts run `batch` at a time in one forward
        pass, and only the last position goes through the output layer. With `share_prefix`, the tokens every
        prompt of a batch starts with (a reranker's instructions and question) are evaluated once and their KV
        cache shared by all rows, so each row costs only its own tail (its passage)."""
        if self._embedding:
            raise CapabilityError(self.kind, self.model_name, "judge")
        for ids in [*prompts, tokens]:
            self._check_ids(ids)
        torch = self._torch
        out: list[list[float]] = []
        with self._lock, torch.inference_mode():
            for i in range(0, len(prompts), batch):
                group = prompts[i : i + batch]
                shared = _shared_prefix(group) if share_prefix else 0
                cache = None
                if shared >= SHARED_PREFIX_MIN:
                    cache = self.model(input_ids=torch.tensor([group[0][:shared]]), use_cache=True).cache
                    cache.batch_repeat_interleave(len(group))
                else:
                    shared = 0
                tails = [p[shared:] for p in group]
                width = max(len(t) for t in tails)
                ids = torch.zeros((len(group), width), dtype=torch.long)
                mask = torch.zeros((len(group), shared + width), dtype=torch.long)
                mask[:, :shared] = 1
                for r, t in enumerate(tails):
                    ids[r, width - len(t) :] = torch.tensor(t)
                    mask[r, shared + width - len(t) :] = 1
                position = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
                # left padding (between the shared prefix and each tail): every prompt ends at the last column,
                # the only one put through the output layer
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=position, cache=cache,
                                    use_cache=cache is not None, logits_to_keep=1).logits  # fmt: skip
                logp = torch.log_softmax(logits[:, -1].float(), dim=-1)
                out.extend(logp[:, tokens].tolist())
        return out

    def embed(self, texts: list[str], *, is_query: bool = False) -> list[list[float]]:
        if not self._embedding:
            raise CapabilityError(self.kind, self.model_name, "embed", "it is not an embedding model")
        torch = self._torch
        limit = min(
            int(self.tokenizer.model_max_length or 512),
            int(getattr(self.model.config, "max_position_embeddings", 512)),
        )
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state  # (B, T, H)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, H) mean pooling
            return torch.nn.functional.normalize(pooled, dim=-1).tolist()

    def score_text(self, text: str, start: int = 0) -> tuple[float, int]:
        raise CapabilityError(self.kind, self.model_name, "score_text")

    def forward_completions(self, body: dict[str, Any]) -> dict[str, Any] | Iterator[dict[str, Any]]:
        raise CapabilityError(self.kind, self.model_name, "upstream")

    def close(self) -> None:
        self.model = None


SHARED_PREFIX_MIN = 8
"""Shortest prefix shared by a batch of judge prompts that is evaluated once (below it, the rows run whole)."""


def _shared_prefix(prompts: list[list[int]]) -> int:
    """How many leading tokens all `prompts` share, leaving at least one token of each to run."""
    n = min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        n = min(n, common_prefix(prompts[0], p))
    return max(n, 0)
