"""Checks of the Slicer modules' files that need no Qt: module file, CMake, metadata, resources.

The module files import Slicer, so they are read with ``ast`` rather than imported
(``module_specs``). Every check that applies to any scripted module runs for each entry of
``MODULES``; a few check what only one module has (the sample data of LiverXAI, for instance).
The .ui files and the parameter bindings are checked in ``test_module_ui.py``.
"""

from __future__ import annotations

import ast
import hashlib
import re
import struct
from pathlib import Path

import pytest
from module_specs import (
    LIVERXAI,
    MODULES,
    ROOT,
    TRAINING,
    ModuleSpec,
    each_module,
    module_source,
    module_tree,
    top_level_classes,
)


# --- helpers -------------------------------------------------------------------------------
def cmake_list(folder: Path, variable: str) -> list[str]:
    text = (folder / "CMakeLists.txt").read_text(encoding="utf-8")
    module_name = re.search(r"set\(MODULE_NAME\s+(\w+)\)", text).group(1)
    match = re.search(rf"set\({variable}\s*\n(.*?)\n\s*\)", text, re.S)
    assert match, f"{variable} not found in {folder.name}/CMakeLists.txt"
    entries = match.group(1).replace("${MODULE_NAME}", module_name).split()
    return [e for e in entries if not e.startswith("#")]


def files_on_disk(module_folder: Path, folder: Path, pattern: str) -> set[str]:
    return {
        p.relative_to(module_folder).as_posix()
        for p in folder.rglob(pattern)
        if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")
    }


# --- the module file ---------------------------------------------------------------------
def _imported_names(module: ModuleSpec) -> dict[str, str]:
    """Name -> the LiverXAILib module it is imported from (``from LiverXAILib.x import Name``)."""
    names = {}
    for node in ast.walk(module_tree(module)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("LiverXAILib"):
            for alias in node.names:
                names[alias.asname or alias.name] = node.module
    return names


@each_module
def test_module_file_has_module_widget_logic_and_test(module):
    classes = top_level_classes(module)
    bases = {name: {ast.unparse(b) for b in node.bases} for name, node in classes.items()}
    assert "ScriptedLoadableModule" in bases.get(module.name, set())
    assert "ScriptedLoadableModuleWidget" in bases.get(f"{module.name}Widget", set())
    assert "ScriptedLoadableModuleTest" in bases.get(f"{module.name}Test", set())
    test_class = classes[f"{module.name}Test"]
    test_methods = {n.name for n in test_class.body if isinstance(n, ast.FunctionDef)}
    assert "runTest" in test_methods
    for base in (ast.unparse(b) for b in test_class.bases):  # checks mixed in from the library
        if base in classes:
            test_methods |= {n.name for n in classes[base].body if isinstance(n, ast.FunctionDef)}
    assert any(m.startswith("test_") for m in test_methods)

    logic = f"{module.name}Logic"
    imported = _imported_names(module)
    if logic not in classes:  # re-exported from the library: it must exist there
        assert logic in imported, f"{logic} is neither defined nor imported"
        library_file = ROOT / "LiverXAI" / (imported[logic].replace(".", "/") + ".py")
        library_classes = {
            n.name
            for n in ast.parse(library_file.read_text(encoding="utf-8")).body
            if isinstance(n, ast.ClassDef)
        }
        assert logic in library_classes, f"{logic} is not defined in {library_file.name}"


@each_module
def test_library_imports_are_installed_with_the_extension(module):
    # Installed, every module's files share one qt-scripted-modules folder, and LiverXAILib
    # is installed by LiverXAI/CMakeLists.txt: what a module imports must be listed there.
    listed = set(cmake_list(ROOT / "LiverXAI", "MODULE_PYTHON_SCRIPTS"))
    for library_module in set(_imported_names(module).values()):
        path = library_module.replace(".", "/")
        assert f"{path}.py" in listed or f"{path}/__init__.py" in listed, library_module


# --- CMake and extension metadata ----------------------------------------------------------
@each_module
@pytest.mark.parametrize(
    ("variable", "subfolder", "pattern"),
    [("MODULE_PYTHON_SCRIPTS", "", "*.py"), ("MODULE_PYTHON_RESOURCES", "Resources", "*")],
)
def test_cmake_lists_exactly_the_files_on_disk(module, variable, subfolder, pattern):
    listed = cmake_list(module.folder, variable)
    assert len(listed) == len(set(listed)), f"{variable} lists a file twice"
    on_disk = files_on_disk(module.folder, module.folder / subfolder, pattern)
    unlisted = sorted(on_disk - set(listed))
    absent = sorted(set(listed) - on_disk)
    assert not unlisted, f"add to {variable} in {module.name}/CMakeLists.txt: {unlisted}"
    assert not absent, f"{variable} lists files that do not exist: {absent}"


@each_module
def test_module_cmake_builds_the_scripted_module_with_its_self_test(module):
    text = (module.folder / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(rf"set\(MODULE_NAME\s+{module.name}\)", text)
    assert "slicerMacroBuildScriptedModule(" in text
    assert "WITH_GENERIC_TESTS" in text
    assert re.search(r"slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)", text)


@each_module
def test_extension_cmake_adds_the_module(module):
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(rf"^add_subdirectory\({module.name}\)\s*$", text, re.M)


def test_extension_cmake_depends_on_pytorch():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r'set\(EXTENSION_DEPENDS\s+"PyTorch"\)', text)
    assert re.search(r'set\(EXTENSION_CATEGORY\s+"Segmentation"\)', text)
    for line in (
        "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
        "include(${Slicer_EXTENSION_CPACK})",
    ):
        assert line in text


def test_s4ext_names_pytorch_dependency():
    entries = {}
    for line in (ROOT / "LiverXAI.s4ext").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            entries[key] = value.strip()
    assert "PyTorch" in entries["depends"].split()
    assert entries["scm"] == "git"
    assert entries["category"] == "Segmentation"
    assert entries["scmurl"].startswith("https://")


# --- module metadata and resources ---------------------------------------------------------
def parent_text(module: ModuleSpec, attribute: str):
    for node in ast.walk(module_tree(module)):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Attribute) and t.attr == attribute for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"self.parent.{attribute} not set in {module.module_py.name}")


