"""`POST /v1/tasks/{task}` (scope `tasks`): lmforge.tasks.engine behind the API — the same JSON
`lmforge task ... --json` prints. One `text`, or `texts` for a batch (results in order; an item that
fails is reported in place with its error, the others are kept). Every model call goes through the
scheduler like a chat request (ScheduledChat), so tasks share the batching engine."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from lmforge.errors import LmforgeError, NotFoundError
from lmforge.serve.context import ServerContext
from lmforge.serve.errors import ApiError
from lmforge.tasks.engine import TASKS, TaskConfig, run, validate


class TaskRequest(BaseModel):
    model: str = Field(min_length=1)
    text: str | None = None
    texts: list[str] | None = Field(default=None, max_length=256)
    labels: list[str] = Field(default_factory=list)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    context: str | None = None
    to: str = TaskConfig.to
    max_chars: int = TaskConfig.max_chars
    style: Literal["formal", "casual", "concise"] = TaskConfig.style
    tone: Literal["positive", "neutral", "negative"] = TaskConfig.tone
    length: Literal["short", "long"] = TaskConfig.length
    lang: Literal["auto", "en", "zh"] = TaskConfig.lang
    system: str | None = None
    examples: list[dict[str, Any]] = Field(default_factory=list)
    cot: bool = False
    max_tokens: int = Field(default=TaskConfig.max_tokens, ge=1, le=4096)

    model_config = {"populate_by_name": True}


def task_router(ctx: ServerContext) -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["tasks"])

    @r.post("/tasks/{task}")
    async def tasks(task: str, req: TaskRequest, key=ctx.authorize("tasks")) -> dict:
        if task not in TASKS:
            raise NotFoundError(f"unknown task {task!r}: {', '.join(TASKS)}")
        if (req.text is None) == (req.texts is None):
            raise LmforgeError('send "text" or "texts" (one of them)')
        cfg = TaskConfig(labels=req.labels, schema=req.schema_, context=req.context, to=req.to,
                         max_chars=req.max_chars, style=req.style, tone=req.tone, length=req.length, lang=req.lang,
                         system=req.system, examples=req.examples, cot=req.cot, max_tokens=req.max_tokens)  # fmt: skip
        if req.text is not None:
            validate(task, req.text, cfg)  # 400 before the model loads
        guard, who = ctx.guard, key.name if key else None

        def work() -> dict:
            head = ctx.task_head(req.model)
            if head is not None:
                head.check(task, cfg.labels)

                def answer(t: str) -> dict[str, Any]:
                    return head.run(task, t, cfg.labels)
            else:
                backend = ctx.service.chat_view(req.model)

                def answer(t: str) -> dict[str, Any]:
                    return run(backend, task, t, cfg)

            def one(t: str) -> dict[str, Any]:
                if guard is None:
                    return answer(t)
                result = answer(guard.check_input(who, f"tasks.{task}", req.model, t))
                for k in ("answer", "translation", "summary", "text"):  # the generated text fields
                    if isinstance(result.get(k), str):
                        result[k], blocked = guard.check_output(who, f"tasks.{task}", req.model, result[k])
                        if blocked:
                            result["finish_reason"] = "content_filter"
                return result

            if req.text is not None:
                return one(req.text)
            results: list[dict[str, Any]] = []
            for i, t in enumerate(req.texts or []):
                try:
                    results.append(one(t))
                except (LmforgeError, ApiError) as e:  # ApiError: the content filter refused this item
                    results.append({"index": i, "error": str(e)})
            return {"results": results, "failed": sum("error" in x for x in results)}

        return await ctx.offload(work)

    return r
