"""Training jobs (jobs.py, /api/jobs): real `lmforge pretrain` workers in their own process groups,
FIFO queueing, live progress from events.jsonl, cancel (SIGTERM, then SIGKILL), a server restart
that finds stale and still-running workers, and the API's scope and 4xx answers."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lmforge.home import Manifest, Registry
from lmforge.jobs import FINISHED, CommandBuilder, Job, JobArgs, JobOptions, JobQueue, lmforge_command
from lmforge.train.events import EventLog, EventTail

ZH = ["北京是中国的首都。", "上海是中国最大的城市。", "今天天气很好，我们去公园散步。",
      "春眠不觉晓，处处闻啼鸟。"]  # fmt: skip
EN = ["The quick brown fox jumps over the lazy dog.", "Language models predict the next token.",
      "Data is cleaned before training.", "A tokenizer splits text into pieces."]  # fmt: skip
SIZE = {"hidden": 32, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate": 64, "context": 64}


def make_train_home(home: Path) -> Registry:
    """A registry with a zh+en dataset 'corp', a BPE tokenizer 'tok', and home/size.json (a 32-wide model)."""
    from lmforge.data.prepare import PrepareConfig, prepare
    from lmforge.tokenizer.bpe import BPEConfig, train_registered

    docs = home.parent / "docs"
    docs.mkdir(parents=True)
    rnd = random.Random(0)
    for i in range(160):
        text = " ".join(rnd.choices(ZH + EN, k=6)) + f" 第{i}篇 number {i}"
        (docs / f"d{i:04d}.txt").write_text(text, "utf-8")
    reg = Registry(home)
    prepare(reg, [docs], "corp", PrepareConfig(dedup="none", val_frac=0.1))
    train_registered(reg, "corp", "tok", BPEConfig(vocab_size=400))
    (home / "size.json").write_text(json.dumps(SIZE))
    return reg


@pytest.fixture(scope="module")
def _template(tmp_path_factory) -> Path:
    return make_train_home(tmp_path_factory.mktemp("jobs-template") / "home").root


def train_home(template: Path, dest: Path) -> Registry:
    shutil.copytree(template, dest)
    return Registry(dest)


@pytest.fixture()
def reg(_template, tmp_path, monkeypatch) -> Registry:
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "home"))
    return train_home(_template, tmp_path / "home")


class Workers:
    """Makes job queues; at teardown kills every worker group still running, so a failed test leaves
    no training process behind."""

    def __init__(self) -> None:
        self.queues: list[JobQueue] = []
        self.pids: list[int] = []

    def queue(self, reg: Registry, **kw) -> JobQueue:
        self.queues.append(JobQueue(reg, **kw))
        return self.queues[-1]

    def close(self) -> None:
        running = [j.pid for q in self.queues for j in q.list() if j.state == "running" and j.pid]
        for pid in self.pids + running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture()
def workers():
    w = Workers()
    yield w
    w.close()


def fast_pretrain(size_json: Path) -> CommandBuilder:
    """The real `lmforge pretrain` command for a job, with a 32-wide model and small batches (seconds)."""

    def build(job: Job) -> list[str]:
        return [*lmforge_command(job)[:-1], "--size", str(size_json), "--batch-size", "4", "--seq-len", "32",
                "--eval-every", "5", "--save-every", "1000", "--precision", "fp32", "--threads", "1", "--json"]  # fmt: skip

    return build


def pretrain_args(out: str, steps: int) -> JobArgs:
    return JobArgs(data="corp", out=out, options=JobOptions(tokenizer="tok", steps=steps))


def wait_for(cond: Callable[[], bool], timeout: float = 180.0, what: str = "") -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_pretrain_jobs_run_one_at_a_time_in_workers_and_register_models(reg, workers):
    q = workers.queue(reg, command=fast_pretrain(reg.root / "size.json"))
    a = q.submit("pretrain", pretrain_args("lm-a", 40))
    b = q.submit("pretrain", pretrain_args("lm-b", 6))
    assert q.get(a.id).state == "running" and q.get(b.id).state == "queued"
    assert a.pid is not None and a.pid != os.getpid() and os.getpgid(a.pid) == a.pid  # its own group
    argv = Path(f"/proc/{a.pid}/cmdline")
    wait_for(lambda: b"lmforge" in argv.read_bytes(), 10, "the argv")  # empty for a moment after exec
    cmdline = argv.read_bytes().split(b"\0")
    assert cmdline[1:4] == [b"-m", b"lmforge", b"pretrain"] and b"--json" in cmdline
    wait_for(lambda: q.detail(a.id)["progress"]["step"] > 0 or q.get(a.id).state in FINISHED, what="a step")
    assert q.get(b.id).state == "queued"  # still waiting for a
    wait_for(lambda: q.get(a.id).state in FINISHED, what="job a")
    d = q.detail(a.id)
    assert d["state"] == "succeeded" and d["result"] == "lm-a" and reg.get("lm-a").kind == "base", d["log"]
    p = d["progress"]
    assert p["step"] == p["total"] == 40 and p["tokens"] == 40 * 4 * 32
    assert [x["step"] for x in p["loss"]] == list(range(1, 41)) and all(x["loss"] > 0 for x in p["loss"])
    assert [v["step"] for v in p["val"]] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert p["tokens_per_s"] > 0 and p["eta_s"] == 0
    assert '"lmforge_version"' in d["log"]  # the tail: the end of the manifest `--json` printed
    assert "precision: fp32" in (reg.root / "jobs" / a.id / "log.txt").read_text()
    events = [json.loads(ln) for ln in (reg.root / "runs" / "lm-a" / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if "loss" in e]
    assert len(steps) == 40 and {"step", "loss", "lr", "tokens", "total_steps", "elapsed_s"} <= set(steps[0])
    saved = json.loads((reg.root / "jobs" / a.id / "job.json").read_text())
    assert saved["state"] == "succeeded" and saved["args"]["options"]["steps"] == 40
    assert saved["kind"] == "pretrain" and saved["started"] <= saved["ended"]

    wait_for(lambda: q.get(b.id).state in FINISHED, what="job b")
    jb = q.get(b.id)
    assert jb.state == "succeeded" and reg.exists("lm-b")
    assert jb.started is not None and jb.started >= q.get(a.id).ended  # FIFO: b started once a ended
    assert [j.id for j in q.list()] == [b.id, a.id]  # newest first


def test_cancel_kills_the_workers_process_group(reg, workers):
    q = workers.queue(reg, command=fast_pretrain(reg.root / "size.json"))
    long = q.submit("pretrain", pretrain_args("lm-long", 100_000))
    waiting = q.submit("pretrain", pretrain_args("lm-next", 5))
    cancelled = q.cancel(waiting.id)  # a queued job is cancelled at once
    assert cancelled.state == "cancelled" and cancelled.error == "cancelled before it started"
    wait_for(lambda: q.detail(long.id)["progress"]["step"] >= 3, what="training steps")
    d = q.detail(long.id)
    assert d["progress"]["total"] == 100_000 and d["progress"]["eta_s"] > 0
    pid = q.get(long.id).pid
    assert pid is not None and group_alive(pid)
    assert q.cancel(long.id).cancel_requested
    wait_for(lambda: q.get(long.id).state in FINISHED, 60, "the cancelled worker")
    job = q.get(long.id)
    assert job.state == "cancelled" and job.exit_code == -signal.SIGTERM
    assert not group_alive(pid) and not reg.exists("lm-long")
    assert q.get(waiting.id).state == "cancelled"  # stays cancelled: nothing started after
    with pytest.raises(Exception, match="already cancelled"):
        q.cancel(long.id)


STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # inherits SIG_IGN
print("child", child.pid, flush=True)
time.sleep(600)
"""


