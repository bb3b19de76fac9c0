"""Generation through llama.cpp (tiny exported GGUF) and transformers: the behaviour users rely on."""

import threading

import pytest

from lmforge.errors import LmforgeError
from lmforge.infer.base import Backend
from lmforge.infer.hf import TransformersBackend
from lmforge.infer.llamacpp import LlamaCppBackend
from lmforge.infer.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_tokens=12)


def run(backend, prompt, params, cancel=None):
    chunks = list(backend.generate(backend.tokenize(prompt), params, cancel))
    return "".join(c.text for c in chunks), chunks


def test_backends_satisfy_protocol(tiny_llama_backend, tiny_qwen2_dir):
    assert isinstance(tiny_llama_backend, Backend)
    assert isinstance(TransformersBackend(tiny_qwen2_dir), Backend)


def test_llamacpp_continues_memorised_text(tiny_llama_backend):
    text, chunks = run(tiny_llama_backend, "The capital of France is", GREEDY)
    assert text.startswith(" Paris")
    last = chunks[-1]
    assert last.finish_reason in ("length", "stop") and last.prompt_tokens > 0
    assert last.completion_tokens == sum(1 for c in chunks if c.token_id is not None)


def test_chinese_streaming_reassembles_multibyte_characters(tiny_llama_backend):
    # byte-level BPE splits CJK characters across tokens; the stream must never show half a character
    for prompt in ("中国的首都是", "小狐狸住在"):
        text, chunks = run(tiny_llama_backend, prompt, SamplingParams(temperature=0.0, max_tokens=20))
        ids = [c.token_id for c in chunks if c.token_id is not None]
        assert text == tiny_llama_backend.detokenize(ids)
        assert all("\ufffd" not in c.text for c in chunks[:-1])
        assert any("\u4e00" <= ch <= "\u9fff" for ch in text)


def test_greedy_is_reproducible_and_seeded_sampling_too(tiny_llama_backend):
    a, _ = run(tiny_llama_backend, "Once upon a time", SamplingParams(temperature=0.0, seed=1, max_tokens=16))
    b, _ = run(tiny_llama_backend, "Once upon a time", SamplingParams(temperature=0.0, seed=1, max_tokens=16))
    assert a == b
    hot = SamplingParams(temperature=1.5, top_k=0, top_p=1.0, max_tokens=24, seed=7)
    c, _ = run(tiny_llama_backend, "Once upon a time", hot)
    d, _ = run(tiny_llama_backend, "Once upon a time", hot)
    assert c == d
    others = {
        run(tiny_llama_backend, "Once upon a time", SamplingParams(**{**hot.__dict__, "seed": s}))[0]
        for s in range(8, 12)
    }
    assert len(others | {c}) > 1  # different seeds explore different continuations


def test_max_tokens_gives_finish_length(tiny_llama_backend):
    _, chunks = run(tiny_llama_backend, "Once upon a time", SamplingParams(temperature=0.0, max_tokens=3))
    assert chunks[-1].finish_reason == "length" and chunks[-1].completion_tokens == 3


def test_stop_string_ends_generation_and_is_not_emitted(tiny_llama_backend):
    full, _ = run(
        tiny_llama_backend, "The capital of France is", SamplingParams(temperature=0.0, max_tokens=20)
    )
    stop_at = full.index("Paris") + len("Par")
    text, chunks = run(
        tiny_llama_backend,
        "The capital of France is",
        SamplingParams(temperature=0.0, max_tokens=20, stop=["is."]),
    )
    assert chunks[-1].finish_reason == "stop"
    assert text == full[: full.index("is.")] and "is." not in text and stop_at > 0


def test_cancellation_stops_promptly(tiny_llama_backend):
    cancel = threading.Event()
    got = []
    for chunk in tiny_llama_backend.generate(
        tiny_llama_backend.tokenize("Once"), SamplingParams(temperature=0.0, max_tokens=200), cancel
    ):
        got.append(chunk)
        if len(got) == 3:
            cancel.set()
    assert got[-1].finish_reason == "cancelled" and len(got) <= 5


