"""Checks of the Slicer modules' files that need no Qt: .ui, parameter bindings, CMake, metadata.

The module files import Slicer, so they are read with ``ast`` rather than imported. Every check
that applies to any scripted module runs for each entry of ``MODULES``; a few check what only
one module has (the sample data of LiverXAI, for instance).
"""

from __future__ import annotations

import ast
import hashlib
import re
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ModuleSpec:
    """What the checks need to know about one scripted module."""

    name: str
    # Widgets the module file and the contract rely on, with their Qt class.
    contract_widgets: dict[str, str]
    # Fields bound in code rather than through SlicerParameterName (combo boxes whose choices
    # are only known at run time: Slicer's QComboBox connector needs a fixed Choice list).
    bound_in_code: dict[str, str] = field(default_factory=dict)
    # Widgets that must start disabled / collapsible sections that must start collapsed.
    initially_disabled: tuple[str, ...] = ()
    initially_collapsed: tuple[str, ...] = ()

    @property
    def folder(self) -> Path:
        return ROOT / self.name

    @property
    def module_py(self) -> Path:
        return self.folder / f"{self.name}.py"

    @property
    def ui_file(self) -> Path:
        return self.folder / "Resources" / "UI" / f"{self.name}.ui"

    @property
    def icon(self) -> Path:
        return self.folder / "Resources" / "Icons" / f"{self.name}.png"

    def __str__(self) -> str:
        return self.name


LIVERXAI = ModuleSpec(
    name="LiverXAI",
    contract_widgets={
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
    },
    bound_in_code={"model": "modelSelector"},
    initially_disabled=("cancelButton",),
    initially_collapsed=("advancedCollapsibleButton",),
)

TRAINING = ModuleSpec(
    name="LiverXAITraining",
    contract_widgets={
        "LiverXAITraining": "qMRMLWidget",
        "dataPathLineEdit": "QLineEdit",
        "dataFolderButton": "QToolButton",
        "dataCsvButton": "QToolButton",
        "outputFolderLineEdit": "QLineEdit",
        "outputFolderButton": "QToolButton",
        "architectureSelector": "QComboBox",
        "inputSizeSelector": "QComboBox",
        "slicesSelector": "QComboBox",
        "epochsSpinBox": "QSpinBox",
        "batchSizeSpinBox": "QSpinBox",
        "lossSelector": "QComboBox",
        "augmentRotateCheckBox": "QCheckBox",
        "augmentFlipCheckBox": "QCheckBox",
        "augmentZoomCheckBox": "QCheckBox",
        "augmentNoiseCheckBox": "QCheckBox",
        "augmentIntensityCheckBox": "QCheckBox",
        "registerCheckBox": "QCheckBox",
        "registerNameLineEdit": "QLineEdit",
        "resumeCheckBox": "QCheckBox",
        "advancedCollapsibleButton": "ctkCollapsibleButton",
        "learningRateSpinBox": "QDoubleSpinBox",
        "scheduleSelector": "QComboBox",
        "patienceSpinBox": "QSpinBox",
        "keepEmptySpinBox": "QDoubleSpinBox",
        "deviceSelector": "QComboBox",
        "cacheFolderLineEdit": "QLineEdit",
        "cacheFolderButton": "QToolButton",
        "trainButton": "QPushButton",
        "stopButton": "QPushButton",
        "progressBar": "QProgressBar",
        "statusLabel": "QLabel",
        "evaluationPartSelector": "QComboBox",
        "evaluateButton": "QPushButton",
        "metricsTextEdit": "QPlainTextEdit",
    },
    bound_in_code={"architecture": "architectureSelector"},
    initially_disabled=("trainButton", "stopButton", "evaluateButton"),
    initially_collapsed=("advancedCollapsibleButton",),
)

MODULES = [LIVERXAI, TRAINING]
each_module = pytest.mark.parametrize("module", MODULES, ids=str)

# Widget classes Slicer's parameterNodeWrapper can connect to a field of each type
# (slicer/parameterNodeWrapper/guiConnectors.py).
CONNECTABLE = {
    "bool": {"QCheckBox", "QPushButton"},
    "int": {"QSpinBox", "QSlider", "QComboBox"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget", "QComboBox"},
    "str": {"QLineEdit", "QTextEdit", "QComboBox"},
    "Path": {"ctkPathLineEdit", "ctkDirectoryButton"},
    "node": {"qMRMLNodeComboBox", "qMRMLSubjectHierarchyTreeView"},
}


# --- helpers -------------------------------------------------------------------------------
def ui_root(module: ModuleSpec) -> ET.Element:
    return ET.parse(module.ui_file).getroot()


def ui_widgets(module: ModuleSpec) -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ui_root(module).iter("widget")}


