"""`lmforge task TASK MODEL [TEXT|--file F|--jsonl F]`: NLP tasks with answers that always parse.

Thin wrapper over lmforge.tasks.engine (cli.py's docstring). `--json` prints exactly what
`POST /v1/tasks/{task}` returns; a batch (--jsonl) prints one JSON line per item and reports failed
items by line without losing the others.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from lmforge.data.textfile import read_utf8
from lmforge.errors import LmforgeError
from lmforge.tasks.engine import TASKS, TaskConfig

_T = TaskConfig()
TaskName = Literal["classify", "sentiment", "ner", "extract", "qa", "translate", "summarize", "rewrite", "topics",
                   "cluster", "eval", "compare"]  # fmt: skip


def _examples(path: str | None) -> list[dict]:
    if not path:
        return []
    rows = []
    for n, line in enumerate(read_utf8(path, "--examples").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise LmforgeError(f"--examples {path} line {n}: not JSON ({e.msg})") from e
            if (
                isinstance(row, dict) and "output" not in row and "label" in row
            ):  # a --task classification file
                row = {"text": row.get("text"), "output": {"label": row["label"], "score": 1.0}}
            elif (
                isinstance(row, dict) and "output" not in row and isinstance(row.get("entities"), list)
            ):  # ner
                row = {"text": row.get("text"),
                       "output": {"entities": [{"text": e.get("text"), "label": e.get("label") or e.get("type")}
                                               for e in row["entities"] if isinstance(e, dict)]}}  # fmt: skip
            if not isinstance(row, dict) or "text" not in row or "output" not in row:
                raise LmforgeError(f'--examples {path} line {n}: needs "text" and "output" '
                                   f'(or a fine-tuning row: "label" / "entities")')  # fmt: skip
            rows.append(row)
    return rows


def task(
    name: Annotated[TaskName, typer.Argument(help="classify | sentiment | ner | extract | qa | translate | summarize | rewrite | topics | cluster.")],
    model: Annotated[str | None, typer.Argument(help="Any registered model that chats (local, remote, vLLM); topics/cluster: the PATH of the documents.")] = None,
    text: Annotated[str | None, typer.Argument(help="The text (or --file / --jsonl).")] = None,
    file: Annotated[str | None, typer.Option("--file", help="Read the text from this UTF-8 file.")] = None,
    jsonl: Annotated[str | None, typer.Option("--jsonl", help="Batch: one {\"text\": ...} per line; one JSON result per line.")] = None,
    labels: Annotated[str, typer.Option(help="classify: the classes; ner: entity types (comma-separated).")] = "",
    schema: Annotated[str | None, typer.Option(help="extract: a JSON Schema file.")] = None,
    context: Annotated[str | None, typer.Option(help="qa: the document to answer from.")] = None,
    kb: Annotated[str | None, typer.Option(help="qa: answer from the top passages of this knowledge base instead.")] = None,
    to: Annotated[str, typer.Option(help="translate: target language (en, zh, ja, ko, fr, de, es, ru).")] = _T.to,
    max_chars: Annotated[int, typer.Option(help="summarize: the longest summary.")] = _T.max_chars,
    style: Annotated[Literal["formal", "casual", "concise"], typer.Option(help="rewrite: style.")] = _T.style,
    tone: Annotated[Literal["positive", "neutral", "negative"], typer.Option(help="rewrite: tone.")] = _T.tone,
    length: Annotated[Literal["short", "long"], typer.Option(help="rewrite: length.")] = _T.length,
    lang: Annotated[Literal["auto", "en", "zh"], typer.Option(help="Prompt language (auto: by the text).")] = _T.lang,
    system: Annotated[str | None, typer.Option(help="A role/persona system prompt instead of the template's.")] = None,
    examples: Annotated[str | None, typer.Option(help="Few-shot: a JSONL of {\"text\", \"output\"}.")] = None,
    shots: Annotated[int, typer.Option(help="Few-shot: how many of --examples to show (0 = all).")] = 0,
    pick: Annotated[Literal["random", "similar"], typer.Option(help="Few-shot: a seeded random draw, or the most similar examples (embeddings).")] = "random",
    cot: Annotated[bool, typer.Option("--cot", help="Chain of thought: reason first, the answer is parsed out.")] = False,
    templates: Annotated[str | None, typer.Option(help="A YAML file overriding the built-in templates.")] = None,
    show_prompt: Annotated[bool, typer.Option("--show-prompt", help="Print exactly the messages sent.")] = False,
    k: Annotated[int, typer.Option("--k", help="topics/cluster: how many.")] = 8,
    label_model: Annotated[str | None, typer.Option("--label-model", help="cluster: a chat model that names each cluster.")] = None,
    embedder: Annotated[str | None, typer.Option(help="cluster: embedding model (default the packaged E5).")] = None,
    out: Annotated[str | None, typer.Option(help="cluster: folder for clusters.png/.html (default LMFORGE_HOME/reports/clusters); compare: for compare.md/.html/.png.")] = None,
    suite: Annotated[list[str] | None, typer.Option("--suite", help="eval/compare: an evaluation suite (bundled name or YAML path; repeatable).")] = None,
    finetuned: Annotated[list[str] | None, typer.Option("--finetuned", help="compare: a fine-tuned task model to put beside the prompted ones (repeatable).")] = None,
    limit: Annotated[int | None, typer.Option(help="eval/compare: the first N items of each suite.")] = None,
    no_cot: Annotated[bool, typer.Option("--no-cot", help="compare: leave out the chain-of-thought row.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON the API returns.")] = False,
) -> None:  # fmt: skip
    """Classify, sentiment, NER, extraction, QA, translation, summaries, rewriting; topics and clusters (NLP 任务)."""
    if name in ("topics", "cluster"):
        return collection(name, model, kb, k, label_model, embedder, out, as_json)
    if model is None:
        raise LmforgeError(f"task {name} needs a MODEL")
    from lmforge.cli import _load
    from lmforge.tasks.engine import build_messages, run, validate

    if name in ("eval", "compare"):
        if text is None or model not in TASKS:
            raise LmforgeError(
                f"usage: lmforge task {name} TASK MODEL --suite S (TASK: one of {', '.join(TASKS)})"
            )
        if not suite:
            raise LmforgeError(
                f"task {name} needs --suite (e.g. zh-sentiment, zh-ner, qa-zh, mt-zh-en, sum-zh)"
            )
    cfg = TaskConfig(labels=[x for x in labels.split(",") if x.strip()], to=to, max_chars=max_chars, style=style,
                     tone=tone, length=length, lang=lang, system=system, examples=_examples(examples), cot=cot,
                     shots=shots, pick=pick,
                     templates=templates,
                     context=read_utf8(context, "--context") if context else None)  # fmt: skip
    if name in ("eval", "compare"):
        return evaluate_task(name, model, str(text), cfg, list(suite or []), list(finetuned or []), limit,
                             not no_cot, out, as_json)  # fmt: skip
    if kb:
        cfg.context = kb_context(kb, text or "")
    if schema:
        try:
            cfg.schema = json.loads(read_utf8(schema, "--schema"))
        except json.JSONDecodeError as e:
            raise LmforgeError(f"--schema {schema} is not JSON: {e.msg} (line {e.lineno})") from e
    if sum(x is not None for x in (text, file, jsonl)) != 1:
        raise LmforgeError("give the text, or --file FILE, or --jsonl FILE (one of them)")
    items: list[tuple[int, str | None]] = []
    if jsonl:
        for n, line in enumerate(read_utf8(jsonl, "--jsonl").splitlines(), 1):
            if line.strip():
                try:
                    items.append((n, str(json.loads(line)["text"])))
                except (json.JSONDecodeError, KeyError, TypeError):
                    items.append((n, None))  # reported as a failed item below
    else:
        items = [(0, text if text is not None else read_utf8(str(file), "--file"))]
    if not jsonl:
        validate(name, items[0][1] or "", cfg)  # bad input fails before the model loads
    if show_prompt:
        for m in build_messages(name, next((t for _, t in items if t), " "), cfg):
            print(f"[{m['role']}]\n{m['content']}\n", file=sys.stderr)
    from lmforge.cli import _registry
    from lmforge.tasks.heads import load_head

    head = load_head(_registry(), model)
    if head is not None:
        head.check(name, cfg.labels)  # before any item runs
    backend = head if head is not None else _load(model, "auto", None, None)
    failed = 0
    try:
        for n, t in items:
            try:
                if t is None:
                    raise LmforgeError('not a JSON object with a "text" field')
                result = head.run(name, t, cfg.labels) if head is not None else run(backend, name, t, cfg)
            except LmforgeError as e:
                if not jsonl:
                    raise
                failed += 1
                print(f"line {n}: {e}", file=sys.stderr)
                continue
            if jsonl:
                print(json.dumps({"line": n, **result}, ensure_ascii=False), flush=True)
            elif as_json:
                print(json.dumps(result, ensure_ascii=False, indent=2))
            else:
                print(human(name, result))
    finally:
        backend.close()
    if jsonl:
        print(f"{len(items) - failed} of {len(items)} items done, {failed} failed", file=sys.stderr)


def evaluate_task(mode: str, task_name: str, model: str, cfg: TaskConfig, suites: list[str], finetuned: list[str],
                  limit: int | None, cot: bool, out: str | None, as_json: bool) -> None:  # fmt: skip
    """`task eval TASK MODEL --suite S` (one row per suite) and `task compare TASK MODEL --suite S` (zero-shot,
    few-shot, CoT and fine-tuned rows per suite, written as Markdown + HTML + PNG)."""
    from lmforge.cli import _load, _registry
    from lmforge.eval.harness import load_suite
    from lmforge.home import check_name
    from lmforge.progress import steps_progress
    from lmforge.tasks.engine import run
    from lmforge.tasks.evaluate import Strategy, evaluate, items_of, strategies, write_comparison
    from lmforge.tasks.heads import TaskHead, load_head

    reg = _registry()
    loaded = [load_suite(s) for s in suites]
    for s in loaded:  # a task the suite cannot score fails before any model loads
        items_of(task_name, s, cfg, 1)
    for f in finetuned:
        check_name(f)
    rows = (
        strategies(model, cfg, cfg.examples, cfg.shots, cfg.pick, finetuned, cot=cot)
        if mode == "compare"
        else [
            Strategy(
                "fine-tuned"
                if reg.exists(model) and reg.get(model).kind == "classifier"
                else ("few-shot" if cfg.examples else ("chain-of-thought" if cfg.cot else "zero-shot")),
                model,
                cfg,
            )
        ]
    )
    engines: dict[str, object] = {}
    results = []
    try:
        for s in loaded:
            n = len(s.items[: limit or None])
            for row in rows:
                if row.model not in engines:
                    head = load_head(reg, row.model)
                    engines[row.model] = head if head is not None else _load(row.model, "auto", None, None)
                eng = engines[row.model]
                if isinstance(eng, TaskHead):
                    eng.check(task_name, row.cfg.labels)

                    def go(t: str, c: TaskConfig, eng=eng) -> dict:
                        return eng.run(task_name, t, c.labels)
                else:

                    def go(t: str, c: TaskConfig, eng=eng) -> dict:
                        return run(eng, task_name, t, c)

                with steps_progress() as bar:
                    job = bar.add_task(f"{s.name} · {row.name}", total=n)
                    r = evaluate(go, task_name, row.model, s, row.cfg, strategy=row.name, limit=limit,
                                 tick=lambda i, bar=bar, job=job: bar.update(job, completed=i))  # fmt: skip
                results.append(r)
                if not as_json:
                    shown = ", ".join(f"{k} {v:.3f}" for k, v in r.metrics.items())
                    print(
                        f"{s.name:14} {row.name:28} {shown}  ({len(r.failed)} failed, {r.n / r.seconds:.2f} items/s)"
                    )
    finally:
        for eng in engines.values():
            eng.close()  # type: ignore[attr-defined]
    written = {}
    if mode == "compare":
        for s in loaded:
            mine = [r for r in results if r.suite == s.name]
            folder = Path(out) if out and len(loaded) == 1 else (
                Path(out) / s.name if out else reg.root / "reports" / f"task-compare-{task_name}-{model}-{s.name}"
            )  # fmt: skip
            written[s.name] = {k: str(v) for k, v in write_comparison(mine, folder).items()}
            if not as_json:
                print(f"{s.name}: {written[s.name]['markdown']}, compare.html, compare.png")
    if as_json:
        print(
            json.dumps(
                {"results": [r.as_dict() for r in results], "written": written}, ensure_ascii=False, indent=2
            )
        )


def collection(name: str, path: str | None, kb: str | None, k: int, label_model: str | None, embedder: str | None,
               out: str | None, as_json: bool) -> None:  # fmt: skip
    """`task topics` / `task cluster` over a file, a folder or a knowledge base."""
    from lmforge.tasks.topics import cluster, documents, topics

    docs = documents(path, kb)
    if name == "topics":
        result = topics(docs, k)
    else:
        from lmforge.home import Registry
        from lmforge.hub import DEFAULT_EMBEDDER
        from lmforge.rag.embed import load_embedder

        emb = load_embedder(embedder or DEFAULT_EMBEDDER)
        labeler = None
        if label_model:
            from lmforge.cli import _load
            from lmforge.tasks.engine import TaskConfig, run

            backend = _load(label_model, "auto", None, None)

            def labeler(texts: list[str]) -> str:
                joined = "\n".join(f"- {t[:200]}" for t in texts)
                return run(backend, "summarize", joined, TaskConfig(max_chars=24, max_tokens=64))["summary"]

        folder = Path(out) if out else Registry().root / "reports" / "clusters"
        result = cluster(docs, k, emb.passages, folder, label=labeler)
    if as_json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return
    for g in result.get("topics") or result["clusters"]:
        head = ", ".join(t["term"] for t in g["terms"][:8]) if "terms" in g else (g["label"] or "")
        print(f"[{g['id']}] ({g['size']} docs) {head}")
        for d in g["documents"][:3]:
            print(f"      {d['id']}: {d['preview'][:70]}")
    if "map_png" in result:
        print(f"map: {result['map_png']}  {result['map_html']}")


def kb_context(name: str, question: str, k: int = 4) -> str:
    """The k best passages of knowledge base `name` for `question` (hybrid search), numbered."""
    from lmforge.cli_kb import _kbs
    from lmforge.rag.retrieve import Retriever, SearchParams

    if not question.strip():
        raise LmforgeError("qa --kb needs the question as TEXT")
    hits = Retriever().search(_kbs().open(name), question, SearchParams(k=k, mode="hybrid"))
    if not hits:
        raise LmforgeError(f"knowledge base {name} has nothing for this question")
    return "\n\n".join(f"[{i}] ({h.document}) {h.text}" for i, h in enumerate(hits, 1))


def human(name: str, r: dict) -> str:
    if name in ("sentiment", "classify"):
        return f"{r['label']}  (score {r['score']:.2f})"
    if name == "ner":
        lines = [f"{e['label']:6} {e['text']}  [{e['start']}:{e['end']}]" for e in r["entities"]]
        if r["dropped"]:
            lines.append(f"({r['dropped']} entities the model named are not in the text: dropped)")
        return "\n".join(lines) or "(no entities)"
    if name == "summarize":
        return r["summary"] + (
            "\n(the model ran over --max-chars: cut, at a sentence end when there is one)" if r["cut"] else ""
        )
    key = {"qa": "answer", "translate": "translation", "rewrite": "text"}.get(name)
    return r[key] if key else json.dumps(r, ensure_ascii=False, indent=2)


def mount(app: typer.Typer) -> None:
    app.command("task")(task)
