"""OpenAI-compatible request and response schemas (pydantic), in OpenAI's field order.

Requests: our extensions are marked `# lmforge`. Unknown fields are ignored (clients send vendor
fields freely); wrong types and out-of-range values are rejected with a 400 naming the field.
Responses: typed models in OpenAI's field order; our extensions sit in one `lmforge` block at the
end of the object (omitted when empty), as vLLM keeps its own fields apart. `finish_reason` and
`usage` are computed in one place each (`finish_reason`, `Usage.of`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FunctionCall(_Lenient):
    name: str
    arguments: str


class ToolCall(_Lenient):
    id: str = Field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")
    type: Literal["function"] = "function"
    function: FunctionCall


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")  # image_url / input_audio parts travel on to a remote upstream

    type: str
    text: str | None = None


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class FunctionDef(_Lenient):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Lenient):
    type: Literal["function"] = "function"
    function: FunctionDef


class JsonSchemaFormat(_Lenient):
    name: str = "response"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(_Lenient):
    include_usage: bool = False


class _SamplingFields(_Lenient):
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=8)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    user: str | None = None
    top_k: int | None = Field(default=None, ge=0)  # lmforge
    min_p: float | None = Field(default=None, ge=0.0, lt=1.0)  # lmforge
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0)  # lmforge


LMFORGE_SAMPLING = ("top_k", "min_p", "repetition_penalty")
"""Our sampling extensions: a request forwarded to an upstream carries them in `extra_body`."""


class ChatCompletionRequest(_SamplingFields):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    truncate: bool = False  # lmforge: drop oldest turns (and say so) instead of answering 400


TokenIds = list[int]


class CompletionRequest(_SamplingFields):
    model: str
    prompt: str | list[str] | TokenIds | list[TokenIds]
    """A string, a list of strings, a list of token ids, or a list of token-id lists."""
    max_tokens: int | None = Field(default=None, ge=0)
    """0 with `echo` scores the prompt without generating."""
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False


class EmbeddingRequest(_Lenient):
    model: str
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    input_type: Literal["query", "passage"] = "passage"  # lmforge: E5-style prefixes


# -- responses ------------------------------------------------------------------------------------
class _Response(BaseModel):
    """Response base: fields named in `omit_if_none` are left out when None (as OpenAI does)."""

    omit_if_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if not (v is None and k in self.omit_if_none)}


class Usage(_Response):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                   total_tokens=prompt_tokens + completion_tokens)  # fmt: skip


def finish_reason(engine_reason: str | None, tool_calls: bool = False) -> str:
    """OpenAI's finish_reason for an engine's: tool_calls, length, or stop (a cancelled stream too)."""
    if tool_calls:
        return "tool_calls"
    return "length" if engine_reason == "length" else "stop"


class Extension(_Response):
    """lmforge's own response fields."""

    omit_if_none = frozenset({"notice", "dropped_messages"})
    notice: str | None = None
    """What was done to fit the context (oldest turns dropped, no chat template)."""
    dropped_messages: int | None = None


class AssistantMessage(_Response):
    omit_if_none = frozenset({"tool_calls"})
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatChoice(_Response):
    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: str


class ChatCompletion(_Response):
    omit_if_none = frozenset({"lmforge"})
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    lmforge: Extension | None = None  # lmforge


class ChunkChoice(_Response):
    index: int
    delta: dict[str, Any]
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(_Response):
    omit_if_none = frozenset({"usage", "lmforge"})
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    lmforge: Extension | None = None  # lmforge


class CompletionLogprobs(_Response):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(_Response):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class Completion(_Response):
    omit_if_none = frozenset({"usage"})
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class EmbeddingData(_Response):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingList(_Response):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
