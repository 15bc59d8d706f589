"""Checks of the Slicer modules' .ui files and their parameter bindings; no Qt needed.

The module files import Slicer, so they are read with ``ast`` rather than imported
(``module_specs``). Every check that applies to any scripted module runs for each entry of
``MODULES``; a few check what only one module has.
"""

from __future__ import annotations

import ast
import re

from module_specs import (
    LIVERXAI,
    TRAINING,
    ModuleSpec,
    each_module,
    string_property,
    top_level_classes,
    ui_root,
    ui_widgets,
    widget_source,
)

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
def parameter_bindings(module: ModuleSpec) -> dict[str, list[str]]:
    """SlicerParameterName -> names of the widgets that carry it."""
    bindings: dict[str, list[str]] = {}
    for name, widget in ui_widgets(module).items():
        parameter = string_property(widget, "SlicerParameterName")
        if parameter is not None:
            bindings.setdefault(parameter, []).append(name)
    return bindings


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
    source = widget_source(module)
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
        assert checked == 2  # batch size, Integrated Gradients steps
    if module is TRAINING:
        assert checked == 5


@each_module
def test_module_file_references_only_existing_widgets(module):
    referenced = set(re.findall(r"self\.ui\.(\w+)", widget_source(module)))
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
