"""The one exception type users see.

Every failure a user can cause (unknown model, missing file, corrupt GGUF, prompt longer than the
context, bad sampling values, unreachable registry) raises `LmforgeError` with one readable line.
The CLI prints that line and exits with code 2; the server (a later issue) maps it to an
OpenAI-style 4xx body (serve/errors.py maps each class to its status). Anything else is a bug and
keeps its traceback.
"""


class LmforgeError(Exception):
    """A user-facing error: `str(err)` is one line that names the problem and what to do."""


class ContextOverflowError(LmforgeError):
    """The prompt (plus the room reserved for the answer) does not fit the model's context."""

    def __init__(self, message: str, *, prompt_tokens: int, context_length: int) -> None:
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


class NotFoundError(LmforgeError):
    """The named thing (knowledge base, document) does not exist or is not visible to the caller."""


class ModelNotFoundError(NotFoundError):
    """No registered artifact has this name (HTTP 404 `model_not_found`)."""


class ForbiddenError(LmforgeError):
    """The caller is known but not allowed to do this."""
