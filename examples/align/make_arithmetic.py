"""Write examples/align/arithmetic.jsonl: small addition/subtraction prompts with exact answers, for
`lmforge align --method grpo --reward exact-answer` (a verifiable task). Deterministic; run it again to
regenerate the same file."""

from __future__ import annotations

import json
import random
from pathlib import Path


def main() -> None:
    rnd = random.Random(20261126)
    rows = []
    for i in range(64):
        a, b = rnd.randint(2, 49), rnd.randint(2, 49)
        op = "+" if i % 3 else "-"
        a, b = (a, b) if op == "+" or a >= b else (b, a)
        answer = a + b if op == "+" else a - b
        prompt = (
            f"计算 {a} {op} {b} 等于多少？只回答数字。"
            if i % 2
            else f"What is {a} {op} {b}? Answer with the number only."
        )
        rows.append({"prompt": prompt, "answer": answer})
    out = Path(__file__).with_name("arithmetic.jsonl")
    out.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
