"""Extend a registered model's tokenizer with domain tokens and resize its embeddings (扩充词表 · 词表扩展).

`extend_registered` is `lmforge tokenizer extend MODEL --data NAME --add N --out NAME`:

- MODEL is a registered Hugging Face causal LM (format 'hf', kind chat or base) whose tokenizer is a BPE
  model (byte-level like GPT-2 / Qwen / Llama 3, or SentencePiece-style BPE); NAME is a dataset made by
  `lmforge data prepare`.
- Tokens are chosen by continuing the model's own BPE training on the dataset's train split: every word
  of the domain text (the tokenizer's own normaliser and pre-tokenizer) is segmented by the old tokenizer,
  then the most frequent adjacent pair whose concatenation is not yet in the vocabulary is merged, N times
  (fewer when no pair is seen `min_frequency` times any more). Each merge saves one token per occurrence,
  so the greedy choice is the one that shortens the domain text most. Every new token is appended to
  tokenizer.json's BPE vocabulary *and* merges (after every old merge, so old text keeps its old ids):
  a real vocabulary entry, byte-level decoding stays lossless, transformers and the GGUF converter read it
  like any other BPE tokenizer.
- The embedding matrix (and the output layer when it is not tied) grows to the new vocabulary; each new
  row is the mean of the old rows of the token's sub-tokens under the OLD tokenizer (the old BPE model
  applied to the token's bytes; for a whole word exactly the ids old `encode` gives its text), the
  sub-token-mean initialisation of Fast Vocabulary Transfer. Rows the model already had beyond the old
  vocabulary (padding) are reused before any are added.
- Registered as `out` (format 'hf', MODEL's kind) with parents [MODEL, NAME]; config records the tokens
  added (the first 50 as text). Metrics, laid out like `lmforge tokenizer train`'s: the count added, the
  new vocabulary size, characters per token on the dataset's validation split (train when there is none;
  all, and zh and en apart where present) with the new tokenizer, and under `before` the same for MODEL's
  tokenizer; and whether decode(encode(text)) == text on that text, with the saved folder reloaded by
  transformers.
- Bad input (`--add` below 1, an `--out` that exists, an unknown dataset, a model that is not an HF
  causal LM, data that yields no new token) is one LmforgeError line; nothing is stored on failure.

Why the merge loop is written here: `tokenizers` trains a BPE vocabulary only from scratch
(`train_new_from_iterator` gives every token a new id and would orphan every embedding row), and
`add_tokens` makes *added tokens*, matched on raw text before pre-tokenization, outside the BPE model (a
token 'pressure' would also split 'acupressure'). LLaMA-Factory adds tokens that way and initialises
them with the mean of all embeddings; Chinese-LLaMA merges SentencePiece models piece by piece. Counting
pairs is the only hand-written part; normalising, pre-tokenizing and encoding stay `tokenizers`' own.
"""

from __future__ import annotations

import heapq
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from lmforge.data.prepare import dataset_texts
from lmforge.errors import LmforgeError
from lmforge.home import Manifest, Registry, _folder_fingerprint, check_name
from lmforge.tokenizer.bpe import chars_per_token

LISTED = 50
"""How many of the added tokens the manifest lists."""
SLOW_FILES = ("vocab.json", "merges.txt", "tokenizer.model")
"""Slow-tokenizer files a saved tokenizer may carry: they hold the old vocabulary, so they are dropped."""
_BYTE_FALLBACK = re.compile(r"<0x[0-9A-Fa-f]{2}>")
Merge = tuple[str, str]


@dataclass
class ExtendConfig:
    add: int = 1000
    """How many tokens to add: each one new BPE merge and one new vocabulary entry."""
    min_frequency: int = 2
    """A pair of tokens seen fewer times than this in the domain text is never merged."""


def domain_words(backend: Any, texts: list[str]) -> Counter[str]:
    """Pre-tokenized words of `texts` with their counts, as the tokenizer's BPE model sees them
    (after its normaliser and pre-tokenizer; byte-level tokenizers give byte-level strings)."""
    words: Counter[str] = Counter()
    for text in texts:
        if backend.normalizer is not None:
            text = backend.normalizer.normalize_str(text)
        if backend.pre_tokenizer is None:
            words[text] += 1
        else:
            words.update(w for w, _ in backend.pre_tokenizer.pre_tokenize_str(text))
    return words


