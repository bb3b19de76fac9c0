"""Validate the bundled evaluation suites (src/lmforge/eval/suites/) and print their counts.

Checks, for every `<name>.yaml` (except bias-templates.yaml) and its JSONL:
* the YAML parses, has exactly the expected keys, a known task and metrics for that task, a prompt
  (except perplexity) that formats every item, labels for classification;
* every JSONL line parses and has the fields its task needs; ids are unique;
* classification labels are in the label set; multiple-choice answers index one of 4 choices;
* NER offsets: text[start:start+len(entity)] == entity for every entity, types PER/LOC/ORG;
* reading-comprehension references occur verbatim in their context;
* perplexity records are 300-1500 characters;
and that bias-templates.yaml has well-formed families. If lmforge is importable, every suite and
the template file are also loaded with lmforge's own loaders (lmforge.eval.harness/bias).

Usage: python examples/eval/check_suites.py      (exit status 1 if anything is wrong)
Needs only the standard library and PyYAML; runs in well under a second.
"""

from __future__ import annotations

import json
import string
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parents[2] / "src" / "lmforge" / "eval" / "suites"  # the bundled suites
KEYS = {"name", "task", "lang", "description", "provenance", "data", "prompt", "labels", "metrics"}
REQUIRED = KEYS - {"prompt", "labels"}
METRICS = {
    "perplexity": {"perplexity", "bits_per_byte"},
    "multiple_choice": {"accuracy", "accuracy_norm"},
    "classification": {"accuracy", "macro_f1"},
    "ner": {"entity_f1", "entity_precision", "entity_recall"},
    "generation": {"bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match", "f1"},
}
FIELDS = {
    "perplexity": ("id", "text"),
    "multiple_choice": ("id", "question", "choices", "answer", "lang"),
    "classification": ("id", "text", "label"),
    "ner": ("id", "text", "entities"),
    "generation": ("id", "reference"),
}
LANGS = {"zh", "en", "zh-en", "en-zh"}


def check_suite(path: Path, errors: list[str]) -> str:
    def bad(msg: str) -> None:
        errors.append(f"{path.name}: {msg}")

    desc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(desc, dict):
        bad("not a mapping")
        return ""
    missing, extra = REQUIRED - set(desc), set(desc) - KEYS
    if missing or extra:
        bad(f"keys: missing {sorted(missing)}, unexpected {sorted(extra)}")
    task = desc.get("task")
    if task not in METRICS:
        bad(f"unknown task {task!r}")
        return ""
    if desc.get("name") != path.stem or desc.get("data") != f"{path.stem}.jsonl":
        bad("name/data must match the file stem")
    if desc.get("lang") not in LANGS:
        bad(f"lang {desc.get('lang')!r}")
    if not set(desc.get("metrics") or []) <= METRICS[task] or not desc.get("metrics"):
        bad(f"metrics {desc.get('metrics')} do not fit {task}")
    prompt = desc.get("prompt")
    if (task == "perplexity") != (prompt is None):
        bad("perplexity has no prompt; every other task needs one")
    labels = desc.get("labels")
    if (task == "classification") != (labels is not None):
        bad("labels belong to (and only to) classification")
    fields_in_prompt = {f for _, f, _, _ in string.Formatter().parse(prompt or "") if f}

    data = HERE / str(desc.get("data"))
    items, ids = [], set()
    for n, line in enumerate(data.read_text(encoding="utf-8").splitlines(), 1):
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            bad(f"line {n}: {e}")
            continue
        items.append(item)
        where = f"line {n} ({item.get('id')})"
        need = FIELDS[task] + tuple(fields_in_prompt)
        if any(k not in item for k in need):
            bad(f"{where}: missing {[k for k in need if k not in item]}")
            continue
        if item["id"] in ids:
            bad(f"{where}: duplicate id")
        ids.add(item["id"])
        if prompt is not None:
            prompt.format(**item)
        if task == "classification" and item["label"] not in labels:
            bad(f"{where}: label {item['label']!r}")
        if task == "multiple_choice":
            ok = isinstance(item["answer"], int) and len(item["choices"]) == 4 and 0 <= item["answer"] < 4
            if not ok or len(set(item["choices"])) != 4:
                bad(f"{where}: needs 4 distinct choices and an answer index 0-3")
        if task == "ner":
            if not item["entities"]:
                bad(f"{where}: no entities")
            for e in item["entities"]:
                if e["type"] not in ("PER", "LOC", "ORG"):
                    bad(f"{where}: entity type {e['type']}")
                if item["text"][e["start"] : e["start"] + len(e["text"])] != e["text"]:
                    bad(f"{where}: offset {e['start']} does not give {e['text']!r}")
            if any(ch.isspace() for ch in item["text"]) or "/" in item["text"]:
                bad(f"{where}: text still has spaces or tags")
        if task == "perplexity" and not 300 <= len(item["text"]) <= 1500:
            bad(f"{where}: {len(item['text'])} characters")
        if task == "generation":
            if not str(item["reference"]).strip():
                bad(f"{where}: empty reference")
            if "context" in item and item["reference"] not in item["context"]:
                bad(f"{where}: reference not found verbatim in context")
    if not items:
        bad("no items")
    summary = f"{path.stem:14} {task:16} {desc.get('lang'):6} {len(items):4} items"
    if task == "classification":
        counts = {lab: sum(i.get("label") == lab for i in items) for lab in labels}
        summary += "  " + " ".join(f"{k}={v}" for k, v in counts.items())
    if task == "multiple_choice":
        langs = {lang: sum(i.get("lang") == lang for i in items) for lang in ("en", "zh")}
        pos = [sum(i.get("answer") == k for i in items) for k in range(4)]
        summary += f"  en={langs['en']} zh={langs['zh']} answer positions={pos}"
    if task == "ner":
        ents = [e for i in items for e in i["entities"]]
        by_type = {t: sum(e["type"] == t for e in ents) for t in ("PER", "LOC", "ORG")}
        summary += "  entities=" + " ".join(f"{t}:{n}" for t, n in by_type.items())
    if task == "perplexity":
        lens = [len(i["text"]) for i in items]
        summary += f"  chars {min(lens)}-{max(lens)}, {sum(len(i['text'].encode()) for i in items)} bytes"
    return summary


