"""What an explanation writes: PNG figures (matplotlib, Agg) and one self-contained HTML page.

The HTML pages carry everything inline (CSS, JS, the data as JSON in a <script> tag) and fetch
nothing, so a page can be mailed or opened offline. PNG tick labels that hold Chinese, Japanese or
Korean characters need a font with those glyphs: the first one matplotlib or fontconfig
(`fc-list :lang=zh`) knows is used; without one such labels become the token index (#3) and the
note says so (the HTML page always shows the real tokens: browsers have the fonts).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.data.lang import NO_SPACE_SCRIPTS

CJK_FAMILIES = (
    "Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC", "Noto Serif CJK SC", "Noto Sans SC",
    "Source Han Sans SC", "Source Han Sans CN", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback",
    "AR PL UMing CN", "AR PL UKai CN", "SimHei", "Microsoft YaHei", "PingFang SC", "Hiragino Sans GB",
    "Heiti SC", "Arial Unicode MS",
)  # fmt: skip
"""Font families with CJK glyphs that matplotlib may know by name (checked before asking fontconfig)."""

_CJK_RE = re.compile(f"[{NO_SPACE_SCRIPTS}\u3000-\u303f\uff00-\uffef]")
"""Characters that call for a CJK font: Han, kana, hangul, CJK punctuation (。、「」) and full-width forms (，！)."""


@dataclass
class PlotLabels:
    """Tick labels for a figure and the font to draw them with."""

    labels: list[str]
    font: Path | None
    """A font file with CJK glyphs, when a label needs one and the machine has one."""
    note: str
    """'' or one line saying that CJK labels were replaced by token indices (no CJK font)."""

    def text_kw(self) -> dict[str, Any]:
        """Keyword arguments for matplotlib text calls (tick labels) that draw these labels."""
        if self.font is None:
            return {}
        from matplotlib.font_manager import FontProperties

        return {"fontproperties": FontProperties(fname=str(self.font))}


def cjk_font() -> Path | None:
    """A font file with Chinese glyphs: a known family matplotlib found, else the first `fc-list :lang=zh`."""
    from matplotlib import font_manager

    for f in font_manager.fontManager.ttflist:
        if f.name in CJK_FAMILIES and Path(f.fname).is_file():
            return Path(f.fname)
    fc = shutil.which("fc-list")
    if fc is None:
        return None
    try:
        listing = subprocess.run([fc, ":lang=zh", "file"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in listing.splitlines():
        path = Path(line.split(":")[0].strip())
        if path.suffix.lower() in (".ttf", ".otf", ".ttc") and path.is_file():
            return path
    return None


def _drawable() -> set[int]:
    """Code points matplotlib's default font has glyphs for."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    return set(FT2Font(font_manager.findfont(font_manager.FontProperties())).get_charmap())


def plot_labels(labels: list[str]) -> PlotLabels:
    """`labels` as a figure can draw them: as they are when the default font has their glyphs; with a CJK
    font when CJK labels need one and the machine has one; else the undrawable labels replaced by '#index'."""
    glyphs = _drawable()
    missing = {i for i, x in enumerate(labels) if any(ord(c) not in glyphs for c in x)}
    if not missing:
        return PlotLabels(labels=list(labels), font=None, note="")
    cjk = any(_CJK_RE.search(labels[i]) for i in missing)
    font = cjk_font() if cjk else None
    if font is not None:
        return PlotLabels(labels=list(labels), font=font, note="")
    shown = [f"#{i}" if i in missing else x for i, x in enumerate(labels)]
    why = (
        "no font with CJK glyphs found (fc-list :lang=zh is empty)"
        if cjk
        else "the plot font lacks some glyphs"
    )
    return PlotLabels(labels=shown, font=None, note=f"{why}: the PNG labels those tokens by index (#i); "
                      "the HTML page shows the tokens")  # fmt: skip


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def script_json(data: Any) -> str:
    """`data` as JSON safe to put inside <script>...</script> (no '</' can close the tag early)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def html_page(title: str, style: str, body: str, data: Any, script: str) -> str:
    """One self-contained page: inline style, the body, `const DATA = <data>;` and the script."""
    from html import escape

    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{escape(title)}</title>"
        f"<style>{style}</style></head>\n<body>\n{body}\n"
        f"<script>\nconst DATA = {script_json(data)};\n(() => {{\n{script}\n}})();\n</script>\n</body></html>\n"
    )


def default_out(model_name: str, text: str, cwd: Path | None = None) -> Path:
    """`explain-<model>-<hash of the text>` under `cwd` (default: the current directory)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model_name).strip("-.") or "model"
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    return (cwd or Path.cwd()).resolve() / f"explain-{slug}-{digest}"
