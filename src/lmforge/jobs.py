"""Long work in a worker process, never in the server's: the training jobs the console starts.

A job is `python -m lmforge pretrain|finetune ... --json`, the very command a user would type, run
as a subprocess in its own session (so its own process group) with LMFORGE_HOME set. `JobQueue`
keeps each job in LMFORGE_HOME/jobs/<id>/:

    job.json   what was asked (kind, args), state queued|running|succeeded|failed|cancelled,
               created/started/ended, the registered result or the one-line error, the worker's pid
    log.txt    the worker's stdout and stderr

Jobs run `max_running` at a time (one by default: training takes every core), the others wait in
FIFO order. Live progress is the run folder's events.jsonl (train/events.py), which the trainer
appends per optimizer step and per evaluation: the loss curve, step/total, tokens/s and ETA.

Cancel sends SIGTERM to the worker's process group (the trainer and anything it started, such as
torch.distributed workers), then SIGKILL after `grace_s`. Workers outlive a server restart (their
own session): a new queue adopts a job whose worker is still alive, marks one whose worker is gone
failed (succeeded if its model did get registered), and starts what was queued.

Why no task library (Celery, RQ, arq, huey): they need a broker, or run tasks in threads or forks
of the server; a training run wants a plain process per job, killable as a group, with its output
in a file, which `subprocess` gives directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

from lmforge.errors import LmforgeError, NotFoundError
from lmforge.home import Registry, check_name
from lmforge.train.args import SIZES
from lmforge.train.events import EVENTS, EventTail
from lmforge.train.finetune import Method

JobKind = Literal["finetune", "pretrain"]
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: tuple[JobState, ...] = ("succeeded", "failed", "cancelled")
BASE_KINDS = ("chat", "base")
"""Registered kinds a job can start from."""
UPLOAD_SUFFIXES = (".jsonl", ".json")
"""What `lmforge finetune --data FILE` reads (data/sft.py: JSON Lines or a JSON array)."""
UPLOAD_ID = re.compile(r"^upload-[0-9a-f]{16}$")
LOG = "log.txt"
LOG_TAIL_BYTES = 16 * 1024
LOG_TAIL_LINES = 60
BOX = " \t│╭╮╰╯─"
"""Stripped from log lines when looking for the error: typer draws usage errors in a box."""


@dataclass
class JobOptions:
    """Training options; None leaves the trainer's own default (train/args.py PretrainConfig,
    train/finetune.py FinetuneConfig), so no default is repeated here. Each becomes the flag of the
    same name (`max_length` → `--max-length`)."""

    epochs: float | None = None
    """finetune: passes over the data."""
    lr: float | None = None
    """Peak learning rate."""
    rank: int | None = None
    """lora / qlora: adapter rank."""
    alpha: int | None = None
    """lora / qlora: adapter scaling numerator."""
    max_length: int | None = None
    """finetune: tokens per example."""
    virtual_tokens: int | None = None
    """prefix / prompt: learned virtual tokens."""
    steps: int | None = None
    """Optimizer steps (finetune: instead of epochs)."""
    tokenizer: str | None = None
    """pretrain: a registered tokenizer (with a base model: default its own)."""
    size: str | None = None
    """pretrain: a size preset (train/args.py SIZES)."""


def option_applies(name: str, kind: JobKind, method: str | None) -> bool:
    """Whether option `name` means something for this kind of job and method."""
    if kind == "pretrain":
        return name in ("lr", "steps", "tokenizer", "size")
    if name in ("rank", "alpha"):
        return method in ("lora", "qlora")
    if name == "virtual_tokens":
        return method in ("prefix", "prompt")
    return name in ("epochs", "lr", "max_length", "steps")


@dataclass
class JobArgs:
    """What a job was asked to do."""

    data: str
    """A registered dataset (pretrain) or an upload id from `JobQueue.new_upload` (finetune)."""
    out: str
    """Name the result is registered under."""
    base: str | None = None
    """finetune: the model to adapt; pretrain: continue pretraining it (`--init`), or None."""
    method: Method | None = None
    """finetune only."""
    options: JobOptions = field(default_factory=JobOptions)
    data_file: str | None = None
    """The uploaded file `data` names (absolute path); set by `JobQueue.submit`."""


@dataclass
class Job:
    id: str
    kind: JobKind
    args: JobArgs
    state: JobState = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    result: str | None = None
    """The registered artifact's name, once succeeded."""
    error: str | None = None
    """One line: why it failed (the worker's `error:` line) or that it was cancelled."""
    pid: int | None = None
    """The worker's pid, which is also its process group id (it leads its own session)."""
    exit_code: int | None = None
    """The worker's exit status (negative: killed by that signal); None if unknown (adopted)."""
    cancel_requested: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        args = dict(d["args"])
        args["options"] = JobOptions(**args.get("options", {}))
        return cls(**{**d, "args": JobArgs(**args)})


