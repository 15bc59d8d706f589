"""Checks of the Slicer module's files that need no Qt: .ui, parameter bindings, CMake, metadata.

LiverXAI.py imports Slicer, so it is read with ``ast`` rather than imported.
"""

from __future__ import annotations

import ast
import hashlib
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "LiverXAI"
MODULE_PY = MODULE_DIR / "LiverXAI.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "LiverXAI.ui"
SAMPLE_CT = MODULE_DIR / "Resources" / "Data" / "TotalSegmentatorExampleCT.nii.gz"

# Widgets the module file and the contract rely on, with their Qt class.
CONTRACT_WIDGETS = {
    "LiverXAI": "qMRMLWidget",
    "inputsCollapsibleButton": "ctkCollapsibleButton",
    "inputVolumeSelector": "qMRMLNodeComboBox",
    "modelSelector": "QComboBox",
    "deviceSelector": "QComboBox",
    "deviceInfoLabel": "QLabel",
    "explainLiverCheckBox": "QCheckBox",
    "explainTumorCheckBox": "QCheckBox",
    "advancedCollapsibleButton": "ctkCollapsibleButton",
    "batchSizeSpinBox": "QSpinBox",
    "allowNonHUCheckBox": "QCheckBox",
    "applyButton": "QPushButton",
    "progressBar": "QProgressBar",
    "cancelButton": "QPushButton",
    "resultsCollapsibleButton": "ctkCollapsibleButton",
    "resultsLabel": "QLabel",
}

# Fields bound in code rather than through SlicerParameterName. Slicer's QComboBox connector
# needs a fixed Choice list, but the model list comes from the catalog at run time.
BOUND_IN_CODE = {"model": "modelSelector"}


# --- helpers -------------------------------------------------------------------------------
def ui_root() -> ET.Element:
    return ET.parse(UI_FILE).getroot()


def ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ui_root().iter("widget")}


def string_property(widget: ET.Element, name: str) -> str | None:
    prop = widget.find(f"property[@name='{name}']")
    return None if prop is None else prop.findtext("string")


def parameter_bindings() -> dict[str, list[str]]:
    """SlicerParameterName -> names of the widgets that carry it."""
    bindings: dict[str, list[str]] = {}
    for name, widget in ui_widgets().items():
        parameter = string_property(widget, "SlicerParameterName")
        if parameter is not None:
            bindings.setdefault(parameter, []).append(name)
    return bindings


def module_tree() -> ast.Module:
    return ast.parse(MODULE_PY.read_text(encoding="utf-8"))


def parameter_fields() -> dict[str, ast.expr]:
    """Field name -> annotation of the LiverXAIParameterNode dataclass-style class."""
    for node in ast.walk(module_tree()):
        if isinstance(node, ast.ClassDef) and node.name == "LiverXAIParameterNode":
            return {
                item.target.id: item.annotation
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            }
    raise AssertionError("LiverXAIParameterNode not found in LiverXAI.py")


def annotation_call(annotation: ast.expr, name: str) -> list | None:
    """Literal arguments of ``name(...)`` inside ``Annotated[...]``, or None."""
    for node in ast.walk(annotation):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name:
            return [ast.literal_eval(arg) for arg in node.args]
    return None


def cmake_list(variable: str) -> list[str]:
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    module_name = re.search(r"set\(MODULE_NAME\s+(\w+)\)", text).group(1)
    match = re.search(rf"set\({variable}\s*\n(.*?)\n\s*\)", text, re.S)
    assert match, f"{variable} not found in LiverXAI/CMakeLists.txt"
    entries = match.group(1).replace("${MODULE_NAME}", module_name).split()
    return [e for e in entries if not e.startswith("#")]


def files_on_disk(folder: Path, pattern: str) -> set[str]:
    return {
        p.relative_to(MODULE_DIR).as_posix()
        for p in folder.rglob(pattern)
        if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")
    }


# --- the .ui file --------------------------------------------------------------------------
def test_ui_parses_and_is_a_mrml_widget():
    root = ui_root()
    assert root.tag == "ui"
    top = root.find("widget")
    assert (top.get("class"), top.get("name")) == ("qMRMLWidget", "LiverXAI")


def test_contract_widgets_exist_with_their_class():
    widgets = ui_widgets()
    missing = sorted(set(CONTRACT_WIDGETS) - set(widgets))
    assert not missing, f"widgets missing from LiverXAI.ui: {missing}"
    wrong = {
        n: widgets[n].get("class")
        for n, c in CONTRACT_WIDGETS.items()
        if widgets[n].get("class") != c
    }
    assert not wrong, f"widgets with the wrong class: {wrong}"


def test_widget_names_are_unique():
    names = [w.get("name") for w in ui_root().iter("widget")]
    assert len(names) == len(set(names))


def test_every_binding_names_a_parameter_and_every_parameter_is_bound_once():
    fields = parameter_fields()
    bindings = parameter_bindings()
    unknown = sorted(set(bindings) - set(fields))
    assert not unknown, f"SlicerParameterName with no LiverXAIParameterNode field: {unknown}"
    for field in fields:
        widgets = list(bindings.get(field, []))
        if field in BOUND_IN_CODE:
            widgets.append(BOUND_IN_CODE[field])
        assert len(widgets) == 1, f"parameter {field!r} is bound by {widgets}"