def test_cancel_escalates_to_sigkill_for_a_worker_that_ignores_sigterm(reg, workers):
    """The escalation itself, with a worker (and its child) that ignore SIGTERM."""
    stubborn = lambda job: [sys.executable, "-c", STUBBORN, "lmforge", job.args.out]  # noqa: E731
    q = workers.queue(reg, command=stubborn, grace_s=1.0)
    job = q.submit("pretrain", pretrain_args("stubborn", 5))
    log = reg.root / "jobs" / job.id / "log.txt"
    wait_for(lambda: "child" in log.read_text(), 30, "the child")
    child = int(log.read_text().split()[1])
    t0 = time.monotonic()
    q.cancel(job.id)
    wait_for(lambda: q.get(job.id).state in FINISHED, 30, "the SIGKILL")
    assert time.monotonic() - t0 >= 0.9  # SIGTERM was ignored for the grace period
    assert q.get(job.id).state == "cancelled" and q.get(job.id).exit_code == -signal.SIGKILL
    wait_for(lambda: not group_alive(job.pid), 10, "the child to die")
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]


def _write_job(reg: Registry, job: Job) -> None:
    folder = reg.root / "jobs" / job.id
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps(job.to_dict()))


def test_restart_settles_stale_jobs_adopts_a_live_worker_and_keeps_the_queue(reg, workers):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    now = time.time()
    _write_job(reg, Job(id="job-000000000001", kind="pretrain", args=pretrain_args("lost", 5), state="running",
                        created=now - 50, started=now - 40, pid=dead.pid))  # fmt: skip
    _write_job(reg, Job(id="job-000000000002", kind="pretrain", args=pretrain_args("tok", 5), state="running",
                        created=now - 30, started=now - 20, pid=dead.pid))  # its model is registered  # fmt: skip
    # a worker the previous server started, still training
    live_job = Job(id="job-000000000003", kind="pretrain", args=pretrain_args("lm-live", 100_000), state="running",
                   created=now - 10, started=now - 5)  # fmt: skip
    (reg.root / "jobs" / live_job.id).mkdir(parents=True)
    with open(reg.root / "jobs" / live_job.id / "log.txt", "wb") as log:
        worker = subprocess.Popen(fast_pretrain(reg.root / "size.json")(live_job), stdout=log, stderr=subprocess.STDOUT,
                                  env=os.environ | {"LMFORGE_HOME": str(reg.root)}, start_new_session=True)  # fmt: skip
    live_job.pid = worker.pid
    workers.pids.append(worker.pid)
    # (right after exec the new argv is not in /proc yet; a restarted server finds it long there)
    wait_for(lambda: b"lmforge" in Path(f"/proc/{worker.pid}/cmdline").read_bytes(), 10, "the worker's argv")
    (reg.root / "jobs" / live_job.id / "job.json").write_text(json.dumps(live_job.to_dict()))
    after = Job(id="job-000000000004", kind="pretrain", args=pretrain_args("lm-after", 5), created=now)
    _write_job(reg, after)

    q = workers.queue(reg, command=fast_pretrain(reg.root / "size.json"))
    lost = q.get("job-000000000001")
    assert lost.state == "failed" and "stopped while the server was down" in (lost.error or "")
    assert q.get("job-000000000002").state == "succeeded"  # it did register its model before the end
    assert q.get("job-000000000003").state == "running"  # adopted, not marked failed
    assert q.get("job-000000000004").state == "queued"  # behind the adopted worker
    wait_for(lambda: q.detail(live_job.id)["progress"]["step"] >= 2, what="the adopted worker's progress")
    q.cancel(live_job.id)
    wait_for(lambda: q.get(live_job.id).state in FINISHED, 60, "the adopted worker's end")
    assert q.get(live_job.id).state == "cancelled" and worker.wait(10) == -signal.SIGTERM
    wait_for(lambda: q.get("job-000000000004").state in FINISHED, what="the queued job")
    assert q.get("job-000000000004").state == "succeeded" and reg.exists("lm-after")


