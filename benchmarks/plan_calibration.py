"""Calibrate `lmforge plan`: its prediction beside the measured peak memory of real runs (issue 14).

Each case runs in a process of its own; its peak RSS is that child's own high-water mark (the rusage
`os.wait4` returns for it), and where `nvidia-smi` exists the child's GPU memory is polled too. Grid:

- serving the default model (the registered GGUF) through lmforge's batched llama.cpp engine, as
  `lmforge serve` loads it (`load_backend` with `n_slots`): contexts 2048 / 8192 / 32768 × 1 / 4
  concurrent sequences, each sequence prefilling a min(1024, context / 2)-token prompt and decoding 8
  tokens; predicted with `--cpu --prompt-tokens` that prompt length;
- `lmforge finetune` of SmolLM2-135M-Instruct (LoRA, QLoRA, full) and of the default model (LoRA):
  `--steps 2 --batch-size 2 --max-length 256 --precision fp32`, on examples/sft/lmforge_assistant.jsonl
  with eight answers joined per example, so that every example fills the 256 tokens (the planner sizes
  full batches; the file's own examples are 60-180 tokens). A GGUF base is dequantized once before its
  first case (`<name>-hf`), outside the measurement.

`--quick` runs three cases: serving 2048 × 1, serving 8192 × 4, LoRA of SmolLM2. The fine-tunes register
adapters under LMFORGE_HOME; each is removed after its case. Target: every prediction within ±15%.

    LMFORGE_HOME=~/.lmforge python benchmarks/plan_calibration.py [--quick] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SFT_DATA = ROOT / "examples" / "sft" / "lmforge_assistant.jsonl"
SMOL = "smollm2-135m-instruct"
TARGET = 0.15


@dataclass
class Case:
    kind: str
    """'serve' or 'train'."""
    model: str
    context: int = 0
    concurrency: int = 1
    method: str = ""
    batch: int = 2
    seq_len: int = 256

    @property
    def prompt(self) -> int:
        return min(1024, self.context // 2)

    @property
    def label(self) -> str:
        if self.kind == "serve":
            return f"serve {self.model} ctx {self.context} × {self.concurrency} (prompt {self.prompt})"
        return f"finetune {self.model} {self.method} batch {self.batch} × {self.seq_len}"


@dataclass
class Result:
    case: str
    predicted_gb: float
    measured_gb: float | None
    error: float | None
    seconds: float
    gpu_predicted_gb: float | None = None
    gpu_measured_gb: float | None = None
    gpu_error: float | None = None
    failure: str = ""


def grid(default_model: str, quick: bool) -> list[Case]:
    serve = [Case("serve", default_model, ctx, n) for ctx in (2048, 8192, 32768) for n in (1, 4)]
    train = [Case("train", SMOL, method=m) for m in ("lora", "qlora", "full")] + [
        Case("train", default_model, method="lora")
    ]
    if quick:
        return [serve[0], serve[3], train[0]]
    return serve + train


SERVE_CHILD = """
import sys, threading
from lmforge.home import Registry
from lmforge.infer.loader import LoadConfig, load_backend
from lmforge.infer.sampling import SamplingParams
name, ctx, slots, prompt, threads = sys.argv[1], *map(int, sys.argv[2:6])
backend = load_backend(Registry(), name, LoadConfig(n_ctx=ctx, n_slots=slots, n_threads=threads))
text = "Calibrating the planner: the quick brown fox jumps over the lazy dog. " * (prompt // 8 + 8)
def one(i):
    ids = backend.tokenize(f"{i} {text}")[:prompt]
    for _ in backend.generate(ids, SamplingParams(max_tokens=8, temperature=0)):
        pass
workers = [threading.Thread(target=one, args=(i,)) for i in range(slots)]
for w in workers:
    w.start()
for w in workers:
    w.join()
backend.close()
"""


def measure(cmd: list[str], env: dict[str, str]) -> tuple[float, float | None, float, int, str]:
    """(peak RSS GB, peak GPU GB or None, seconds, exit code, output tail) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    gpu: list[float] = []
    stop = threading.Event()
    poller = None
    if shutil.which("nvidia-smi"):
        poller = threading.Thread(target=_poll_gpu, args=(proc.pid, gpu, stop), daemon=True)
        poller.start()
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    if poller:
        poller.join()
    return (
        usage.ru_maxrss * 1024 / 1e9,
        (max(gpu) if gpu else None),
        time.perf_counter() - t0,
        proc.returncode,
        out[-2000:],
    )


def _poll_gpu(pid: int, into: list[float], stop: threading.Event) -> None:
    while not stop.wait(0.2):
        try:
            rows = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, timeout=10).stdout  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return
        used = [float(mib) * 2**20 / 1e9 for p, mib in (r.split(",") for r in rows.splitlines() if "," in r)
                if int(p) == pid]  # fmt: skip
        if used:
            into.append(sum(used))


