"""Sampling validation and stop-string streaming (pure logic, no model)."""

import pytest

from lmforge.errors import LmforgeError
from lmforge.infer.base import TextStream
from lmforge.infer.sampling import SamplingParams


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"stop": [""]}, "stop"),
        ({"seed": -1}, "seed"),
        ({"presence_penalty": 3.0}, "presence_penalty"),
    ],
)
def test_bad_sampling_values_name_the_problem(kwargs, msg):
    with pytest.raises(LmforgeError, match=msg):
        SamplingParams(**kwargs).validate()


def test_defaults_are_valid():
    SamplingParams().validate()


def feed(stream, pieces):
    return "".join(stream.push(p) for p in pieces) + stream.flush()


def test_stop_string_split_across_pieces_never_leaks():
    s = TextStream(["<END>"])
    out = feed(s, ["Hello wor", "ld <E", "N", "D> ignored"])
    assert out == "Hello world " and s.stopped


def test_partial_stop_prefix_is_released_when_it_does_not_complete():
    s = TextStream(["###"])
    assert s.push("a #") == "a "
    assert s.push("# b") == "## b"
    assert not s.stopped


def test_earliest_of_several_stop_strings_wins():
    s = TextStream(["\n\n", "User:"])
    assert feed(s, ["answer User: more\n\n"]) == "answer "


def test_no_stop_strings_passes_everything():
    s = TextStream([])
    assert feed(s, ["中", "文", "!"]) == "中文!"
