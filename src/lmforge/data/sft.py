"""Supervised fine-tuning data: read a conversation file, tokenize it with the model's own chat
template, and mark which tokens the model learns (the assistant's turns).

`load_sft(path)` reads JSON Lines (one record per line, blank lines skipped) or a JSON array of
records, in one of four formats, detected per record and required to be the same for the whole file:

    prompt-response  {"prompt", "response", "system"?}
    alpaca           {"instruction", "input"?, "output", "system"?}   input goes after the
                     instruction, separated by a blank line
    messages         {"messages": [{"role": "system"|"user"|"assistant", "content"}...]} (OpenAI)
    sharegpt         {"conversations": [{"from": "human"|"gpt"|"system", "value"}...], "system"?}
                     ("user"/"assistant" are accepted as `from` too)

Every record may also carry an "id" (ignored); any other field is an error, so a misspelt field
("inputs") is never dropped silently. Every record becomes an `Example`: a conversation of an
optional system message, then user and assistant turns alternating, ending with an assistant turn
whose content is not empty. Any problem raises `LmforgeError` with one line naming the file, the
line (or, in a JSON array, the item, counted from 1) and the field.

`tokenize_sft` renders each conversation with the tokenizer's own chat template (transformers
`apply_chat_template`, so training sees exactly the text inference will build) and labels the tokens
of every assistant turn, including the end-of-turn token the template writes after it (ChatML's
<|im_end|>), so the model learns to stop; everything else is -100. The assistant tokens are found by
rendering prefixes: the conversation up to turn i with the generation prompt, and up to turn i + 1;
when their tokens are a prefix of the whole conversation's tokens, the span between them is the turn.
When they are not (a tokenizer that merges across the boundary), the same spans are taken in
characters and mapped through the tokenizer's offsets. Whitespace-only tokens at the end of a turn
(ChatML's newline after <|im_end|>) are not labelled: they separate turns, the model need not make
them. `split_examples` splits by example, by a seeded hash of each conversation, so identical
examples fall on the same side.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from lmforge.errors import LmforgeError

T = TypeVar("T")
Format = Literal["prompt-response", "alpaca", "messages", "sharegpt"]
OnLong = Literal["truncate", "drop"]
IGNORE = -100
"""Label of tokens that take no part in the loss (PyTorch cross-entropy's ignore_index)."""
IGNORED_FIELDS = frozenset({"id"})
"""Record fields accepted in every format and not used."""
_KEY_FIELDS: dict[Format, tuple[str, ...]] = {
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "alpaca": ("instruction", "output"),
    "prompt-response": ("prompt", "response"),
}
"""Detection, in this order: the first format with one of its key fields present wins."""
_FIELDS: dict[Format, frozenset[str]] = {
    "messages": frozenset({"messages"}),
    "sharegpt": frozenset({"conversations", "system"}),
    "alpaca": frozenset({"instruction", "input", "output", "system"}),
    "prompt-response": frozenset({"prompt", "response", "system"}),
}
"""Every field each format allows (besides IGNORED_FIELDS)."""
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system"}  # fmt: skip
_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Example:
    messages: list[dict[str, str]]
    """[{'role', 'content'}...]: an optional system message, then user/assistant alternating, ending
    with an assistant turn."""
    line: int
    """1-based line in the file (for a JSON array, the item's index + 1)."""


@dataclass(frozen=True)
class SFTData:
    examples: list[Example]
    format: Format
    """The one format of the file."""
    fingerprint: str
    """sha256 of the file's bytes."""


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    labels: list[int]
    """Same length as input_ids: the token id on assistant turns, IGNORE (-100) elsewhere."""
    line: int
    """The example's line in the file it came from."""


@dataclass
class TokenizeReport:
    total: int
    """Examples given."""
    kept: int
    """Examples returned."""
    truncated: int
    """Kept examples cut to max_length."""
    dropped: int
    """Examples removed: longer than max_length under on_long='drop', or with no labelled token
    left after truncation."""
    max_length: int
    on_long: OnLong
    longest: int
    """Tokens in the longest example before truncation (a guide for choosing max_length)."""
    mean_length: float
    """Mean tokens per kept example, after truncation."""
    response_tokens: int
    """Labelled tokens over the kept examples (what the loss is computed on)."""

    def text(self) -> str:
        why = "no response left" if self.on_long == "truncate" else f"longer than {self.max_length} tokens"
        parts = [f"{self.kept} kept"]
        if self.truncated:
            parts.append(f"{self.truncated} truncated to {self.max_length} tokens")
        if self.dropped:
            parts.append(f"{self.dropped} dropped ({why})")
        return (f"{self.total} examples: {', '.join(parts)}; longest {self.longest} tokens, "
                f"mean {self.mean_length:.1f}, {self.response_tokens} response tokens")  # fmt: skip


# ------------------------------------------------------------------ reading


class Records:
    """Where a record sits, for error messages: 'line 7' in JSON Lines, 'item 7' in a JSON array."""

    def __init__(self, path: Path, array: bool) -> None:
        self.name, self.unit = path.name, "item" if array else "line"

    def error(self, n: int, message: str) -> LmforgeError:
        return LmforgeError(f"{self.name}: {self.unit} {n}: {message}")


def read_records(path: Path, data: bytes) -> tuple[Records, list[tuple[int, Any]]]:
    """The file's records as (line or item number, parsed JSON): JSON Lines or one JSON array."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise LmforgeError(f"{path.name}: not UTF-8 text ({e})") from e
    if text.lstrip().startswith("["):
        where = Records(path, array=True)
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise LmforgeError(
                f"{path.name}: not a JSON array: {e.msg} (line {e.lineno} column {e.colno})"
            ) from e
        return where, [(i + 1, item) for i, item in enumerate(items)]
    where = Records(path, array=False)
    records = []
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            records.append((n, json.loads(raw)))
        except json.JSONDecodeError as e:
            hint = ""
            if n == 1:
                try:
                    if isinstance(json.loads(text), dict):
                        hint = "; the file holds one JSON object: write one record per line, or a JSON array"
                except json.JSONDecodeError:
                    pass
            raise LmforgeError(f"{path.name}: line {n} is not JSON: {e.msg} (column {e.colno}){hint}") from e
    return where, records


def _detect(record: dict[str, Any]) -> Format | None:
    for fmt, keys in _KEY_FIELDS.items():
        if any(k in record for k in keys):
            return fmt
    return None


def string_field(where: Records, n: int, record: dict[str, Any], field: str) -> str:
    """record[field], which must be present and a string."""
    if field not in record:
        raise where.error(n, f"missing field {field!r}")
    value = record[field]
    if not isinstance(value, str):
        raise where.error(n, f"field {field!r} must be a string, got {type(value).__name__}")
    return value


def optional_field(where: Records, n: int, record: dict[str, Any], field: str) -> str | None:
    """record[field] if present (then it must be a string), else None."""
    return string_field(where, n, record, field) if field in record else None


def _turns(where: Records, n: int, record: dict[str, Any], fmt: Format) -> list[dict[str, str]]:
    """The record as a checked conversation [{'role', 'content'}...]."""
    system = optional_field(where, n, record, "system")
    head = [{"role": "system", "content": system}] if system is not None and system.strip() else []
    if fmt == "prompt-response":
        prompt, response = (
            string_field(where, n, record, "prompt"),
            string_field(where, n, record, "response"),
        )
        if not prompt.strip():
            raise where.error(n, "empty prompt")
        if not response.strip():
            raise where.error(n, "empty response")
        return head + [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    if fmt == "alpaca":
        instruction, output = (
            string_field(where, n, record, "instruction"),
            string_field(where, n, record, "output"),
        )
        extra = optional_field(where, n, record, "input")
        if not instruction.strip():
            raise where.error(n, "empty instruction")
        if not output.strip():
            raise where.error(n, "empty output")
        user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
        return head + [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    field = "messages" if fmt == "messages" else "conversations"
    out = head + read_turns(where, n, record[field], field, sharegpt=fmt == "sharegpt")
    check_conversation(where, n, out, field)
    return out


def read_turns(
    where: Records, n: int, turns: Any, field: str, *, sharegpt: bool = False
) -> list[dict[str, str]]:
    """The list in `field` as [{'role', 'content'}...], each turn's fields and role checked (OpenAI
    'role'/'content', or ShareGPT 'from'/'value' when `sharegpt`); the order of the turns is not."""
    role_key, content_key = ("from", "value") if sharegpt else ("role", "content")
    if not isinstance(turns, list):
        raise where.error(n, f"field {field!r} must be a list, got {type(turns).__name__}")
    out = []
    for i, turn in enumerate(turns, start=1):
        if (
            not isinstance(turn, dict)
            or not isinstance(turn.get(role_key), str)
            or not isinstance(turn.get(content_key), str)
        ):
            raise where.error(n, f"{field}[{i}] needs string fields {role_key!r} and {content_key!r}")
        raw_role = turn[role_key]
        role = _SHAREGPT_ROLES.get(raw_role) if sharegpt else raw_role
        if role not in _ROLES:
            allowed = ("human", "gpt", "system") if sharegpt else _ROLES
            raise where.error(
                n, f"{field}[{i}].{role_key} is {raw_role!r}; expected one of {', '.join(allowed)}"
            )
        out.append({"role": role, "content": turn[content_key]})
    return out


def check_conversation(where: Records, n: int, messages: list[dict[str, str]], field: str) -> None:
    """An optional system message, then user and assistant alternating, ending with a non-empty
    assistant turn; else an error naming `field`."""
    body = messages[1:] if messages and messages[0]["role"] == "system" else messages
    if not body:
        raise where.error(n, f"{field}: no user or assistant turn")
    for i, m in enumerate(body):
        expected = "user" if i % 2 == 0 else "assistant"
        if m["role"] != expected:
            what = (
                "a system message after the first turn"
                if m["role"] == "system"
                else f"two {m['role']} turns in a row"
            )
            raise where.error(
                n,
                f"{field}: {what}; expected an optional system message, then user and assistant alternating",
            )
        if expected == "assistant" and not m["content"].strip():
            raise where.error(n, f"{field}: empty assistant content (turn {i + 1})")
    if body[-1]["role"] != "assistant":
        raise where.error(
            n,
            f"{field}: the conversation ends with a {body[-1]['role']} turn; it must end with an assistant turn",
        )


def load_sft(path: Path) -> SFTData:
    """Read a fine-tuning file (JSON Lines or a JSON array; formats in the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise LmforgeError(f"{path}: no such file")
    data = path.read_bytes()
    where, records = read_records(path, data)
    if not records:
        raise LmforgeError(f"{path.name}: empty: no examples")
    fmt: Format | None = None
    first = 0
    examples = []
    for n, record in records:
        if not isinstance(record, dict):
            raise where.error(n, f"expected a JSON object, got {type(record).__name__}")
        this = _detect(record)
        if this is None:
            raise where.error(n, f"no known format: fields {list(record)}; expected prompt/response, "
                                 f"instruction/output, messages or conversations")  # fmt: skip
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
        examples.append(Example(messages=_turns(where, n, record, this), line=n))
    assert fmt is not None
    return SFTData(examples=examples, format=fmt, fingerprint=hashlib.sha256(data).hexdigest())


# ------------------------------------------------------------------ tokenizing


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool, line: int) -> str:
    from jinja2.exceptions import TemplateError

    try:
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
    except TemplateError as e:
        raise LmforgeError(f"example at line {line}: the tokenizer's chat template refused it: {e}") from e
    return text


