"""Model-against-model comparisons for the reports of `finetune`, `align` and `distill`.

- `suite_pairs`: run `lmforge eval` suites on several registered models through one engine
  (transformers, so a base, its adapter and a distilled student are measured alike) and pair the
  scores; a score that fell from the first model to another is listed as forgetting.
- `win_rate`: the base and the tuned model answer the same prompts greedily; a registered reward
  model (the judge) scores both answers; a win is a higher score for the tuned answer, a tie (scores
  within 1e-6, e.g. identical answers) counts one half. This is the "win rate judged by the reward
  model" of RLHF papers (Ouyang et al. 2022), with the reward model standing in for the labellers.

Each model is loaded once and closed before the next, so a comparison holds one model (plus the
judge) in memory at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lmforge.home import Registry

TIE = 1e-6


def _backend(registry: Registry, name: str, threads: int | None) -> Any:
    from lmforge.infer.loader import LoadConfig, load_backend

    return load_backend(registry, name, LoadConfig(backend="transformers", n_threads=threads))


def measure_models(registry: Registry, models: Sequence[str], *, suites: Sequence[str] = (),
                   prompts: Sequence[list[dict[str, str]]] = (), max_tokens: int = 128, threads: int | None = None,
                   say: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:  # fmt: skip
    """{model: {"suites": {suite: metrics}, "answers": [greedy answer per prompt]}}: each model loaded
    once through transformers for both."""
    from lmforge.eval.harness import EvalConfig
    from lmforge.eval.report import evaluate_model
    from lmforge.infer.chat import greedy_text

    out: dict[str, dict[str, Any]] = {}
    for who in models:
        backend = _backend(registry, who, threads)
        try:
            answers = []
            if prompts:
                say(f"{who} answers {len(prompts)} prompts (greedy, at most {max_tokens} tokens) ...")
                answers = [
                    greedy_text(backend, list(p), max_tokens, allow_truncation=True).strip() for p in prompts
                ]
            scores = {}
            if suites:
                say(f"eval suites {', '.join(suites)} on {who} ...")
                scores = {r.suite: r.metrics for r in evaluate_model(registry, who, list(suites), EvalConfig(),
                                                                     backend=backend)}  # fmt: skip
            out[who] = {"suites": scores, "answers": answers}
        finally:
            backend.close()
    return out


def suite_scores(registry: Registry, models: Sequence[str], suites: Sequence[str], *,
                 threads: int | None = None, say: Callable[[str], None] = print) -> dict[str, dict[str, dict[str, float]]]:  # fmt: skip
    """{model: {suite: metrics}} for each model, each loaded once through transformers."""
    got = measure_models(registry, models, suites=suites, threads=threads, say=say)
    return {who: r["suites"] for who, r in got.items()}


def worse(metric: str, before: float, after: float) -> bool:
    """Whether a suite metric moved the wrong way (perplexity and bits/byte fall when better)."""
    from lmforge.eval.report import LOWER_IS_BETTER

    return after > before if metric in LOWER_IS_BETTER else after < before


def suite_pairs(scores: dict[str, dict[str, dict[str, float]]], before: str, after: str) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    """({suite: {metric: (before, after)}, ...}, ["suite: metric" that fell]) between two scored models."""
    pairs: dict[str, Any] = {}
    for suite, b in scores[before].items():
        a = scores[after].get(suite, {})
        pairs[suite] = {k: (b[k], a[k]) for k in b if k in a} | {"general": True}
    fell = [
        f"{s}: {k}" for s, res in pairs.items() for k, v in res.items() if k != "general" and worse(k, *v)
    ]
    return pairs, fell


def win_rate(registry: Registry, judge: str, prompts: Sequence[list[dict[str, str]]], base_answers: list[str],
             tuned_answers: list[str], *, samples: int = 4) -> dict[str, Any]:  # fmt: skip
    """The base's and the tuned model's answers to `prompts` (measure_models), scored by reward model `judge`."""
    from lmforge.train.align import RewardScorer

    scorer = RewardScorer(registry, judge)
    rows = []
    for p, b, t in zip(prompts, base_answers, tuned_answers, strict=True):
        sb, st = scorer.score(list(p), b), scorer.score(list(p), t)
        rows.append({"prompt": p[-1]["content"], "base": b, "tuned": t, "base_score": round(sb, 4),
                     "tuned_score": round(st, 4)})  # fmt: skip
    wins = sum(r["tuned_score"] > r["base_score"] + TIE for r in rows)
    losses = sum(r["tuned_score"] < r["base_score"] - TIE for r in rows)
    ties = len(rows) - wins - losses
    n = max(1, len(rows))
    return {"judge": judge, "prompts": len(rows), "wins": wins, "ties": ties, "losses": losses,
            "win_rate": round((wins + ties / 2) / n, 4),
            "mean_score_base": round(sum(r["base_score"] for r in rows) / n, 4),
            "mean_score_tuned": round(sum(r["tuned_score"] for r in rows) / n, 4),
            "samples": rows[:samples]}  # fmt: skip
