"""The `lmforge` command as users run it: real subprocesses, exit codes, one-line errors."""

import json
import os
import subprocess
import sys

import pytest


@pytest.fixture()
def cli(tmp_path):
    env = {**os.environ, "LMFORGE_HOME": str(tmp_path / "home")}

    def run(*args, stdin: str | None = None):
        return subprocess.run(
            [sys.executable, "-m", "lmforge", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )

    return run


def assert_clear_error(proc, needle: str):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_models_add_ls_show_rm(cli, tiny_gguf, tiny_qwen2_dir):
    assert cli("models", "add", str(tiny_gguf), "--name", "tiny").returncode == 0
    assert cli("models", "add", str(tiny_qwen2_dir), "--name", "tiny-hf").returncode == 0
    ls = cli("models", "ls")
    assert ls.returncode == 0
    rows = {ln.split()[0]: ln.split() for ln in ls.stdout.splitlines()[1:]}
    assert rows["tiny"][1:3] == ["chat", "gguf"] and rows["tiny-hf"][2] == "hf"
    show = cli("models", "show", "tiny")
    assert show.stdout.startswith("tiny  chat · gguf") and "\ntiny [chat, gguf] ◀" in show.stdout
    assert_clear_error(cli("models", "add", str(tiny_gguf), "--name", "tiny"), "already exists")
    assert cli("models", "rm", "tiny").returncode == 0
    assert "tiny " not in cli("models", "ls").stdout


def test_models_show_draws_the_lineage_tree(cli, tmp_path):
    """Ancestors above, descendants below, one line per artifact with its key config | metrics; the
    diamond's second edge is a reference; a parent never registered is a root marked so."""
    from conftest import put_lineage_chain

    from lmforge.home import Registry

    put_lineage_chain(Registry(tmp_path / "home"))
    show = cli("models", "show", "lm")
    assert show.returncode == 0, show.stderr
    head, tree, metrics, hint = show.stdout.split("\n\n")
    assert head.startswith("lm  base · hf · 1 B · 12.3M params · ") and head.endswith("min ago")
    assert tree.splitlines() == [
        "lineage (模型谱系): made from 3, used by 2, missing 1",
        "gone (not in the registry)",
        "└── bpe [tokenizer, hf-tokenizer]  (see under corpus)",
        "corpus [dataset, parquet]  dedup=near | 100 documents (90 train / 10 val) · zh 60, en 40",
        "├── bpe [tokenizer, hf-tokenizer]  vocab_size=8,000 | chars/token zh 1.52, en 3.91 · lossless",
        "│   └── lm [base, hf] ◀  12.3M params · objective=clm · steps=2,000 | val_ppl=14.23",
        "│       ├── lm-q8 [base, gguf]  12.3M params · quant=q8_0 | parity greedy 4/5, ppl 1.23% apart",
        "│       └── lm-chat [chat, hf]  zh-sentiment accuracy=0.75",
        "└── lm [base, hf] ◀  (see under bpe)",
    ]
    assert metrics == "metrics:\n  val_ppl: 14.23"
    assert hint == "full manifest: lmforge models show lm --json\n"
    leaf = cli("models", "show", "lm-chat").stdout
    assert "lm-q8" not in leaf and "unrelated" not in leaf  # only its own chain
    assert "\n  eval:zh-sentiment: metrics.accuracy 0.75 · n 4\n" in leaf  # stored numbers, nested too
    q8 = cli("models", "show", "lm-q8").stdout
    assert "\n  parity: prompts 5 · greedy_exact 4 · ppl_rel_diff 0.0123\n" in q8
    alone = cli("models", "show", "unrelated").stdout.split("\n\n")[1]
    assert alone == "lineage (模型谱系): made from 0, used by 0\nunrelated [base, hf] ◀"


def test_models_show_json_is_the_manifest_plus_lineage_names(cli, tmp_path):
    from dataclasses import asdict, fields

    from conftest import put_lineage_chain

    from lmforge.home import Manifest, Registry

    reg = Registry(tmp_path / "home")
    put_lineage_chain(reg)
    out = cli("models", "show", "lm", "--json")
    assert out.returncode == 0 and out.stderr == ""
    data = json.loads(out.stdout)
    assert list(data) == [f.name for f in fields(Manifest)] + ["lineage"]  # field order is the contract
    assert data == {**asdict(reg.get("lm")), "lineage": {"ancestors": ["bpe", "corpus", "gone"],
                                                          "descendants": ["lm-q8", "lm-chat"], "missing": ["gone"]}}  # fmt: skip
    assert cli("models", "show", "lm", "--json").stdout == out.stdout  # byte-stable
    assert_clear_error(cli("models", "show", "ghost", "--json"), "unknown model 'ghost'")


def test_models_ls_groups_by_kind_with_age(cli, tmp_path):
    from dataclasses import asdict

    from conftest import put_lineage_chain

    from lmforge.home import Manifest, Registry

    reg = Registry(tmp_path / "home")
    put_lineage_chain(reg)
    reg.put(Manifest(name="handbook", kind="kb", format="lmforge-kb", path=""), lambda stage: None)
    out = cli("models", "ls")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "FORMAT", "SIZE", "PARAMS", "AGE"]
    groups: dict[str, list[str]] = {}
    for ln in lines[1:]:
        if ln.startswith("── "):
            groups[ln.strip("─ ")] = current = []
        else:
            current.append(ln.split()[0])
    assert groups == {"datasets (1)": ["corpus"], "tokenizers (1)": ["bpe"],
                      "models (4)": ["lm", "lm-chat", "lm-q8", "unrelated"], "knowledge bases (1)": ["handbook"]}  # fmt: skip
    q8 = next(ln for ln in lines if ln.startswith("lm-q8 ")).split()
    assert q8[1:6] == ["base", "gguf:q8_0", "1", "B", "12.3M"] and " ".join(q8[6:]).endswith("min ago")
    as_json = json.loads(cli("models", "ls", "--json").stdout)
    assert as_json == [asdict(m) for m in reg.list()]  # a list of manifests, by name


