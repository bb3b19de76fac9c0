"""The server's safety hooks: the content filter (lmforge.safety) on the input and output of every generation
path — chat and completions (whole and streamed), tasks, knowledge-base answers, and so the console — and the
PII handling safety.yaml asks for (redacted in audit records, in output, at knowledge-base ingestion).

One Guard per server, built from `lmforge serve --safety safety.yaml` (a malformed file stops the server from
starting rather than letting it run unfiltered). Per request it applies the rules as they stand for the
caller's API key. Input: a block is a 400 with code `content_filter`, a mask rewrites the text before the
model sees it, a flag is recorded. Output: a block cuts the answer before the blocked phrase and ends it with
`finish_reason: "content_filter"`; streams are checked incrementally (stream.StreamChecker), holding back at
most the longest phrase. Every hit is written to the audit log's `safety` table, with the matched text only
when safety.yaml says `audit_text: true` (and then PII-redacted when `pii.apply_to` has `logs`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from lmforge.safety.config import SafetyConfig, build_rules, for_key, load_safety, rules_for_key
from lmforge.safety.rules import Hit, RuleSet
from lmforge.safety.stream import StreamChecker
from lmforge.serve.errors import ApiError

PII_HOLD = 64
"""Characters held back at the end of a streamed answer while PII redaction applies to output (the longest
ID, card or phone number with separators fits)."""


@dataclass
class Guard:
    """The content filter and PII redaction of one server (no config: everything passes)."""

    cfg: SafetyConfig | None
    rules: RuleSet | None
    record: Callable[..., None]
    """keys.audit_safety"""

    @classmethod
    def load(cls, path: str | None, record: Callable[..., None]) -> Guard:
        if not path:
            return cls(None, None, record)
        cfg = load_safety(path)
        return cls(cfg, build_rules(cfg), record)

    # -- per request ----------------------------------------------------------------------------
    def _for(self, key_name: str | None) -> tuple[SafetyConfig, RuleSet] | None:
        if self.cfg is None or self.rules is None:
            return None
        cfg = for_key(self.cfg, key_name)
        if not cfg.enabled:
            return None
        return cfg, rules_for_key(self.rules, self.cfg, key_name)

    def _audit(self, cfg: SafetyConfig, key_name: str | None, route: str, model: str | None, direction: str,
               hits: list[Hit]) -> None:  # fmt: skip
        for h in hits:
            text = self.redact_log(h.text) if cfg.audit_text else None
            self.record(key_name=key_name, route=route, model=model, direction=direction, category=h.category,
                        action=h.action, rule=h.rule if cfg.audit_text else "", text=text)  # fmt: skip

    def check_input(self, key_name: str | None, route: str, model: str | None, text: str) -> str:
        """The text the model may see: raises a 400 `content_filter` on a block; masked where a rule masks."""
        active = self._for(key_name)
        if active is None or not active[0].check_input or not text:
            return text
        cfg, rules = active
        verdict = rules.apply(text)
        if verdict.hits:
            self._audit(cfg, key_name, route, model, "input", verdict.hits)
        if verdict.blocked:
            cats = sorted({h.category for h in verdict.hits if h.action == "block"})
            raise ApiError(400, f"the request was refused by the content filter (category: {', '.join(cats)})",
                           "invalid_request_error", "content_filter")  # fmt: skip
        return verdict.text

    def check_output(
        self, key_name: str | None, route: str, model: str | None, text: str
    ) -> tuple[str, bool]:
        """(text to return, blocked): a blocked answer is cut before the blocked phrase; PII redacted when
        safety.yaml applies it to output."""
        active = self._for(key_name)
        if active is None:
            return text, False
        cfg, rules = active
        blocked = False
        if cfg.check_output and text:
            verdict = rules.apply(text)
            if verdict.hits:
                self._audit(cfg, key_name, route, model, "output", verdict.hits)
            if verdict.blocked:
                first = min(h.start for h in verdict.hits if h.action == "block")
                text, blocked = verdict.text[:first], True
            else:
                text = verdict.text
        return self.redact_output(text, cfg), blocked

    def stream(self, key_name: str | None, route: str, model: str | None) -> OutputStream | None:
        """An incremental checker for one streamed answer (None: nothing to check)."""
        active = self._for(key_name)
        if active is None:
            return None
        cfg, rules = active
        pii = "output" in cfg.pii.apply_to and cfg.pii.action == "redact"
        if not cfg.check_output and not pii:
            return None
        checker = StreamChecker(rules, cfg.stream) if cfg.check_output else None
        return OutputStream(self, cfg, checker, pii, key_name, route, model)

    # -- PII -------------------------------------------------------------------------------------
    def redact_output(self, text: str, cfg: SafetyConfig | None = None) -> str:
        cfg = cfg or self.cfg
        if cfg is None or "output" not in cfg.pii.apply_to or cfg.pii.action != "redact" or not text:
            return text
        return _redact(text, cfg)

    def redact_log(self, text: str | None) -> str | None:
        """Audit and log text with personal data replaced when safety.yaml applies PII to logs."""
        if text is None or self.cfg is None or "logs" not in self.cfg.pii.apply_to:
            return text
        return _redact(text, self.cfg)

    def ingest_redactor(self) -> Callable[[str], tuple[str, int]] | None:
        """text -> (redacted, spans) for knowledge-base ingestion, when safety.yaml applies PII there."""
        cfg = self.cfg
        if cfg is None or "ingest" not in cfg.pii.apply_to or cfg.pii.action != "redact":
            return None
        from lmforge.safety.pii import PiiScanner

        scanner = PiiScanner(cfg.pii.detectors)
        return lambda text: scanner.redact_text(text, cfg.pii.style)

    # -- whole responses -------------------------------------------------------------------------
    def chat_body(
        self, key_name: str | None, route: str, model: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        """A chat/completions JSON body with every choice's text checked (content_filter on a block)."""
        for choice in body.get("choices") or []:
            msg = choice.get("message")
            field, holder = ("content", msg) if isinstance(msg, dict) else ("text", choice)
            text = holder.get(field)
            if isinstance(text, str):
                holder[field], blocked = self.check_output(key_name, route, model, text)
                if blocked:
                    choice["finish_reason"] = "content_filter"
        return body

    def chat_events(self, key_name: str | None, route: str, model: str | None, events: Iterator[Any],
                    to_dict: Callable[[Any], Any]) -> Iterator[Any]:  # fmt: skip
        """SSE chunks of chat/completions with each choice's streamed text checked as it comes."""
        streams: dict[int, OutputStream | None] = {}
        stopped: set[int] = set()
        for ev in events:
            d = to_dict(ev)
            if not isinstance(d, dict) or not d.get("choices"):
                yield d
                continue
            keep = []
            for choice in d["choices"]:
                i = choice.get("index", 0)
                if i in stopped:
                    continue
                if i not in streams:
                    streams[i] = self.stream(key_name, route, model)
                s = streams[i]
                delta = choice.get("delta")
                field, holder = ("content", delta) if isinstance(delta, dict) else ("text", choice)
                piece = holder.get(field)
                if s is not None and isinstance(piece, str):
                    holder[field] = s.feed(piece)
                if s is not None and choice.get("finish_reason") is not None and not s.blocked:
                    holder[field] = (holder.get(field) or "") + s.finish()
                if s is not None and s.blocked:
                    choice["finish_reason"] = "content_filter"
                    stopped.add(i)
                keep.append(choice)
            d["choices"] = keep
            if keep or d.get("usage"):
                yield d


