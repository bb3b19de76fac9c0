"""Reward functions for policy optimisation (`lmforge align --method grpo|rloo --reward ...`).

A reward is a plain function `reward(prompt: str, completion: str, example: dict) -> float`: `example`
is the whole JSONL record, so a task's reference fields (`answer`, `schema`, ...) reach it. Bundled
rules, by name:

- `exact-answer`: 1.0 when the last number in the completion equals the record's `answer`, else 0.0
  (verifiable arithmetic and other exact-answer tasks; the last, because models restate the question
  before answering it: "32 - 30 = 2").
- `json-schema`: 1.0 when the completion parses as JSON and validates against the record's `schema`
  (or is any JSON object when there is none), 0.5 when it parses but fails the schema, else 0.0.
- `length`: 1.0 inside [`min_chars`, `max_chars`] of the record (default 20..200), falling linearly
  to 0 at half / twice the bounds.
- `format:REGEX`: 1.0 when the completion matches REGEX (Python `re.search`), else 0.0.

Your own: `--reward path/to/rules.py:function_name` (the same signature). A rule that raises or
returns something that is not a finite number stops the step with an error naming the record's line
and the rule; the last checkpoint is kept. A registered reward model (`--reward MODEL`) scores the
completion with `align.score_batch`.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError

RewardFn = Callable[[str, str, dict[str, Any]], float]
NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


def exact_answer(prompt: str, completion: str, example: dict[str, Any]) -> float:
    if "answer" not in example:
        raise LmforgeError("exact-answer needs an 'answer' field in every record")
    numbers = NUMBER_RE.findall(completion)
    if not numbers:
        return 0.0
    try:
        return float(math.isclose(float(numbers[-1]), float(example["answer"]), rel_tol=1e-9, abs_tol=1e-9))
    except (TypeError, ValueError):
        return float(numbers[-1].strip() == str(example["answer"]).strip())


def json_schema(prompt: str, completion: str, example: dict[str, Any]) -> float:
    import jsonschema

    try:
        value = json.loads(completion.strip())
    except json.JSONDecodeError:
        return 0.0
    schema = example.get("schema") or {"type": "object"}
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError:
        return 0.5
    return 1.0


def length(prompt: str, completion: str, example: dict[str, Any]) -> float:
    lo, hi, n = int(example.get("min_chars", 20)), int(example.get("max_chars", 200)), len(completion.strip())
    if lo <= n <= hi:
        return 1.0
    if n < lo:
        return max(0.0, (n - lo / 2) / (lo / 2))
    return max(0.0, 1 - (n - hi) / hi)


BUNDLED: dict[str, RewardFn] = {"exact-answer": exact_answer, "json-schema": json_schema, "length": length}


def resolve(spec: str) -> RewardFn:
    """A bundled rule name, `format:REGEX`, or `file.py:function`."""
    if spec in BUNDLED:
        return BUNDLED[spec]
    if spec.startswith("format:"):
        try:
            pattern = re.compile(spec[len("format:") :])
        except re.error as e:
            raise LmforgeError(f"--reward {spec!r}: bad regular expression: {e}") from e
        return lambda p, c, ex: float(bool(pattern.search(c)))
    if ".py:" in spec:
        file, _, name = spec.rpartition(":")
        path = Path(file)
        if not path.is_file():
            raise LmforgeError(f"--reward {spec!r}: no such file {file}")
        module_spec = importlib.util.spec_from_file_location(f"lmforge_user_rewards_{path.stem}", path)
        if module_spec is None or module_spec.loader is None:
            raise LmforgeError(f"--reward {spec!r}: cannot import {file}")
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - a user's file: any error is theirs to read
            raise LmforgeError(f"--reward {spec!r}: importing {file} failed: {type(e).__name__}: {e}") from e
        fn = getattr(module, name, None)
        if not callable(fn):
            raise LmforgeError(f"--reward {spec!r}: {file} has no function {name!r}")
        return fn
    raise LmforgeError(f"unknown --reward {spec!r}: use {', '.join(BUNDLED)}, format:REGEX, FILE.py:FUNCTION "
                       f"or a registered reward model")  # fmt: skip


def call(fn: RewardFn, spec: str, prompt: str, completion: str, example: dict[str, Any], line: int) -> float:
    """fn's reward as a float; a raise or a non-number is one LmforgeError naming the line and the rule."""
    try:
        value = fn(prompt, completion, example)
    except LmforgeError:
        raise
    except Exception as e:  # noqa: BLE001 - a user's rule: report whatever it raised
        raise LmforgeError(
            f"reward {spec!r} raised {type(e).__name__}: {e} on the record at line {line}"
        ) from e
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise LmforgeError(
            f"reward {spec!r} returned {value!r} (not a finite number) on the record at line {line}"
        )
    return float(value)
