"""Run llama.cpp's `convert_hf_to_gguf.py` (from the llama-cpp-python sdist) in a subprocess.

Invoked as `python -m lmforge.compress.convert_runner TOOL_DIR ARGS...`. One adjustment: the
converter identifies a BPE pre-tokenizer by hashing the token ids of a probe string, so any
tokenizer trained here (new vocabulary, same GPT-2 pre-tokenizer) is "not recognized". When the
hash is unknown we read the pre-tokenizer from tokenizer.json instead and name the llama.cpp
implementation that matches it; anything else still fails with the converter's own message.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

QWEN2_REGEX_START = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"


def pre_tokenizer_name(model_dir: Path) -> str | None:
    """llama.cpp's name for the pre-tokenizer in model_dir/tokenizer.json, if we know it."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return None
    pre = json.loads(path.read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    if pre.get("type") == "Sequence":
        for p in pre.get("pretokenizers", []):
            regex = (p.get("pattern") or {}).get("Regex", "")
            if p.get("type") == "Split" and regex.startswith(QWEN2_REGEX_START):
                return "qwen2"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    tool_dir = Path(argv.pop(0))
    sys.path.insert(0, str(tool_dir))
    sys.path.insert(1, str(tool_dir / "gguf-py"))
    from conversion import base  # the converter's package, from tool_dir

    original = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            name = pre_tokenizer_name(Path(self.dir_model))
            if name is None:
                raise
            print(f"lmforge: pre-tokenizer hash unknown; tokenizer.json says {name!r}", file=sys.stderr)
            return name

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    import convert_hf_to_gguf

    sys.argv = ["convert_hf_to_gguf.py", *argv]
    convert_hf_to_gguf.main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
