"""Reading a user's text file with the errors the CLI promises: not UTF-8 (with the byte and how to convert),
missing or unreadable (with the reason), each naming the option that gave the path."""

from __future__ import annotations

from pathlib import Path

from lmforge.errors import LmforgeError


def read_utf8(path: str | Path, what: str) -> str:
    """The whole file as text; `what` names where the path came from ("--data", "--examples")."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LmforgeError(f"{what} {path} is not UTF-8 text (byte {e.start}): convert it first, e.g. "
                           f"iconv -f GB18030 -t UTF-8") from e  # fmt: skip
    except OSError as e:
        raise LmforgeError(f"{what} {path}: {e.strerror}") from e