CommandBuilder = Callable[[Job], list[str]]


def lmforge_command(job: Job) -> list[str]:
    """The worker's argv: the `lmforge finetune` / `lmforge pretrain` command with the job's fields."""
    a = job.args
    cmd = [sys.executable, "-m", "lmforge", job.kind]
    if job.kind == "finetune":
        cmd += [a.base or "", "--data", a.data_file or a.data, "--method", a.method or "", "--out", a.out]
    else:
        cmd += ["--out", a.out, "--data", a.data, *(["--init", a.base] if a.base else [])]
    for f in fields(JobOptions):
        value = getattr(a.options, f.name)
        if value is not None:
            cmd += ["--" + f.name.replace("_", "-"), str(value)]
    return [*cmd, "--json"]


def error_line(log: Path, exit_code: int | None) -> str:
    """The one line that says why a worker failed: its last `error: ...` line (the CLI's format for
    user errors), else the last line it wrote (a traceback's exception), else the exit status."""
    lines = [s for ln in read_tail(log).splitlines() if (s := ln.strip(BOX))]
    for ln in reversed(lines):
        if ln.startswith("error:"):
            return ln.removeprefix("error:").strip()
    if exit_code is not None and exit_code < 0:
        return f"the worker was killed by {signal.Signals(-exit_code).name}"
    status = f"the worker exited with code {exit_code}" if exit_code is not None else "the worker ended"
    return f"{status}: {lines[-1]}" if lines else status


def read_tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - limit))
            data = f.read()
    except FileNotFoundError:
        return ""
    return data.decode("utf-8", errors="replace")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user: not ours, but alive
        return True
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


