"""Train a byte-level BPE tokenizer (Hugging Face `tokenizers`) and save it as a transformers folder.

Byte-level with GPT-2's pre-tokenizer regex: every UTF-8 byte is reachable, so Chinese text never
hits an unknown token, and llama.cpp implements the same pre-tokenizer ('gpt-2'), so a model using
this tokenizer exports to GGUF and tokenizes identically there. ChatML special tokens and a ChatML
chat template are added so chat models trained here work with `lmforge chat` and the server.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.data.chat_template import CHATML
from lmforge.errors import LmforgeError


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
