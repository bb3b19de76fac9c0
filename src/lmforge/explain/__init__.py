"""Interpretability: attention maps and rollout, per-token attributions (`lmforge explain ...`).

- load.py: a registered name or an HF folder → `ExplainModel` (tokenizer, model, kind) with eager
  attention; GGUF refused with the name of its dequantized copy.
- attention.py: `attention_maps`, `rollout`, `explain_attention_json`, `explain_attention` (PNG + HTML).
- tokens.py: `attributions` (captum integrated gradients / gradient × input), `explain_tokens_json`,
  `explain_tokens` (table, PNG, HTML).
The computations take a model and a tokenizer and return data; only the `explain_*` writers touch files,
so the server can call the same functions for the console.
"""

from lmforge.explain.attention import (
    AttentionResult,
    attention_maps,
    explain_attention,
    explain_attention_json,
    rollout,
)
from lmforge.explain.load import ExplainModel, load_folder, load_model
from lmforge.explain.tokens import (
    AttributionConfig,
    TokenAttribution,
    attributions,
    explain_tokens,
    explain_tokens_json,
)

__all__ = [
    "AttentionResult",
    "AttributionConfig",
    "ExplainModel",
    "TokenAttribution",
    "attention_maps",
    "attributions",
    "explain_attention",
    "explain_attention_json",
    "explain_tokens",
    "explain_tokens_json",
    "load_folder",
    "load_model",
    "rollout",
]
