"""The library's shape: only ``LiverXAILib/slicer`` touches Slicer, and files stay small.

The core (segmentation, explanation, training, evaluation, files, reports, the command line)
must run and be tested without Slicer, so only the ``slicer`` subpackage may import
``slicer``, ``vtk``, ``qt``, ``ctk`` or their MRML modules, even inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "LiverXAI" / "LiverXAILib"
SLICER_ONLY = {"slicer", "vtk", "vtkmodules", "qt", "ctk", "mrml", "MRMLCorePython"}
SOURCES = sorted(p for p in LIBRARY.rglob("*.py") if "__pycache__" not in p.parts)
MODULE_FILES = [
    ROOT / "LiverXAI" / "LiverXAI.py",
    ROOT / "LiverXAITraining" / "LiverXAITraining.py",
]


def _imported_top_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _relative(path: Path) -> str:
    return str(path.relative_to(LIBRARY))


@pytest.mark.parametrize("path", SOURCES, ids=_relative)
def test_only_the_slicer_subpackage_imports_slicer(path):
    if path.relative_to(LIBRARY).parts[0] == "slicer":
        return
    forbidden = _imported_top_names(path) & SLICER_ONLY
    assert not forbidden, f"{_relative(path)} imports {sorted(forbidden)}: move that into slicer/"


def test_the_rule_sees_an_import_inside_a_function(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    import vtk\n    from slicer.util import x\n")
    assert _imported_top_names(sample) & SLICER_ONLY == {"vtk", "slicer"}


def test_every_subpackage_says_what_lives_there():
    packages = sorted(p.parent for p in LIBRARY.rglob("__init__.py") if p.parent != LIBRARY)
    assert len(packages) >= 9
    for package in packages:
        module = ast.parse((package / "__init__.py").read_text(encoding="utf-8"))
        assert ast.get_docstring(module), f"{package.name}/__init__.py has no docstring"


def test_no_flat_modules_beside_the_subpackages():
    flat = sorted(p.name for p in LIBRARY.glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "constants.py", "errors.py", "options.py"]


@pytest.mark.parametrize("path", [*SOURCES, *MODULE_FILES], ids=lambda p: p.name)
def test_no_source_file_over_400_lines(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= 400, f"{path.name} has {lines} lines: split it by idea"


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda p: p.name)
def test_module_files_are_thin(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= 150, f"{path.name} has {lines} lines: the widget's work belongs in LiverXAILib"


@pytest.mark.parametrize("path", [*SOURCES, *MODULE_FILES], ids=lambda p: p.name)
def test_no_function_much_over_60_lines(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    long = {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > 65  # docstring included
    }
    assert not long, f"{path.name}: split {long} into steps"


def test_the_public_surface_imports_on_first_use():
    import subprocess
    import sys

    import LiverXAILib

    script = (
        "import sys, LiverXAILib; assert sorted(m for m in sys.modules if 'LiverXAILib' in m)"
        " == ['LiverXAILib']"
    )
    environment = {"PYTHONPATH": str(LIBRARY.parent)}
    subprocess.run([sys.executable, "-c", script], check=True, env=environment, timeout=60)
    for name in LiverXAILib.PUBLIC:
        assert getattr(LiverXAILib, name) is not None, name
    assert set(LiverXAILib.PUBLIC) <= set(dir(LiverXAILib))
