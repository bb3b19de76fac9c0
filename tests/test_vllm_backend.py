"""The vLLM backend's supervision (launch, health wait, routing, death detection, stop), exercised with
a stand-in OpenAI-compatible server process, since this machine has no GPU. The real `vllm serve`
path uses the same code with vLLM's own command line."""

import shutil
import sys

import pytest

from lmforge.errors import LmforgeError
from lmforge.home import Registry, register_local
from lmforge.infer.pool import ModelPool, PoolConfig
from lmforge.infer.sampling import SamplingParams
from lmforge.infer.vllm import VllmBackend, VllmConfig


@pytest.fixture()
def stand_in(tmp_path, tiny_gguf):
    home = tmp_path / "upstream-home"
    register_local(Registry(home), tiny_gguf, "tiny")
    return VllmConfig(command=["env", f"LMFORGE_HOME={home}", sys.executable, "-m", "lmforge", "serve", "--port", "{port}", "--ctx", "256"],
                      startup_timeout_s=120)  # fmt: skip


def test_launch_route_detect_death_and_stop(tmp_path, stand_in, tiny_qwen2_dir):
    backend = VllmBackend(tiny_qwen2_dir, model_name="tiny-hf", cfg=stand_in)
    try:
        assert backend.alive
        text = "".join(
            c.text
            for c in backend.chat(
                [{"role": "user", "content": "The capital of France is"}],
                SamplingParams(temperature=0, max_tokens=8),
            )
        )
        assert text
        backend._proc.kill()  # the GPU server dies
        backend._proc.wait()
        assert not backend.alive
    finally:
        backend.close()


def test_pool_uses_vllm_engine_for_hf_models_and_reloads_after_death(tmp_path, stand_in, tiny_qwen2_dir):
    reg = Registry(tmp_path / "home")
    register_local(reg, tiny_qwen2_dir, "tiny-hf")
    pool = ModelPool(reg, PoolConfig(engine="vllm", vllm=stand_in))
    try:
        first = pool.acquire("tiny-hf")
        assert first.backend.kind == "vllm"
        pool.release(first)
        first.backend._proc.kill()
        first.backend._proc.wait()
        second = pool.acquire("tiny-hf")
        assert second.backend is not first.backend and second.backend.alive
        pool.release(second)
    finally:
        pool.close()


@pytest.mark.skipif(shutil.which("vllm") is not None, reason="vllm is installed here")
def test_missing_vllm_is_a_clear_error(tiny_qwen2_dir):
    with pytest.raises(LmforgeError, match="vllm is not installed"):
        VllmBackend(tiny_qwen2_dir, model_name="x")
