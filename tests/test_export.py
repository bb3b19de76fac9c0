"""HF → GGUF export with our own trained tokenizer: registered with lineage and a real parity check."""

import pytest

from lmforge.compress.export import ExportConfig, export_gguf
from lmforge.errors import LmforgeError
from lmforge.home import register_local
from lmforge.infer.loader import LoadConfig, load_backend
from lmforge.infer.sampling import SamplingParams


@pytest.mark.parametrize(
    "arch_fixture, quant",
    [("tiny_qwen2_dir", "q8_0"), ("tiny_llama_dir", "f16"), ("tiny_llama_dir", "q4_k_m")],
)
def test_export_registers_lineage_and_parity(registry, request, arch_fixture, quant):
    register_local(registry, request.getfixturevalue(arch_fixture), "parent")
    m = export_gguf(registry, "parent", ExportConfig(quant=quant))
    assert m.name == f"parent-{quant.replace('_', '-')}" and m.parents == ["parent"] and m.format == "gguf"
    assert m.config["file_type"] == {"f16": "F16", "q8_0": "Q8_0", "q4_k_m": "Q4_K_M"}[quant]
    p = m.metrics["parity"]
    assert p["tokenizer_match"] is True
    assert p["greedy_exact"] == p["prompts"] == 4
    # measured on these tiny models (qwen2 / llama): f16 0.0041% / 0.0061%, q8_0 0.12% / 0.16%,
    # q4_k_m 0.46% / 0.71% (identical on reruns); the bounds leave 3-4x headroom over the larger one
    assert p["ppl_rel_diff"] < {"f16": 2e-4, "q8_0": 5e-3, "q4_k_m": 2.5e-2}[quant]
    assert [x.name for _, x in registry.lineage(m.name)] == [m.name, "parent"]
    # the exported model generates through llama.cpp via the registry
    backend = load_backend(registry, m.name, LoadConfig(n_threads=2))
    text = "".join(
        c.text
        for c in backend.generate(
            backend.tokenize("The capital of France is"), SamplingParams(temperature=0, max_tokens=8)
        )
    )
    assert "Paris" in text


def test_export_refuses_gguf_parent_unknown_quant_and_existing_name(registry, tiny_gguf, tiny_qwen2_dir):
    register_local(registry, tiny_gguf, "g")
    with pytest.raises(LmforgeError, match="already gguf"):
        export_gguf(registry, "g")
    register_local(registry, tiny_qwen2_dir, "h")
    with pytest.raises(LmforgeError, match="unknown quantization"):
        export_gguf(registry, "h", ExportConfig(quant="q3"))  # type: ignore[arg-type]
    with pytest.raises(LmforgeError, match="already exists"):
        export_gguf(registry, "h", ExportConfig(name="g"))
    with pytest.raises(LmforgeError, match="unknown model"):
        export_gguf(registry, "missing")