class JobQueue:
    """Training jobs of one registry: submit, list, progress, cancel (module docstring)."""

    def __init__(self, registry: Registry, *, command: CommandBuilder = lmforge_command, max_running: int = 1,
                 grace_s: float = 10.0) -> None:  # fmt: skip
        if max_running < 1:
            raise LmforgeError("max_running must be at least 1")
        self.registry = registry
        self.command = command
        self.max_running = max_running
        self.grace_s = grace_s
        self.folder = registry.root / "jobs"
        self.uploads = self.folder / "uploads"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        self._tails: dict[str, EventTail] = {}
        self._recover()
        self._pump()

    # -- persistence ------------------------------------------------------------------------------
    def _dir(self, job_id: str) -> Path:
        return self.folder / job_id

    def _save(self, job: Job) -> None:
        path = self._dir(job.id) / "job.json"
        tmp = path.with_name(".job.json.tmp")
        tmp.write_text(json.dumps(job.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, path)

    def _recover(self) -> None:
        """Load every job; settle the ones a previous server left running."""
        for d in sorted(self.folder.iterdir()):
            try:
                job = Job.from_dict(json.loads((d / "job.json").read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError, KeyError):
                continue  # not a job folder (uploads) or unreadable
            self._jobs[job.id] = job
            if job.state != "running":
                continue
            if self._worker_alive(job):
                threading.Thread(target=self._watch_adopted, args=(job.id,), daemon=True).start()
            else:
                self._settle(job, None, "the worker stopped while the server was down")

    def _worker_alive(self, job: Job) -> bool:
        """The job's worker still runs: its pid is alive and is an lmforge command for this job (a
        reused pid is someone else's)."""
        if job.pid is None:
            return False
        try:
            cmdline = Path(f"/proc/{job.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"lmforge" in cmdline and job.args.out.encode() in cmdline

    # -- running ----------------------------------------------------------------------------------
    def _pump(self) -> None:
        """Start the oldest queued jobs while fewer than `max_running` run."""
        with self._lock:
            running = sum(j.state == "running" for j in self._jobs.values())
            queued = sorted((j for j in self._jobs.values() if j.state == "queued"), key=lambda j: j.created)
            for job in queued[: max(0, self.max_running - running)]:
                self._start(job)

    def _start(self, job: Job) -> None:
        env = os.environ | {"LMFORGE_HOME": str(self.registry.root), "PYTHONUNBUFFERED": "1"}
        job.started = time.time()
        try:
            with open(self._dir(job.id) / LOG, "ab") as log:
                proc = subprocess.Popen(self.command(job), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env, cwd=self._dir(job.id),
                                        start_new_session=True)  # fmt: skip
        except OSError as e:
            job.state, job.ended, job.error = "failed", time.time(), f"could not start the worker: {e}"
            self._save(job)
            return
        job.state, job.pid = "running", proc.pid
        self._procs[job.id] = proc
        self._save(job)
        threading.Thread(target=self._watch, args=(job.id, proc), daemon=True).start()

    def _watch(self, job_id: str, proc: subprocess.Popen) -> None:
        code = proc.wait()
        with self._lock:
            self._procs.pop(job_id, None)
            self._settle(self._jobs[job_id], code, None)
        self._pump()

    def _watch_adopted(self, job_id: str) -> None:
        """A worker started by an earlier server: not our child, so poll until it is gone."""
        job = self._jobs[job_id]
        while self._worker_alive(job):
            time.sleep(0.5)
        with self._lock:
            self._settle(job, None, "the worker was started by an earlier server; its exit status is unknown")
        self._pump()

    def _settle(self, job: Job, code: int | None, unknown: str | None) -> None:
        """Record how a worker ended: cancelled, succeeded (its model is registered) or failed."""
        job.exit_code, job.ended = code, time.time()
        if job.cancel_requested:
            job.state, job.error = "cancelled", "cancelled"
        elif (code == 0 or code is None) and self.registry.exists(job.args.out):
            job.state, job.result = "succeeded", job.args.out
        else:
            job.state = "failed"
            if code == 0:
                job.error = f"the worker exited without registering {job.args.out!r}"
            elif code is None and unknown:
                job.error = f"{unknown}; {job.args.out!r} was not registered"
            else:
                job.error = error_line(self._dir(job.id) / LOG, code)
        self._save(job)

    # -- the API ----------------------------------------------------------------------------------
    def submit(self, kind: JobKind, args: JobArgs) -> Job:
        """Check the request against the registry, then queue it (it starts at once if a slot is free).
        An unknown base model raises ModelNotFoundError; every other problem is gathered into one
        LmforgeError."""
        args = self.check(kind, args)
        with self._lock:
            busy = [j.id for j in self._jobs.values() if j.args.out == args.out and j.state not in FINISHED]
            if busy:
                raise LmforgeError(f"job {busy[0]} is already making {args.out!r}; pick another output name")
            job = Job(id=f"job-{secrets.token_hex(6)}", kind=kind, args=args)
            self._dir(job.id).mkdir(parents=True)
            self._save(job)
            self._jobs[job.id] = job
            self._pump()
            return job

    def check(self, kind: JobKind, args: JobArgs) -> JobArgs:
        """`args` with the upload resolved, or the problems in one error (see `submit`)."""
        if kind not in get_args(JobKind):
            raise LmforgeError(f"unknown job kind {kind!r}; choose one of {', '.join(get_args(JobKind))}")
        problems: list[str] = []
        if args.base is not None:
            base = self.registry.get(args.base)  # ModelNotFoundError → 404
            if base.kind not in BASE_KINDS:
                problems.append(
                    f"base {args.base!r} is a {base.kind}, not a model to train ({', '.join(BASE_KINDS)})"
                )
        elif kind == "finetune":
            problems.append("finetune needs a base model")
        if kind == "finetune" and args.method not in get_args(Method):
            problems.append(f"unknown method {args.method!r}; choose one of {', '.join(get_args(Method))}")
        if kind == "pretrain" and args.method is not None:
            problems.append("method applies to finetune jobs only")
        data_file = self._check_data(kind, args.data, problems)
        try:
            check_name(args.out)
            if self.registry.exists(args.out):
                problems.append(f"{args.out!r} already exists in the registry; pick another output name")
        except LmforgeError as e:
            problems.append(f"out: {e}")
        for f in fields(JobOptions):
            if getattr(args.options, f.name) is not None and not option_applies(f.name, kind, args.method):
                what = f"{kind} with method {args.method}" if kind == "finetune" else kind
                problems.append(f"option {f.name} does not apply to {what}")
        o = args.options
        if kind == "pretrain":
            if o.size is not None and o.size not in SIZES["clm"]:
                problems.append(f"unknown size {o.size!r}; choose one of {', '.join(SIZES['clm'])}")
            if o.tokenizer is None and args.base is None:
                problems.append("pretrain needs a tokenizer (or a base model whose tokenizer to use)")
            elif o.tokenizer is not None:
                self._check_registered(o.tokenizer, ("tokenizer", *BASE_KINDS), "tokenizer", problems)
        if problems:
            raise LmforgeError("; ".join(problems))
        return replace(args, data_file=data_file)

    def _check_registered(self, name: str, kinds: tuple[str, ...], what: str, problems: list[str]) -> bool:
        try:
            found = self.registry.exists(name)
        except LmforgeError as e:  # not a valid name
            problems.append(f"{what}: {e}")
            return False
        if not found:
            problems.append(f"{what} {name!r} is not in the registry")
        elif (kind := self.registry.get(name).kind) not in kinds:
            problems.append(f"{what} {name!r} is a {kind}, not a {' or '.join(kinds)}")
        return found

    def _check_data(self, kind: JobKind, data: str, problems: list[str]) -> str | None:
        """The upload's path for an upload id; checks a registered dataset otherwise."""
        if UPLOAD_ID.match(data):
            path = self.upload_file(data)
            if path is None:
                problems.append(f"data: no upload {data!r} (upload the file again)")
            elif kind == "pretrain":
                problems.append("pretrain reads a registered dataset (make one from the file with "
                                "`lmforge data prepare`), not an uploaded file")  # fmt: skip
            return str(path) if path else None
        if kind == "finetune":
            problems.append(f"data {data!r}: finetune reads an uploaded prompt/response file (JSONL or JSON): "
                            f"upload one and pass its id")  # fmt: skip
            return None
        self._check_registered(data, ("dataset",), "data", problems)
        return None

    def list(self) -> list[Job]:
        """Every job, newest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id!r}")
        return job

    def detail(self, job_id: str) -> dict[str, Any]:
        """The job, its progress from the trainer's events and the tail of its log."""
        job = self.get(job_id)
        progress = {"step": 0, "total": job.args.options.steps, "tokens": 0, "elapsed_s": 0.0,
                    "tokens_per_s": None, "eta_s": None, "loss": [], "val": []}  # fmt: skip
        events = self.registry.root / "runs" / job.args.out / EVENTS
        # before its worker truncates it, the file is an earlier run's: show nothing of it
        if job.started is not None and events.is_file() and events.stat().st_mtime >= job.started - 1:
            with self._lock:
                tail = self._tails.setdefault(job.id, EventTail(events))
                tail.read()
                progress = asdict(tail.progress())
            if progress["total"] is None:
                progress["total"] = job.args.options.steps
        lines = read_tail(self._dir(job.id) / LOG).splitlines()[-LOG_TAIL_LINES:]
        return job.to_dict() | {"progress": progress, "log": "\n".join(lines)}

    def cancel(self, job_id: str) -> Job:
        """A queued job is cancelled at once; a running one gets SIGTERM (its process group), SIGKILL
        after `grace_s`, and becomes `cancelled` when its worker has ended."""
        with self._lock:
            job = self.get(job_id)
            if job.state in FINISHED:
                raise LmforgeError(f"job {job_id} is already {job.state}")
            job.cancel_requested = True
            if job.state == "queued":
                job.state, job.ended, job.error = "cancelled", time.time(), "cancelled before it started"
                self._save(job)
                return job
            self._save(job)
            assert job.pid is not None
            _signal_group(job.pid, signal.SIGTERM)
            proc = self._procs.get(job_id)
        threading.Thread(target=self._escalate, args=(job, proc), daemon=True).start()
        return job

    def _escalate(self, job: Job, proc: subprocess.Popen | None) -> None:
        """SIGKILL the group if anything in it outlives the grace period."""
        assert job.pid is not None
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline:
            leader_done = proc.poll() is not None if proc is not None else not self._worker_alive(job)
            if leader_done and not _group_alive(job.pid):
                return
            time.sleep(0.1)
        _signal_group(job.pid, signal.SIGKILL)

    # -- uploads ----------------------------------------------------------------------------------
    def new_upload(self, filename: str) -> tuple[str, Path]:
        """An id and the path to write an uploaded file to (LMFORGE_HOME/jobs/uploads/<id>/<name>)."""
        name = re.sub(r"[^\w.-]", "_", Path(filename).name).lstrip(".")
        suffix = Path(name).suffix.lower()
        if suffix not in UPLOAD_SUFFIXES:
            raise LmforgeError(
                f"upload {filename!r}: training data must be a {' or '.join(UPLOAD_SUFFIXES)} file"
            )
        upload_id = f"upload-{secrets.token_hex(8)}"
        folder = self.uploads / upload_id
        folder.mkdir()
        return upload_id, folder / name

    def upload_file(self, upload_id: str) -> Path | None:
        if not UPLOAD_ID.match(upload_id):
            return None
        files = [p for p in (self.uploads / upload_id).glob("*") if p.is_file()]
        return files[0] if len(files) == 1 else None

    def drop_upload(self, upload_id: str) -> None:
        if UPLOAD_ID.match(upload_id):
            shutil.rmtree(self.uploads / upload_id, ignore_errors=True)