def learn_merges(backend: Any, words: Counter[str], n: int, min_frequency: int) -> list[Merge]:
    """Continue BPE training from `backend`'s tokenizer: up to `n` merges, most frequent pair first (ties
    by the pair's text), each making a token the vocabulary lacks. Word segmentations start from the old
    tokenizer's, so the merges apply after every old one exactly as learned."""
    model = backend.model
    vocab = set(backend.get_vocab(with_added_tokens=True))
    byte_fallback = json.loads(backend.to_str())["model"].get("byte_fallback", False)

    def mergeable(t: str) -> bool:  # byte-fallback tokens are made after merging, never merged
        return not (byte_fallback and _BYTE_FALLBACK.fullmatch(t))

    def pairs(seg: list[str]) -> list[Merge]:
        return [(a, b) for a, b in pairwise(seg) if mergeable(a) and mergeable(b)]

    segs = [[t.value for t in model.tokenize(w)] for w in words]
    freqs = list(words.values())
    counts: Counter[Merge] = Counter()
    where: dict[Merge, set[int]] = defaultdict(set)
    for i, seg in enumerate(segs):
        for p in pairs(seg):
            counts[p] += freqs[i]
            where[p].add(i)
    heap = [(-c, p) for p, c in counts.items()]
    heapq.heapify(heap)
    merges: list[Merge] = []
    while heap and len(merges) < n:
        neg, (a, b) = heapq.heappop(heap)
        if -neg != counts[(a, b)] or a + b in vocab:
            continue  # stale entry (the count changed since) or a token the vocabulary already has
        if -neg < min_frequency:
            break
        merges.append((a, b))
        vocab.add(a + b)
        changed: set[Merge] = set()
        for i in where.pop((a, b)):
            for p in pairs(segs[i]):
                counts[p] -= freqs[i]
                where[p].discard(i)
                changed.add(p)
            segs[i] = _merge(segs[i], a, b)
            for p in pairs(segs[i]):
                counts[p] += freqs[i]
                where[p].add(i)
                changed.add(p)
        for p in changed:
            if counts[p] > 0:
                heapq.heappush(heap, (-counts[p], p))
    return merges


