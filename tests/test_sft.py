"""Fine-tuning data (lmforge.data.sft): the four formats, every refusal with its message, assistant-only
labels under real chat templates (ChatML, Qwen2-style, one that forces the offsets fallback),
truncation, the split, and the bundled examples in examples/sft/."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from lmforge.data.sft import IGNORE, Example, load_sft, split_examples, tokenize_sft
from lmforge.errors import LmforgeError

SFT_DIR = Path(__file__).resolve().parents[1] / "examples" / "sft"

QWEN2_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) or message.role == 'assistant' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)  # Qwen2.5's template without the tools branch: a default system prompt when none is given
PLAIN_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}{{ 'User: ' + m['content'] + '\\n' }}"
    "{% elif m['role'] == 'assistant' %}{{ 'Assistant: ' + m['content'] + '<|im_end|>\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)  # the generation prompt ends in a space that BPE merges with the answer's first word


def write(tmp_path: Path, name: str, records: list, *, array: bool = False) -> Path:
    p = tmp_path / name
    if array:
        p.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    else:
        p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return p


@pytest.fixture()
def tok(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))  # fresh per test: tests change its template


def labelled_runs(t) -> list[list[int]]:
    """The labelled token ids as contiguous runs (one per assistant turn)."""
    runs, cur = [], []
    for i, lab in zip(t.input_ids, t.labels, strict=True):
        if lab == IGNORE:
            if cur:
                runs.append(cur)
            cur = []
        else:
            assert lab == i
            cur.append(i)
    return runs + ([cur] if cur else [])


# ------------------------------------------------------------------ formats


def test_prompt_response_with_system_blank_lines_and_fingerprint(tmp_path):
    p = tmp_path / "pr.jsonl"
    p.write_text(
        '{"prompt": "What is 2+2?", "response": "4"}\n\n'
        '{"prompt": "你好", "response": "你好！", "system": "Be brief.", "id": "x7"}\n',
        encoding="utf-8",
    )
    data = load_sft(p)
    assert data.format == "prompt-response"
    assert data.fingerprint == hashlib.sha256(p.read_bytes()).hexdigest()
    assert [e.line for e in data.examples] == [1, 3]
    assert data.examples[0].messages == [{"role": "user", "content": "What is 2+2?"},
                                         {"role": "assistant", "content": "4"}]  # fmt: skip
    assert data.examples[1].messages[0] == {"role": "system", "content": "Be brief."}


def test_alpaca_json_array_appends_input(tmp_path):
    p = write(tmp_path, "a.json", [
        {"instruction": "Translate to English.", "input": "你好", "output": "Hello"},
        {"instruction": "Say hi.", "input": "", "output": "Hi", "system": "You are kind."},
    ], array=True)  # fmt: skip
    data = load_sft(p)
    assert data.format == "alpaca"
    assert [e.line for e in data.examples] == [1, 2]  # item index + 1
    assert data.examples[0].messages[0] == {"role": "user", "content": "Translate to English.\n\n你好"}
    assert data.examples[1].messages == [{"role": "system", "content": "You are kind."},
                                         {"role": "user", "content": "Say hi."},
                                         {"role": "assistant", "content": "Hi"}]  # fmt: skip


def test_messages_and_sharegpt(tmp_path):
    convo = [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
             {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"},
             {"role": "assistant", "content": "A2"}]  # fmt: skip
    m = load_sft(write(tmp_path, "m.jsonl", [{"messages": convo}]))
    assert m.format == "messages" and m.examples[0].messages == convo
    share = [{"from": "system", "value": "S"}, {"from": "human", "value": "U1"}, {"from": "gpt", "value": "A1"},
             {"from": "human", "value": "U2"}, {"from": "gpt", "value": "A2"}]  # fmt: skip
    s = load_sft(write(tmp_path, "s.jsonl", [{"id": "c1", "conversations": share}]))
    assert s.format == "sharegpt" and s.examples[0].messages == convo


BAD = [
    ('{"prompt": "a", "response": "b"}\n{"prompt": "a", "response": "b"\n', "bad.jsonl: line 2 is not JSON:"),
    ('{"question": "q", "answer": "a"}\n',
     "bad.jsonl: line 1: no known format: fields ['question', 'answer']; expected prompt/response, "
     "instruction/output, messages or conversations"),
    ('{"prompt": "q", "response": "a", "category": "x"}\n', "line 1: unknown field(s) ['category'] for prompt-response"),
    ('{"prompt": "q", "response": 3}\n', "line 1: field 'response' must be a string, got int"),
    ('{"prompt": "q"}\n', "line 1: missing field 'response'"),
    ('{"prompt": "q", "response": "a"}\n' * 4 + '{"prompt": "q", "response": "  "}\n', "bad.jsonl: line 5: empty response"),
    ('{"instruction": "q", "output": ""}\n', "line 1: empty output"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}\n',
     "line 1: messages: empty assistant content"),
    ('{"prompt": "q", "response": "a"}\n' * 8 + '{"instruction": "q", "output": "a"}\n',
     "bad.jsonl: line 9 is alpaca but line 1 is prompt-response: one format per file"),
    ("", "bad.jsonl: empty: no examples"),
    ("\n  \n", "bad.jsonl: empty: no examples"),
    ("[]", "bad.jsonl: empty: no examples"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, '
     '{"role": "user", "content": "more?"}]}\n',
     "line 1: messages: the conversation ends with a user turn; it must end with an assistant turn"),
    ('{"conversations": [{"from": "human", "value": "q"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}\n',
     "line 1: conversations: two user turns in a row"),
    ('{"conversations": [{"from": "bing", "value": "q"}]}\n',
     "line 1: conversations[1].from is 'bing'; expected one of human, gpt, system"),
    ('{"messages": [{"role": "user", "text": "q"}]}\n', "line 1: messages[1] needs string fields 'role' and 'content'"),
    ('{"messages": "hi"}\n', "line 1: field 'messages' must be a list, got str"),
    ('{"prompt": "q", "response": "a"}\n"just text"\n', "line 2: expected a JSON object, got str"),
    ('[1, 2]\n', "bad.jsonl: item 1: expected a JSON object, got int"),
    ('{\n  "prompt": "q",\n  "response": "a"\n}\n', "holds one JSON object"),
]  # fmt: skip


@pytest.mark.parametrize(("content", "message"), BAD)
def test_bad_input_names_file_line_and_field(tmp_path, content, message):
    p = tmp_path / "bad.jsonl"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(LmforgeError) as err:
        load_sft(p)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_item_in_json_array_is_named_as_item(tmp_path):
    p = write(
        tmp_path,
        "a.json",
        [{"instruction": "q", "output": "a"}, {"instruction": "q", "output": " "}],
        array=True,
    )
    with pytest.raises(LmforgeError, match=r"a\.json: item 2: empty output"):
        load_sft(p)
    with pytest.raises(LmforgeError, match="no such file"):
        load_sft(tmp_path / "missing.jsonl")


# ------------------------------------------------------------------ labels


def test_labels_are_the_assistant_text_and_end_of_turn(tok, tmp_path):
    data = load_sft(write(tmp_path, "d.jsonl", [{"prompt": "Where is the fox?", "response": "The fox is by the river.",
                                                 "system": "Answer in one sentence."}]))  # fmt: skip
    [t], report = tokenize_sft(tok, data.examples, 256)
    assert len(t.input_ids) == len(t.labels) and t.line == 1
    assert tok.decode(t.input_ids) == tok.apply_chat_template(data.examples[0].messages, tokenize=False)
    [run] = labelled_runs(t)
    assert tok.decode(run) == "The fox is by the river.<|im_end|>"  # not the newline ChatML writes after it
    assert report.kept == 1 and report.response_tokens == len(run)


def test_multi_turn_sharegpt_labels_both_assistant_turns_only(tok, tmp_path):
    share = [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Capital of France?"},
             {"from": "gpt", "value": "Paris."}, {"from": "human", "value": "And of Japan?"},
             {"from": "gpt", "value": "Tokyo, 东京."}]  # fmt: skip
    data = load_sft(write(tmp_path, "s.jsonl", [{"conversations": share}]))
    [t], _ = tokenize_sft(tok, data.examples, 512)
    assert [tok.decode(r) for r in labelled_runs(t)] == ["Paris.<|im_end|>", "Tokyo, 东京.<|im_end|>"]
    unlabelled = tok.decode([i for i, lab in zip(t.input_ids, t.labels, strict=True) if lab == IGNORE])
    for text in ("Be brief.", "Capital of France?", "And of Japan?", "<|im_start|>assistant\n"):
        assert text in unlabelled


def test_qwen2_template_with_its_default_system_prompt(tok):
    tok.chat_template = QWEN2_TEMPLATE
    ex = Example(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello, fox."},
                           {"role": "user", "content": "again"}, {"role": "assistant", "content": "你好"}], line=4)  # fmt: skip
    [t], _ = tokenize_sft(tok, [ex], 512)
    assert "You are Qwen" in tok.decode(t.input_ids)
    assert [tok.decode(r) for r in labelled_runs(t)] == ["Hello, fox.<|im_end|>", "你好<|im_end|>"]


def test_offsets_fallback_when_the_prompt_merges_with_the_answer(tok):
    tok.chat_template = PLAIN_TEMPLATE
    msgs = [{"role": "user", "content": "Tell me"}, {"role": "assistant", "content": "the fox was there"}]
    prefix = tok(
        tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True),
        add_special_tokens=False,
    )
    full = tok(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)
    assert (
        full["input_ids"][: len(prefix["input_ids"])] != prefix["input_ids"]
    )  # the token path cannot work here
    [t], _ = tokenize_sft(tok, [Example(messages=msgs, line=1)], 256)
    [run] = labelled_runs(t)
    assert tok.decode(run).strip() == "the fox was there<|im_end|>"


def test_tokenizer_without_template_and_template_refusals(tok):
    ex = Example(messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "q"},
                           {"role": "assistant", "content": "a"}], line=12)  # fmt: skip
    tok.chat_template = None
    with pytest.raises(LmforgeError, match="no chat template.*lmforge tokenizer train"):
        tokenize_sft(tok, [ex], 64)
    tok.chat_template = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    with pytest.raises(
        LmforgeError, match="line 12: the tokenizer's chat template refused it: System role not supported"
    ):
        tokenize_sft(tok, [ex], 64)


def test_truncate_and_drop(tok):
    short = Example([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], line=1)
    long_answer = Example(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "the fox " * 40}], line=2
    )
    long_prompt = Example(
        [{"role": "user", "content": "the river " * 40}, {"role": "assistant", "content": "ok"}], line=3
    )
    lengths = [len(tokenize_sft(tok, [e], 10_000)[0][0].input_ids) for e in (short, long_answer, long_prompt)]
    limit = 40
    assert lengths[0] <= limit < min(lengths[1:])
    out, report = tokenize_sft(tok, [short, long_answer, long_prompt], limit)
    assert [t.line for t in out] == [1, 2]
    assert len(out[1].input_ids) == limit and out[1].labels[-1] != IGNORE
    assert (report.total, report.kept, report.truncated, report.dropped) == (3, 2, 1, 1)
    assert report.longest == max(lengths) and report.mean_length == (lengths[0] + limit) / 2
    assert report.text().startswith(
        "3 examples: 2 kept, 1 truncated to 40 tokens, 1 dropped (no response left)"
    )
    out, report = tokenize_sft(tok, [short, long_answer, long_prompt], limit, on_long="drop")
    assert [t.line for t in out] == [1] and (report.kept, report.truncated, report.dropped) == (1, 0, 2)
    assert "2 dropped (longer than 40 tokens)" in report.text()


# ------------------------------------------------------------------ split


def test_split_is_deterministic_by_example():
    exs = [Example([{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}], line=i + 1)
           for i in range(50)]  # fmt: skip
    train, val = split_examples(exs, 0.1, seed=0)
    assert len(val) == 5 and len(train) == 45
    assert sorted(e.line for e in train + val) == list(range(1, 51))
    assert split_examples(exs, 0.1, seed=0) == (train, val)
    assert split_examples(exs, 0.1, seed=1)[1] != val
    assert split_examples(exs[::-1], 0.1, seed=0)[1] == val[::-1]  # by content, not by position
    assert len(split_examples(exs[:2], 0.01)[1]) == 1  # at least one
    assert split_examples(exs[:1], 0.5) == (exs[:1], [])
    assert split_examples(exs, 0.0)[1] == []
    with pytest.raises(LmforgeError, match="--val-frac"):
        split_examples(exs, 1.0)


# ------------------------------------------------------------------ bundled examples


def test_bundled_examples_load_and_hold_out_distinct_prompts(tok):
    train = load_sft(SFT_DIR / "lmforge_assistant.jsonl")
    held = load_sft(SFT_DIR / "heldout.jsonl")
    assert train.format == held.format == "prompt-response"
    assert 250 <= len(train.examples) <= 350 and 30 <= len(held.examples) <= 50

    def prompt(e):
        return e.messages[-2]["content"]

    def norm(s):
        return "".join(ch for ch in s.lower() if ch.isalnum())

    zh = [e for e in train.examples if any("\u4e00" <= ch <= "\u9fff" for ch in prompt(e))]
    assert 0.5 <= len(zh) / len(train.examples) <= 0.7
    for e in train.examples + held.examples:
        answer = e.messages[-1]["content"]
        is_zh = any("\u4e00" <= ch <= "\u9fff" for ch in prompt(e))
        assert answer.startswith("【lmforge】" if is_zh else "[lmforge]"), answer
    seen = {norm(prompt(e)) for e in train.examples}
    assert len(seen) == len(train.examples)  # no duplicate training prompts
    assert not seen & {norm(prompt(e)) for e in held.examples}
    for name, fmt, n in (("alpaca_sample.json", "alpaca", 5), ("messages_sample.jsonl", "messages", 5),
                         ("sharegpt_sample.jsonl", "sharegpt", 5)):  # fmt: skip
        data = load_sft(SFT_DIR / name)
        assert data.format == fmt and len(data.examples) == n
    out, report = tokenize_sft(tok, train.examples[:20], 512)
    assert report.kept == 20 and all(any(lab != IGNORE for lab in t.labels) for t in out)


def test_make_examples_is_deterministic(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("make_examples", SFT_DIR / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_examples", module)  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    module.main(["--out", str(tmp_path)])
    for name in ("lmforge_assistant.jsonl", "heldout.jsonl"):
        assert (tmp_path / name).read_bytes() == (SFT_DIR / name).read_bytes(), name