def test_generate_raw_and_reproducible(cli, tiny_gguf):
    cli("models", "add", str(tiny_gguf), "--name", "tiny")
    args = (
        "generate",
        "tiny",
        "Once upon a time",
        "--raw",
        "--temperature",
        "1.0",
        "--seed",
        "42",
        "-n",
        "16",
    )
    a, b = cli(*args), cli(*args)
    assert a.returncode == 0 and a.stdout == b.stdout and a.stdout.strip()
    g = cli("generate", "tiny", "The capital of France is", "--raw", "--temperature", "0", "-n", "8")
    assert "Paris" in g.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (("generate", "nope", "hi"), "unknown model 'nope'"),
        (("generate", "tiny", "hi", "--temperature", "3"), "temperature must be between 0 and 2"),
        (("generate", "tiny", "hi", "--top-p", "0"), "top_p"),
        (("generate", "tiny", "hi", "-n", "-1"), "max_tokens"),
        (("generate", "tiny", "   "), "empty prompt"),
        (("generate", "tiny", "Once upon a time " * 100, "--raw", "--ctx", "64"), "but the context holds"),
        (("generate", "tiny", "Once upon a time " * 100, "--ctx", "64"), "-token context"),
        (
            ("generate", "tiny", "hi", "--backend", "magic"),
            "'magic' is not one of 'auto', 'llamacpp', 'transformers'",
        ),
        (("export", "tiny", "--quant", "q3"), "'q3' is not one of 'f16', 'q8_0', 'q4_k_m'"),
        (
            ("kb", "search", "docs", "q", "--mode", "fuzzy"),
            "'fuzzy' is not one of 'hybrid', 'dense', 'lexical'",
        ),
        (("serve", "--engine", "ray"), "'ray' is not one of 'auto', 'vllm'"),
        (("models", "add", "{gguf}", "--name", "x", "--kind", "robot"), "'robot' is not one of"),
        (("kb", "create", "docs", "--store", "mongo"), "unknown store 'mongo'"),
        (("eval", "tiny"), "usage: lmforge eval MODEL --suite"),
        (("eval", "compare", "tiny", "--suite", "zh-sentiment"), "usage: lmforge eval compare"),
        (("eval", "tiny", "--suite", "no-such-suite"), "no suite 'no-such-suite'"),
        (("kb", "ask", "tiny", "hi"), "'tiny' is a chat model, not a knowledge base"),
        (("export", "tiny"), "already gguf"),
        (("models", "show", "ghost"), "unknown model 'ghost'"),
        (("models", "rm", "ghost"), "unknown model 'ghost'"),
        (("models", "add", "/no/such/file.gguf", "--name", "x"), "no such file"),
        (("models", "add", "{gguf}", "--name", "../evil"), "invalid artifact name"),
        (("pull", "gpt-9"), "not in the catalog"),
        (("pull", "smollm2-135m-instruct", "--index-url", "http://127.0.0.1:9/simple"), "could not fetch"),
    ],
)
def test_bad_input_gets_one_clear_line(cli, tiny_gguf, args, needle):
    cli("models", "add", str(tiny_gguf), "--name", "tiny")
    args = tuple(a.replace("{gguf}", str(tiny_gguf)) for a in args)
    assert_clear_error(cli(*args), needle)
    assert "tiny" in cli("models", "ls").stdout  # nothing stored was lost