def _merge(seg: list[str], a: str, b: str) -> list[str]:
    out, i = [], 0
    while i < len(seg):
        if i + 1 < len(seg) and seg[i] == a and seg[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(seg[i])
            i += 1
    return out


def extend_tokenizer_json(spec: dict[str, Any], merges: list[Merge]) -> list[tuple[str, int]]:
    """Append `merges` to a tokenizer.json dict (BPE model): their tokens get the ids after the highest id
    in use (vocabulary and added tokens). Returns (token, id) in merge order."""
    model = spec["model"]
    first = 1 + max([*model["vocab"].values(), *(t["id"] for t in spec.get("added_tokens", []))])
    as_strings = bool(model["merges"]) and isinstance(model["merges"][0], str)  # the older "a b" format
    added = []
    for k, (a, b) in enumerate(merges):
        model["vocab"][a + b] = first + k
        model["merges"].append(f"{a} {b}" if as_strings else [a, b])
        added.append((a + b, first + k))
    return added


def init_new_rows(model: Any, sub_ids: dict[int, list[int]]) -> None:
    """Grow `model`'s embeddings to hold every id in `sub_ids`; new row = mean of the rows of its old
    sub-token ids, in the input embeddings and (when untied) the output layer."""
    import torch

    rows = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(max(rows, 1 + max(sub_ids)), mean_resizing=False)
    emb = model.get_input_embeddings().weight  # (V_new, d)
    head = model.get_output_embeddings()
    tied = head is None or head.weight.data_ptr() == emb.data_ptr()
    with torch.no_grad():
        for new_id, old in sub_ids.items():
            idx = torch.tensor(old)
            emb[new_id] = emb[idx].float().mean(0).to(emb.dtype)  # (d,)
            if not tied:
                head.weight[new_id] = head.weight[idx].float().mean(0).to(head.weight.dtype)  # (d,)


def _cpt_by_language(encode: Callable[[str], list[int]], texts: list[str]) -> dict[str, float | None]:
    from lmforge.data.prepare import language

    out = {"all": chars_per_token(encode, texts)}
    for lang in ("zh", "en"):
        part = [t for t in texts if language(t) == lang]
        if part:
            out[lang] = chars_per_token(encode, part)
    return out


def _display(tok: Any, piece: str, token_id: int) -> str:
    """A token as text; its raw vocabulary string when it is part of a UTF-8 character."""
    text = tok.decode([token_id])
    return piece if "\ufffd" in text else text


def _check(registry: Registry, model: str, data: str, out: str, cfg: ExtendConfig) -> Manifest:
    """Gather every problem with the arguments into one error; the model's manifest when there is none."""
    problems = []
    if cfg.add < 1:
        problems.append(f"--add must be at least 1, got {cfg.add}")
    if cfg.min_frequency < 1:
        problems.append(f"--min-frequency must be at least 1, got {cfg.min_frequency}")
    if registry.exists(check_name(out)):
        problems.append(f"{out!r} already exists; pick another --out or remove it")
    if not registry.exists(data):
        problems.append(f"unknown dataset {data!r}; make one with `lmforge data prepare`")
    elif (kind := registry.get(data).kind) != "dataset":
        problems.append(f"{data!r} is a {kind} artifact, not a dataset; make one with `lmforge data prepare`")
    m = registry.get(model)  # unknown: the registry's own error, with the registered names
    if m.format != "hf" or m.kind not in ("chat", "base"):
        problems.append(f"{model!r} is a {m.format} {m.kind} artifact; tokenizer extend needs a Hugging Face "
                        f"causal LM (format hf, kind chat or base)")  # fmt: skip
    if problems:
        raise LmforgeError("; ".join(problems))
    return m


def extend_registered(registry: Registry, model: str, data: str, out: str, cfg: ExtendConfig) -> Manifest:
    """`lmforge tokenizer extend`: see the module docstring."""
    from lmforge.infer.hf import load_pretrained, load_tokenizer

    base = _check(registry, model, data, out, cfg)
    path = registry.model_path(base)
    train = dataset_texts(registry, data, "train") or dataset_texts(registry, data, "validation")
    held = dataset_texts(registry, data, "validation") or train
    old_tok = load_tokenizer(path)
    backend = old_tok.backend_tokenizer
    spec = json.loads(backend.to_str())
    bpe = spec["model"]
    if bpe["type"] != "BPE":
        raise LmforgeError(f"the tokenizer of {model!r} is a {bpe['type']} model; tokenizer extend adds BPE merges "
                           "and needs a BPE tokenizer")  # fmt: skip
    if bpe.get("continuing_subword_prefix") or bpe.get("end_of_word_suffix"):
        raise LmforgeError(f"the tokenizer of {model!r} marks word pieces with affixes; tokenizer extend needs a "
                           "plain BPE tokenizer (byte-level or SentencePiece-style)")  # fmt: skip
    merges = learn_merges(backend, domain_words(backend, train), cfg.add, cfg.min_frequency)
    if not merges:
        raise LmforgeError(f"dataset {data!r} yields no new tokens: no pair of {model}'s tokens that its "
                           f"vocabulary lacks occurs {cfg.min_frequency} times or more in the domain text")  # fmt: skip
    added = extend_tokenizer_json(spec, merges)
    sub_ids = {i: [t.id for t in backend.model.tokenize(piece)] for piece, i in added}
    hf_config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    # keep the checkpoint's precision
    dtype = hf_config.get("dtype") or hf_config.get("torch_dtype") or "float32"
    manifest = Manifest(name=out, kind=base.kind, format="hf", path="model", parents=[model, data],
                        source=f"extend:{model}", config={"added": len(added), "min_frequency": cfg.min_frequency,
                        "algorithm": "BPE merges continued on the domain text; new rows = mean of old sub-token rows"})  # fmt: skip

    def fill(stage: Path) -> None:
        _, lm = load_pretrained(path, "causal", dtype)
        init_new_rows(lm, sub_ids)
        folder = stage / "model"
        lm.save_pretrained(str(folder))
        old_tok.save_pretrained(str(folder))
        for stale in SLOW_FILES:
            (folder / stale).unlink(missing_ok=True)
        (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        new_tok = load_tokenizer(folder)
        if len(new_tok) != len(old_tok) + len(added):
            raise LmforgeError(f"internal: transformers reads {len(new_tok)} tokens from the extended tokenizer, "
                               f"expected {len(old_tok) + len(added)}")  # fmt: skip

        def old_encode(t: str) -> list[int]:
            return backend.encode(t, add_special_tokens=False).ids

        def new_encode(t: str) -> list[int]:
            return new_tok.backend_tokenizer.encode(t, add_special_tokens=False).ids

        manifest.config["tokens"] = [_display(new_tok, p, i) for p, i in added[:LISTED]]
        manifest.params = sum(p.numel() for p in lm.parameters())
        manifest.metrics = {
            "added_tokens": len(added),
            "vocab": len(new_tok),
            "domain_documents": len(held),
            "chars_per_token": _cpt_by_language(new_encode, held),
            "roundtrip_exact": all(new_tok.decode(new_encode(t)) == t for t in held),
            "before": {
                "model": model,
                "vocab": len(old_tok),
                "chars_per_token": _cpt_by_language(old_encode, held),
            },
        }
        manifest.data_fingerprint = _folder_fingerprint(folder)

    return registry.put(manifest, fill)
