"""The text an explanation is about: its tokens, the piece of text each covers, and a label to show.

`tokenize` refuses a text longer than the limit (attention maps grow as layers × heads × T², and
attributions run the model `steps` times over T tokens) instead of allocating huge matrices or cutting
the text silently. Labels come from the tokenizer's offsets, so a byte-level BPE that splits 你 into
three byte tokens shows "你 1/3", "你 2/3", "你 3/3" rather than three replacement characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmforge.errors import LmforgeError

DEFAULT_MAX_TOKENS = 512
"""The longest text (in tokens) an explanation takes unless the caller raises it (--max-tokens)."""


@dataclass
class Tokenized:
    """One text as the model sees it (T tokens)."""

    text: str
    ids: list[int]
    """Token ids, special tokens included (what the model is run on)."""
    pieces: list[str]
    """The text each token covers ('' when the token adds none, e.g. [CLS]); the HTML pages show these."""
    labels: list[str]
    """What a plot or a table prints for each token: the piece with spaces/newlines made visible, the
    token itself for special tokens, 'piece k/n' for the n byte tokens of one character."""
    special: list[bool]
    """True for tokens the tokenizer added (BOS, [CLS], [SEP]): not part of the text."""

    def __len__(self) -> int:
        return len(self.ids)


def tokenize(
    tokenizer: Any, text: str, max_tokens: int = DEFAULT_MAX_TOKENS, context: int | None = None
) -> Tokenized:
    """Tokenize `text` as the model would (special tokens added); refuse empty text, text over
    `max_tokens`, or text longer than the model's `context` (its position embeddings)."""
    if not text.strip():
        raise LmforgeError("the text is empty: give the sentence to explain")
    if max_tokens < 1:
        raise LmforgeError(f"--max-tokens must be at least 1 (got {max_tokens})")
    fast = bool(getattr(tokenizer, "is_fast", False))
    enc = tokenizer(
        text, add_special_tokens=True, return_special_tokens_mask=True, return_offsets_mapping=fast
    )
    ids = [int(i) for i in enc["input_ids"]]
    if not ids:
        raise LmforgeError("the text has no tokens for this tokenizer")
    if len(ids) > max_tokens:
        raise LmforgeError(
            f"the text is {len(ids)} tokens; the limit is {max_tokens}: shorten it, or raise the limit with "
            f"--max-tokens {len(ids)} (attention maps grow as T^2, attributions as steps x T)"
        )
    if context is not None and len(ids) > context:
        raise LmforgeError(
            f"the text is {len(ids)} tokens; the model has positions for {context}: shorten it"
        )
    special = [bool(s) for s in enc["special_tokens_mask"]]
    raw = tokenizer.convert_ids_to_tokens(ids)
    if fast:
        spans = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
        pieces = [text[a:b] if not sp else "" for (a, b), sp in zip(spans, special, strict=True)]
    else:
        spans = [(i, i) for i in range(len(ids))]  # no offsets: each token decoded on its own
        pieces = ["" if sp else tokenizer.decode([i]) for i, sp in zip(ids, special, strict=True)]
    labels = [str(r) if sp else _visible(p) for p, r, sp in zip(pieces, raw, special, strict=True)]
    labels = _number_runs(labels, spans, special)
    return Tokenized(text=text, ids=ids, pieces=_unshare(pieces, spans), labels=labels, special=special)


def _unshare(pieces: list[str], spans: list[tuple[int, int]]) -> list[str]:
    """Byte tokens of one character share its span; the HTML shows the character once (on the first)."""
    out = list(pieces)
    for i in range(1, len(spans)):
        if spans[i] == spans[i - 1] and spans[i][1] > spans[i][0]:
            out[i] = ""
    return out


def _number_runs(labels: list[str], spans: list[tuple[int, int]], special: list[bool]) -> list[str]:
    """'你 1/3', '你 2/3', '你 3/3' for tokens that cover the same character(s)."""
    out = list(labels)
    i = 0
    while i < len(spans):
        j = i
        while (
            j + 1 < len(spans)
            and spans[j + 1] == spans[i]
            and spans[i][1] > spans[i][0]
            and not special[j + 1]
        ):
            j += 1
        if j > i:
            for k in range(i, j + 1):
                out[k] = f"{labels[i]} {k - i + 1}/{j - i + 1}"
        i = j + 1
    return out


def _visible(piece: str) -> str:
    """Spaces and line breaks made visible (␣, ⏎, ⇥), so a label is never blank."""
    return piece.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥").replace("\r", "") or "∅"
