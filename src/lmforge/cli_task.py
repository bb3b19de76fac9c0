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

from lmforge.errors import LmforgeError
from lmforge.tasks.engine import TaskConfig

_T = TaskConfig()
TaskName = Literal["classify", "sentiment", "ner", "extract", "qa", "translate", "summarize", "rewrite", "topics",
                   "cluster"]  # fmt: skip


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LmforgeError(f"{what} {path} is not UTF-8 text (byte {e.start}): convert it first, e.g. "
                           f"iconv -f GB18030 -t UTF-8") from e  # fmt: skip
    except OSError as e:
        raise LmforgeError(f"{what} {path}: {e.strerror}") from e


def _examples(path: str | None) -> list[dict]:
    if not path:
        return []
    rows = []
    for n, line in enumerate(_read(path, "--examples").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise LmforgeError(f"--examples {path} line {n}: not JSON ({e.msg})") from e
            if not isinstance(row, dict) or "text" not in row or "output" not in row:
                raise LmforgeError(f'--examples {path} line {n}: needs "text" and "output"')
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
    out: Annotated[str | None, typer.Option(help="cluster: folder for clusters.png/.html (default LMFORGE_HOME/reports/clusters).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON the API returns.")] = False,
) -> None:  # fmt: skip
    """Classify, sentiment, NER, extraction, QA, translation, summaries, rewriting; topics and clusters (NLP 任务)."""
    if name in ("topics", "cluster"):
        return collection(name, model, kb, k, label_model, embedder, out, as_json)
    if model is None:
        raise LmforgeError(f"task {name} needs a MODEL")
    from lmforge.cli import _load
    from lmforge.tasks.engine import build_messages, run, validate

    cfg = TaskConfig(labels=[x for x in labels.split(",") if x.strip()], to=to, max_chars=max_chars, style=style,
                     tone=tone, length=length, lang=lang, system=system, examples=_examples(examples), cot=cot,
                     shots=shots, pick=pick,
                     templates=templates,
                     context=_read(context, "--context") if context else None)  # fmt: skip
    if kb:
        cfg.context = kb_context(kb, text or "")
    if schema:
        try:
            cfg.schema = json.loads(_read(schema, "--schema"))
        except json.JSONDecodeError as e:
            raise LmforgeError(f"--schema {schema} is not JSON: {e.msg} (line {e.lineno})") from e
    if sum(x is not None for x in (text, file, jsonl)) != 1:
        raise LmforgeError("give the text, or --file FILE, or --jsonl FILE (one of them)")
    items: list[tuple[int, str | None]] = []
    if jsonl:
        for n, line in enumerate(_read(jsonl, "--jsonl").splitlines(), 1):
            if line.strip():
                try:
                    items.append((n, str(json.loads(line)["text"])))
                except (json.JSONDecodeError, KeyError, TypeError):
                    items.append((n, None))  # reported as a failed item below
    else:
        items = [(0, text if text is not None else _read(str(file), "--file"))]
    if not jsonl:
        validate(name, items[0][1] or "", cfg)  # bad input fails before the model loads
    if show_prompt:
        for m in build_messages(name, next((t for _, t in items if t), " "), cfg):
            print(f"[{m['role']}]\n{m['content']}\n", file=sys.stderr)
    backend = _load(model, "auto", None, None)
    failed = 0
    try:
        for n, t in items:
            try:
                if t is None:
                    raise LmforgeError('not a JSON object with a "text" field')
                result = run(backend, name, t, cfg)
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