def long_examples(out: Path, join: int = 8) -> Path:
    """The SFT examples with `join` answers per example: each one longer than 256 tokens."""
    rows = [json.loads(line) for line in SFT_DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    groups = [rows[i : i + join] for i in range(0, len(rows) - join + 1, join)]
    out.write_text("".join(json.dumps({"prompt": g[0]["prompt"], "response": "\n".join(r["response"] for r in g)},
                                      ensure_ascii=False) + "\n" for g in groups), encoding="utf-8")  # fmt: skip
    return out


def predict(registry, case: Case, *, cpu: bool):
    from lmforge.plan import PlanConfig, estimate, resolve_model

    spec = resolve_model(case.model, registry)
    if case.kind == "serve":
        cfg = PlanConfig(context=case.context, concurrency=case.concurrency, prompt_tokens=case.prompt, cpu=True,
                         ram_gb=1e6)  # fmt: skip
    else:
        cfg = PlanConfig(train=case.method, batch=case.batch, seq_len=case.seq_len, precision="fp32", cpu=cpu,  # type: ignore[arg-type]
                         ram_gb=1e6 if cpu else None, gpu_memory_gb=1e6)  # fmt: skip
    return estimate(spec, cfg, suggest=False)


def run_case(registry, case: Case, data: Path, threads: int, env: dict[str, str]) -> Result:
    py = sys.executable
    out_name = ""
    if case.kind == "serve":
        cmd = [
            py,
            "-c",
            SERVE_CHILD,
            case.model,
            *map(str, (case.context, case.concurrency, case.prompt, threads)),
        ]
    else:
        out_name = f"plan-calib-{case.method}-{os.getpid()}"
        cmd = [py, "-m", "lmforge", "finetune", case.model, "--method", case.method, "--data", str(data), "--out", out_name,
               "--steps", "2", "--batch-size", str(case.batch), "--max-length", str(case.seq_len), "--precision", "fp32",
               "--val-frac", "0.1", "--report-eval", "1", "--gen-tokens", "4", "--threads", str(threads)]  # fmt: skip
    try:
        rss, gpu, seconds, code, tail = measure(cmd, env)
    finally:
        if out_name:
            if registry.exists(out_name):
                registry.remove(out_name)
            shutil.rmtree(registry.root / "runs" / out_name, ignore_errors=True)
    plan = predict(registry, case, cpu=True)
    if code != 0:
        return Result(
            case.label,
            plan.per_device_gb,
            None,
            None,
            seconds,
            failure=tail.strip().splitlines()[-1:][0] if tail.strip() else f"exit {code}",
        )
    r = Result(
        case.label,
        round(plan.per_device_gb, 3),
        round(rss, 3),
        round(plan.per_device_gb / rss - 1, 4),
        round(seconds, 1),
    )
    if gpu:  # the run used a GPU (QLoRA loads there when one is present): compare with the GPU plan
        g = predict(registry, case, cpu=False).per_device_gb
        r.gpu_predicted_gb, r.gpu_measured_gb, r.gpu_error = round(g, 3), round(gpu, 3), round(g / gpu - 1, 4)
        r.error = None  # its RSS is no longer what the CPU plan describes
    return r


def prepare(registry, cases: list[Case], env: dict[str, str]) -> list[str]:
    """Dequantize each GGUF base once (not measured); names of models that are not registered."""
    missing = sorted({c.model for c in cases if not registry.exists(c.model)})
    for name in sorted({c.model for c in cases if c.kind == "train" and c.model not in missing}):
        if registry.get(name).format == "gguf" and not registry.exists(f"{name}-hf"):
            print(f"dequantizing {name} once (not measured) ...", flush=True)
            code = "import sys; from lmforge.home import Registry; from lmforge.train.finetune import hf_base; hf_base(Registry(), sys.argv[1])"
            subprocess.run([sys.executable, "-c", code, name], env=env, check=True)
    return missing


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="three cases: serve 2048×1, serve 8192×4, SmolLM2 LoRA"
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--only", default="", help="run the cases whose label contains one of these comma-separated words"
    )
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = ap.parse_args(argv)
    from lmforge.home import Registry
    from lmforge.hub import DEFAULT_CHAT_MODEL

    registry = Registry()
    env = os.environ | {"LMFORGE_HOME": str(registry.root), "PYTHONUNBUFFERED": "1"}
    cases = grid(DEFAULT_CHAT_MODEL, args.quick)
    if args.only:
        words = [w.strip() for w in args.only.split(",") if w.strip()]
        cases = [c for c in cases if any(w in c.label for w in words)]
    missing = prepare(registry, cases, env)
    if missing:
        print(f"skipping cases of {', '.join(missing)}: not registered (`lmforge pull NAME`)")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="plan-calib-") as tmp:
        data = long_examples(Path(tmp) / "long.jsonl")
        for case in (c for c in cases if c.model not in missing):
            print(f"running {case.label} ...", flush=True)
            results.append(run_case(registry, case, data, args.threads, env))
    print(f"\nLMFORGE_HOME={registry.root}, {args.threads} threads\n")
    print(f"{'case':66} {'predicted GB':>12} {'measured GB':>12} {'error':>8} {'s':>6}")
    for r in results:
        if r.failure:
            print(f"{r.case:66} {r.predicted_gb:>12.3f} {'failed':>12}  {r.failure}")
            continue
        err = f"{r.error:+.1%}" if r.error is not None else "-"
        print(f"{r.case:66} {r.predicted_gb:>12.3f} {r.measured_gb:>12.3f} {err:>8} {r.seconds:>6.0f}")
        if r.gpu_measured_gb is not None:
            print(
                f"{'  GPU memory':66} {r.gpu_predicted_gb:>12.3f} {r.gpu_measured_gb:>12.3f} {r.gpu_error:>+8.1%}"
            )
    errors = [abs(e) for r in results for e in (r.error, r.gpu_error) if e is not None]
    worst = max(errors) if errors else None
    if worst is not None:
        print(
            f"\nworst |error| {worst:.1%} (target ±{TARGET:.0%}): {'met' if worst <= TARGET else 'NOT met'}"
        )
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    return 0 if worst is not None and worst <= TARGET and not any(r.failure for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