def check_bias(path: Path, errors: list[str]) -> str:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    fams = data.get("families") or []
    for f in fams:
        slot = "{" + str(f.get("slot")) + "}"
        if slot not in f.get("template", "") or slot not in f.get("mask_template", ""):
            errors.append(f"{path.name}: {f.get('name')}: slot missing from a template")
        if "[MASK]" not in f.get("mask_template", ""):
            errors.append(f"{path.name}: {f.get('name')}: mask_template without [MASK]")
        if len(f.get("targets") or {}) != 2 or len(f.get("fillers") or []) < 10:
            errors.append(f"{path.name}: {f.get('name')}: needs 2 targets and 10+ fillers")
        if f.get("lang") == "en" and not all(str(t).startswith(" ") for t in f["targets"].values()):
            errors.append(f"{path.name}: {f.get('name')}: English targets need a leading space")
    return f"{path.stem:14} {len(fams)} families: " + ", ".join(
        f"{f['name']} ({len(f['fillers'])} fillers)" for f in fams
    )


def check_with_lmforge(paths: list[Path], errors: list[str]) -> str:
    try:
        from lmforge.eval.bias import load_families
        from lmforge.eval.harness import load_suite
    except ImportError:
        return "lmforge not importable here: skipped loading with lmforge's own loaders"
    for p in paths:
        try:
            load_suite(p)
        except Exception as e:  # noqa: BLE001 - report whatever the loader raises
            errors.append(f"{p.name}: lmforge.load_suite: {e}")
    try:
        load_families(HERE / "bias-templates.yaml")
    except Exception as e:  # noqa: BLE001
        errors.append(f"bias-templates.yaml: lmforge.load_families: {e}")
    return f"lmforge loaders: {len(paths)} suites + bias templates loaded"


def main() -> int:
    errors: list[str] = []
    suites = sorted(p for p in HERE.glob("*.yaml") if p.stem != "bias-templates")
    for p in suites:
        print(check_suite(p, errors))
    print(check_bias(HERE / "bias-templates.yaml", errors))
    print(check_with_lmforge(suites, errors))
    orphans = sorted({p.stem for p in HERE.glob("*.jsonl")} - {p.stem for p in suites})
    if orphans:
        errors.append(f"JSONL files without a YAML: {orphans}")
    for e in errors:
        print("ERROR", e)
    print("OK" if not errors else f"{len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
