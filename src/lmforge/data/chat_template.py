"""Render a model's own chat template (Jinja, as stored in tokenizer_config.json or GGUF metadata).

This mirrors how transformers renders templates (sandboxed Jinja, trim_blocks/lstrip_blocks,
`raise_exception`, `tojson`, `strftime_now`), so a template behaves here as it does in
transformers and llama.cpp. Written here rather than calling `tokenizer.apply_chat_template`
because GGUF-only models have no transformers tokenizer, and both backends must render the same
way. Models without a template get ChatML, and the caller is told.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from lmforge.errors import LmforgeError

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)
ROLES = {"system", "user", "assistant", "tool"}


def _raise(message: str) -> None:
    raise LmforgeError(f"chat template refused the conversation: {message}")


def render(
    template: str,
    messages: list[dict[str, Any]],
    *,
    add_generation_prompt: bool = True,
    special_tokens: dict[str, str] | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    """The prompt text for `messages` ([{'role', 'content'}...]) under `template`."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    for i, m in enumerate(messages):
        if m.get("role") not in ROLES or not isinstance(m.get("content", ""), str):
            raise LmforgeError(f"message {i} needs a role in {sorted(ROLES)} and string content")
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template).render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            tools=tools,
            **(special_tokens or {}),
        )
    except TemplateError as e:
        raise LmforgeError(f"the model's chat template failed to render: {e}") from e
