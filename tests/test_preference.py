"""Preference data (lmforge.data.preference): the three formats (the arena export as it is written),
every refusal with its message, final-answer-only labels on both sides under the ChatML template,
truncation, the split by prompt, and the bundled toy set in examples/align/."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
from pathlib import Path

import pytest

from lmforge.data.preference import Pair, load_preferences, split_pairs, tokenize_pairs
from lmforge.data.sft import IGNORE
from lmforge.errors import LmforgeError

ALIGN_DIR = Path(__file__).resolve().parents[1] / "examples" / "align"


def write(tmp_path: Path, name: str, records: list, *, array: bool = False) -> Path:
    p = tmp_path / name
    if array:
        p.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    else:
        p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return p


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


def labelled(t) -> list[int]:
    """The labelled token ids, checked to be one contiguous run equal to the input ids there."""
    idx = [i for i, lab in enumerate(t.labels) if lab != IGNORE]
    assert idx == list(range(idx[0], idx[-1] + 1))
    assert [t.labels[i] for i in idx] == [t.input_ids[i] for i in idx]
    return [t.input_ids[i] for i in idx]


# ------------------------------------------------------------------ formats


def test_text_format_with_system_id_and_blank_lines(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(
        '{"prompt": "2+2?", "chosen": "4", "rejected": "5"}\n\n'
        '{"id": 7, "prompt": "你好", "chosen": "你好！", "rejected": "走开。", "system": "Be kind."}\n',
        encoding="utf-8",
    )
    data = load_preferences(p)
    assert data.format == "text"
    assert data.fingerprint == hashlib.sha256(p.read_bytes()).hexdigest()
    assert data.pairs == [
        Pair([user("2+2?")], "4", "5", line=1),
        Pair([{"role": "system", "content": "Be kind."}, user("你好")], "你好！", "走开。", line=3),
    ]


def test_arena_export_loads_as_is(tmp_path):
    from lmforge.eval.human import VoteStore

    store = VoteStore(tmp_path / "votes.sqlite")
    rng = random.Random(0)
    for i, q in enumerate(["讲个笑话", "What is 2+2?", "Say hi"]):
        p = store.new_pair(q, ("big", "small"), lambda m, q: f"{m}: answer to {q}", rng=rng)
        big = "A" if p["answers"]["A"].startswith("big") else "B"
        store.vote(p["pair_id"], big if i != 2 else "tie")  # the tie is not exported
    assert store.export_jsonl(tmp_path / "arena.jsonl") == 2
    data = load_preferences(tmp_path / "arena.jsonl")
    assert data.format == "text"
    assert [(p.prompt_messages, p.chosen, p.rejected, p.line) for p in data.pairs] == [
        ([user("讲个笑话")], "big: answer to 讲个笑话", "small: answer to 讲个笑话", 1),
        ([user("What is 2+2?")], "big: answer to What is 2+2?", "small: answer to What is 2+2?", 2),
    ]


def test_messages_format_shares_the_prompt(tmp_path):
    prompt = [{"role": "system", "content": "Be brief."}, user("Capital of France?"), assistant("Paris."),
              user("And of Japan?")]  # fmt: skip
    p = write(tmp_path, "m.json", [{"id": "a", "chosen": [*prompt, assistant("Tokyo.")],
                                    "rejected": [*prompt, assistant("Kyoto.")]}], array=True)  # fmt: skip
    data = load_preferences(p)
    assert data.format == "messages"
    assert data.pairs == [Pair(prompt, "Tokyo.", "Kyoto.", line=1)]


def test_prompt_messages_format_answers_as_message_or_string(tmp_path):
    p = write(tmp_path, "pm.jsonl", [
        {"prompt": [user("hi")], "chosen": [assistant("Hello!")], "rejected": [assistant("What.")]},
        {"prompt": [user("q"), assistant("a"), user("q2")], "chosen": "good", "rejected": "bad"},
    ])  # fmt: skip
    data = load_preferences(p)
    assert data.format == "prompt-messages"
    assert data.pairs == [
        Pair([user("hi")], "Hello!", "What.", line=1),
        Pair([user("q"), assistant("a"), user("q2")], "good", "bad", line=2),
    ]


def rec(**kw) -> str:
    return json.dumps(kw, ensure_ascii=False) + "\n"


GOOD = rec(prompt="q", chosen="a", rejected="b")
CONV = rec(chosen=[user("q"), assistant("a")], rejected=[user("q"), assistant("b")])
BAD = [
    ("", "bad.jsonl: empty: no pairs"),
    ("\n\n", "bad.jsonl: empty: no pairs"),
    (GOOD + '{"prompt": "q", "chosen": "a"\n', "bad.jsonl: line 2 is not JSON"),
    (rec(prompt="q", chosen="a"), "bad.jsonl: line 1: missing field 'rejected'"),
    (rec(chosen=[user("q"), assistant("a")]), "line 1: missing field 'rejected'"),
    (rec(prompt="q", chosen=" ", rejected="b"), "line 1: empty chosen"),
    (rec(prompt="q", chosen="a", rejected=""), "line 1: empty rejected"),
    (rec(prompt=" ", chosen="a", rejected="b"), "line 1: empty prompt"),
    (rec(chosen=[user("q"), assistant("a")], rejected=[user("q"), assistant(" ")]), "line 1: empty rejected"),
    (rec(prompt=[user("q")], chosen=[assistant("")], rejected="b"), "line 1: empty chosen"),
    (GOOD * 3 + rec(prompt="q", chosen="Same.", rejected="Same. "),
     "bad.jsonl: line 4: chosen and rejected are the same answer"),
    (GOOD + CONV, "bad.jsonl: line 2 is messages but line 1 is text: one format per file"),
    (CONV + rec(prompt=[user("q")], chosen="a", rejected="b"),
     "line 2 is prompt-messages but line 1 is messages: one format per file"),
    (rec(chosen=[user("q"), assistant("a")], rejected=[user("other q"), assistant("b")]),
     "line 1: chosen and rejected have different prompts (message 1 differs)"),
    (rec(chosen=[user("q"), assistant("x"), user("q2"), assistant("a")], rejected=[user("q"), assistant("b")]),
     "line 1: chosen and rejected have different prompts (chosen has 4 messages, rejected 2)"),
    (rec(chosen=[user("q"), user("q")], rejected=[user("q"), assistant("b")]),
     "line 1: chosen: two user turns in a row"),
    (rec(chosen=[{"role": "bot", "content": "a"}], rejected=[]), "line 1: chosen[1].role is 'bot'"),
    (rec(chosen="a", rejected="b"), "line 1: missing field 'prompt' (chosen and rejected are strings"),
    (rec(prompt=[user("q"), assistant("a")], chosen="b", rejected="c"),
     "line 1: prompt: the last message is 'assistant'; it must be a user turn"),
    (rec(prompt=[], chosen="b", rejected="c"), "line 1: prompt: no messages"),
    (rec(prompt=[user("q")], chosen=[assistant("a"), assistant("b")], rejected="c"),
     "line 1: field 'chosen' must be a string or a list of one assistant message"),
    (rec(prompt=[user("q")], chosen={"role": "assistant", "content": "a"}, rejected="c"),
     "line 1: field 'chosen' must be a string or a list of one assistant message"),
    (rec(prompt=3, chosen="a", rejected="b"), "line 1: field 'prompt' must be a string or a list of messages, got int"),
    (rec(prompt="q", chosen=["a"], rejected="b"), "line 1: field 'chosen' must be a string, got list"),
    (rec(prompt="q", chosen="a", rejected="b", score=3), "line 1: unknown field(s) ['score'] for text"),
    (rec(question="q", answer="a"), "line 1: no known format: fields ['question', 'answer']"),
    ('[1]', "bad.jsonl: item 1: expected a JSON object, got int"),
]  # fmt: skip


@pytest.mark.parametrize(("content", "message"), BAD)
def test_bad_input_names_file_line_and_field(tmp_path, content, message):
    p = tmp_path / "bad.jsonl"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(LmforgeError) as err:
        load_preferences(p)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_and_item_in_json_array(tmp_path):
    with pytest.raises(LmforgeError, match="no such file"):
        load_preferences(tmp_path / "missing.jsonl")
    p = write(tmp_path, "a.json", [{"prompt": "q", "chosen": "a", "rejected": "b"},
                                   {"prompt": "q", "chosen": "a", "rejected": "a"}], array=True)  # fmt: skip
    with pytest.raises(LmforgeError, match=r"^a\.json: item 2: chosen and rejected are the same answer$"):
        load_preferences(p)


# ------------------------------------------------------------------ labels


def test_labels_are_the_final_answer_and_end_token_on_both_sides(tok):
    prompt = [{"role": "system", "content": "Be brief."}, user("Where is the fox?"), assistant("By the river."),
              user("和那只狗呢？")]  # fmt: skip
    pair = Pair(prompt, "The dog is asleep, 在家里.", "No idea.", line=9)
    [tp], report = tokenize_pairs(tok, [pair], 512)
    assert tp.line == tp.chosen.line == tp.rejected.line == 9
    assert (report.total, report.kept, report.truncated, report.dropped) == (1, 1, 0, 0)
    for t, answer in ((tp.chosen, pair.chosen), (tp.rejected, pair.rejected)):
        assert len(t.input_ids) == len(t.labels)
        assert tok.decode(t.input_ids) == tok.apply_chat_template(
            [*prompt, assistant(answer)], tokenize=False
        )
        assert tok.decode(labelled(t)) == f"{answer}<|im_end|>"  # not "By the river.", not the newline after
    start = tp.chosen.labels.index(labelled(tp.chosen)[0])
    assert start == tp.rejected.labels.index(labelled(tp.rejected)[0])
    assert tp.chosen.input_ids[:start] == tp.rejected.input_ids[:start]  # identical prompt tokens
    assert tok.decode(tp.chosen.input_ids[:start]).endswith("和那只狗呢？<|im_end|>\n<|im_start|>assistant\n")


def test_truncate_and_drop(tok):
    short = Pair([user("hi")], "hello", "go away", line=1)
    long_chosen = Pair([user("hi")], "the fox " * 40, "no", line=2)
    long_prompt = Pair([user("the river " * 40)], "ok", "no", line=3)
    lengths = [
        len(tokenize_pairs(tok, [p], 10_000)[0][0].chosen.input_ids)
        for p in (short, long_chosen, long_prompt)
    ]
    limit = 40
    assert lengths[0] <= limit < min(lengths[1:])
    out, report = tokenize_pairs(tok, [short, long_chosen, long_prompt], limit)
    assert [tp.line for tp in out] == [1, 2]
    cut = out[1]
    assert len(cut.chosen.input_ids) == limit and cut.chosen.labels[-1] != IGNORE
    assert len(cut.rejected.input_ids) < limit  # the short side is whole
    assert tok.decode(labelled(cut.rejected)) == "no<|im_end|>"
    assert (report.total, report.kept, report.truncated, report.dropped, report.max_length) == (
        3,
        2,
        1,
        1,
        40,
    )
    assert report.longest == max(lengths)
    assert report.text() == (f"3 pairs: 2 kept, 1 truncated to 40 tokens, 1 dropped (no answer left); "
                             f"longest side {max(lengths)} tokens")  # fmt: skip
    assert tokenize_pairs(tok, [short], 512)[1].text().startswith("1 pairs: 1 kept; longest side")
    with pytest.raises(LmforgeError, match="--max-length must be at least 1"):
        tokenize_pairs(tok, [short], 0)


# ------------------------------------------------------------------ split


def test_split_holds_out_whole_prompts():
    pairs = [Pair([user(f"q{i // 2}")], f"good {i}", f"bad {i}", line=i + 1) for i in range(40)]  # 20 prompts
    train, val = split_pairs(pairs, 0.1, seed=0)
    assert len(val) == 4 and len(train) == 36  # 2 prompts of 20, 2 pairs each
    assert sorted(p.line for p in train + val) == list(range(1, 41))
    assert not {p.prompt_messages[0]["content"] for p in train} & {
        p.prompt_messages[0]["content"] for p in val
    }
    assert split_pairs(pairs, 0.1, seed=0) == (train, val)
    assert split_pairs(pairs, 0.1, seed=1)[1] != val
    assert split_pairs(pairs[::-1], 0.1, seed=0)[1] == val[::-1]  # by content, not by position
    assert split_pairs(pairs[:2], 0.5) == (pairs[:2], [])  # one prompt: never all held out
    assert len(split_pairs(pairs[:4], 0.01)[1]) == 2  # at least one prompt
    with pytest.raises(LmforgeError, match="--val-frac"):
        split_pairs(pairs, 1.0)


# ------------------------------------------------------------------ bundled toy set


def test_bundled_toy_pairs_load_and_tokenize(tok):
    data = load_preferences(ALIGN_DIR / "pairs_toy.jsonl")
    assert data.format == "text" and len(data.pairs) == 60
    zh = [p for p in data.pairs if any("\u4e00" <= ch <= "\u9fff" for ch in p.prompt_messages[-1]["content"])]
    assert 25 <= len(zh) <= 35
    prompts = [json.dumps(p.prompt_messages, ensure_ascii=False) for p in data.pairs]
    assert all(prompts.count(x) == 2 for x in prompts)  # a rude and a wrong rejection per prompt
    assert all(len(p.chosen) <= 120 for p in data.pairs)
    out, report = tokenize_pairs(tok, data.pairs, 256)
    assert report.kept == 60 and report.truncated == report.dropped == 0
    for tp, p in zip(out, data.pairs, strict=True):
        assert tok.decode(labelled(tp.chosen)) == f"{p.chosen}<|im_end|>"
        assert tok.decode(labelled(tp.rejected)) == f"{p.rejected}<|im_end|>"


def test_make_pairs_is_deterministic(tmp_path):
    spec = importlib.util.spec_from_file_location("make_pairs", ALIGN_DIR / "make_pairs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--out", str(tmp_path)])
    assert (tmp_path / "pairs_toy.jsonl").read_bytes() == (ALIGN_DIR / "pairs_toy.jsonl").read_bytes()