def string_property(widget: ET.Element, name: str) -> str | None:
    prop = widget.find(f"property[@name='{name}']")
    return None if prop is None else prop.findtext("string")


def parameter_bindings(module: ModuleSpec) -> dict[str, list[str]]:
    """SlicerParameterName -> names of the widgets that carry it."""
    bindings: dict[str, list[str]] = {}
    for name, widget in ui_widgets(module).items():
        parameter = string_property(widget, "SlicerParameterName")
        if parameter is not None:
            bindings.setdefault(parameter, []).append(name)
    return bindings


def module_source(module: ModuleSpec) -> str:
    return module.module_py.read_text(encoding="utf-8")


def module_tree(module: ModuleSpec) -> ast.Module:
    return ast.parse(module_source(module))


def top_level_classes(module: ModuleSpec) -> dict[str, ast.ClassDef]:
    return {n.name: n for n in module_tree(module).body if isinstance(n, ast.ClassDef)}


def parameter_fields(module: ModuleSpec) -> dict[str, ast.expr]:
    """Field name -> annotation of the ``<name>ParameterNode`` dataclass-style class."""
    node = top_level_classes(module).get(f"{module.name}ParameterNode")
    assert node is not None, f"{module.name}ParameterNode not found in {module.module_py.name}"
    return {
        item.target.id: item.annotation
        for item in node.body
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
    }


def annotation_call(annotation: ast.expr, name: str) -> list | None:
    """Literal arguments of ``name(...)`` inside ``Annotated[...]``, or None."""
    for node in ast.walk(annotation):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name:
            return [ast.literal_eval(arg) for arg in node.args]
    return None


def field_type(annotation: ast.expr) -> str:
    """``int``, ``str``, ``Path``, ``node`` ... of a field, looking through ``Annotated[...]``."""
    if isinstance(annotation, ast.Subscript) and getattr(annotation.value, "id", "") == "Annotated":
        annotation = annotation.slice.elts[0]
    name = ast.unparse(annotation).split(".")[-1]
    return "node" if name.startswith("vtkMRML") else name


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


# --- the .ui file --------------------------------------------------------------------------
@each_module
def test_ui_parses_and_is_a_mrml_widget(module):
    root = ui_root(module)
    assert root.tag == "ui"
    assert root.findtext("class") == module.name
    top = root.find("widget")
    assert (top.get("class"), top.get("name")) == ("qMRMLWidget", module.name)


@each_module
def test_contract_widgets_exist_with_their_class(module):
    widgets = ui_widgets(module)
    missing = sorted(set(module.contract_widgets) - set(widgets))
    assert not missing, f"widgets missing from {module.ui_file.name}: {missing}"
    wrong = {
        n: widgets[n].get("class")
        for n, c in module.contract_widgets.items()
        if widgets[n].get("class") != c
    }
    assert not wrong, f"widgets with the wrong class: {wrong}"


@each_module
def test_widget_names_are_unique(module):
    names = [w.get("name") for w in ui_root(module).iter("widget")]
    assert len(names) == len(set(names))


@each_module
def test_every_binding_names_a_parameter_and_every_parameter_is_bound_once(module):
    fields = parameter_fields(module)
    bindings = parameter_bindings(module)
    unknown = sorted(set(bindings) - set(fields))
    assert not unknown, f"SlicerParameterName with no {module.name}ParameterNode field: {unknown}"
    for name in fields:
        widgets = list(bindings.get(name, []))
        if name in module.bound_in_code:
            widgets.append(module.bound_in_code[name])
        assert len(widgets) == 1, f"parameter {name!r} is bound by {widgets}"


# Names parameterNodeWrapper defines on the class or instance (slicer/parameterNodeWrapper).
RESERVED_PARAMETER_NAMES = {
    "allParameters", "default", "isCached", "dataType", "getValue", "setValue", "connectGui",
    "connectParametersToGui", "disconnectGui", "StartModify", "EndModify", "AddObserver",
    "RemoveObserver", "Modified", "parameterNode",
}  # fmt: skip


@each_module
def test_parameter_names_are_not_reserved_by_the_wrapper(module):
    clashes = sorted(set(parameter_fields(module)) & RESERVED_PARAMETER_NAMES)
    assert not clashes, f"parameterNodeWrapper reserves {clashes}"


