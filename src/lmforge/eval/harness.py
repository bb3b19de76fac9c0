"""Evaluation suites: a YAML description + JSONL data, run against a loaded model.

Task types and how they score (the lm-evaluation-harness conventions where one exists):
- perplexity: sliding windows of `window` tokens moved by `stride`, each token scored once with as
  much left context as the window allows; the first token is conditioned on the end-of-text token.
  Reports token perplexity and bits per UTF-8 byte (comparable across tokenizers; perplexity is not).
- multiple_choice: log-likelihood of " <choice>" after the prompt; accuracy takes the largest sum,
  accuracy_norm the largest sum divided by the choice's length in characters (checked against
  lm-evaluation-harness in benchmarks/lm_eval_check.py).
- classification: the same over each label's verbalizer; accuracy and macro-F1.
- ner: greedy generation of `类型：名称` lines, compared as (type, text) sets: entity precision/recall/F1.
- generation: greedy generation; BLEU / chrF (sacrebleu, 'zh' tokenizer for Chinese targets),
  ROUGE-1/2/L (rouge-score; Chinese segmented with jieba), exact match and token F1.
A run records the exact prompt template, decoding settings, seed and suite checksum, so the same
model + suite + settings gives the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge import __version__
from lmforge.errors import LmforgeError
from lmforge.eval import metrics as M
from lmforge.infer.base import Backend, require

TASKS = ("perplexity", "multiple_choice", "classification", "ner", "generation")
NEEDS = {
    "perplexity": ("text",),
    "multiple_choice": ("question", "choices", "answer"),
    "classification": ("label",),
    "ner": ("text", "entities"),
    "generation": ("reference",),
}
KNOWN_METRICS = {
    "perplexity": {"perplexity", "bits_per_byte"},
    "multiple_choice": {"accuracy", "accuracy_norm"},
    "classification": {"accuracy", "macro_f1"},
    "ner": {"entity_f1", "entity_precision", "entity_recall"},
    "generation": {"bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match", "f1"},
}
NER_TYPES = {"人名": "PER", "地名": "LOC", "机构名": "ORG", "机构": "ORG", "组织": "ORG", "PER": "PER", "LOC": "LOC",
             "ORG": "ORG", "PERSON": "PER", "LOCATION": "LOC", "ORGANIZATION": "ORG"}  # fmt: skip


TOKENIZER_PROBE = "Tokenizers differ: 分词器不同时，困惑度不可比，请比较每字节比特数。 0123 <tag> naïve"


def suites_dir() -> Path:
    """Bundled suites: $LMFORGE_SUITES, else the package's own suites/ (package data, so an
    installed wheel has them too; provenance and build scripts in examples/eval/)."""
    env = os.environ.get("LMFORGE_SUITES")
    return Path(env) if env else Path(__file__).resolve().parent / "suites"


@dataclass
class Suite:
    name: str
    task: str
    lang: str
    description: str
    provenance: str
    data: Path
    prompt: str
    labels: dict[str, str]
    metrics: list[str]
    items: list[dict[str, Any]]
    sha256: str

    def render(self, item: dict[str, Any]) -> str:
        try:
            return self.prompt.format(**item)
        except (KeyError, IndexError) as e:
            raise LmforgeError(
                f"suite {self.name}: prompt uses {e} which item {item.get('id', '?')} lacks"
            ) from e


def load_suite(spec: str | Path) -> Suite:
    """A suite by bundled name, or a path to its YAML (or to a JSONL with a YAML of the same stem)."""
    import yaml

    path = Path(spec)
    if not path.exists():
        path = suites_dir() / f"{spec}.yaml"
        if not path.exists():
            have = sorted(p.stem for p in suites_dir().glob("*.yaml") if p.stem != "bias-templates")
            raise LmforgeError(
                f"no suite {spec!r}: give a YAML path or one of: {', '.join(have) or 'none bundled'}"
            )
    if path.suffix == ".jsonl":
        path = path.with_suffix(".yaml")
    try:
        desc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, OSError) as e:
        raise LmforgeError(f"{path.name}: not a readable YAML suite description ({e})") from e
    for key in ("name", "task", "data"):
        if key not in desc:
            raise LmforgeError(f"{path.name}: missing '{key}'")
    task = desc["task"]
    if task not in TASKS:
        raise LmforgeError(f"{path.name}: unknown task {task!r}; use one of {', '.join(TASKS)}")
    metrics = list(desc.get("metrics") or sorted(KNOWN_METRICS[task]))
    bad = [m for m in metrics if m not in KNOWN_METRICS[task]]
    if bad:
        raise LmforgeError(
            f"{path.name}: metrics {bad} do not apply to {task}; use {sorted(KNOWN_METRICS[task])}"
        )
    if task != "perplexity" and not desc.get("prompt"):
        raise LmforgeError(f"{path.name}: missing 'prompt' (a template over the JSONL fields)")
    labels = {str(k): str(v) for k, v in (desc.get("labels") or {}).items()}
    if task == "classification" and len(labels) < 2:
        raise LmforgeError(f"{path.name}: classification needs 'labels' (label: verbalizer, at least two)")
    data = path.parent / desc["data"]
    if not data.is_file():
        raise LmforgeError(f"{path.name}: data file {desc['data']} not found next to it")
    raw = data.read_bytes()
    items = _read_items(data, raw, task, labels)
    return Suite(desc["name"], task, str(desc.get("lang", "en")), desc.get("description", ""), desc.get("provenance", ""),
                 data, desc.get("prompt", ""), labels, metrics, items, hashlib.sha256(raw + path.read_bytes()).hexdigest())  # fmt: skip


def jsonl_rows(name: str, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a bad line is an error naming file and line."""
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise LmforgeError(f"{name} line {n}: not valid JSON ({e.msg})") from e
        if not isinstance(row, dict):
            raise LmforgeError(f"{name} line {n}: expected a JSON object")
        yield n, row