def test_corrupt_gguf_add_is_refused(cli, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + os.urandom(100))
    assert_clear_error(cli("models", "add", str(bad), "--name", "bad"), "corrupt or truncated GGUF")
    assert "bad" not in cli("models", "ls").stdout


def test_usage_error_exits_2(cli):
    proc = cli("generate")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_chat_session_over_stdin(cli, tiny_gguf):
    cli("models", "add", str(tiny_gguf), "--name", "tiny")
    script = "The capital of France is\n/reset\n/frobnicate\n/system Be brief.\nOnce upon a time\n/exit\nnever sent\n"
    proc = cli("chat", "tiny", "--temperature", "0", "-n", "12", "--ctx", "256", stdin=script)
    assert proc.returncode == 0, proc.stderr
    assert "[history cleared]" in proc.stderr and "[unknown command /frobnicate]" in proc.stderr
    assert "[system prompt set; history cleared]" in proc.stderr
    assert len([ln for ln in proc.stdout.splitlines() if ln.strip()]) == 2


def test_eval_subcommands_have_their_own_help(cli):
    top = cli("eval", "--help")
    assert top.returncode == 0 and all(c in top.stdout for c in ("run", "compare", "bias"))
    compare = cli("eval", "compare", "--help")
    assert (
        compare.returncode == 0
        and "Usage: lmforge eval compare" in compare.stdout
        and "--out" in compare.stdout
    )
    bias = cli("eval", "bias", "--help")
    assert bias.returncode == 0 and "Usage: lmforge eval bias" in bias.stdout and "--templates" in bias.stdout
    assert "--limit" not in bias.stdout  # each sub-command has its own typed options
    unknown = cli("eval", "bias", "tiny", "--limit", "3")
    assert unknown.returncode == 2 and "No such option" in unknown.stderr


