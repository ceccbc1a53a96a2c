"""The layering holds: read from the import graph of every module, function-level imports included.

    kdserve (the CLI, the pipeline)              top: may import anything
    kdserve.bench                                 core, train, export, serve
    kdserve.export                                core, train
    kdserve.train                                 core, bulk (distill labels on bulk's engines)
    kdserve.serve      kdserve.bulk               core only (serve never imports train or export)
    kdserve.core                                  nothing above it; no torch

``kdserve/__init__.py`` holds only ``__version__``, which every layer may read.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

#: package -> the folder it is built from (pyproject's [tool.setuptools.package-dir])
FOLDERS = {
    "kdserve": "kdserve",
    "kdserve.core": "core",
    "kdserve.train": "train",
    "kdserve.export": "export",
    "kdserve.serve": "serve",
    "kdserve.bench": "benchmarks",
    "kdserve.bulk": "bulk",
}
#: layer -> the layers it may import (besides itself and the root package's __version__)
ALLOWED = {
    "kdserve.core": set(),
    # distill labels its transfer set on bulk's engines (--label-engine local|ray); bulk imports only core
    "kdserve.train": {"kdserve.core", "kdserve.bulk"},
    "kdserve.serve": {"kdserve.core"},
    "kdserve.export": {"kdserve.core", "kdserve.train"},
    "kdserve.bench": {"kdserve.core", "kdserve.train", "kdserve.export", "kdserve.serve"},
    "kdserve.bulk": {"kdserve.core"},
    "kdserve": {"kdserve.core", "kdserve.train", "kdserve.export", "kdserve.serve", "kdserve.bench", "kdserve.bulk"},
}
HEAVY = {"torch", "transformers", "optimum"}
TORCH_FREE = {"kdserve.core", "kdserve.serve", "kdserve.bulk"}


def layer_of(module: str) -> str | None:
    """The layer a module name belongs to (the longest package prefix), or None outside kdserve."""
    if module == "kdserve":
        return "root"
    for package in sorted(FOLDERS, key=len, reverse=True):
        if package != "kdserve" and (module == package or module.startswith(package + ".")):
            return package
    return "kdserve" if module.startswith("kdserve.") else None


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth of the file, with its line number."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def violations(repo: Path) -> list[str]:
    bad = []
    for package, folder in FOLDERS.items():
        for path in sorted((repo / folder).rglob("*.py")):
            for line, module in imports_of(path):
                top = module.split(".")[0]
                where = f"{path.relative_to(repo)}:{line} imports {module}"
                if top in {"train", "export", "serve", "benchmarks", "core"}:
                    bad.append(f"{where}: a top-level name; import it as kdserve.*")
                if package in TORCH_FREE and top in HEAVY:
                    bad.append(f"{where}: {package} must not import {top}")
                target = layer_of(module)
                if target in (None, "root", package):
                    continue
                if target not in ALLOWED[package]:
                    bad.append(f"{where}: {package} may not import {target}")
    return bad


def test_no_import_runs_against_the_layers() -> None:
    assert violations(REPO) == []


def test_a_wrong_arrow_is_caught(tmp_path: Path) -> None:
    """The checker itself: a copy of the tree with one upward import fails, naming the file and line."""
    for folder in FOLDERS.values():
        (tmp_path / folder).mkdir()
    (tmp_path / "core" / "x.py").write_text(
        "import numpy\n\n\ndef f():\n    from kdserve.serve.app import create_app\n"
    )
    (tmp_path / "serve" / "y.py").write_text("from kdserve.train.students import load_student\n")
    (tmp_path / "train" / "z.py").write_text("import torch\nfrom export.bundle import read_manifest\n")
    assert violations(tmp_path) == [
        "core/x.py:5 imports kdserve.serve.app: kdserve.core may not import kdserve.serve",
        "train/z.py:2 imports export.bundle: a top-level name; import it as kdserve.*",
        "serve/y.py:1 imports kdserve.train.students: kdserve.serve may not import kdserve.train",
    ]


@pytest.mark.parametrize("package", sorted(FOLDERS))
def test_every_folder_is_a_mapped_package(package: str) -> None:
    """pyproject maps each folder; a folder missing there would silently not be installed."""
    text = (REPO / "pyproject.toml").read_text()
    assert f'"{package}" = "{FOLDERS[package]}"' in text


def test_an_install_puts_only_kdserve_at_top_level(tmp_path: Path) -> None:
    """``pip install .`` (no deps, into a bare target) installs one top-level package, and the
    stage folders are importable only under it."""
    import subprocess
    import sys

    target = tmp_path / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    top = sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin")
    assert top == ["kdserve"]
    assert {p.name for p in (target / "kdserve").iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "core",
        "train",
        "export",
        "serve",
        "bench",
        "bulk",
    }
    check = (
        "import sys; sys.path[:0] = [sys.argv[1]]; import kdserve.serve.config, kdserve.core.bundle\n"
        "try:\n    import serve\nexcept ImportError:\n    print('no top-level serve')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", check, str(target)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "no top-level serve"
