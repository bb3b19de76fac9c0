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
