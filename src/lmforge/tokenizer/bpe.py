"""Train a byte-level BPE tokenizer (Hugging Face `tokenizers`) and save it as a transformers folder.

Byte-level with GPT-2's pre-tokenizer regex: every UTF-8 byte is reachable, so Chinese text never
hits an unknown token, and llama.cpp implements the same pre-tokenizer ('gpt-2'), so a model using
this tokenizer exports to GGUF and tokenizes identically there. ChatML special tokens and a ChatML
chat template are added so chat models trained here work with `lmforge chat` and the server.
`train_registered` is `lmforge tokenizer train`: the same training on a registered dataset, with
characters-per-token figures (zh and en apart) beside a reference model's tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.data.chat_template import CHATML
from lmforge.errors import LmforgeError
from lmforge.home import Manifest, Registry, check_name, file_sha256


@dataclass
class BPEConfig:
    vocab_size: int = 8000
    """Target vocabulary size including the 256 byte tokens and the special tokens."""
    min_frequency: int = 2
    """Merges seen fewer times than this are not learned."""
    special_tokens: list[str] = field(default_factory=lambda: ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    """The first is BOS/PAD, the last is EOS (end of a chat turn)."""
    model_max_length: int = 2048


def train_bpe(texts: Iterable[str], out_dir: Path, cfg: BPEConfig | None = None):
    """Train on `texts`, save tokenizer.json + tokenizer_config.json to `out_dir`, return the
    transformers `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    cfg = cfg or BPEConfig()
    if cfg.vocab_size < 256 + len(cfg.special_tokens) + 1:
        raise LmforgeError(f"vocab_size {cfg.vocab_size} is too small for byte-level BPE (need > 256)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=cfg.special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos, eos = cfg.special_tokens[0], cfg.special_tokens[-1]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        pad_token=bos,
        model_max_length=cfg.model_max_length,
    )
    fast.chat_template = CHATML
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return fast


def chars_per_token(tokenize: Callable[[str], list[int]], texts: list[str]) -> float | None:
    """Characters per token over `texts` (higher = a more compact tokenizer for that text)."""
    chars = sum(len(t) for t in texts)
    tokens = sum(len(tokenize(t)) for t in texts)
    return round(chars / tokens, 3) if tokens else None


def train_registered(registry: Registry, data: str, out: str, cfg: BPEConfig | None = None,
                     compare: str | None = None) -> Manifest:  # fmt: skip
    """`lmforge tokenizer train`: a BPE tokenizer trained on dataset `data`'s train split, registered
    as `out` with the dataset as its parent, and characters per token on the validation text (zh and
    en apart) beside the same figure for `compare`'s tokenizer (a registered GGUF/HF model)."""
    from lmforge.data.prepare import dataset_texts, language
    from lmforge.infer.hf import load_tokenizer

    cfg = cfg or BPEConfig()
    check_name(out)
    if registry.exists(out):
        raise LmforgeError(f"{out!r} already exists; pick another --out or remove it")
    ds = registry.get(data)
    if ds.kind != "dataset":
        raise LmforgeError(
            f"{data!r} is a {ds.kind} artifact, not a dataset; make one with `lmforge data prepare`"
        )
    if cfg.vocab_size < 256 + len(cfg.special_tokens) + 1:
        raise LmforgeError(f"--vocab {cfg.vocab_size} is smaller than the byte alphabet: byte-level BPE needs more "
                           f"than {256 + len(cfg.special_tokens)} (256 bytes + {len(cfg.special_tokens)} special tokens)")  # fmt: skip
    train = dataset_texts(registry, data, "train")
    held = dataset_texts(registry, data, "validation") or train
    by_lang = {lang: [t for t in held if language(t) == lang] for lang in ("zh", "en")}
    reference = None
    if compare:
        ref = registry.get(compare)
        reference = load_tokenizer(registry.model_path(ref))
    manifest = Manifest(name=out, kind="tokenizer", format="hf-tokenizer", path="", parents=[data], source=f"train:{data}",
                        config={"vocab_size": cfg.vocab_size, "min_frequency": cfg.min_frequency,
                                "special_tokens": cfg.special_tokens, "algorithm": "byte-level BPE"})  # fmt: skip

    def fill(stage: Path) -> None:
        tok = train_bpe(train, stage, cfg)
        encode = lambda t: tok.backend_tokenizer.encode(t, add_special_tokens=False).ids  # noqa: E731
        metrics: dict[str, Any] = {
            "vocab": len(tok),
            "train_documents": len(train),
            "chars_per_token": {lang: chars_per_token(encode, texts) for lang, texts in by_lang.items()},
            "roundtrip_exact": all(tok.decode(encode(t)) == t for t in held),
        }
        if reference is not None:
            ref_encode = lambda t: reference.backend_tokenizer.encode(t, add_special_tokens=False).ids  # noqa: E731
            metrics["reference"] = {"model": compare, "vocab": len(reference),
                                    "chars_per_token": {lang: chars_per_token(ref_encode, texts) for lang, texts in by_lang.items()}}  # fmt: skip
        manifest.metrics = metrics
        manifest.data_fingerprint = file_sha256(stage / "tokenizer.json")

    return registry.put(manifest, fill)
