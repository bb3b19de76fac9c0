"""The interactive chat loop behind `lmforge chat`: read a line, stream the answer, repeat.

Answers go to `out` (stdout), everything else (banner, notices, command feedback) to `err`
(stderr), so `lmforge chat MODEL < questions.txt > answers.txt` keeps only the answers. Commands:
/reset forgets the history, /system TEXT sets the system prompt (and forgets the history), /exit
ends the session; Ctrl-C stops the answer being written and keeps the session. The loop works on
any `ChatSession`, so every model with the `chat` capability (local or remote) gets it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TextIO

from lmforge.errors import LmforgeError
from lmforge.infer.chat import ChatSession

HELP = "commands: /reset (forget history)  /system TEXT (set system prompt)  /exit  — Ctrl-C stops an answer"
EXIT = ("/exit", "/quit", "/bye")


def run_repl(
    session: ChatSession,
    *,
    banner: str = "",
    read: Callable[[str], str] = input,
    interactive: bool | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> None:
    """Chat with `session` until /exit or end of input. `read(prompt)` returns one line and raises
    EOFError at the end (the builtin `input` by default); the `>>>` prompt is shown only when
    `interactive` (default: stdin is a terminal)."""
    out = out or sys.stdout
    err = err or sys.stderr
    prompt = ">>> " if (sys.stdin.isatty() if interactive is None else interactive) else ""
    print(f"{banner} · {HELP}" if banner else HELP, file=err)
    while True:
        try:
            text = read(prompt).strip()
        except EOFError:
            break
        if not text:
            continue
        if text in EXIT:
            break
        if text.startswith("/"):
            _command(session, text, err)
            continue
        _answer(session, text, out, err)


def _command(session: ChatSession, text: str, err: TextIO) -> None:
    if text == "/reset":
        session.reset()
        print("[history cleared]", file=err)
    elif text == "/system" or text.startswith("/system "):
        session.system = text.removeprefix("/system").strip() or None
        session.reset()
        print(f"[system prompt {'set' if session.system else 'cleared'}; history cleared]", file=err)
    else:
        print(f"[unknown command {text.split()[0]}] {HELP}", file=err)


def _answer(session: ChatSession, text: str, out: TextIO, err: TextIO) -> None:
    """Stream one answer; Ctrl-C cancels it, a user error is printed and the session goes on."""
    cancel = threading.Event()
    stream = session.send(text, cancel)
    try:
        for chunk in stream:
            if session.last_notice and chunk.completion_tokens <= 1:
                print(session.last_notice, file=err)
            print(chunk.text, end="", flush=True, file=out)
            if chunk.finish_reason == "length":
                print(f"\n[answer cut at max_tokens={session.params.max_tokens}]", end="", file=err)
    except KeyboardInterrupt:
        cancel.set()
        stream.close()
        print("\n[stopped]", file=err)
    except LmforgeError as e:
        print(f"error: {e}", file=err)
        return
    print(file=out)
