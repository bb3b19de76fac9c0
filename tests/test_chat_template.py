"""Chat templates render as the model defines them."""

import pytest

from lmforge.data.chat_template import CHATML, render
from lmforge.errors import LmforgeError


def test_chatml_render_with_generation_prompt():
    text = render(CHATML, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好"}])
    assert (
        text
        == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"
    )


def test_template_from_trained_tokenizer_matches_transformers(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "again"},
    ]
    ours = render(
        tok.chat_template, msgs, special_tokens={"bos_token": tok.bos_token, "eos_token": tok.eos_token}
    )
    assert ours == tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def test_template_raise_exception_becomes_clear_error():
    tmpl = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}"
    with pytest.raises(LmforgeError, match="first message must be from the user"):
        render(tmpl, [{"role": "assistant", "content": "x"}])


def test_bad_role_rejected():
    with pytest.raises(LmforgeError, match="role"):
        render(CHATML, [{"role": "wizard", "content": "x"}])
