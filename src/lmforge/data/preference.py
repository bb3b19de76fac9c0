"""Preference data: pairs of answers to one prompt, the better one "chosen", for reward-model training
and DPO. Read a pair file, tokenize both sides with the model's own chat template, and mark the
tokens of the final answers.

`load_preferences(path)` reads JSON Lines (one record per line, blank lines skipped) or a JSON array
of records, in one of three formats, detected per record and required to be the same for the whole
file:

    text             {"prompt": str, "chosen": str, "rejected": str, "system"?: str}
                     what `lmforge eval` arena export (`/api/arena/export`, `VoteStore.export_jsonl`)
                     writes, and trl's "standard, explicit prompt" form
    messages         {"chosen": [messages], "rejected": [messages]}: two whole conversations that share
                     every message but the last, an assistant turn (trl's "conversational, implicit
                     prompt" form; Anthropic-HH style)
    prompt-messages  {"prompt": [messages], "chosen": [one assistant message] | str, "rejected": ...}
                     (trl's "conversational, explicit prompt" form); the prompt ends with a user turn

where [messages] is OpenAI's [{"role": "system"|"user"|"assistant", "content"}...]. Every record may
also carry an "id" (ignored); any other field is an error, as in `lmforge.data.sft`. Every record
becomes a `Pair`: the prompt as messages (an optional system message, then user and assistant
alternating, ending with a user turn) and the two answers, neither empty and not the same (compared
without surrounding whitespace). Any problem raises `LmforgeError` with one line naming the file, the
line (or, in a JSON array, the item, counted from 1) and the field.

`tokenize_pairs` renders each side, prompt + answer as one conversation, exactly as
`lmforge.data.sft.tokenize_sft` renders a fine-tuning example (same chat template, same label
finding), then keeps the labels of the final answer only (its content and the template's end-of-turn
token): earlier assistant turns in the prompt are context, not what the pair compares. The
unlabelled prompt tokens are the same on both sides whenever the template's generation prompt ends on
a token boundary (ChatML's does; a template whose prompt merges with the answer's first word falls
back to character offsets, as in SFT). A side longer than `max_length` is cut, keeping the start,
as in SFT; a pair is dropped when either side has no answer token left. `split_pairs` holds out whole
prompts, by a seeded hash (as `split_examples` does), so pairs that share a prompt are never on
both sides.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lmforge.data.sft import (
    IGNORE,
    IGNORED_FIELDS,
    Example,
    Records,
    Tokenized,
    check_conversation,
    optional_field,
    read_records,
    read_turns,
    split_by_hash,
    string_field,
    tokenize_sft,
)
from lmforge.errors import LmforgeError

Format = Literal["text", "messages", "prompt-messages"]
_FIELDS: dict[Format, frozenset[str]] = {
    "text": frozenset({"prompt", "chosen", "rejected", "system"}),
    "messages": frozenset({"chosen", "rejected"}),
    "prompt-messages": frozenset({"prompt", "chosen", "rejected"}),
}
"""Every field each format allows (besides IGNORED_FIELDS)."""
_SIDES = ("chosen", "rejected")


@dataclass(frozen=True)
class Pair:
    prompt_messages: list[dict[str, str]]
    """[{'role', 'content'}...]: an optional system message, then user/assistant alternating, ending
    with a user turn."""
    chosen: str
    """The preferred answer: the assistant turn that follows the prompt."""
    rejected: str
    """The other answer to the same prompt."""
    line: int
    """1-based line in the file (for a JSON array, the item's index + 1)."""


@dataclass(frozen=True)
class PreferenceData:
    pairs: list[Pair]
    format: Format
    """The one format of the file."""
    fingerprint: str
    """sha256 of the file's bytes."""


@dataclass(frozen=True)
class TokenizedPair:
    chosen: Tokenized
    """prompt + chosen answer; labels are IGNORE (-100) except the answer and its end-of-turn token."""
    rejected: Tokenized
    """prompt + rejected answer, labelled the same way."""
    line: int
    """The pair's line in the file it came from."""


@dataclass
class PairReport:
    total: int
    """Pairs given."""
    kept: int
    """Pairs returned."""
    truncated: int
    """Kept pairs with one or both sides cut to max_length."""
    dropped: int
    """Pairs removed: a side with no answer token left after truncation."""
    max_length: int
    longest: int
    """Tokens in the longest side before truncation (a guide for choosing max_length)."""

    def text(self) -> str:
        parts = [f"{self.kept} kept"]
        if self.truncated:
            parts.append(f"{self.truncated} truncated to {self.max_length} tokens")
        if self.dropped:
            parts.append(f"{self.dropped} dropped (no answer left)")
        return f"{self.total} pairs: {', '.join(parts)}; longest side {self.longest} tokens"


# ------------------------------------------------------------------ reading


def _detect(where: Records, n: int, record: dict[str, Any]) -> Format:
    if "prompt" in record:
        prompt = record["prompt"]
        if isinstance(prompt, str):
            return "text"
        if isinstance(prompt, list):
            return "prompt-messages"
        raise where.error(
            n, f"field 'prompt' must be a string or a list of messages, got {type(prompt).__name__}"
        )
    if not any(side in record for side in _SIDES):
        raise where.error(n, f"no known format: fields {list(record)}; expected prompt/chosen/rejected, "
                             f"or chosen/rejected conversations")  # fmt: skip
    if any(isinstance(record.get(side), str) for side in _SIDES):
        raise where.error(n, "missing field 'prompt' (chosen and rejected are strings, so the prompt must "
                             "be given; or give them as whole conversations)")  # fmt: skip
    return "messages"


def _answer(where: Records, n: int, record: dict[str, Any], side: str) -> str:
    """`side` of a prompt-messages record: a string, or a list of one assistant message."""
    if side not in record:
        raise where.error(n, f"missing field {side!r}")
    value = record[side]
    if isinstance(value, str):
        return value
    turns = read_turns(where, n, value, side) if isinstance(value, list) else []
    if len(turns) != 1 or turns[0]["role"] != "assistant":
        raise where.error(n, f"field {side!r} must be a string or a list of one assistant message")
    return turns[0]["content"]


def _text_pair(where: Records, n: int, record: dict[str, Any]) -> tuple[list[dict[str, str]], str, str]:
    prompt = string_field(where, n, record, "prompt")
    chosen, rejected = (string_field(where, n, record, side) for side in _SIDES)
    system = optional_field(where, n, record, "system")
    if not prompt.strip():
        raise where.error(n, "empty prompt")
    head = [{"role": "system", "content": system}] if system is not None and system.strip() else []
    return head + [{"role": "user", "content": prompt}], chosen, rejected


def _messages_pair(where: Records, n: int, record: dict[str, Any]) -> tuple[list[dict[str, str]], str, str]:
    convs = {}
    for side in _SIDES:
        if side not in record:
            raise where.error(n, f"missing field {side!r}")
        convs[side] = read_turns(where, n, record[side], side)
        if convs[side] and convs[side][-1]["role"] == "assistant" and not convs[side][-1]["content"].strip():
            raise where.error(n, f"empty {side}")
        check_conversation(where, n, convs[side], side)
    chosen, rejected = convs["chosen"], convs["rejected"]
    if chosen[:-1] != rejected[:-1]:
        k = next(
            (i for i, (a, b) in enumerate(zip(chosen[:-1], rejected[:-1], strict=False)) if a != b), None
        )
        detail = (f"message {k + 1} differs" if k is not None
                  else f"chosen has {len(chosen)} messages, rejected {len(rejected)}")  # fmt: skip
        raise where.error(n, f"chosen and rejected have different prompts ({detail}): they must share every "
                             f"message but the last")  # fmt: skip
    return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]