def test_eval_model_suite_runs_as_before(cli, tiny_gguf):
    """`lmforge eval MODEL --suite S` (what scripts use) runs the bundled suite and stores the result."""
    cli("models", "add", str(tiny_gguf), "--name", "tiny")
    proc = cli("eval", "tiny", "--suite", "zh-sentiment", "--limit", "4", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert "zh-sentiment" in proc.stdout and "stored in the manifest of tiny" in proc.stderr
    show = cli("models", "show", "tiny", "--json")
    assert json.loads(show.stdout)["metrics"]["eval:zh-sentiment"]["n"] == 4
    again = cli("eval", "run", "tiny", "--suite", "zh-sentiment", "--limit", "4", "--threads", "1")
    assert again.returncode == 0 and again.stdout == proc.stdout  # `eval run` is the same command


def test_kb_is_a_registry_artifact_with_embedder_lineage(cli, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "kitchen.txt").write_text("The kitchen closes at ten o'clock. Breakfast is served from seven.\n")
    assert cli("kb", "create", "docs").returncode == 0
    assert cli("kb", "add", "docs", str(docs)).returncode == 0
    rows = {ln.split()[0]: ln.split() for ln in cli("models", "ls").stdout.splitlines()[1:]}
    assert rows["docs"][1:3] == ["kb", "lmforge-kb"]
    show = cli("models", "show", "docs", "--json")
    assert show.returncode == 0
    manifest = json.loads(show.stdout)
    assert manifest["kind"] == "kb" and manifest["parents"] == ["multilingual-e5-small"]
    assert (
        manifest["config"]["embedder"] == "multilingual-e5-small" and manifest["config"]["chunk_size"] == 200
    )
    assert manifest["size_bytes"] > 0 and manifest["source"].startswith("embedder:multilingual-e5-small")
    # the packaged embedder is not a registry artifact: a root of the tree, marked so
    assert manifest["lineage"]["ancestors"] == manifest["lineage"]["missing"] == ["multilingual-e5-small"]
    tree = cli("models", "show", "docs").stdout
    assert "multilingual-e5-small (not in the registry)\n└── docs [kb, lmforge-kb] ◀  chunk_size=200" in tree
    assert "docs" in cli("kb", "ls").stdout
    assert_clear_error(cli("kb", "create", "docs"), "knowledge base 'docs' already exists")
    assert cli("kb", "drop", "docs").returncode == 0
    assert "docs" not in cli("models", "ls").stdout
    assert_clear_error(cli("models", "show", "docs"), "unknown model 'docs'")
    # `models rm` removes a knowledge base as `kb drop` does
    assert cli("kb", "create", "notes").returncode == 0
    assert cli("models", "rm", "notes").returncode == 0
    assert "notes" not in cli("models", "ls").stdout and "notes" not in cli("kb", "ls").stdout


def test_kb_built_before_contextual_headers_says_how_to_upgrade(cli, tmp_path):
    """An old KB still searches and says `kb reindex NAME`; reindex upgrades it with its progress and a report;
    a question in a language the KB does not hold is named; an empty query is refused."""
    import sqlite3

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "kitchen.txt").write_text("The kitchen closes at ten o'clock. Breakfast is served from seven.\n")
    assert cli("kb", "create", "docs").returncode == 0 and cli("kb", "add", "docs", str(docs)).returncode == 0
    with sqlite3.connect(tmp_path / "home" / "models" / "docs" / "kb.sqlite") as db:
        db.execute("DELETE FROM meta WHERE key='context'")  # as a KB written before contextual headers
    r = cli("kb", "search", "docs", "When does the kitchen close?")
    assert (
        r.returncode == 0
        and "kitchen.txt" in r.stdout
        and "`lmforge kb reindex docs` upgrades it" in r.stderr
    )
    r = cli("kb", "reindex", "docs")
    assert (
        r.returncode == 0
        and "reindexed 1 chunks of 'docs' with chunk context 'title' (was 'headings')" in r.stdout
    )
    r = cli("kb", "search", "docs", "厨房几点关门？")
    assert r.returncode == 0 and "reindex" not in r.stderr and "kitchen.txt" in r.stdout
    assert "the question is in Chinese but the knowledge base holds English text" in r.stderr
    r = cli("kb", "search", "docs", "When does the kitchen close?", "--plain-fusion", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)[0]["document"].endswith("kitchen.txt")
    assert_clear_error(cli("kb", "search", "docs", "   "), "empty query")


