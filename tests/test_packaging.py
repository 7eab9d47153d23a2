"""The installed package holds every source folder: a plain (non-editable) ``pip install .``
ships exactly the packages pyproject.toml lists, so a folder missing there is missing for users."""

from __future__ import annotations

import re
from fnmatch import fnmatch
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def test_every_source_package_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapping = config["package-dir"]
    found = {"tensorfield"}
    for name, folder in mapping.items():
        if name == "tensorfield":
            continue
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *relative)))
    assert found - listed == set(), f"packages missing from pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"
    assert listed - found == set(), f"listed packages without a folder: {sorted(listed - found)}"


def test_kernel_sources_ship_as_package_data():
    """The C sources of ``cuda/csrc`` (read at build time through importlib.resources) match the
    package-data globs of ``tensorfield.cuda``, and every library's source file is there."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folder = ROOT / config["package-dir"]["tensorfield.cuda"]
    patterns = config.get("package-data", {}).get("tensorfield.cuda", [])
    sources = sorted(path.relative_to(folder).as_posix() for path in (folder / "csrc").iterdir() if path.is_file())
    assert sources, "no C sources in cuda/csrc"
    unshipped = [name for name in sources if not any(fnmatch(name, pattern) for pattern in patterns)]
    assert unshipped == [], f"cuda/csrc files missing from [tool.setuptools.package-data]: {unshipped}"
    named = set()
    for module in folder.glob("*.py"):
        named.update(re.findall(r'NativeLibrary\(\s*"[^"]+",\s*"([^"]+)"', module.read_text()))
    for source in (folder / "csrc").iterdir():
        named.update(re.findall(r'^\s*#include "([^"]+)"', source.read_text(), flags=re.MULTILINE))
    assert named, "no NativeLibrary found in cuda/"
    missing = sorted(name for name in named if f"csrc/{name}" not in sources)
    assert missing == [], f"kernel sources named but not in cuda/csrc: {missing}"
