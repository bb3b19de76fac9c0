"""HTTP API of the training jobs (`/api/jobs`), mounted by `create_app`; the console's Train page.

Every route needs the `train` scope (an `admin` key has every scope). The work happens in
`jobs.JobQueue`: each job is an `lmforge finetune|pretrain ... --json` worker process, never this
server's process, so a training run neither blocks nor crashes the server.

    POST /api/jobs               {kind, base, data, method, out, options{...}} → the job
    POST /api/jobs/uploads       multipart `file` (.jsonl / .json) → {id, filename, bytes, path}
    GET  /api/jobs               {object: list, data: [job, ...]} newest first
    GET  /api/jobs/{id}          the job + progress {step, total, tokens, elapsed_s, tokens_per_s, eta_s,
                                 loss: [{step, loss}], val: [{step, val_loss}]} + log (its tail)
    POST /api/jobs/{id}/cancel   the job (running: cancelled once its worker has ended)

Bad input is answered by the error classes (serve/errors.py): an unknown base model 404
`model_not_found`; an unknown kind or method, or an option out of range, 400 `invalid_value`; data
that names nothing, an output name already taken and every other problem with the request, one
400 naming each; an upload over the limit 413 `body_too_large`.
"""

from __future__ import annotations

from fastapi import APIRouter, File, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from lmforge.errors import LmforgeError
from lmforge.jobs import JobArgs, JobKind, JobOptions, Method
from lmforge.serve.context import ServerContext
from lmforge.serve.errors import ApiError

UPLOAD_BLOCK = 1 << 20


class JobOptionsBody(BaseModel):
    """`jobs.JobOptions` with its ranges; a missing option is the trainer's default."""

    model_config = ConfigDict(extra="forbid")
    epochs: float | None = Field(default=None, gt=0, le=1000)
    lr: float | None = Field(default=None, gt=0, le=1)
    rank: int | None = Field(default=None, ge=1, le=1024)
    alpha: int | None = Field(default=None, ge=1, le=4096)
    max_length: int | None = Field(default=None, ge=8, le=1 << 20)
    virtual_tokens: int | None = Field(default=None, ge=1, le=1024)
    steps: int | None = Field(default=None, ge=1, le=10**8)
    tokenizer: str | None = Field(default=None, min_length=1, max_length=128)
    size: str | None = Field(default=None, min_length=1, max_length=32)


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: JobKind = "finetune"
    base: str | None = Field(default=None, min_length=1, max_length=128)
    data: str = Field(min_length=1, max_length=128)
    """A registered dataset (pretrain) or an id from POST /api/jobs/uploads (finetune)."""
    method: Method | None = None
    out: str = Field(min_length=1, max_length=128)
    options: JobOptionsBody = Field(default_factory=JobOptionsBody)

    def to_args(self) -> JobArgs:
        return JobArgs(data=self.data, out=self.out, base=self.base, method=self.method,
                       options=JobOptions(**self.options.model_dump()))  # fmt: skip


def jobs_router(ctx: ServerContext) -> APIRouter:
    r = APIRouter(prefix="/api/jobs", tags=["jobs"])
    jobs = ctx.jobs
    train = ctx.authorize("train")

    @r.post("")
    async def create(req: JobCreate, key=train) -> JSONResponse:
        return await ctx.run_json("jobs", key, req.base, None,
                                  lambda: jobs.submit(req.kind, req.to_args()).to_dict())  # fmt: skip

    @r.get("")
    async def list_jobs(key=train) -> dict:
        return {"object": "list", "data": [j.to_dict() for j in await ctx.offload(jobs.list)]}

    @r.post("/uploads")
    async def upload(file: UploadFile = File(...), key=train) -> dict:
        """Streamed to LMFORGE_HOME/jobs/uploads/<id>/, refused past the server's upload limit."""
        upload_id, dest = await ctx.offload(lambda: jobs.new_upload(file.filename or ""))
        limit, size = ctx.settings.max_upload_bytes, 0
        try:
            with dest.open("wb") as out:
                while block := await file.read(UPLOAD_BLOCK):
                    size += len(block)
                    if size > limit:
                        raise ApiError(413, f"upload exceeds {limit} bytes", "invalid_request_error",
                                       "body_too_large")  # fmt: skip
                    out.write(block)
            if size == 0:
                raise LmforgeError(f"upload {file.filename!r} is empty")
        except BaseException:
            jobs.drop_upload(upload_id)
            raise
        return {"id": upload_id, "filename": dest.name, "bytes": size, "path": str(dest)}

    @r.get("/{job_id}")
    async def detail(job_id: str, key=train) -> dict:
        return await ctx.offload(lambda: jobs.detail(job_id))

    @r.post("/{job_id}/cancel")
    async def cancel(job_id: str, key=train) -> JSONResponse:
        return await ctx.run_json("jobs", key, None, None, lambda: jobs.cancel(job_id).to_dict())

    return r
