"""Sampling parameters shared by every backend, validated once.

Field names follow OpenAI where OpenAI has the knob (temperature, top_p, max_tokens, stop, seed,
presence/frequency penalty) and llama.cpp / transformers otherwise (top_k, min_p,
repetition_penalty). `temperature == 0` means greedy decoding on every backend; with a `seed`,
sampling at any temperature is reproducible on the same backend and machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmforge.errors import LmforgeError

MAX_STOP_STRINGS = 16


@dataclass
class SamplingParams:
    max_tokens: int = 512
    """Upper bound on generated tokens (generation also ends at end-of-turn or a stop string)."""
    temperature: float = 0.7
    """0 = greedy; 0 < t <= 2 scales logits before sampling."""
    top_p: float = 0.95
    """Nucleus sampling mass in (0, 1]; 1 disables it."""
    top_k: int = 40
    """Keep the k most likely tokens; 0 disables it."""
    min_p: float = 0.0
    """Drop tokens below min_p × p(top token); 0 disables it."""
    repetition_penalty: float = 1.0
    """> 1 discourages repeating recent tokens (CTRL-style, as llama.cpp and transformers do)."""
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    """Generation ends before the first occurrence of any of these strings (not included)."""
    seed: int | None = None
    """Fixes the sampler's random stream; None draws a fresh one."""

    def validate(self) -> SamplingParams:
        problems = []
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            problems.append(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if not 0.0 <= self.temperature <= 2.0:
            problems.append(f"temperature must be between 0 and 2, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            problems.append(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 <= self.min_p < 1.0:
            problems.append(f"min_p must be in [0, 1), got {self.min_p}")
        if not 0.0 < self.repetition_penalty <= 10.0:
            problems.append(f"repetition_penalty must be in (0, 10], got {self.repetition_penalty}")
        for nm in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, nm) <= 2.0:
                problems.append(f"{nm} must be between -2 and 2, got {getattr(self, nm)}")
        if len(self.stop) > MAX_STOP_STRINGS or any(not s for s in self.stop):
            problems.append(f"stop takes 1 to {MAX_STOP_STRINGS} non-empty strings")
        if self.seed is not None and not 0 <= self.seed < 2**32:
            problems.append(f"seed must be in [0, 2^32), got {self.seed}")
        if problems:
            raise LmforgeError("bad sampling parameters: " + "; ".join(problems))
        return self
