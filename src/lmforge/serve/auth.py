"""API keys, scopes, rate limits and the audit log, in one SQLite file under LMFORGE_HOME.

Keys are shown once at creation and stored only as sha256 digests (keys are 256-bit random, so a
plain digest is enough; no password stretching needed). A key carries scopes (chat, embed,
kb:read, kb:write, train, admin; admin implies all), limits (requests and tokens per minute) and
groups (used by knowledge-base access control). Rate limits are counted in memory per server process over a
sliding 60-second window. The audit log records who called what, when, with which model and how
many tokens; prompt text only when the operator turns it on.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.errors import LmforgeError

SCOPES = ("chat", "embed", "kb:read", "kb:write", "train", "tasks", "admin")
KEY_PREFIX = "lmf-"

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
  name TEXT PRIMARY KEY, digest TEXT UNIQUE NOT NULL, scopes TEXT NOT NULL, rpm INTEGER NOT NULL,
  tpm INTEGER NOT NULL, groups_ TEXT NOT NULL, created REAL NOT NULL, revoked REAL
);
CREATE TABLE IF NOT EXISTS audit (
  ts REAL NOT NULL, key_name TEXT, route TEXT NOT NULL, model TEXT, status INTEGER NOT NULL,
  prompt_tokens INTEGER, completion_tokens INTEGER, latency_ms REAL, prompt TEXT
);
CREATE TABLE IF NOT EXISTS safety (
  ts REAL NOT NULL, key_name TEXT, route TEXT NOT NULL, model TEXT, direction TEXT NOT NULL,
  category TEXT NOT NULL, action TEXT NOT NULL, rule TEXT, text TEXT
);
"""
SAFETY_COLUMNS = ("ts", "key_name", "route", "model", "direction", "category", "action", "rule", "text")


@dataclass
class ApiKey:
    name: str
    scopes: tuple[str, ...]
    rpm: int
    tpm: int
    groups: tuple[str, ...]
    created: float
    revoked: float | None = None


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def create(
        self, name: str, scopes: tuple[str, ...] = ("chat", "embed"), rpm: int = 60, tpm: int = 20000,
        groups: tuple[str, ...] = (),
    ) -> str:  # fmt: skip
        """Create a key; returns the secret (shown once, never stored)."""
        bad = [s for s in scopes if s not in SCOPES]
        if bad:
            raise LmforgeError(f"unknown scope(s) {', '.join(bad)}; choose from {', '.join(SCOPES)}")
        if not name or rpm < 1 or tpm < 1:
            raise LmforgeError("a key needs a name and positive --rpm / --tpm")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._lock, self._connect() as db:
            try:
                db.execute(
                    "INSERT INTO keys VALUES (?,?,?,?,?,?,?,NULL)",
                    (name, _digest(secret), ",".join(scopes), rpm, tpm, ",".join(groups), time.time()),
                )
            except sqlite3.IntegrityError as e:
                raise LmforgeError(f"a key named {name!r} already exists") from e
        return secret

    def _row(self, r) -> ApiKey:
        return ApiKey(
            r[0],
            tuple(filter(None, r[2].split(","))),
            r[3],
            r[4],
            tuple(filter(None, r[5].split(","))),
            r[6],
            r[7],
        )

    def list(self) -> list[ApiKey]:
        with self._connect() as db:
            return [self._row(r) for r in db.execute("SELECT * FROM keys ORDER BY created")]

    def active_count(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM keys WHERE revoked IS NULL").fetchone()[0]

    def revoke(self, name: str) -> None:
        with self._lock, self._connect() as db:
            cur = db.execute(
                "UPDATE keys SET revoked=? WHERE name=? AND revoked IS NULL", (time.time(), name)
            )
            if cur.rowcount == 0:
                raise LmforgeError(f"no active key named {name!r}")

    def lookup(self, secret: str) -> ApiKey | None:
        """The key for this secret, or None (unknown). Revoked keys are returned with `revoked` set."""
        with self._connect() as db:
            r = db.execute("SELECT * FROM keys WHERE digest=?", (_digest(secret),)).fetchone()
        return self._row(r) if r else None

    def audit(
        self, *, key_name: str | None, route: str, model: str | None, status: int, prompt_tokens: int = 0,
        completion_tokens: int = 0, latency_ms: float = 0.0, prompt: str | None = None,
    ) -> None:  # fmt: skip
        with self._lock, self._connect() as db:
            db.execute(
                "INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    time.time(),
                    key_name,
                    route,
                    model,
                    status,
                    prompt_tokens,
                    completion_tokens,
                    latency_ms,
                    prompt,
                ),
            )

    def audit_safety(self, *, key_name: str | None, route: str, model: str | None, direction: str, category: str,
                     action: str, rule: str = "", text: str | None = None) -> None:  # fmt: skip
        """One content-filter hit (serve/guard.py): who, where, which category and action; the rule and the
        matched text only when safety.yaml has `audit_text: true`."""
        with self._lock, self._connect() as db:
            db.execute("INSERT INTO safety VALUES (?,?,?,?,?,?,?,?,?)",
                       (time.time(), key_name, route, model, direction, category, action, rule, text))  # fmt: skip

    def safety_rows(self, limit: int = 100) -> list[dict]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM safety ORDER BY ts DESC LIMIT ?", (limit,)).fetchall()
        return [dict(zip(SAFETY_COLUMNS, r, strict=True)) for r in rows]

    def audit_rows(self, limit: int = 100) -> list[dict]:
        with self._connect() as db:
            cols = [
                "ts",
                "key_name",
                "route",
                "model",
                "status",
                "prompt_tokens",
                "completion_tokens",
                "latency_ms",
                "prompt",
            ]
            rows = db.execute("SELECT * FROM audit ORDER BY ts DESC LIMIT ?", (limit,)).fetchall()
        return [dict(zip(cols, r, strict=True)) for r in rows]


@dataclass
class _Window:
    requests: deque = field(default_factory=deque)
    tokens: deque = field(default_factory=deque)  # (ts, n)


class RateLimiter:
    """Sliding 60 s windows per key name: requests per minute and tokens per minute."""

    def __init__(self) -> None:
        self._w: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def check(self, key: ApiKey) -> float | None:
        """Record a request; return None if allowed, else seconds until it would be."""
        now = time.monotonic()
        with self._lock:
            w = self._w.setdefault(key.name, _Window())
            while w.requests and now - w.requests[0] > 60:
                w.requests.popleft()
            while w.tokens and now - w.tokens[0][0] > 60:
                w.tokens.popleft()
            if len(w.requests) >= key.rpm:
                return 60 - (now - w.requests[0])
            if sum(n for _, n in w.tokens) >= key.tpm:
                return 60 - (now - w.tokens[0][0])
            w.requests.append(now)
            return None

    def add_tokens(self, key: ApiKey, n: int) -> None:
        with self._lock:
            self._w.setdefault(key.name, _Window()).tokens.append((time.monotonic(), n))