def _read_items(data: Path, raw: bytes, task: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    items = []
    for n, item in jsonl_rows(data.name, raw.decode("utf-8")):
        missing = [k for k in NEEDS[task] if k not in item]
        if missing:
            raise LmforgeError(f"{data.name} line {n}: missing {', '.join(missing)} (needed by {task})")
        if task == "classification" and str(item["label"]) not in labels:
            raise LmforgeError(
                f"{data.name} line {n}: label {item['label']!r} is not in the label set {sorted(labels)}"
            )
        if task == "multiple_choice" and not (
            isinstance(item["answer"], int) and 0 <= item["answer"] < len(item["choices"])
        ):
            raise LmforgeError(f"{data.name} line {n}: answer must index into choices")
        if task == "generation" and not str(item["reference"]).strip():
            raise LmforgeError(f"{data.name} line {n}: empty reference")
        if task == "perplexity" and not str(item["text"]).strip():
            raise LmforgeError(f"{data.name} line {n}: empty text")
        item.setdefault("id", str(n))
        items.append(item)
    if not items:
        raise LmforgeError(f"{data.name}: no items")
    return items


@dataclass(frozen=True)
class EvalConfig:
    limit: int | None = None
    """Only the first N items (in file order, so runs are comparable)."""
    max_tokens: int = 128
    """Generation budget per item (generation and ner tasks)."""
    seed: int = 0
    window: int | None = None
    """Perplexity window in tokens (default: the model's context, at most 2048)."""
    stride: int | None = None
    """Perplexity stride (default: half the window)."""
    chat: bool | None = None
    """Use the model's chat template for generation (default: when the model is a chat model)."""


class Scorer:
    """What a task needs from a model: token log-likelihoods (capability `score`) and greedy
    generation (`chat`, or raw `tokens` for --raw). Any kind of model runs generation suites;
    log-likelihood suites need one that can score."""

    def __init__(self, backend: Backend, *, chat: bool) -> None:
        self.backend = backend
        self.chat = chat
        self.prefix: list[int] = []
        if backend.capabilities.tokens:
            # the token that conditions the first scored token: BOS if the model has one, else
            # end-of-text (lm-evaluation-harness's prefix_token_id rule)
            first = backend.special_tokens.get("bos_token") or backend.special_tokens.get("eos_token")
            self.prefix = backend.tokenize(first, add_special=False)[:1] if first else []

    def _require_score(self) -> None:
        require(self.backend, "score", "serve it from a local file or use generation suites")

    @property
    def by_text(self) -> bool:
        """No local token access, but the upstream returns prompt log-probabilities: score text
        through its completions API, split at the character boundary."""
        caps = self.backend.capabilities
        return not caps.score and caps.score_text

    def tokens(self, text: str) -> list[int]:
        return self.backend.tokenize(text, add_special=False)

    def loglikelihood(self, context: str, continuation: str) -> float:
        """Sum of log p(continuation | context), split at the token boundary the way lm-eval does."""
        if self.by_text:  # the tokens that start inside the continuation
            return self.backend.score_text(context + continuation, len(context))[0]
        self._require_score()
        whole = self.tokens(context + continuation)
        ctx = self.tokens(context) if context else []
        if not context or whole[: len(ctx)] != ctx:
            ctx = self.prefix + (ctx if context else [])
            whole = self.prefix + whole
        cont = whole[len(ctx) :]
        if not cont:
            return 0.0
        logp = self.backend.score(whole)  # log p(whole[i] | whole[:i]) for i >= 1
        return float(sum(logp[len(ctx) - 1 :]))

    def rolling(self, text: str, window: int, stride: int) -> tuple[float, int]:
        """(summed NLL, tokens scored) over the text with a sliding window."""
        if (
            self.by_text
        ):  # one request: the upstream's context must hold the text; the first token is not scored
            total, n = self.backend.score_text(text, 0)
            return -total, n
        self._require_score()
        ids = self.prefix + self.tokens(text)
        total, scored, prev_end, begin = 0.0, 0, 1, 0
        while prev_end < len(ids):
            end = min(begin + window, len(ids))
            logp = self.backend.score(ids[begin:end])  # predictions for ids[begin+1:end]
            keep = end - max(prev_end, begin + 1)
            total -= sum(logp[len(logp) - keep :])
            scored += keep
            prev_end = end
            begin += stride
        return total, scored

    def generate(self, prompt: str, max_tokens: int, seed: int) -> str:
        """The greedy answer: through the chat template (any kind of model) or raw (token access)."""
        from lmforge.infer.chat import greedy_params, greedy_text

        if self.chat:
            return greedy_text(self.backend, [{"role": "user", "content": prompt}], max_tokens, seed=seed)
        require(self.backend, "tokens", "run the suite with --chat")
        ids = self.backend.tokenize(prompt, add_special=True)
        return "".join(c.text for c in self.backend.generate(ids, greedy_params(max_tokens, seed)))


@dataclass
class SuiteResult:
    model: str
    suite: str
    task: str
    metrics: dict[str, float]
    n: int
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("items")
        return d


def parse_entities(text: str) -> set[tuple[str, str]]:
    """`类型：名称` / `TYPE: name` lines → {(PER|LOC|ORG, name)}; anything else is ignored."""
    out = set()
    for line in text.splitlines():
        m = re.match(r"^\s*[-*•]?\s*([^:：\s]+)\s*[:：]\s*(.+?)\s*$", line)
        kind = (NER_TYPES.get(m.group(1)) or NER_TYPES.get(m.group(1).upper())) if m else None
        if m and kind:
            for name in re.split(r"[、,，;；]", m.group(2)):
                if name.strip():
                    out.add((kind, name.strip()))
    return out


def run_suite(scorer: Scorer, suite: Suite, model: str, cfg: EvalConfig,
              progress: Callable[[int, int], None] | None = None) -> SuiteResult:  # fmt: skip
    items = suite.items[: cfg.limit] if cfg.limit else suite.items
    t0 = time.monotonic()
    rows: list[dict[str, Any]] = []
    out: dict[str, float] = {}
    total = len(items)

    def tick(i: int) -> None:
        if progress:
            progress(i + 1, total)

    if suite.task == "perplexity":
        ctx = scorer.backend.context_length
        window = min(cfg.window or min(ctx, 2048), ctx)
        stride = min(cfg.stride or max(1, window // 2), window - 1)
        nll = tokens = nbytes = 0.0
        for i, item in enumerate(items):
            s, n = scorer.rolling(item["text"], window, stride)
            b = len(item["text"].encode("utf-8"))
            rows.append({"id": item["id"], "nll": s, "tokens": n, "bytes": b})
            nll, tokens, nbytes = nll + s, tokens + n, nbytes + b
            tick(i)
        out = {
            "perplexity": M.perplexity(nll, int(tokens)),
            "bits_per_byte": M.bits_per_byte(nll, int(nbytes)),
        }
        if scorer.by_text:  # tokenized upstream, one request per text: no window, no local fingerprint
            window = stride = 0
            tokenizer = f"upstream:{scorer.backend.model_name}"
        else:
            tokenizer = hashlib.sha256(json.dumps(scorer.tokens(TOKENIZER_PROBE)).encode()).hexdigest()[:16]
        extra = {
            "window": window,
            "stride": stride,
            "tokens": int(tokens),
            "bytes": int(nbytes),
            "tokenizer": tokenizer,
        }
    elif suite.task in ("multiple_choice", "classification"):
        golds, preds, preds_norm = [], [], []
        labels = list(suite.labels)
        for i, item in enumerate(items):
            context = suite.render(item)
            if suite.task == "multiple_choice":
                options = [" " + str(c) for c in item["choices"]]
                gold = item["answer"]
            else:
                sep = "" if context.endswith((" ", "\n")) or suite.lang.startswith("zh") else " "
                options = [sep + suite.labels[lab] for lab in labels]
                gold = labels.index(str(item["label"]))
            lls = [scorer.loglikelihood(context, o) for o in options]
            best = max(range(len(lls)), key=lambda j: lls[j])
            # lm-eval's acc_norm divides by the choice's length in characters, without the delimiter
            best_norm = max(range(len(lls)), key=lambda j: lls[j] / max(1, len(options[j].lstrip(" "))))
            golds.append(gold)
            preds.append(best)
            preds_norm.append(best_norm)
            rows.append({"id": item["id"], "loglik": lls, "pred": best, "pred_norm": best_norm, "gold": gold})
            tick(i)
        if suite.task == "multiple_choice":
            out = {"accuracy": M.accuracy(preds, golds), "accuracy_norm": M.accuracy(preds_norm, golds)}
        else:
            p, g = [labels[x] for x in preds], [labels[x] for x in golds]
            out = {"accuracy": M.accuracy(p, g), "macro_f1": M.macro_f1(p, g, labels)}
        extra = {"labels": suite.labels}
    else:  # generation and ner
        preds_text, refs = [], []
        ents_pred, ents_gold = [], []
        for i, item in enumerate(items):
            text = scorer.generate(suite.render(item), cfg.max_tokens, cfg.seed).strip()
            if suite.task == "ner":
                pred = parse_entities(text)
                gold = {(e["type"], e["text"]) for e in item["entities"]}
                ents_pred.append(pred)
                ents_gold.append(gold)
                rows.append({"id": item["id"], "output": text, "pred": sorted(pred), "gold": sorted(gold)})
            else:
                if not {"rouge1", "rouge2", "rougeL"} & set(suite.metrics):
                    text = text.split("\n")[0].strip()  # short answers and translations: the first line
                preds_text.append(text)
                refs.append(str(item["reference"]))
                rows.append({"id": item["id"], "output": text, "reference": item["reference"]})
            tick(i)
        if suite.task == "ner":
            prf = M.entity_prf(ents_pred, ents_gold)
            out = {
                "entity_f1": prf["f1"],
                "entity_precision": prf["precision"],
                "entity_recall": prf["recall"],
            }
        else:
            target = suite.lang.split("-")[-1]
            out = generation_metrics(suite.metrics, preds_text, refs, target)
        extra = {"max_tokens": cfg.max_tokens, "temperature": 0.0, "chat_template": scorer.chat}
    config = {"prompt": suite.prompt, "seed": cfg.seed, "limit": cfg.limit, "suite_sha256": suite.sha256,
              "lmforge": __version__, "decoding": "greedy", **extra}  # fmt: skip
    shown = {k: round(v, 6) for k, v in out.items() if k in suite.metrics or suite.task == "ner"}
    return SuiteResult(model, suite.name, suite.task, shown, len(items), time.monotonic() - t0, config, rows)


def generation_metrics(names: list[str], preds: list[str], refs: list[str], lang: str) -> dict[str, float]:
    out: dict[str, float] = {}
    if "bleu" in names:
        out["bleu"] = M.bleu(preds, refs, lang)
    if "chrf" in names:
        out["chrf"] = M.chrf(preds, refs)
    if {"rouge1", "rouge2", "rougeL"} & set(names):
        out |= M.rouge(preds, refs, lang)
    if "exact_match" in names:
        out["exact_match"] = M.mean([M.exact_match(p, r) for p, r in zip(preds, refs, strict=True)])
    if "f1" in names:
        out["f1"] = M.mean([M.token_f1(p, r) for p, r in zip(preds, refs, strict=True)])
    return out