def test_event_tail_keeps_the_latest_record_per_step_and_skips_torn_lines(tmp_path):
    run = tmp_path / "runs" / "x"
    log = EventLog(run)
    for s in (1, 2, 3):
        log.log({"step": s, "loss": 5.0 - s, "tokens": 100 * s}, total_steps=10, elapsed_s=float(s))
    log.log({"step": 3, "val_loss": 2.5})
    tail = EventTail(run / "events.jsonl")
    tail.read()
    assert [r["step"] for r in tail.steps] == [1, 2, 3]
    resumed = EventLog(run, fresh=False)  # a resumed run repeats step 3 and goes on
    resumed.log({"step": 3, "loss": float("nan"), "tokens": 300}, total_steps=10, elapsed_s=3.5)
    with open(run / "events.jsonl", "a") as f:
        f.write('{"step": 4, "lo')  # torn by a kill: not read until whole
    tail.read()
    p = tail.progress()
    assert [x["step"] for x in p.loss] == [1, 2, 3] and p.loss[-1]["loss"] is None  # NaN written as null
    assert p.step == 3 and p.total == 10 and p.tokens_per_s == pytest.approx(200 / 2.5)
    assert p.eta_s == pytest.approx(7 * 2.5 / 2, abs=0.1) and p.val == [{"step": 3, "val_loss": 2.5}]
    EventLog(run)  # a fresh run truncates: the reader starts over
    tail.read()
    assert tail.progress().step == 0 and tail.progress().loss == []


