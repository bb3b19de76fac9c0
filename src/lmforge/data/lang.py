"""Which characters are Chinese (and other scripts written without spaces): the one definition.

Chunking counts one token per such character, the lexical analyzer hands runs of Han characters to
jieba, answers pick their language by the share of Han characters, and the QA metrics compare Han
text character by character. All of them use these classes, so they agree on what "Chinese" is.
"""

from __future__ import annotations

import re

HAN = r"\u3400-\u9fff\uf900-\ufaff"
"""Han ideographs: CJK Extension A and Unified Ideographs (U+3400–U+9FFF), Compatibility Ideographs."""
KANA = r"\u3040-\u30ff"
"""Japanese hiragana and katakana."""
HANGUL = r"\uac00-\ud7af"
"""Korean syllables."""
KANA_HANGUL = KANA + HANGUL
"""Japanese kana and Korean syllables: like Han, written without spaces between words."""
NO_SPACE_SCRIPTS = HAN + KANA_HANGUL
"""Every script whose characters are counted one token each when estimating lengths."""

HAN_RE = re.compile(f"[{HAN}]")
"""One Han character."""

_SCRIPTS = (("ja", re.compile(f"[{KANA}]")), ("ko", re.compile(f"[{HANGUL}\u1100-\u11ff]")),  # + jamo
            ("ru", re.compile(r"[\u0400-\u04ff]")), ("ar", re.compile(r"[\u0600-\u06ff]")))  # fmt: skip


def language(text: str) -> str:
    """'zh' when at least a tenth of the non-space characters are CJK, else 'en'."""
    chars = len("".join(text.split()))
    return "zh" if chars and len(HAN_RE.findall(text)) / chars >= 0.1 else "en"


def query_language(text: str) -> str:
    """The language of a question by its script: ja (kana), ko (hangul), ru (Cyrillic), ar (Arabic) when they
    make up a fifth of its letters, else zh or en as `language` decides."""
    chars = len("".join(text.split()))
    for code, script in _SCRIPTS:
        if chars and len(script.findall(text)) / chars >= 0.2:
            return code
    return language(text)
