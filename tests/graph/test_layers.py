"""The import graph of the project: no cycles, and pipeline/ imports only down its layers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.core import imports
from tests.conftest import ROOT


def test_the_project_has_no_import_cycle_and_no_upward_edge() -> None:
    g = imports.graph()
    assert "pipeline.stages.dataset" in g and "pipeline.core.io" in g["pipeline.stages.dataset"]
    assert imports.cycles(g) == []
    assert imports.layer_violations(g) == []


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for package in imports.PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def test_a_cycle_introduced_in_a_copy_is_found(tree: Path) -> None:
    assert imports.cycles(imports.graph(tree)) == []
    _append(tree / "pipeline" / "core" / "io.py", "from pipeline.core import provenance  # noqa")
    found = imports.cycles(imports.graph(tree))
    assert ["pipeline.core.io", "pipeline.core.provenance", "pipeline.core.io"] in found


@pytest.mark.parametrize(("module", "line", "why"), [
    ("pipeline/core/io.py", "import pipeline.audio.wav", "layer 0 imports layer 1"),
    ("pipeline/stages/calib.py", "from pipeline.eval import detect", "stages and eval must not import each other"),
    ("pipeline/eval/detect.py", "from pipeline.authoring import demo_seeds", "eval and authoring must not import each other"),
    ("pipeline/model/infer.py", "from pulsar2 import axmodel", "pipeline must not import pulsar2"),
])
def test_an_upward_or_sideways_edge_in_a_copy_is_found(tree: Path, module: str, line: str, why: str) -> None:
    _append(tree / module, f"def _late():\n    {line}  # noqa")  # imports inside functions count too
    bad = imports.layer_violations(imports.graph(tree))
    assert any(why in b for b in bad), bad


def test_closure_follows_imports_and_packages() -> None:
    files = imports.closure_files("pipeline.stages.dataset")
    assert "pipeline/stages/dataset.py" in files and "pipeline/audio/augment.py" in files
    assert "pipeline/__init__.py" in files and "pipeline/audio/__init__.py" in files
    assert not any(f.startswith("pipeline/eval/") for f in files)


def test_makefile_text_names_each_module(tmp_path: Path) -> None:
    out = tmp_path / "deps.mk"
    assert imports.main(["--makefile", str(out), "pipeline.stages.calib"]) == 0
    line = next(x for x in out.read_text(encoding="utf-8").splitlines() if x.startswith("DEPS_pipeline.stages.calib :="))
    assert "pipeline/stages/calib.py" in line and "pipeline/audio/features.py" in line
    with pytest.raises(SystemExit, match="no such project module"):
        imports.makefile_text(["pipeline.stages.nope"])
