"""`lmforge task`: NLP tasks as prompts whose answers always parse.

A task is a prompt template (templates.yaml, zh and en; users override it with their own YAML) plus an
output JSON schema. The answer is enforced, not hoped for: on a backend with grammars (llama.cpp) the
schema becomes a GBNF grammar and sampling cannot leave it; elsewhere the answer is validated against
the schema and, when it does not parse, the model is asked again with the error (`retries` times); if
it still fails, TaskOutputError carries the last raw output. Then per task:

- sentiment / classify: {"label", "score"}; the label is one of the given ones (an enum in the schema).
- ner: {"entities": [{"text", "label", "start", "end"}], "dropped": n} — the model names entities, the
  offsets are found here in the input (each mention in order); an entity whose text is not in the input
  is dropped and counted, never reported with made-up offsets.
- extract: JSON valid against the user's schema (checked to be a JSON Schema first).
- qa: {"answer"} from --context; translate: {"translation", "to"}; summarize: {"summary"} cut at a
  sentence end to --max-chars if the model ran over (and says so); rewrite: {"text"}.

Prompting strategies are data: few-shot examples (a JSONL of {"text", "output"}) become earlier turns,
chain-of-thought adds a "reasoning" field before the answer fields (the answer is still parsed out of
the same JSON), a persona replaces the system prompt. `show_prompt` returns exactly the messages sent.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from lmforge.data.lang import HAN_RE
from lmforge.errors import LmforgeError

TASKS = ("classify", "sentiment", "ner", "extract", "qa", "translate", "summarize", "rewrite")
LANGUAGES = {"en": ("English", "英语"), "zh": ("Simplified Chinese", "简体中文"), "ja": ("Japanese", "日语"),
             "ko": ("Korean", "韩语"), "fr": ("French", "法语"), "de": ("German", "德语"),
             "es": ("Spanish", "西班牙语"), "ru": ("Russian", "俄语")}  # fmt: skip
"""--to codes: (English name, Chinese name)."""
SENTIMENTS = ("positive", "negative", "neutral")
STYLES = {"formal": "正式", "casual": "口语化", "concise": "简洁"}
TONES = {"positive": "积极", "neutral": "中立", "negative": "消极"}
LENGTHS = {"short": ("keep it short", "篇幅简短"), "long": ("make it longer and more detailed", "篇幅详细")}


class TaskOutputError(LmforgeError):
    """The model gave no answer that parses as the task's JSON, after every retry."""

    def __init__(self, task: str, tries: int, problem: str, raw: str) -> None:
        super().__init__(
            f"{task}: no valid answer after {tries} tries ({problem}); last raw output: {raw[:500]!r}"
        )
        self.raw = raw


@dataclass
class TaskConfig:
    labels: list[str] = field(default_factory=list)
    """classify: the classes; ner: the entity types (default PER, LOC, ORG)."""
    schema: dict[str, Any] | None = None
    """extract: the JSON schema of the answer."""
    context: str | None = None
    """qa: the text the answer must come from."""
    to: str = "en"
    """translate: target language code."""
    max_chars: int = 100
    """summarize: the longest summary."""
    style: Literal["formal", "casual", "concise"] = "formal"
    tone: Literal["positive", "neutral", "negative"] = "neutral"
    length: Literal["short", "long"] = "short"
    lang: Literal["auto", "en", "zh"] = "auto"
    """Prompt language; auto: Chinese when the text is mostly Han characters."""
    system: str | None = None
    """A persona / role system prompt instead of the template's."""
    examples: list[dict[str, Any]] = field(default_factory=list)
    """Few-shot: [{"text": ..., "output": {...}}], shown as earlier turns."""
    shots: int = 0
    """How many of `examples` to show (0 = all of them)."""
    pick: Literal["random", "similar"] = "random"
    """Which examples: a seeded random draw, or the most similar to the text (embeddings)."""
    embed: Any = None
    """pick=similar: texts -> vectors (the packaged E5 unless the caller gives one)."""
    cot: bool = False
    """Chain of thought: a "reasoning" field is written before the answer fields."""
    retries: int = 2
    max_tokens: int = 512
    templates: str | None = None
    """A YAML file overriding built-in templates (same shape as tasks/templates.yaml)."""


