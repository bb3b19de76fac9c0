"""The `lmforge` command as users run it: real subprocesses, exit codes, one-line errors."""

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
    assert '"name": "tiny"' in show.stdout and "lineage:" in show.stdout
    assert_clear_error(cli("models", "add", str(tiny_gguf), "--name", "tiny"), "already exists")
    assert cli("models", "rm", "tiny").returncode == 0
    assert "tiny " not in cli("models", "ls").stdout


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
        (("generate", "tiny", "hi", "--backend", "magic"), "unknown backend"),
        (("export", "tiny", "--quant", "q3"), "unknown quantization"),
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