@dataclass
class OutputStream:
    """One streamed answer through the content filter (and PII redaction of output)."""

    guard: Guard
    cfg: SafetyConfig
    checker: StreamChecker | None
    pii: bool
    key_name: str | None
    route: str
    model: str | None
    _pii_tail: str = ""
    _audited: int = 0

    @property
    def blocked(self) -> bool:
        return self.checker is not None and self.checker.blocked is not None

    def feed(self, piece: str) -> str:
        out = self.checker.feed(piece) if self.checker else piece
        self._audit()
        return self._pii(out, final=self.blocked)

    def finish(self) -> str:
        out = self.checker.finish() if self.checker else ""
        self._audit()
        return self._pii(out, final=True)

    def _audit(self) -> None:
        if self.checker is not None and len(self.checker.hits) > self._audited:
            new = self.checker.hits[self._audited :]
            self._audited = len(self.checker.hits)
            self.guard._audit(self.cfg, self.key_name, self.route, self.model, "output", new)

    def _pii(self, text: str, final: bool) -> str:
        """Redact personal data in streamed text. The trailing run of characters a number, e-mail or IP address
        is made of (ASCII letters, digits, spaces, @ . + - _ : ( )) waits for the next piece, up to PII_HOLD
        characters; anything before it (a CJK character or other punctuation ends such a value) goes out."""
        if not self.pii:
            return text
        buf = self._pii_tail + text
        if final:
            self._pii_tail = ""
            return _redact(buf, self.cfg)
        cut = len(buf)
        while cut > 0 and len(buf) - cut < PII_HOLD and _pii_char(buf[cut - 1]):
            cut -= 1
        head, self._pii_tail = buf[:cut], buf[cut:]
        return _redact(head, self.cfg) if head else ""


def _pii_char(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch in " @.+-_:()\t")


def _redact(text: str, cfg: SafetyConfig) -> str:
    from lmforge.safety.pii import PiiScanner

    return PiiScanner(cfg.pii.detectors).redact_text(text, cfg.pii.style)[0]