def is_chinese(text: str) -> bool:
    return len(HAN_RE.findall(text)) >= max(1, 0.2 * len(text.replace(" ", "")))


def templates(path: str | None = None) -> dict[str, Any]:
    import yaml

    built_in = yaml.safe_load(resources.files("lmforge.tasks").joinpath("templates.yaml").read_text("utf-8"))
    if path:
        try:
            user = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise LmforgeError(f"--templates {path}: {e}") from e
        for task, langs in user.items():
            built_in.setdefault(task, {}).update(langs)
    return built_in


def validate(task: str, text: str, cfg: TaskConfig) -> None:
    """Bad input is one clear error before the model is called."""
    if task not in TASKS:
        raise LmforgeError(f"unknown task {task!r}: {', '.join(TASKS)}")
    if not text or not text.strip():
        raise LmforgeError("the text is empty")
    if task == "classify" and not [x for x in cfg.labels if x.strip()]:
        raise LmforgeError("classify needs --labels (comma-separated, at least one)")
    if task == "extract":
        check_schema(cfg.schema)
    if task == "qa" and not (cfg.context or "").strip():
        raise LmforgeError("qa needs --context FILE (or --kb NAME) to answer from")
    if task == "translate" and cfg.to not in LANGUAGES:
        raise LmforgeError(f"unsupported language code {cfg.to!r}: {', '.join(LANGUAGES)}")
    if task == "summarize" and cfg.max_chars < 10:
        raise LmforgeError("--max-chars must be at least 10")


def check_schema(schema: Any) -> None:
    from lmforge.infer.structured import check_json_schema

    if not isinstance(schema, dict) or not schema:
        raise LmforgeError("extract needs --schema FILE: a JSON Schema object")
    check_json_schema(schema, "the schema is not a valid JSON Schema")


def ner_labels(cfg: TaskConfig) -> list[str]:
    return [x.strip() for x in cfg.labels if x.strip()] or ["PER", "LOC", "ORG"]


MAX_ENTITIES = 32