def test_commands_follow_the_cli_contract():
    upload = "/home/u/jobs/uploads/upload-0/train.jsonl"
    ft = Job(id="j", kind="finetune", args=JobArgs(data="upload-0", data_file=upload, out="ft", base="qwen",
             method="lora", options=JobOptions(epochs=2, lr=2e-4, rank=4, alpha=8, max_length=256)))  # fmt: skip
    assert lmforge_command(ft)[1:] == ["-m", "lmforge", "finetune", "qwen", "--data", upload, "--method", "lora",
                                       "--out", "ft", "--epochs", "2", "--lr", "0.0002", "--rank", "4", "--alpha", "8",
                                       "--max-length", "256", "--json"]  # fmt: skip
    pre = Job(id="p", kind="pretrain", args=JobArgs(data="corp", out="lm", base="lm0",
              options=JobOptions(steps=100, tokenizer="tok", size="tiny")))  # fmt: skip
    assert lmforge_command(pre)[3:] == ["pretrain", "--out", "lm", "--data", "corp", "--init", "lm0", "--steps", "100",
                                        "--tokenizer", "tok", "--size", "tiny", "--json"]  # fmt: skip


# -- the HTTP API -------------------------------------------------------------------------------
def test_api_needs_the_train_scope_and_answers_bad_input_with_4xx(reg):
    from conftest import make_server
    from fastapi.testclient import TestClient

    from lmforge.serve.app import ServerSettings
    from lmforge.serve.auth import KeyStore

    stub = Manifest(name="lm0", kind="base", format="hf", path="")
    reg.put(stub, lambda st: (st / "w.bin").write_bytes(b"w"))
    keys = KeyStore(reg.root / "keys.sqlite")
    scopes = {"trainer": ("train",), "chatter": ("chat",), "boss": ("admin",)}
    secret = {name: keys.create(name, s, rpm=100_000, tpm=10**9) for name, s in scopes.items()}
    settings = ServerSettings(max_body_bytes=1 << 20, max_upload_bytes=64 * 1024)
    client = TestClient(make_server(reg.root, None, keys=keys, settings=settings))
    auth = {n: {"Authorization": f"Bearer {s}"} for n, s in secret.items()}
    pre = {"kind": "pretrain", "data": "corp", "out": "lm-api", "options": {"tokenizer": "tok", "steps": 5}}

    for method, path in (("post", "/api/jobs"), ("get", "/api/jobs"), ("get", "/api/jobs/job-x"),
                         ("post", "/api/jobs/job-x/cancel"), ("post", "/api/jobs/uploads")):  # fmt: skip
        assert client.request(method, path).status_code == 401
        r = client.request(method, path, headers=auth["chatter"])
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope", (path, r.text)
    assert client.get("/api/jobs", headers=auth["boss"]).status_code == 200  # admin implies train

    ok = client.post("/api/jobs/uploads", headers=auth["trainer"],
                     files={"file": ("train.jsonl", b'{"prompt": "1+1=", "response": "2"}\n')})  # fmt: skip
    assert ok.status_code == 200, ok.text
    up = ok.json()
    assert up["id"].startswith("upload-") and up["bytes"] == 36
    assert Path(up["path"]).read_bytes().startswith(b'{"prompt"')

    def post(body: dict, who: str = "trainer"):
        return client.post("/api/jobs", json=body, headers=auth[who])

    ft = {"kind": "finetune", "base": "lm0", "data": up["id"], "method": "lora", "out": "ft"}
    cases = [  # (body, status, code, words in the message)
        (ft | {"base": "nope"}, 404, "model_not_found", "unknown model 'nope'"),
        (ft | {"method": "dora"}, 400, "invalid_value", "method"),
        (ft | {"kind": "distill"}, 400, "invalid_value", "kind"),
        (pre | {"data": "nope"}, 400, None, "data 'nope' is not in the registry"),
        ({k: v for k, v in pre.items() if k != "data"}, 400, "invalid_value", "data"),
        (ft | {"data": "corp"}, 400, None, "upload one"),
        (pre | {"data": up["id"]}, 400, None, "registered dataset"),
        (ft | {"data": "upload-0123456789abcdef"}, 400, None, "no upload"),
        (pre | {"out": "corp"}, 400, None, "'corp' already exists"),
        (pre | {"out": "../x"}, 400, None, "out:"),
        (ft | {"options": {"virtual_tokens": 8}}, 400, None, "virtual_tokens does not apply"),
        (ft | {"options": {"rank": 0}}, 400, "invalid_value", "rank"),
        (ft | {"options": {"bogus": 1}}, 400, "invalid_value", "bogus"),
        (pre | {"options": {"steps": 5}}, 400, None, "needs a tokenizer"),
        (pre | {"options": {"tokenizer": "tok", "size": "huge"}}, 400, None, "unknown size"),
        (pre | {"base": "corp"}, 400, None, "is a dataset"),
    ]
    for body, status, code, words in cases:
        r = post(body)
        err = r.json()["error"]
        assert r.status_code == status and err["code"] == code and words in err["message"], (body, r.text)
    # over the upload limit (refused by the route), over the body limit (by the middleware)
    for data in (b"x" * (100 * 1024), b"x" * (1 << 21)):
        r = client.post("/api/jobs/uploads", headers=auth["trainer"], files={"file": ("big.jsonl", data)})
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    r = client.post("/api/jobs/uploads", headers=auth["trainer"], files={"file": ("notes.txt", b"hi")})
    assert r.status_code == 400 and ".jsonl or .json" in r.json()["error"]["message"]
    assert sorted(p.name for p in (reg.root / "jobs" / "uploads").iterdir()) == [up["id"]]  # refused: removed
    assert client.get("/api/jobs/job-nope", headers=auth["trainer"]).status_code == 404

    job = post(pre).json()  # a real worker (the default command); cancelled at once
    assert job["state"] == "running" and job["kind"] == "pretrain" and job["args"]["out"] == "lm-api"
    dup = post(pre | {"options": {"tokenizer": "tok", "steps": 6}})
    assert dup.status_code == 400 and "already making 'lm-api'" in dup.json()["error"]["message"]
    assert client.post(f"/api/jobs/{job['id']}/cancel", headers=auth["trainer"]).json()["cancel_requested"]
    state = lambda job_id: client.get(f"/api/jobs/{job_id}", headers=auth["trainer"]).json()["state"]  # noqa: E731
    wait_for(lambda: state(job["id"]) in FINISHED)
    r = client.post(f"/api/jobs/{job['id']}/cancel", headers=auth["trainer"])
    assert r.status_code == 400 and "already cancelled" in r.json()["error"]["message"]

    # a fine-tuning job through `lmforge finetune`: its base is a stub, so the worker fails and says why
    made = post(ft | {"options": {"rank": 4, "epochs": 1}})
    assert made.status_code == 200, made.text
    fid = made.json()["id"]
    wait_for(lambda: state(fid) in FINISHED)
    d = client.get(f"/api/jobs/{fid}", headers=auth["trainer"]).json()
    assert d["state"] == "failed" and d["error"] and d["exit_code"] != 0 and d["log"]
    listing = client.get("/api/jobs", headers=auth["trainer"]).json()
    assert listing["object"] == "list" and [j["id"] for j in listing["data"]] == [fid, job["id"]]
    audit = [row for row in keys.audit_rows() if row["route"] == "jobs"]
    assert audit and all(row["key_name"] == "trainer" for row in audit)
