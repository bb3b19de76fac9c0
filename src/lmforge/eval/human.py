"""Human preference: blind side-by-side votes, win rates with confidence intervals, DPO export.

A pair is one prompt answered by two models; which answer is shown as A and which as B is random
and the names are hidden until the vote. Votes are stored in SQLite (LMFORGE_HOME/eval/votes.sqlite).
Win rate of model X over Y counts a tie as half a win, with a 95% Wilson interval. Export writes
`{"prompt", "chosen", "rejected"}` lines (ties left out) — the preference format the DPO trainer reads.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lmforge.errors import LmforgeError, NotFoundError
from lmforge.eval.metrics import wilson_interval

SCHEMA = """
CREATE TABLE IF NOT EXISTS pairs (id TEXT PRIMARY KEY, prompt TEXT NOT NULL, model_a TEXT NOT NULL,
  model_b TEXT NOT NULL, answer_a TEXT NOT NULL, answer_b TEXT NOT NULL, created REAL NOT NULL, rater TEXT);
CREATE TABLE IF NOT EXISTS votes (pair_id TEXT PRIMARY KEY REFERENCES pairs(id), winner TEXT NOT NULL,
  created REAL NOT NULL, rater TEXT);
"""


class VoteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:
                yield db
        finally:
            db.close()

    def new_pair(self, prompt: str, models: tuple[str, str], answer: Callable[[str, str], str], rater: str | None = None,
                 rng: random.Random | None = None) -> dict:  # fmt: skip
        """Answer `prompt` with both models, shuffle the sides; returns what the rater may see."""
        if not prompt.strip():
            raise LmforgeError("empty prompt")
        if models[0] == models[1]:
            raise LmforgeError("pick two different models")
        a, b = list(models)
        if (rng or random.Random()).random() < 0.5:
            a, b = b, a
        answer_a, answer_b = answer(a, prompt), answer(b, prompt)
        pid = uuid.uuid4().hex
        with self._db() as db:
            db.execute(
                "INSERT INTO pairs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (pid, prompt, a, b, answer_a, answer_b, time.time(), rater),
            )
        return {"pair_id": pid, "prompt": prompt, "answers": {"A": answer_a, "B": answer_b}}

    def vote(self, pair_id: str, winner: str, rater: str | None = None) -> dict:
        if winner not in ("A", "B", "tie"):
            raise LmforgeError("winner must be A, B or tie")
        with self._db() as db:
            row = db.execute("SELECT model_a, model_b FROM pairs WHERE id=?", (pair_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no pair {pair_id!r}")
            if db.execute("SELECT 1 FROM votes WHERE pair_id=?", (pair_id,)).fetchone():
                raise LmforgeError("this pair already has a vote")
            db.execute("INSERT INTO votes VALUES (?, ?, ?, ?)", (pair_id, winner, time.time(), rater))
        return {"pair_id": pair_id, "winner": winner, "models": {"A": row[0], "B": row[1]}}

    def _rows(self) -> list[tuple]:
        with self._db() as db:
            return db.execute(
                "SELECT p.prompt, p.model_a, p.model_b, p.answer_a, p.answer_b, v.winner FROM votes v JOIN pairs p ON p.id = v.pair_id"
            ).fetchall()

    def stats(self) -> list[dict]:
        """Per unordered model pair: wins, losses, ties and the first model's win rate with its 95% CI."""
        table: dict[tuple[str, str], list[float]] = {}
        for _, a, b, _, _, w in self._rows():
            x, y = sorted((a, b))
            t = table.setdefault((x, y), [0, 0, 0])
            if w == "tie":
                t[2] += 1
            elif (w == "A") == (a == x):
                t[0] += 1
            else:
                t[1] += 1
        out = []
        for (x, y), (wins, losses, ties) in sorted(table.items()):
            n = int(wins + losses + ties)
            score = wins + ties / 2
            lo, hi = wilson_interval(score, n)
            out.append({"model": x, "opponent": y, "wins": wins, "losses": losses, "ties": ties, "n": n,
                        "win_rate": score / n, "ci95": [round(lo, 4), round(hi, 4)]})  # fmt: skip
        return out

    def export(self) -> list[dict]:
        out = []
        for prompt, _, _, ans_a, ans_b, w in self._rows():
            if w == "A":
                out.append({"prompt": prompt, "chosen": ans_a, "rejected": ans_b})
            elif w == "B":
                out.append({"prompt": prompt, "chosen": ans_b, "rejected": ans_a})
        return out

    def export_jsonl(self, path: Path) -> int:
        rows = self.export()
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        return len(rows)
