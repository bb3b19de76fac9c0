"""`lmforge safety test` and `lmforge pii scan|redact`: the content rules and PII tools from the shell.

Thin wrappers over lmforge.safety (cli.py's docstring). `safety test` shows which rules fire on a
text and why, the verdict and the masked text; it exits 0 whatever the verdict (a bad config or words
file is a user error: exit 2 with one line). `pii scan` never prints the personal data it finds in
full: each hit is shown partly masked. `pii redact` writes a redacted copy and never writes over its
input; for a folder it mirrors the tree of its text files (UTF-8 without NUL bytes; other files and
anything under a hidden folder such as .git are skipped and counted).
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from lmforge.errors import LmforgeError
from lmforge.safety.pii import KINDS, PiiHit

Style = Literal["tag", "mask"]
WORDS_CATEGORY = "words"
"""The category that `safety test --words FILE` puts the file's phrases in."""


def safety_test(
    text: Annotated[str, typer.Argument(help="The text to check.")],
    words: Annotated[str | None, typer.Option("--words", help="A words file (one phrase per line, # comments) to check against.")] = None,
    action: Annotated[Literal["block", "mask", "flag"], typer.Option(help="--words: what its phrases do.")] = "mask",
    config: Annotated[str | None, typer.Option("--config", help="A safety.yaml (its categories, normalisation, key overrides).")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Apply the overrides of this API key name (needs --config).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
) -> None:  # fmt: skip
    """Which rules fire on TEXT, why, the verdict and the masked text (内容安全规则测试)."""
    from lmforge.safety.config import SafetyConfig, build_rules, for_key, load_safety, read_words
    from lmforge.safety.rules import Category

    if config is None and words is None:
        raise LmforgeError("safety test needs --config safety.yaml or --words FILE (or both)")
    if key is not None and config is None:
        raise LmforgeError("--key needs --config (the key overrides live in safety.yaml)")
    cfg = load_safety(config) if config else SafetyConfig()
    if key is not None and key not in cfg.keys:
        print(f"note: {config} has no overrides for key {key!r}: the defaults apply", file=sys.stderr)
    cfg = for_key(cfg, key)
    if words is not None:
        name = WORDS_CATEGORY
        while name in {c.name for c in cfg.categories}:
            name += "_"
        extra = Category(name, action, tuple(read_words(words)))
        cfg = dataclasses.replace(cfg, categories=(*cfg.categories, extra))
    rules = build_rules(cfg)
    verdict = rules.apply(text)
    normalized = rules.normalizer(text).text
    if as_json:
        print(json.dumps({"enabled": cfg.enabled, **verdict.to_dict(), "normalized": normalized},
                         ensure_ascii=False, indent=2))  # fmt: skip
        return
    if not cfg.enabled:
        print(f"note: the filter is disabled{f' for key {key}' if key else ''} (enabled: false): nothing is "
              f"enforced; the rules below would fire")  # fmt: skip
    for h in verdict.hits:
        span = f"{h.start}:{h.end}"
        shown = f" {h.text!r}" if h.text else ""
        print(f"[{h.action}] {h.category}{shown} at {span}  rule {h.rule!r}: {h.why}")
    if not verdict.hits:
        print("no rule fired")
    state = "BLOCKED" if verdict.blocked else "masked" if verdict.text != text else "passed"
    if verdict.flagged and not verdict.blocked:
        state += f" (flagged: {', '.join(sorted({h.category for h in verdict.flagged}))})"
    print(f"verdict: {state}")
    print(f"normalised: {normalized}")
    print(f"masked: {verdict.text}")


def _kinds(text: str | None) -> list[str] | None:
    if text is None:
        return None
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise LmforgeError(
            f"--kinds: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(KINDS)}"
        )
    return kinds


def _text_files(root: Path) -> tuple[list[Path], int]:
    """The files under `root` (sorted; hidden folders skipped) and how many were skipped as hidden."""
    files, hidden = [], 0
    for p in sorted(root.rglob("*")):
        if p.is_file():
            if any(part.startswith(".") for part in p.relative_to(root).parts[:-1]):
                hidden += 1
            else:
                files.append(p)
    return files, hidden


def _read_text(path: Path, strict: bool) -> str | None:
    """The file as text (newlines kept as written); None for a binary or non-UTF-8 file unless strict."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LmforgeError(f"{path}: {e.strerror}") from e
    nul = data.find(b"\0")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        nul = e.start if nul < 0 else min(nul, e.start)
    if nul < 0:
        return text
    if strict:
        raise LmforgeError(
            f"{path} is not UTF-8 text (byte {nul}): convert it first, e.g. iconv -f GB18030 -t UTF-8"
        )
    return None


def _inputs(path: str) -> tuple[Path, list[tuple[Path, str]], int]:
    """(root, [(file, text)], skipped): one file, or every text file under a folder."""
    root = Path(path).expanduser()
    if root.is_file():
        return root, [(root, _read_text(root, strict=True) or "")], 0
    if not root.is_dir():
        raise LmforgeError(f"no such file or folder: {path}")
    files, skipped = _text_files(root)
    texts = []
    for f in files:
        t = _read_text(f, strict=False)
        if t is None:
            skipped += 1
        else:
            texts.append((f, t))
    return root, texts, skipped


def _position(line_starts: list[int], offset: int) -> tuple[int, int]:
    line = bisect.bisect_right(line_starts, offset)
    return line, offset - line_starts[line - 1] + 1


def _line_starts(text: str) -> list[int]:
    starts = [0]
    starts += [i + 1 for i, c in enumerate(text) if c == "\n"]
    return starts


def pii_scan(
    path: Annotated[str, typer.Argument(help="A UTF-8 text file or a folder of them.")],
    kinds: Annotated[str | None, typer.Option("--kinds", help=f"Comma-separated, from {', '.join(KINDS)} (default: all but person, place).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list of hits (texts partly masked).")] = False,
) -> None:  # fmt: skip
    """Find personal data: IDs, phones, e-mails, cards, IPs, names (个人信息扫描)."""
    from lmforge.safety.pii import PiiScanner, partial

    scanner = PiiScanner(_kinds(kinds))
    root, texts, skipped = _inputs(path)
    rows = []
    for file, text in texts:
        hits = scanner.scan(text)
        starts = _line_starts(text) if hits else []
        for h in hits:
            line, col = _position(starts, h.start)
            rows.append({"file": str(file), "line": line, "col": col, "start": h.start, "end": h.end,
                         "kind": h.kind, "text": partial(h.text), "detail": h.detail})  # fmt: skip
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
    else:
        for r in rows:
            print(f"{r['file']}:{r['line']}:{r['col']}  [{r['start']}:{r['end']}]  {r['kind']:9} {r['text']}  "
                  f"({r['detail']})")  # fmt: skip
    files = {r["file"] for r in rows}
    note = f" ({skipped} files skipped: not UTF-8 text or hidden)" if skipped else ""
    print(f"{len(rows)} hits in {len(files)} of {len(texts)} files{note}", file=sys.stderr)


def pii_redact(
    path: Annotated[str, typer.Argument(help="A UTF-8 text file or a folder of them.")],
    out: Annotated[str, typer.Option("--out", help="Where the redacted copy goes (a file, or a folder for a folder); never the input.")],
    style: Annotated[Style, typer.Option(help="tag: [PHONE], [ID_CARD] …; mask: one * per character.")] = "tag",
    kinds: Annotated[str | None, typer.Option("--kinds", help=f"Comma-separated, from {', '.join(KINDS)} (default: all but person, place).")] = None,
) -> None:  # fmt: skip
    """Write a copy with personal data replaced by tags or masks (个人信息脱敏)."""
    from lmforge.safety.pii import PiiScanner, redact

    scanner = PiiScanner(_kinds(kinds))
    root, texts, skipped = _inputs(path)
    target = Path(out).expanduser()
    src = root.resolve()
    if root.is_file():
        if target.is_dir():
            target = target / root.name
        if target.resolve() == src:
            raise LmforgeError(f"--out {out} is the input file: write the redacted copy somewhere else")
        plan = [(root, target, texts[0][1])]
    else:
        dest = target.resolve()
        if dest == src or src in dest.parents:
            raise LmforgeError(f"--out {out} is inside the input folder {path}: choose a folder outside it")
        if target.exists() and not target.is_dir():
            raise LmforgeError(f"--out {out} is a file: a folder is redacted into a folder")
        plan = [(f, target / f.relative_to(root), t) for f, t in texts]
        inputs = {f.resolve() for f, _ in texts}
        clash = next((d for _, d, _ in plan if d.resolve() in inputs), None)
        if clash is not None:
            raise LmforgeError(f"--out {out} would write over the input file {clash}: choose another folder")
    total = 0
    for _, dest_file, text in plan:
        hits: list[PiiHit] = scanner.scan(text)
        total += len(hits)
        dest_file.parent.mkdir(parents=True, exist_ok=True)
        with dest_file.open("w", encoding="utf-8", newline="") as fh:
            fh.write(redact(text, hits, style))
    note = f"; {skipped} files skipped (not UTF-8 text or hidden)" if skipped else ""
    print(f"redacted {total} hits in {len(plan)} files → {target}{note}")


def mount(app: typer.Typer) -> None:
    safety_app = typer.Typer(no_args_is_help=True, help="Content rules: try them on a text (内容安全).")
    safety_app.command("test")(safety_test)
    app.add_typer(safety_app, name="safety")
    pii_app = typer.Typer(no_args_is_help=True, help="Personal data: find it, redact it (个人信息).")
    pii_app.command("scan")(pii_scan)
    pii_app.command("redact")(pii_redact)
    app.add_typer(pii_app, name="pii")
