"""Recognise and describe model files: GGUF (via the `gguf` package's reader) and HF folders.

`inspect_model(path)` is the single gate every model passes before it is registered or loaded, so
a corrupt or truncated file is reported as one clear line instead of a crash inside llama.cpp.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import LmforgeError

GGUF_MAGIC = b"GGUF"


@dataclass
class ModelInfo:
    """What a model file says about itself."""

    format: str
    """'gguf' or 'hf'."""
    architecture: str
    name: str
    params: int | None
    context_length: int | None
    has_chat_template: bool
    file_type: str = ""
    """GGUF quantization (e.g. 'Q4_K_M') or HF torch dtype."""
    is_embedding: bool = False


def inspect_gguf(path: Path) -> ModelInfo:
    """Read a GGUF header and tensor table; raises LmforgeError if the file is not a sound GGUF."""
    import gguf

    with path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise LmforgeError(f"{path} is not a GGUF file (magic {magic!r}, expected b'GGUF')")
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, IndexError, OSError, KeyError) as e:
        raise LmforgeError(f"{path} is a corrupt or truncated GGUF file ({type(e).__name__}: {e})") from e

    def field(key: str):
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    arch = str(field("general.architecture") or "unknown")
    ftype = field("general.file_type")
    ftype_name = ""
    if ftype is not None:
        try:
            ftype_name = gguf.LlamaFileType(int(ftype)).name.removeprefix("MOSTLY_")
        except ValueError:
            ftype_name = str(ftype)
    # The tensor data must all be inside the file: a truncated download fails here, not in llama.cpp.
    size = path.stat().st_size
    for t in reader.tensors:
        if int(t.data_offset) + int(t.n_bytes) > size:
            raise LmforgeError(f"{path} is truncated: tensor {t.name} ends past the end of the file")
    ctx = field(f"{arch}.context_length")
    return ModelInfo(
        format="gguf",
        architecture=arch,
        name=str(field("general.name") or path.stem),
        params=sum(int(t.n_elements) for t in reader.tensors),
        context_length=int(ctx) if ctx is not None else None,
        has_chat_template=field("tokenizer.chat_template") is not None,
        file_type=ftype_name,
        is_embedding=arch in {"bert", "nomic-bert", "jina-bert-v2"},
    )


def inspect_hf(path: Path) -> ModelInfo:
    """Describe a Hugging Face checkpoint folder (config.json + weights + tokenizer)."""
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise LmforgeError(f"{path} is not a Hugging Face checkpoint: config.json is missing")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LmforgeError(f"{cfg_path} is not valid JSON ({e})") from e
    weights = list(path.glob("*.safetensors")) + list(path.glob("pytorch_model*.bin"))
    if not weights:
        raise LmforgeError(f"{path} has no weights (*.safetensors or pytorch_model*.bin)")
    params = None
    st = [w for w in weights if w.suffix == ".safetensors"]
    if st:
        from safetensors import SafetensorError, safe_open

        params = 0
        for w in st:
            try:
                with safe_open(str(w), framework="numpy") as f:
                    for k in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                        shape = f.get_slice(k).get_shape()
                        n = 1
                        for d in shape:
                            n *= d
                        params += n
            except (SafetensorError, OSError) as e:
                raise LmforgeError(f"{w} is not a readable safetensors file ({e})") from e
    tok_cfg = path / "tokenizer_config.json"
    has_template = (path / "chat_template.jinja").is_file()
    if tok_cfg.is_file() and not has_template:
        has_template = "chat_template" in json.loads(tok_cfg.read_text(encoding="utf-8"))
    archs = cfg.get("architectures") or [cfg.get("model_type", "unknown")]
    arch = str(archs[0])
    return ModelInfo(
        format="hf",
        architecture=arch,
        name=path.name,
        params=params,
        context_length=cfg.get("max_position_embeddings"),
        has_chat_template=has_template,
        file_type=str(cfg.get("torch_dtype") or cfg.get("dtype") or ""),
        is_embedding=not arch.endswith("ForCausalLM"),
    )


def inspect_model(path: Path) -> ModelInfo:
    if not path.exists():
        raise LmforgeError(f"no such file or folder: {path}")
    if path.is_dir():
        return inspect_hf(path)
    if path.suffix.lower() != ".gguf":
        with path.open("rb") as f:
            if f.read(4) != GGUF_MAGIC:
                raise LmforgeError(f"{path}: expected a .gguf file or a Hugging Face checkpoint folder")
    return inspect_gguf(path)