def test_empty_and_overlong_prompts_are_refused(tiny_llama_backend):
    with pytest.raises(LmforgeError, match="empty prompt"):
        list(tiny_llama_backend.generate([], GREEDY))
    long_ids = tiny_llama_backend.tokenize("Once upon a time " * 200)
    with pytest.raises(LmforgeError, match=r"prompt is \d+ tokens but the context holds 256"):
        list(tiny_llama_backend.generate(long_ids, GREEDY))


def test_generation_stops_at_context_end(tiny_llama_backend):
    ids = tiny_llama_backend.tokenize("Once upon a time " * 40)[:250]
    chunks = list(tiny_llama_backend.generate(ids, SamplingParams(temperature=0.0, max_tokens=100)))
    assert chunks[-1].finish_reason in ("length", "stop") and chunks[-1].completion_tokens <= 6


def test_bad_sampling_rejected_before_generation(tiny_llama_backend):
    with pytest.raises(LmforgeError, match="top_p"):
        list(tiny_llama_backend.generate([1, 2], SamplingParams(top_p=0)))


def test_context_larger_than_trained_is_refused(tiny_gguf):
    from lmforge.infer.llamacpp import LlamaCppBackend

    with pytest.raises(LmforgeError, match="exceeds what .* was trained for"):
        LlamaCppBackend(tiny_gguf, n_ctx=100_000)


def test_transformers_backend_matches_llamacpp_greedy(tiny_qwen2_dir, tiny_llama_backend):
    hf = TransformersBackend(tiny_qwen2_dir, n_ctx=256)
    for prompt in ("The capital of France is", "今天天气很好，"):
        ids = hf.tokenize(prompt)
        assert ids == tiny_llama_backend.tokenize(prompt)
        a = [c.token_id for c in hf.generate(ids, GREEDY) if c.token_id is not None]
        b = [c.token_id for c in tiny_llama_backend.generate(ids, GREEDY) if c.token_id is not None]
        assert a == b


def test_transformers_seeded_sampling_and_stop(tiny_qwen2_dir):
    hf = TransformersBackend(tiny_qwen2_dir)
    p = SamplingParams(temperature=1.2, top_k=20, top_p=0.9, repetition_penalty=1.1, max_tokens=16, seed=3)
    assert run(hf, "Once upon a time", p)[0] == run(hf, "Once upon a time", p)[0]
    text, chunks = run(
        hf, "The capital of France is", SamplingParams(temperature=0.0, max_tokens=20, stop=["."])
    )
    assert chunks[-1].finish_reason == "stop" and "." not in text and "Paris" in text


def test_embedding_on_chat_model_is_refused(tiny_llama_backend):
    with pytest.raises(LmforgeError, match="not loaded as an embedding model"):
        tiny_llama_backend.embed(["x"])


def test_cli_and_server_engines_give_the_same_greedy_tokens(smollm2_registry):
    """`lmforge generate` (single-sequence llama.cpp) and `lmforge serve` (the batched engine) decode a
    request that runs alone to the same tokens. On SmolLM2 the two used to part at token 18: the
    batched context took llama.cpp's default flash-attention setting (AUTO: on for CPU, fp16 sums),
    the single one had it off."""
    from lmforge.infer.batched import BatchedLlamaEngine
    from lmforge.infer.chat import greedy_params

    path = smollm2_registry.model_path(smollm2_registry.get("smollm2-135m-instruct"))
    msgs = [{"role": "user", "content": "Write two sentences about the history of paper."}]
    params = greedy_params(48)
    single = LlamaCppBackend(path, n_ctx=2048, n_threads=2)
    batched = BatchedLlamaEngine(path, n_slots=4, n_ctx=2048, n_threads=2)
    try:
        a = [c.token_id for c in single.chat(msgs, params) if c.token_id is not None]
        b = [c.token_id for c in batched.chat(msgs, params) if c.token_id is not None]
    finally:
        single.close()
        batched.close()
    assert len(a) > 20 and a == b
