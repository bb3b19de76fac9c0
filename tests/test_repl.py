"""The interactive chat loop (infer/repl.py) driven by a real ChatSession over a fake backend."""

import io
import threading

from lmforge.errors import LmforgeError
from lmforge.infer.base import Capabilities, ChatStream, Chunk
from lmforge.infer.chat import ChatSession
from lmforge.infer.repl import HELP, run_repl
from lmforge.infer.sampling import SamplingParams


class EchoBackend:
    """Answers 'echo: <last user text>' in two chunks and records every conversation it was sent."""

    kind, model_name, context_length = "fake", "echo", 256
    capabilities = Capabilities(chat=True)

    def __init__(self, *, notice: str = "", fail_on: str = "", interrupt_on: str = "") -> None:
        self.seen: list[list[dict]] = []
        self.cancels: list[threading.Event | None] = []
        self.notice, self.fail_on, self.interrupt_on = notice, fail_on, interrupt_on

    def chat(self, messages, params, cancel=None, options=None):
        self.seen.append([dict(m) for m in messages])
        self.cancels.append(cancel)
        text = messages[-1]["content"]
        if text == self.fail_on:
            raise LmforgeError("prompt does not fit")

        def chunks():
            yield Chunk("echo: ", 1, completion_tokens=1)
            if text == self.interrupt_on:
                raise KeyboardInterrupt
            yield Chunk(text, 2, finish_reason="length" if text == "long" else "stop", completion_tokens=2)

        return ChatStream(chunks(), notice=self.notice)


def _run(backend, lines, **kw):
    session = ChatSession(backend, SamplingParams(max_tokens=7), system=kw.pop("system", None))
    feed = iter(lines)

    def read(prompt):
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    out, err = io.StringIO(), io.StringIO()
    run_repl(session, banner="lmforge chat · echo", read=read, interactive=False, out=out, err=err, **kw)
    return session, out.getvalue(), err.getvalue()


def test_answers_go_to_stdout_and_history_grows():
    backend = EchoBackend()
    session, out, err = _run(backend, ["hello", "  ", "again", "/exit", "never sent"])
    assert out == "echo: hello\necho: again\n"
    assert err.splitlines()[0] == f"lmforge chat · echo · {HELP}"
    assert [m["content"] for m in backend.seen[1]] == ["hello", "echo: hello", "again"]
    assert len(backend.seen) == 2 and len(session.history) == 4


def test_commands_reset_and_set_the_system_prompt():
    backend = EchoBackend()
    session, out, err = _run(
        backend, ["one", "/reset", "/frobnicate x", "/system Be brief.", "two", "/system", "three"]
    )
    assert "[history cleared]" in err and "[unknown command /frobnicate]" in err
    assert "[system prompt set; history cleared]" in err and "[system prompt cleared; history cleared]" in err
    assert backend.seen[1] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "two"}]
    assert backend.seen[2] == [{"role": "user", "content": "three"}] and session.system is None
    assert out.count("echo:") == 3


def test_notice_cut_answer_errors_and_ctrl_c_keep_the_session():
    backend = EchoBackend(
        notice="[2 earlier turns left out to fit the context]", fail_on="too big", interrupt_on="stop me"
    )
    session, out, err = _run(backend, ["long", "too big", "stop me", "fine"])
    assert err.count("[2 earlier turns left out to fit the context]") == 3  # once per answer that streamed
    assert "[answer cut at max_tokens=7]" in err
    assert "error: prompt does not fit" in err and "[stopped]" in err
    assert all(c is not None for c in backend.cancels)  # every answer can be cancelled
    assert backend.cancels[2].is_set()  # Ctrl-C set the cancel event of that answer
    assert out.endswith("echo: fine\n")  # the session went on after each problem