def test_fields_bound_in_code_are_really_bound_in_code():
    source = MODULE_PY.read_text(encoding="utf-8")
    widgets = ui_widgets()
    for field, widget in BOUND_IN_CODE.items():
        assert widget in widgets
        assert string_property(widgets[widget], "SlicerParameterName") is None
        assert f"self.ui.{widget}" in source
        assert re.search(rf"_parameterNode\.{field}\s*=", source), f"{field} is never written"


def test_combo_boxes_bound_to_parameters_have_matching_choices():
    # Slicer's QComboBox connector raises unless the field carries Choice([...]).
    fields, widgets = parameter_fields(), ui_widgets()
    for parameter, names in parameter_bindings().items():
        for name in names:
            if widgets[name].get("class") != "QComboBox":
                continue
            choice = annotation_call(fields[parameter], "Choice")
            assert choice, f"{parameter!r} is bound to a QComboBox but has no Choice annotation"
            items = [i.findtext("property/string") for i in widgets[name].findall("item")]
            assert items in ([], list(choice[0])), f"{name} items {items} != choices {choice[0]}"


def test_spin_box_range_matches_within_range():
    fields, widgets = parameter_fields(), ui_widgets()
    spin = widgets["batchSizeSpinBox"]
    assert annotation_call(fields["batchSize"], "WithinRange") == [
        int(spin.findtext("property[@name='minimum']/number")),
        int(spin.findtext("property[@name='maximum']/number")),
    ]


def test_module_file_references_only_existing_widgets():
    referenced = set(re.findall(r"self\.ui\.(\w+)", MODULE_PY.read_text(encoding="utf-8")))
    assert referenced, "LiverXAI.py uses no self.ui widgets"
    missing = sorted(referenced - set(ui_widgets()))
    assert not missing, f"LiverXAI.py references widgets not in the .ui: {missing}"


def test_node_selector_follows_the_scene():
    connections = [
        (c.findtext("sender"), c.findtext("signal"), c.findtext("receiver"), c.findtext("slot"))
        for c in ui_root().iter("connection")
    ]
    expected = (
        "LiverXAI",
        "mrmlSceneChanged(vtkMRMLScene*)",
        "inputVolumeSelector",
        "setMRMLScene(vtkMRMLScene*)",
    )
    assert expected in connections


def test_buttons_and_advanced_section_start_in_the_documented_state():
    widgets = ui_widgets()
    assert string_property(widgets["applyButton"], "text") == "Segment && Explain"
    assert widgets["cancelButton"].findtext("property[@name='enabled']/bool") == "false"
    assert (
        widgets["advancedCollapsibleButton"].findtext("property[@name='collapsed']/bool") == "true"
    )


# --- CMake and extension metadata ----------------------------------------------------------
@pytest.mark.parametrize(
    ("variable", "folder", "pattern"),
    [
        ("MODULE_PYTHON_SCRIPTS", MODULE_DIR, "*.py"),
        ("MODULE_PYTHON_RESOURCES", MODULE_DIR / "Resources", "*"),
    ],
)
def test_cmake_lists_exactly_the_files_on_disk(variable, folder, pattern):
    listed = cmake_list(variable)
    assert len(listed) == len(set(listed)), f"{variable} lists a file twice"
    on_disk = files_on_disk(folder, pattern)
    unlisted = sorted(on_disk - set(listed))
    absent = sorted(set(listed) - on_disk)
    assert not unlisted, f"add to {variable} in LiverXAI/CMakeLists.txt: {unlisted}"
    assert not absent, f"{variable} lists files that do not exist: {absent}"


def test_module_cmake_builds_the_scripted_module_with_its_self_test():
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "slicerMacroBuildScriptedModule(" in text
    assert "WITH_GENERIC_TESTS" in text
    assert re.search(r"slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)", text)


def test_extension_cmake_adds_the_module_and_depends_on_pytorch():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"^add_subdirectory\(LiverXAI\)", text, re.M)
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
def parent_text(attribute: str) -> str:
    for node in ast.walk(module_tree()):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Attribute) and t.attr == attribute for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"self.parent.{attribute} not set in LiverXAI.py")


def test_acknowledgement_names_the_sources():
    text = parent_text("acknowledgementText")
    for source in ("U-Net", "Grad-CAM", "LiTS", "3D-IRCADb", "TotalSegmentator"):
        assert source in text, source


def test_help_says_what_is_added_and_not_for_clinical_use():
    text = parent_text("helpText").lower()
    assert "not for clinical use" in text
    for word in ("labelmap", "grad-cam", "segmentation"):
        assert word in text


def test_sample_data_checksum_matches_the_bundled_ct():
    match = re.search(r'SAMPLE_CT_SHA256 = "([0-9a-f]{64})"', MODULE_PY.read_text(encoding="utf-8"))
    assert match, "SAMPLE_CT_SHA256 not found in LiverXAI.py"
    assert hashlib.sha256(SAMPLE_CT.read_bytes()).hexdigest() == match.group(1)


def test_icon_is_a_128_pixel_png():
    data = (MODULE_DIR / "Resources" / "Icons" / "LiverXAI.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (128, 128)
