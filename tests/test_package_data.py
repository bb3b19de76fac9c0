"""Data files ship inside the package (an installed wheel has the eval suites, the web console...)."""

import fnmatch
import tomllib
from pathlib import Path

import lmforge
from lmforge.eval.bias import load_families
from lmforge.eval.harness import load_suite, suites_dir

ROOT = Path(__file__).resolve().parents[1]


def test_suites_are_found_inside_the_package(monkeypatch):
    monkeypatch.delenv("LMFORGE_SUITES", raising=False)
    here = suites_dir()
    assert here == Path(lmforge.__file__).parent / "eval" / "suites"
    names = sorted(p.stem for p in here.glob("*.yaml") if p.stem != "bias-templates")
    assert len(names) == 11 and "zh-sentiment" in names
    suite = load_suite("zh-sentiment")
    assert suite.data.parent == here and len(suite.items) == 200
    assert load_families(None)  # the bias templates come from the same folder


def test_every_data_file_is_declared_package_data():
    """What setuptools puts in a wheel besides modules: the package-data globs of pyproject.toml.
    Every non-Python file of the package (suites, web console, held-out text) must match one."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    pkg = Path(lmforge.__file__).parent
    files = [p for p in pkg.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert any("suites" in p.parts for p in files) and any("console" in p.parts for p in files)
    missing = []
    for f in files:
        rel = f.relative_to(pkg.parent)
        owners = [k for k in declared if rel.as_posix().startswith(k.replace(".", "/") + "/")]
        if not any(
            fnmatch.fnmatch(rel.relative_to(o.replace(".", "/")).as_posix(), g)
            for o in owners
            for g in declared[o]
        ):
            missing.append(rel.as_posix())
    assert not missing, (
        f"not in any [tool.setuptools.package-data] glob, so missing from the wheel: {missing}"
    )


def test_env_override_still_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("LMFORGE_SUITES", str(tmp_path))
    assert suites_dir() == tmp_path