def _encode(tokenizer: Any, text: str) -> list[int]:
    # The template writes any BOS itself: adding special tokens again would double it.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _assistant_spans(tokenizer: Any, messages: list[dict[str, str]], full_text: str, ids: list[int],
                     line: int) -> list[tuple[int, int]]:  # fmt: skip
    """Token [start, end) of each assistant turn (content plus the template's end-of-turn marker)."""
    spans, offsets = [], None
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], True, line)
        through = _render(tokenizer, messages[: i + 1], False, line)
        a, b = _encode(tokenizer, before), _encode(tokenizer, through)
        if ids[: len(a)] == a and ids[: len(b)] == b:
            spans.append((len(a), len(b)))
            continue
        if not (full_text.startswith(before) and full_text.startswith(through)):
            raise LmforgeError(f"example at line {line}: the chat template renders turn {i + 1} differently inside "
                               f"the whole conversation, so its tokens cannot be found; use a model whose "
                               f"template renders earlier turns unchanged")  # fmt: skip
        if offsets is None:
            if not tokenizer.is_fast:
                raise LmforgeError(f"example at line {line}: the assistant tokens need character offsets, "
                                   f"which only a fast (Rust) tokenizer gives")  # fmt: skip
            enc = tokenizer(full_text, add_special_tokens=False, return_offsets_mapping=True)
            offsets = enc["offset_mapping"]
        lo, hi = len(before), len(through)
        inside = [k for k, (s, e) in enumerate(offsets) if e > lo and s < hi]  # tokens overlapping the turn
        if inside:
            spans.append((inside[0], inside[-1] + 1))
    return spans