@each_module
def test_module_has_title_category_help_and_acknowledgement(module):
    assert parent_text(module, "title").startswith("LiverXAI")
    assert parent_text(module, "categories") == ["Segmentation"]
    assert "not for clinical use" in parent_text(module, "helpText").lower()
    assert "U-Net" in parent_text(module, "acknowledgementText")


def test_acknowledgement_names_the_sources():
    text = parent_text(LIVERXAI, "acknowledgementText")
    for source in ("U-Net", "Grad-CAM", "LiTS", "3D-IRCADb", "TotalSegmentator"):
        assert source in text, source


def test_help_says_what_is_added():
    text = parent_text(LIVERXAI, "helpText").lower()
    for word in ("labelmap", "grad-cam", "segmentation"):
        assert word in text


def test_training_help_names_the_buttons_and_the_outputs():
    text = parent_text(TRAINING, "helpText")
    for word in ("Train", "Stop", "Evaluate", "Resume", "best.pt", "last.pt", "Segment &amp;"):
        assert word in text, word
    assert parent_text(TRAINING, "dependencies") == ["LiverXAI"]


def test_sample_data_checksum_matches_the_bundled_ct():
    source = module_source(LIVERXAI)
    match = re.search(r'SAMPLE_CT_SHA256 = "([0-9a-f]{64})"', source)
    assert match, "SAMPLE_CT_SHA256 not found in LiverXAI.py"
    sample = LIVERXAI.folder / "Resources" / "Data" / "TotalSegmentatorExampleCT.nii.gz"
    assert hashlib.sha256(sample.read_bytes()).hexdigest() == match.group(1)


@each_module
def test_icon_is_a_128_pixel_png(module):
    data = module.icon.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (128, 128)


def test_module_icons_differ():
    icons = [hashlib.sha256(m.icon.read_bytes()).hexdigest() for m in MODULES]
    assert len(set(icons)) == len(icons)


# --- the supported Slicer and the Python packages ------------------------------------------------
def _method(module: ModuleSpec, class_name: str, method: str) -> ast.FunctionDef:
    node = top_level_classes(module)[class_name]
    return next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == method)


def _calls(node: ast.AST) -> list[str]:
    return [ast.unparse(n.func) for n in ast.walk(node) if isinstance(n, ast.Call)]


@each_module
def test_only_the_version_check_is_imported_before_the_version_is_known(module):
    # On Slicer 5.8 (Python 3.9) the rest of LiverXAILib cannot be imported: it is imported
    # under "if slicer_version.supported():" only (see test_slicer_version.py).
    tree = module_tree(module)
    top = [
        n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module.startswith("LiverXAI")
    ]
    assert [(n.module, [a.name for a in n.names]) for n in top] == [
        ("LiverXAILib.slicer", ["slicer_version"])
    ]
    gates = [
        n
        for n in tree.body
        if isinstance(n, ast.If) and "slicer_version.supported" in _calls(n.test)
    ]
    assert len(gates) == 1
    gated = [n.module for n in ast.walk(gates[0]) if isinstance(n, ast.ImportFrom)]
    assert "LiverXAILib.slicer" in gated  # dependency_flow


@each_module
def test_module_announces_an_unsupported_slicer_and_shows_it_in_the_panel(module):
    assert "slicer_version.announce" in _calls(_method(module, module.name, "__init__"))
    setup = _method(module, f"{module.name}Widget", "setup")
    assert [_calls(s) for s in setup.body[:2]] == [
        ["ScriptedLoadableModuleWidget.setup"],
        ["slicer_version.show_in_panel"],
    ]
    assert isinstance(setup.body[1], ast.If) and isinstance(setup.body[1].body[0], ast.Return)


@each_module
def test_self_test_checks_version_and_packages_first(module):
    setup = _method(module, f"{module.name}Test", "setUp")
    assert [_calls(s)[0] for s in setup.body[:2]] == [
        "slicer_version.skip_test_if_unsupported",
        "dependency_flow.require_for_self_test",
    ]


@pytest.mark.parametrize(
    ("module", "handlers"),
    [(LIVERXAI, ["_ensureDependencies"]), (TRAINING, ["onTrainButton", "onEvaluateButton"])],
    ids=str,
)
def test_work_needing_torch_checks_the_packages_first(module, handlers):
    for handler in handlers:
        first = _method(module, module.panel, handler).body
        calls = [c for statement in first[:3] for c in _calls(statement)]
        assert "dependency_flow.ensure_in_slicer" in calls, handler
    if module is LIVERXAI:
        apply = _method(module, module.panel, "onApplyButton")
        assert "self._ensureDependencies" in _calls(apply.body[0])