def _prompt_messages_pair(
    where: Records, n: int, record: dict[str, Any]
) -> tuple[list[dict[str, str]], str, str]:
    prompt = read_turns(where, n, record["prompt"], "prompt")
    chosen, rejected = (_answer(where, n, record, side) for side in _SIDES)
    if not prompt:
        raise where.error(n, "prompt: no messages")
    if prompt[-1]["role"] != "user":
        raise where.error(n, f"prompt: the last message is {prompt[-1]['role']!r}; it must be a user turn")
    # The prompt plus any non-empty answer must be a well-formed conversation.
    check_conversation(where, n, [*prompt, {"role": "assistant", "content": "."}], "prompt")
    return prompt, chosen, rejected


_PARSE = {"text": _text_pair, "messages": _messages_pair, "prompt-messages": _prompt_messages_pair}


def load_preferences(path: Path) -> PreferenceData:
    """Read a preference file (JSON Lines or a JSON array; formats in the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise LmforgeError(f"{path}: no such file")
    data = path.read_bytes()
    where, records = read_records(path, data)
    if not records:
        raise LmforgeError(f"{path.name}: empty: no pairs")
    fmt: Format | None = None
    first = 0
    pairs = []
    for n, record in records:
        if not isinstance(record, dict):
            raise where.error(n, f"expected a JSON object, got {type(record).__name__}")
        this = _detect(where, n, record)
        if fmt is None:
            fmt, first = this, n
        elif this != fmt:
            raise LmforgeError(f"{path.name}: {where.unit} {n} is {this} but {where.unit} {first} is {fmt}: "
                               f"one format per file")  # fmt: skip
        unknown = [k for k in record if k not in _FIELDS[this] and k not in IGNORED_FIELDS]
        if unknown:
            raise where.error(
                n, f"unknown field(s) {unknown} for {this} (allowed: {', '.join(sorted(_FIELDS[this]))})"
            )
        prompt, chosen, rejected = _PARSE[this](where, n, record)
        for side, answer in zip(_SIDES, (chosen, rejected), strict=True):
            if not answer.strip():
                raise where.error(n, f"empty {side}")
        if chosen.strip() == rejected.strip():
            raise where.error(n, "chosen and rejected are the same answer")
        pairs.append(Pair(prompt_messages=prompt, chosen=chosen, rejected=rejected, line=n))
    assert fmt is not None
    return PreferenceData(pairs=pairs, format=fmt, fingerprint=hashlib.sha256(data).hexdigest())


# ------------------------------------------------------------------ tokenizing


def _final_answer_only(t: Tokenized) -> Tokenized:
    """`t` with every labelled run but the last (the final assistant turn) set to IGNORE."""
    end = len(t.labels)
    while end and t.labels[end - 1] == IGNORE:
        end -= 1
    start = end
    while start and t.labels[start - 1] != IGNORE:
        start -= 1
    return Tokenized(input_ids=t.input_ids, labels=[IGNORE] * start + t.labels[start:], line=t.line)


def tokenize_pairs(
    tokenizer: Any, pairs: list[Pair], max_length: int
) -> tuple[list[TokenizedPair], PairReport]:
    """Token ids and labels of both sides of each pair under `tokenizer`'s chat template (see the
    module docstring), sides longer than `max_length` cut (keeping the start)."""
    if max_length < 1:
        raise LmforgeError(f"--max-length must be at least 1, got {max_length}")
    examples = [
        Example(messages=[*p.prompt_messages, {"role": "assistant", "content": answer}], line=p.line)
        for p in pairs
        for answer in (p.chosen, p.rejected)
    ]
    # Untruncated (no limit), so that the final answer is known before cutting.
    full, _ = tokenize_sft(tokenizer, examples, sys.maxsize)
    out: list[TokenizedPair] = []
    truncated = dropped = longest = 0
    for i, pair in enumerate(pairs):
        sides = [_final_answer_only(t) for t in full[2 * i : 2 * i + 2]]
        longest = max(longest, *(len(t.input_ids) for t in sides))
        cut = any(len(t.input_ids) > max_length for t in sides)
        if cut:
            sides = [Tokenized(t.input_ids[:max_length], t.labels[:max_length], t.line) for t in sides]
        if any(all(x == IGNORE for x in t.labels) for t in sides):
            dropped += 1
            continue
        truncated += cut
        out.append(TokenizedPair(chosen=sides[0], rejected=sides[1], line=pair.line))
    report = PairReport(total=len(pairs), kept=len(out), truncated=truncated, dropped=dropped,
                        max_length=max_length, longest=longest)  # fmt: skip
    return out, report


def split_pairs(pairs: list[Pair], val_frac: float, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """(train, validation), both in file order, split by prompt: the round(val_frac * p) of the p distinct
    prompts with the lowest seeded hash are held out with all their pairs (at least 1 prompt when
    val_frac > 0 and p >= 2, never all), so no prompt is on both sides."""
    keys = [json.dumps(p.prompt_messages, ensure_ascii=False, sort_keys=True) for p in pairs]
    _, held_keys = split_by_hash(list(dict.fromkeys(keys)), lambda k: k, val_frac, seed)
    held = set(held_keys)
    train = [p for p, k in zip(pairs, keys, strict=True) if k not in held]
    return train, [p for p, k in zip(pairs, keys, strict=True) if k in held]
