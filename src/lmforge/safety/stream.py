"""The rules of a RuleSet over streamed output: emit what is safe now, hold back only the tail.

    checker = StreamChecker(rules)
    for delta in model_stream:
        out = checker.feed(delta)        # text safe to send now (masked where a rule masks)
        if out:
            send(out)
        if checker.blocked is not None:  # a block rule fired: stop generating
            finish("content_filter")
            break
    else:
        send(checker.finish())           # the held-back tail, checked and masked

The hold-back bound. Let L be the longest phrase in normalised characters (`RuleSet.longest`). After
each chunk, the pending text is normalised; a phrase that future text could still complete (or whose
word boundary at the end the next character decides) starts within the last L normalised
characters. So the checker keeps back the original characters from the segment behind the L-th
normalised character from the end, which includes every separator after it (trailing spaces,
punctuation, zero-width characters), and emits everything before. Without separators in the text
that is at most L original characters. Separators (removed by normalisation) cost no normalised
length, so a run of them can make the held text longer; `StreamOptions.max_hold_chars` caps it: past
the cap the oldest characters are emitted, and a phrase spread over more than that many characters
is missed in a stream (it is still caught by `RuleSet.apply` on the whole text). Regexes have no
bounded length: when the set has regexes, the last `regex_window` original characters are also held,
and a regex match longer than that which arrives across chunks can be missed.

Each hit is reported once, when the text it starts in is emitted, with offsets from the start of the
stream. A `mask` hit that begins in emitted text and runs into the held tail is masked there too
when that part is emitted. A `block` hit is acted on as soon as it is found (it need not wait to be
emitted): `feed` returns the text before it, `blocked` is set to the hit, and every later `feed` and
`finish` returns "". Normalisation runs again over the held tail plus the new chunk, so the cost is
linear in the stream for a bounded hold. The classifier hook is not called here (it scores whole
texts); a caller that wants it runs `RuleSet.classify` on the full text at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lmforge.safety.rules import Hit, RuleSet, mask_spans


@dataclass(frozen=True)
class StreamOptions:
    """Limits of the streaming filter (safety.yaml `stream:`)."""

    max_hold_chars: int = 1024
    """The most original characters ever held back (a separator flood cannot stall the stream)."""
    regex_window: int = 64
    """Original characters held back for regexes (when the rule set has any)."""


class StreamChecker:
    """Incremental RuleSet check of one streamed text; one instance per response."""

    def __init__(self, rules: RuleSet, options: StreamOptions | None = None) -> None:
        self.rules = rules
        self.options = options or StreamOptions()
        self.hits: list[Hit] = []
        """Every hit reported so far (offsets from the start of the stream)."""
        self.blocked: Hit | None = None
        """The block hit that stopped the stream; None while it goes on."""
        self._pending = ""
        self._offset = 0  # stream offset of _pending[0]
        self._before = ""  # the last emitted character (left word boundary)
        self._masks: list[tuple[int, int]] = []  # stream spans still to mask in _pending
        self._done = False

    @property
    def held(self) -> int:
        """How many original characters are held back now."""
        return len(self._pending)

    @property
    def flagged(self) -> list[Hit]:
        return [h for h in self.hits if h.action == "flag"]

    def feed(self, chunk: str) -> str:
        """Take the next piece of the stream; return the text that is safe to emit now."""
        if self.blocked is not None or self._done:
            return ""
        return self._step(self._pending + chunk, final=False)

    def finish(self) -> str:
        """The end of the stream: check and return the held-back tail."""
        if self.blocked is not None or self._done:
            return ""
        out = self._step(self._pending, final=True)
        self._done = True
        return out

    def _cut(self, buf: str, norm_starts: list[int], final: bool) -> int:
        """Where the emitted part of `buf` ends (see the module docstring)."""
        n = len(buf)
        if final:
            return n
        longest = self.rules.longest
        m = len(norm_starts)
        # no phrases, or nothing but separators (no phrase can start in them): nothing to hold for phrases
        cut = n if longest == 0 or m == 0 else norm_starts[max(m - longest, 0)]
        if self.rules.has_regexes:
            cut = min(cut, max(n - self.options.regex_window, 0))
        return max(cut, n - self.options.max_hold_chars)

    def _step(self, buf: str, final: bool) -> str:
        found, norm = self.rules.scan(buf, before=self._before, after="" if final else None)
        cut = self._cut(buf, norm.starts, final)
        block = next((h for h in found if h.action == "block"), None)
        if block is not None:
            cut = block.start
        committed = [h for h in found if h.start < cut or h is block]
        base = self._offset
        for h in committed:
            moved = replace(h, start=h.start + base, end=h.end + base)
            self.hits.append(moved)
            if h is block:
                self.blocked = moved
            elif h.action == "mask":
                self._masks.append((moved.start, moved.end))
        out = mask_spans(buf[:cut], self._masks, self.rules.mask_char, base)
        if self.blocked is not None:
            self._pending = ""
            return out
        if cut:
            self._before = buf[cut - 1]
        self._pending = buf[cut:]
        self._offset = base + cut
        self._masks = [s for s in self._masks if s[1] > self._offset]
        return out
