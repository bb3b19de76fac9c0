"""Cast blind votes in the console's arena with a real browser, then save the arena's DPO export.

    python examples/align/arena_votes.py --url http://127.0.0.1:8000 \
        --a smollm2-135m-instruct --b qwen2.5-coder-0.5b-instruct --out votes.jsonl

It drives the Evaluation page exactly as a person does (Playwright + Debian's chromium): pick the two
models, type a prompt, press Compare, read answers A and B (the models are hidden), press a vote
button, read the reveal. The person is stood in for by a stated taste, so the run can be repeated:

    an answer in the question's language beats one that is not; then a finished answer (it ends a
    sentence, and has no broken characters) beats one cut off or garbled; then the shorter one wins
    (this rater wants concise answers); equal → tie.

Then it downloads `GET /api/arena/export` (the `{"prompt","chosen","rejected"}` lines that
`lmforge align --method dpo|reward --data` reads as they are). Needs: `pip install playwright` and
`apt install chromium`; with API keys on, pass an admin key (--key) for the export.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def is_zh(text: str) -> bool:
    cjk = sum("\u4e00" <= c <= "\u9fff" for c in text)
    return cjk >= max(2, 0.2 * len(text.replace(" ", "")))


def taste(prompt: str, a: str, b: str) -> str:
    """The stand-in rater's vote: "A", "B" or "tie"."""

    def rank(ans: str) -> tuple[int, int, int]:
        ans = ans.strip()
        same_language = is_zh(ans) == is_zh(prompt) and len(ans) >= 8
        finished = ans.endswith(tuple('。！？.!?)）"”')) and "\ufffd" not in ans
        return (int(same_language), int(finished), -len(ans))

    ra, rb = rank(a), rank(b)
    return "tie" if ra == rb else "A" if ra > rb else "B"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--a", required=True, help="first model (shown blind as A or B)")
    ap.add_argument("--b", required=True, help="second model")
    ap.add_argument("--prompts", default=str(Path(__file__).with_name("arena_prompts.txt")))
    ap.add_argument("--out", default="votes.jsonl")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--key", default=None, help="API key (admin, for the export) when keys are on")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args(argv)

    import httpx
    from playwright.sync_api import sync_playwright

    prompts = [p.strip() for p in Path(args.prompts).read_text(encoding="utf-8").splitlines() if p.strip()]
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    t0 = time.perf_counter()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page()
        if args.key:
            page.add_init_script(f"localStorage.setItem('lmforge.key', {args.key!r})")
        page.goto(args.url + "/")
        # the arena answers with the chat settings' max_tokens (a field in the folded settings panel)
        page.eval_on_selector("#max-tokens", "(el, v) => { el.value = v; }", str(args.max_tokens))
        page.click("button.tab[data-view=eval]")
        page.wait_for_selector(f"#arena-b option[value='{args.b}']", state="attached")
        tally = {"A": 0, "B": 0, "tie": 0}
        for i, prompt in enumerate(prompts, 1):
            page.select_option("#arena-a", args.a)
            page.select_option("#arena-b", args.b)
            page.fill("#arena-prompt", prompt)
            page.click("#arena-go")
            page.wait_for_function("document.body.dataset.arena === 'ready'", timeout=600_000)
            a, b = page.inner_text("#arena-A"), page.inner_text("#arena-B")
            vote = taste(prompt, a, b)
            page.click(f"#vote-{vote}")
            page.wait_for_function("document.body.dataset.arena === 'voted'")
            tally[vote] += 1
            reveal = page.inner_text("#arena-reveal").replace("\n", " ")
            rate = i / (time.perf_counter() - t0)
            print(f"[{i}/{len(prompts)}] {vote:3}  {reveal[:70]}  ({rate * 60:.1f} votes/min, "
                  f"ETA {(len(prompts) - i) / rate:.0f} s)", file=sys.stderr)  # fmt: skip
        browser.close()
    export = httpx.get(args.url + "/api/arena/export", headers=headers, timeout=60)
    export.raise_for_status()
    Path(args.out).write_text(export.text, encoding="utf-8")
    pairs = len(export.text.splitlines())
    print(f"votes: A {tally['A']}, B {tally['B']}, tie {tally['tie']}; exported {pairs} preference pairs "
          f"(ties are not pairs) to {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