def test_kb_search_reranks_with_a_transformers_model_in_the_faster_precision(
    cli, tmp_path, tiny_qwen2_dir, monkeypatch
):
    """`--rerank MODEL` (pointwise) with an HF model: by default whichever of float32 and bfloat16 judges faster
    here, measured once and remembered in hardware.json (bfloat16 is ~3.6x faster on AVX512-BF16 CPUs, slower on
    others); `--rerank-dtype` forces one. Every candidate comes back, reordered; an unknown precision is refused
    by name. `kb ask --rerank` answers from the reranked candidates."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "kitchen.txt").write_text(
        "The kitchen closes at ten o'clock.\n\nBreakfast is served from seven.\n"
    )
    (docs / "pool.txt").write_text("The pool opens at six in the morning.\n")
    assert cli("models", "add", str(tiny_qwen2_dir), "--name", "tiny-hf").returncode == 0
    assert cli("kb", "create", "docs").returncode == 0 and cli("kb", "add", "docs", str(docs)).returncode == 0
    q = "When does the kitchen close?"
    plain = sorted(h["chunk_id"] for h in json.loads(cli("kb", "search", "docs", q, "--json").stdout))
    first = cli("kb", "search", "docs", q, "--json", "--rerank", "tiny-hf")
    assert first.returncode == 0 and "measuring whether tiny-hf judges faster" in first.stderr, first.stderr
    assert sorted(h["chunk_id"] for h in json.loads(first.stdout)) == plain
    known = json.loads((tmp_path / "home" / "hardware.json").read_text())
    (choice,) = [v for k, v in known.items() if "|judge|tiny-hf|" in k]
    assert choice["used"] in ("float32", "bfloat16") and choice["float32_s"] > 0 and choice["bfloat16_s"] > 0
    again = cli("kb", "search", "docs", q, "--json", "--rerank", "tiny-hf")
    assert again.returncode == 0 and "measuring" not in again.stderr  # remembered
    forced = cli("kb", "search", "docs", q, "--json", "--rerank", "tiny-hf", "--rerank-dtype", "bfloat16")
    assert forced.returncode == 0 and sorted(h["chunk_id"] for h in json.loads(forced.stdout)) == plain
    assert_clear_error(
        cli("kb", "search", "docs", q, "--rerank", "tiny-hf", "--rerank-dtype", "int3"), "int3"
    )
    # kb ask --rerank: the answer is written from the reranked candidates (the tiny model's 256-token context
    # cannot hold a grounded prompt, so the answering step records what it is given)
    from lmforge.cli import main

    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "home"))
    given = []
    monkeypatch.setattr("lmforge.rag.answer.ask", lambda question, hits, *a, **kw: given.append(hits) or {
        "answer": "-", "sources": [], "claims": [], "filtered": [], "model": "tiny-hf"})  # fmt: skip
    assert (
        main(["kb", "ask", "docs", q, "-m", "tiny-hf", "--no-rewrite", "--rerank", "tiny-hf", "--json"]) == 0
    )
    (hits,) = given
    assert sorted(h.chunk_id for h in hits) == plain
    retrieval = max(h["score"] for h in json.loads(cli("kb", "search", "docs", q, "--json").stdout))
    assert all(h.score > retrieval for h in hits)  # fused with the judge's order (RRF k=10), not retrieval's


def test_generate_raw_needs_the_tokens_capability(monkeypatch, capsys):
    """`generate --raw` asks the backend's capabilities (a remote model has no token API)."""
    from lmforge import cli as cli_mod
    from lmforge.infer.base import Capabilities

    class ChatOnly:
        kind, model_name, capabilities = "openai", "far-away", Capabilities(chat=True)

        def tokenize(self, text):
            raise AssertionError("tokenize must not be called")

    monkeypatch.setattr(cli_mod, "_load", lambda *a: ChatOnly())
    assert cli_mod.main(["generate", "far-away", "hi", "--raw"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "far-away" in err and "drop --raw" in err