def output_schema(task: str, cfg: TaskConfig, text_len: int = 256) -> dict[str, Any]:
    """The JSON schema the model's answer must follow. Lengths are bounded by the text and by max_tokens
    (entity length, how many entities), so a constrained model that loops still closes its JSON within
    the token budget; raise max_tokens for texts with many entities."""
    labels = [x.strip() for x in cfg.labels if x.strip()]
    score = {"type": "number", "minimum": 0, "maximum": 1}
    props: dict[str, Any]
    if task == "sentiment":
        props = {"label": {"type": "string", "enum": list(SENTIMENTS)}, "score": score}
    elif task == "classify":
        props = {"label": {"type": "string", "enum": labels}, "score": score}
    elif task == "ner":
        cap = max(1, min(text_len, 64, cfg.max_tokens // 4))
        most = max(1, min(MAX_ENTITIES, (cfg.max_tokens - 8) // (cap // 2 + 12)))  # ~12 tokens of syntax each
        entity = {"type": "object", "properties": {"text": {"type": "string", "minLength": 1, "maxLength": cap},
                                                   "label": {"type": "string", "enum": ner_labels(cfg)}},
                  "required": ["text", "label"]}  # fmt: skip
        props = {"entities": {"type": "array", "items": entity, "maxItems": most}}
    elif task == "extract":
        schema = dict(cfg.schema or {})
        if cfg.cot:
            reasoning = {"type": "string", "maxLength": max(16, cfg.max_tokens // 3)}
            schema = {"type": "object", "properties": {"reasoning": reasoning, "answer": schema},
                      "required": ["reasoning", "answer"]}  # fmt: skip
        return schema
    else:
        key = {"qa": "answer", "translate": "translation", "summarize": "summary", "rewrite": "text"}[task]
        props = {key: {"type": "string"}}
    if cfg.cot:
        props = {"reasoning": {"type": "string", "maxLength": max(16, cfg.max_tokens // 3)}} | props
    return {"type": "object", "properties": props, "required": list(props)}


def example_of(schema: Any) -> Any:
    """An instance shaped like `schema` (enum: its first value), shown to the model instead of the schema
    itself: small models asked to follow a schema tend to echo the schema."""
    if not isinstance(schema, dict):
        return None
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {k: example_of(v) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [example_of(schema.get("items") or {})]
    return {"string": "...", "number": 0.9, "integer": 1, "boolean": True}.get(str(kind))


def build_messages(task: str, text: str, cfg: TaskConfig) -> list[dict[str, str]]:
    lang = cfg.lang if cfg.lang != "auto" else ("zh" if is_chinese(text + (cfg.context or "")) else "en")
    tmpl = templates(cfg.templates)[task][lang]
    zh = lang == "zh"
    to = LANGUAGES.get(cfg.to, (cfg.to, cfg.to))
    fill = {"labels": ", ".join(ner_labels(cfg) if task == "ner" else [x.strip() for x in cfg.labels if x.strip()]),
            "context": cfg.context or "", "to_name": to[1] if zh else to[0], "max_chars": cfg.max_chars,
            "style": STYLES[cfg.style] if zh else cfg.style, "tone": TONES[cfg.tone] if zh else cfg.tone,
            "length": LENGTHS[cfg.length][1 if zh else 0],
            "schema": json.dumps(cfg.schema, ensure_ascii=False) if cfg.schema else ""}  # fmt: skip
    shape = json.dumps(example_of(output_schema(task, cfg, len(text))), ensure_ascii=False)
    schema_line = (
        "\n\n只输出一个 JSON 对象，格式如：" if zh else "\n\nAnswer with one JSON object shaped like: "
    ) + shape
    if cfg.cot:
        schema_line += ("\n先在 reasoning 中逐步推理，再给出答案。" if zh else "\nThink step by step in \"reasoning\" first, then answer.")  # fmt: skip
    system = (cfg.system or tmpl["system"]) + schema_line
    messages = [{"role": "system", "content": system}]
    for ex in choose_examples(text, cfg):
        messages.append({"role": "user", "content": tmpl["user"].format(text=ex["text"], **fill)})
        messages.append({"role": "assistant", "content": json.dumps(ex["output"], ensure_ascii=False)})
    messages.append({"role": "user", "content": tmpl["user"].format(text=text, **fill)})
    return messages


def choose_examples(text: str, cfg: TaskConfig) -> list[dict[str, Any]]:
    """cfg.shots of cfg.examples: a random draw seeded by the text (the same text always gets the same
    shots), or the nearest by cosine similarity of embeddings (the packaged E5 by default)."""
    pool = cfg.examples
    if not cfg.shots or cfg.shots >= len(pool):
        return pool
    if cfg.pick == "similar":
        import numpy as np

        embed = cfg.embed
        if embed is None:
            from lmforge.hub import DEFAULT_EMBEDDER
            from lmforge.rag.embed import load_embedder

            embed = cfg.embed = load_embedder(DEFAULT_EMBEDDER).passages
        vecs = np.asarray(embed([text] + [ex["text"] for ex in pool]), dtype=np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True) + 1e-9
        order = np.argsort(-(vecs[1:] @ vecs[0]))[: cfg.shots]
        return [pool[int(i)] for i in sorted(order)]
    import random
    import zlib

    rng = random.Random(zlib.crc32(text.encode()))
    return [pool[i] for i in sorted(rng.sample(range(len(pool)), cfg.shots))]


def parse_json(raw: str) -> Any:
    """The first JSON object in `raw` (models wrap it in prose or code fences)."""
    start = raw.find("{")
    if start < 0:
        raise ValueError("no JSON object in the answer")
    obj, _ = json.JSONDecoder().raw_decode(raw[start:])
    return obj


def capped(schema: Any, n: int) -> Any:
    """The schema with every uncapped string limited to n characters (for the grammar only)."""
    if isinstance(schema, dict):
        out = {k: capped(v, n) for k, v in schema.items()}
        if out.get("type") == "string" and "maxLength" not in out and "enum" not in out:
            out["maxLength"] = n
        return out
    if isinstance(schema, list):
        return [capped(v, n) for v in schema]
    return schema


def uncapped(schema: Any) -> Any:
    """The schema without the length caps that only bound generation (a grammar counts a broken
    multi-byte character differently from Python's str): what an answer is validated against."""
    if isinstance(schema, dict):
        return {k: uncapped(v) for k, v in schema.items() if k not in ("maxLength", "maxItems")}
    if isinstance(schema, list):
        return [uncapped(v) for v in schema]
    return schema


def ask(
    backend: Any, task: str, messages: list[dict[str, str]], cfg: TaskConfig, text_len: int = 256
) -> tuple[dict[str, Any], int]:
    """(the validated JSON answer, tries used)."""
    import jsonschema

    from lmforge.infer.base import ChatOptions
    from lmforge.infer.chat import greedy_params

    schema = output_schema(task, cfg, text_len)
    constrained = bool(getattr(backend.capabilities, "grammar", False))
    options = ChatOptions(
        response_format={"type": "json_schema", "json_schema": {"name": task, "schema": capped(schema, max(16, cfg.max_tokens // 3))}}
        if constrained else None,
        allow_truncation=False,
    )  # fmt: skip
    convo = list(messages)
    raw, problem = "", ""
    for attempt in range(1, cfg.retries + 2):
        stream = backend.chat(convo, greedy_params(cfg.max_tokens, seed=attempt - 1), None, options)
        try:
            raw = "".join(c.text for c in stream)
        finally:
            stream.close()
        try:
            obj = parse_json(raw)
            jsonschema.validate(obj, uncapped(schema))
            return obj, attempt
        except (ValueError, jsonschema.ValidationError) as e:
            problem = e.message if isinstance(e, jsonschema.ValidationError) else str(e)
            convo = [*messages, {"role": "assistant", "content": raw},
                     {"role": "user", "content": f"That answer is not valid ({problem}). Answer again with JSON only."}]  # fmt: skip
    raise TaskOutputError(task, cfg.retries + 1, problem, raw)


def locate(text: str, entities: list[dict[str, str]]) -> tuple[list[dict[str, Any]], int]:
    """Character offsets of each named entity in `text` (the next mention after the previous one of the
    same text, else the first); entities that are not in the text are dropped and counted."""
    out, dropped, after = [], 0, {}
    for e in entities:
        t = e.get("text", "")
        if not t:
            dropped += 1
            continue
        start = text.find(t, after.get(t, 0))
        if start < 0:
            start = text.find(t)
        if start < 0:
            dropped += 1
            continue
        after[t] = start + len(t)
        out.append({"text": t, "label": e["label"], "start": start, "end": start + len(t)})
    return sorted(out, key=lambda x: (x["start"], x["end"])), dropped


def cut(summary: str, max_chars: int) -> tuple[str, bool]:
    """The summary cut to max_chars at the last sentence end inside it (else hard); (text, was_cut)."""
    if len(summary) <= max_chars:
        return summary, False
    head = summary[:max_chars]
    ends = [m.end() for m in re.finditer(r"[。！？.!?]", head)]
    return (head[: ends[-1]] if ends else head).rstrip(), True


def split_text(text: str, max_chars: int) -> list[tuple[int, str]]:
    """(start offset, piece) pieces of at most max_chars, cut after a sentence end or newline when one
    is in the second half of the window, else hard."""
    pieces, start = [], 0
    while start < len(text):
        end = min(len(text), start + max_chars)
        if end < len(text):
            window = text[start:end]
            cuts = [m.end() for m in re.finditer(r"[。！？.!?\n]", window) if m.end() > max_chars // 2]
            if cuts:
                end = start + cuts[-1]
        pieces.append((start, text[start:end]))
        start = end
    return pieces


def budget_chars(backend: Any, task: str, text: str, cfg: TaskConfig) -> int | None:
    """How many characters of text fit in one call (None: the whole text fits)."""
    ctx = getattr(backend, "context_length", None)
    tokenize = getattr(backend, "tokenize", None)
    if not ctx or tokenize is None:
        return None
    overhead = sum(len(tokenize(m["content"], add_special=False)) + 8 for m in build_messages(task, "", cfg))
    n_text = len(tokenize(text, add_special=False))
    room = ctx - cfg.max_tokens - overhead
    if n_text <= room:
        return None
    if room < 16:
        raise LmforgeError(f"the prompt leaves no room for the text in a {ctx}-token context: lower max_tokens "
                           f"or use a model with a longer context")  # fmt: skip
    return max(16, int(room * len(text) / max(1, n_text) * 0.9))


def run(backend: Any, task: str, text: str, cfg: TaskConfig) -> dict[str, Any]:
    """The task's JSON answer for `text` (what `POST /v1/tasks/{task}` returns and `--json` prints).
    A text longer than the context is split at sentence ends, each piece is processed, and the results
    are merged (NER offsets mapped back, summaries map-reduced); the answer then says `"chunks": n`."""
    validate(task, text, cfg)
    limit = (
        None if task == "qa" else budget_chars(backend, task, text, cfg)
    )  # qa: the context is long, not the text
    if limit is None:
        return run_one(backend, task, text, cfg)
    pieces = split_text(text, limit)
    parts = [(start, run_one(backend, task, piece, cfg)) for start, piece in pieces]
    return merge(backend, task, parts, cfg) | {"chunks": len(pieces)}


def merge(
    backend: Any, task: str, parts: list[tuple[int, dict[str, Any]]], cfg: TaskConfig
) -> dict[str, Any]:
    tries = sum(p["tries"] for _, p in parts)
    if task == "ner":
        ents = [
            e | {"start": e["start"] + off, "end": e["end"] + off} for off, p in parts for e in p["entities"]
        ]
        return {"entities": ents, "dropped": sum(p["dropped"] for _, p in parts), "tries": tries}
    if task in ("sentiment", "classify"):
        votes: dict[str, float] = {}
        for _, p in parts:
            votes[p["label"]] = votes.get(p["label"], 0.0) + float(p["score"])
        label = max(votes, key=lambda k: votes[k])
        return {"label": label, "score": round(votes[label] / sum(votes.values()), 4), "tries": tries}
    if task == "summarize":  # reduce: a summary of the pieces' summaries
        joined = "\n".join(p["summary"] for _, p in parts)
        final = (
            run(backend, "summarize", joined, cfg)
            if len(joined) > cfg.max_chars
            else {"summary": joined, "cut": False, "tries": 0}
        )
        return {"summary": final["summary"], "cut": final["cut"], "tries": tries + final["tries"]}
    if task in ("translate", "rewrite"):
        key = "translation" if task == "translate" else "text"
        sep = "" if (cfg.to if task == "translate" else "") in ("zh", "ja") else " "
        out = {key: sep.join(p[key].strip() for _, p in parts), "tries": tries}
        return out | ({"to": cfg.to} if task == "translate" else {})
    merged: dict[str, Any] = {}  # extract: the first value found for a key; lists concatenated
    for _, p in parts:
        for k, v in p.items():
            if k == "tries":
                continue
            if isinstance(v, list):
                merged.setdefault(k, []).extend(v)
            elif k not in merged or merged[k] in (None, ""):
                merged[k] = v
    return merged | {"tries": tries}


def run_one(backend: Any, task: str, text: str, cfg: TaskConfig) -> dict[str, Any]:
    """One call (text that fits the context)."""
    messages = build_messages(task, text, cfg)
    obj, tries = ask(backend, task, messages, cfg, len(text))
    reasoning = obj.pop("reasoning", None) if isinstance(obj, dict) else None
    if task == "extract" and cfg.cot:
        obj = obj["answer"]
    result: dict[str, Any]
    if task == "ner":
        entities, dropped = locate(text, obj["entities"])
        result = {"entities": entities, "dropped": dropped}
    elif task == "summarize":
        summary, was_cut = cut(obj["summary"].strip(), cfg.max_chars)
        result = {"summary": summary, "cut": was_cut}
    elif task == "translate":
        result = {"translation": obj["translation"], "to": cfg.to}
    else:
        result = obj
    if reasoning is not None:
        result["reasoning"] = reasoning
    result["tries"] = tries
    return result
