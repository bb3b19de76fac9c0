"""Multi-turn chat: template from the model, history, and honest truncation."""

import pytest

from lmforge.errors import ContextOverflowError
from lmforge.infer.chat import ChatSession, fit_messages
from lmforge.infer.sampling import SamplingParams

P = SamplingParams(temperature=0.0, max_tokens=32)


def long_history(turns: int) -> list[dict]:
    msgs = []
    for i in range(turns):
        msgs.append({"role": "user", "content": f"Question {i}: tell me about the little fox and the river."})
        msgs.append({"role": "assistant", "content": f"Answer {i}: the fox counted the boats every morning."})
    return msgs


def test_prompt_uses_the_models_template(tiny_llama_backend):
    fitted = fit_messages(tiny_llama_backend, [{"role": "user", "content": "hi"}], P)
    text = tiny_llama_backend.detokenize(fitted.ids)
    assert "user\nhi" in text and text.rstrip().endswith("assistant")
    assert fitted.notice == "" and fitted.dropped_turns == 0


def test_oldest_turns_dropped_with_notice_and_system_kept(tiny_llama_backend):
    system = {"role": "system", "content": "You are a helpful fox."}
    msgs = [system, *long_history(12), {"role": "user", "content": "And now?"}]
    fitted = fit_messages(tiny_llama_backend, msgs, P)
    assert fitted.dropped_turns > 0 and fitted.dropped_turns % 2 == 0
    assert f"left out the {fitted.dropped_turns} oldest message(s)" in fitted.notice
    assert "system prompt is kept" in fitted.notice
    assert fitted.messages[0] == system and fitted.messages[-1]["content"] == "And now?"
    assert fitted.messages[1]["role"] == "user"  # never starts mid-turn with an orphan answer
    assert len(fitted.ids) + 32 <= tiny_llama_backend.context_length
    # it kept as much as fits: one more turn would not
    kept_turns = (len(fitted.messages) - 2) // 2
    assert kept_turns >= 1


def test_system_prompt_too_long_is_an_error_not_a_cut(tiny_llama_backend):
    msgs = [{"role": "system", "content": "rules " * 400}, {"role": "user", "content": "hi"}]
    with pytest.raises(ContextOverflowError, match="the system prompt and your message take") as e:
        fit_messages(tiny_llama_backend, msgs, P)
    assert e.value.context_length == 256


def test_session_history_reset_and_multi_turn(tiny_llama_backend):
    s = ChatSession(tiny_llama_backend, P, system="Be brief.")
    first = "".join(c.text for c in s.send("The capital of France is"))
    assert len(s.history) == 2 and s.history[1]["content"] == first
    list(s.send("Once upon a time"))
    assert [m["role"] for m in s.history] == ["user", "assistant", "user", "assistant"]
    s.reset()
    assert s.history == []


def test_session_forgets_dropped_turns_and_reports(tiny_llama_backend):
    s = ChatSession(tiny_llama_backend, SamplingParams(temperature=0.0, max_tokens=16))
    s.history = long_history(12)
    list(s.send("And now?"))
    assert "oldest message(s)" in s.last_notice
    assert len(s.history) < 24 + 2