@each_module
def test_bound_widgets_can_be_connected_to_their_field_type(module):
    # connectGui raises at run time when no connector handles (widget class, field type).
    fields, widgets = parameter_fields(module), ui_widgets(module)
    for parameter, names in parameter_bindings(module).items():
        kind = field_type(fields[parameter])
        assert kind in CONNECTABLE, f"{parameter!r}: no GUI connector for type {kind}"
        for name in names:
            assert widgets[name].get("class") in CONNECTABLE[kind], (
                f"{name} ({widgets[name].get('class')}) cannot be bound to {parameter}: {kind}"
            )


@each_module
def test_fields_bound_in_code_are_really_bound_in_code(module):
    source = module_source(module)
    widgets = ui_widgets(module)
    for name, widget in module.bound_in_code.items():
        assert widget in widgets
        assert string_property(widgets[widget], "SlicerParameterName") is None
        assert f"self.ui.{widget}" in source
        assert re.search(rf"_parameterNode\.{name}\s*=", source), f"{name} is never written"


@each_module
def test_combo_boxes_bound_to_parameters_have_matching_choices(module):
    # Slicer's QComboBox connector raises unless the field carries Choice([...]).
    fields, widgets = parameter_fields(module), ui_widgets(module)
    for parameter, names in parameter_bindings(module).items():
        for name in names:
            if widgets[name].get("class") != "QComboBox":
                continue
            choice = annotation_call(fields[parameter], "Choice")
            assert choice, f"{parameter!r} is bound to a QComboBox but has no Choice annotation"
            items = [i.findtext("property/string") for i in widgets[name].findall("item")]
            expected = [str(c) for c in choice[0]]
            assert items in ([], expected), f"{name} items {items} != choices {expected}"


@each_module
def test_spin_box_ranges_and_defaults_match_the_parameters(module):
    fields, widgets = parameter_fields(module), ui_widgets(module)
    defaults = {
        item.target.id: ast.literal_eval(item.value)
        for item in top_level_classes(module)[f"{module.name}ParameterNode"].body
        if isinstance(item, ast.AnnAssign)
        and item.value is not None
        and isinstance(item.value, ast.Constant)
    }
    checked = 0
    for parameter, names in parameter_bindings(module).items():
        for name in names:
            widget = widgets[name]
            kind = {"QSpinBox": "number", "QDoubleSpinBox": "double"}.get(widget.get("class"))
            if kind is None:
                continue
            bounds = annotation_call(fields[parameter], "WithinRange")
            assert bounds, f"{parameter!r} is bound to a spin box but has no WithinRange"
            ui_range = [
                float(widget.findtext(f"property[@name='{end}']/{kind}"))
                for end in ("minimum", "maximum")
            ]
            assert ui_range == [float(b) for b in bounds], f"{name}: {ui_range} != {bounds}"
            value = widget.findtext(f"property[@name='value']/{kind}")
            if value is not None and parameter in defaults:
                assert float(value) == float(defaults[parameter]), f"{name} starts at {value}"
            checked += 1
    if module is LIVERXAI:
        assert checked == 1
    if module is TRAINING:
        assert checked == 5


@each_module
def test_module_file_references_only_existing_widgets(module):
    referenced = set(re.findall(r"self\.ui\.(\w+)", module_source(module)))
    assert referenced, f"{module.module_py.name} uses no self.ui widgets"
    missing = sorted(referenced - set(ui_widgets(module)))
    assert not missing, f"{module.module_py.name} references widgets not in the .ui: {missing}"


@each_module
def test_node_selectors_follow_the_scene(module):
    connections = {
        (c.findtext("sender"), c.findtext("signal"), c.findtext("receiver"), c.findtext("slot"))
        for c in ui_root(module).iter("connection")
    }
    for name, widget in ui_widgets(module).items():
        if widget.get("class") == "qMRMLNodeComboBox":
            expected = (
                module.name,
                "mrmlSceneChanged(vtkMRMLScene*)",
                name,
                "setMRMLScene(vtkMRMLScene*)",
            )
            assert expected in connections, f"{name} is not given the scene"


@each_module
def test_buttons_and_sections_start_in_the_documented_state(module):
    widgets = ui_widgets(module)
    for name in module.initially_disabled:
        assert widgets[name].findtext("property[@name='enabled']/bool") == "false", name
    for name in module.initially_collapsed:
        assert widgets[name].findtext("property[@name='collapsed']/bool") == "true", name


def test_segment_and_explain_button_text():
    assert string_property(ui_widgets(LIVERXAI)["applyButton"], "text") == "Segment && Explain"


def test_training_metrics_box_is_read_only():
    widget = ui_widgets(TRAINING)["metricsTextEdit"]
    assert widget.findtext("property[@name='readOnly']/bool") == "true"


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
    test_methods = {
        n.name for n in classes[f"{module.name}Test"].body if isinstance(n, ast.FunctionDef)
    }
    assert "runTest" in test_methods
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