def _trim_trailing_space(tokenizer: Any, ids: list[int], start: int, end: int) -> int:
    while end - start > 1 and not tokenizer.decode([ids[end - 1]]).strip():
        end -= 1
    return end


def tokenize_sft(tokenizer: Any, examples: list[Example], max_length: int, *,
                 on_long: OnLong = "truncate") -> tuple[list[Tokenized], TokenizeReport]:  # fmt: skip
    """Token ids and labels for each example under `tokenizer`'s chat template (see the module
    docstring), examples longer than `max_length` cut (keeping the start) or dropped."""
    if max_length < 1:
        raise LmforgeError(f"--max-length must be at least 1, got {max_length}")
    if on_long not in ("truncate", "drop"):
        raise LmforgeError(f"on_long must be 'truncate' or 'drop', got {on_long!r}")
    if not tokenizer.chat_template:
        raise LmforgeError("the tokenizer has no chat template, so conversations cannot be rendered: fine-tune a "
                           "chat (instruct) model, or a base model whose tokenizer was made by `lmforge tokenizer "
                           "train` (it carries ChatML)")  # fmt: skip
    out: list[Tokenized] = []
    truncated = dropped = longest = 0
    for ex in examples:
        text = _render(tokenizer, ex.messages, False, ex.line)
        ids = _encode(tokenizer, text)
        labels = [IGNORE] * len(ids)
        for start, end in _assistant_spans(tokenizer, ex.messages, text, ids, ex.line):
            end = _trim_trailing_space(tokenizer, ids, start, end)
            labels[start:end] = ids[start:end]
        longest = max(longest, len(ids))
        if len(ids) > max_length:
            if on_long == "drop":
                dropped += 1
                continue
            ids, labels = ids[:max_length], labels[:max_length]
            if all(x == IGNORE for x in labels):
                dropped += 1
                continue
            truncated += 1
        out.append(Tokenized(input_ids=ids, labels=labels, line=ex.line))
    report = TokenizeReport(
        total=len(examples),
        kept=len(out),
        truncated=truncated,
        dropped=dropped,
        max_length=max_length,
        on_long=on_long,
        longest=longest,
        mean_length=sum(len(t.input_ids) for t in out) / len(out) if out else 0.0,
        response_tokens=sum(1 for t in out for x in t.labels if x != IGNORE),
    )
    return out, report


def split_examples(
    examples: list[Example], val_frac: float, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """(train, validation), both in file order. The round(val_frac * n) examples with the lowest seeded
    hash of their conversation are held out: at least 1 when val_frac > 0 and n >= 2, never all."""
    return split_by_hash(
        examples, lambda e: json.dumps(e.messages, ensure_ascii=False, sort_keys=True), val_frac, seed
    )


def split_by_hash(
    items: list[T], key: Callable[[T], str], val_frac: float, seed: int = 0
) -> tuple[list[T], list[T]]:
    """(train, validation), both in the given order: the round(val_frac * n) items with the lowest
    sha256 of f"{seed}:{key(item)}" are held out (ties by position), at least 1 when val_frac > 0 and
    n >= 2, never all. Items with the same key sort together."""
    if not 0 <= val_frac < 1:
        raise LmforgeError(f"--val-frac must be in [0, 1), got {val_frac}")
    n = len(items)
    n_val = min(max(round(val_frac * n), 1), n - 1) if val_frac > 0 and n >= 2 else 0
    hashes = [hashlib.sha256(f"{seed}:{key(item)}".encode()).hexdigest() for item in items]
    held = set(sorted(range(n), key=lambda i: (hashes[i], i))[:n_val])
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]
