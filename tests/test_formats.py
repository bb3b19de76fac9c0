"""Corrupt, truncated and wrong files are refused with one clear line."""

import pytest

from lmforge.errors import LmforgeError
from lmforge.formats import inspect_model
from lmforge.home import register_local


def test_real_gguf_is_described(tiny_gguf):
    info = inspect_model(tiny_gguf)
    assert info.format == "gguf" and info.architecture == "qwen2" and info.has_chat_template
    assert info.file_type == "F16" and info.params and info.context_length == 256


def test_hf_folder_is_described(tiny_qwen2_dir):
    info = inspect_model(tiny_qwen2_dir)
    assert info.format == "hf" and info.architecture == "Qwen2ForCausalLM" and info.has_chat_template
    assert info.params and not info.is_embedding


@pytest.mark.parametrize(
    "content, msg",
    [
        (b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64, "corrupt or truncated GGUF"),
        (b"PK\x03\x04 this is a zip", "expected a .gguf file"),
        (b"", "expected a .gguf file"),
    ],
)
def test_corrupt_files_are_refused(tmp_path, registry, content, msg):
    bad = tmp_path / ("model.bin" if content[:4] != b"GGUF" else "model.gguf")
    bad.write_bytes(content)
    with pytest.raises(LmforgeError, match=msg):
        register_local(registry, bad, "bad")
    assert registry.list() == []


def test_truncated_gguf_is_refused(tmp_path, tiny_gguf, registry):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[: tiny_gguf.stat().st_size // 2])
    with pytest.raises(LmforgeError, match="truncated"):
        register_local(registry, cut, "cut")


def test_gguf_extension_with_wrong_magic(tmp_path):
    f = tmp_path / "x.gguf"
    f.write_bytes(b"not a model at all")
    with pytest.raises(LmforgeError, match="not a GGUF file"):
        inspect_model(f)


def test_missing_path_and_folder_without_config(tmp_path):
    with pytest.raises(LmforgeError, match="no such file"):
        inspect_model(tmp_path / "nope.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LmforgeError, match="config.json is missing"):
        inspect_model(tmp_path / "empty")


def test_register_local_gguf_and_folder(registry, tiny_gguf, tiny_qwen2_dir):
    g = register_local(registry, tiny_gguf, "g")
    h = register_local(registry, tiny_qwen2_dir, "h")
    assert g.format == "gguf" and g.kind == "chat" and len(g.data_fingerprint) == 64
    assert h.format == "hf" and (registry.model_path(h) / "config.json").is_file()
    assert h.source.startswith("local:")
