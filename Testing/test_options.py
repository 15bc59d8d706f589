"""The one options object of Segment & Explain: defaults, changes, validation, and the Slicer
module's parameter node read into it."""

from __future__ import annotations

import ast
import dataclasses
import re

import pytest
from LiverXAILib import SegmentAndExplainOptions, constants
from LiverXAILib.constants import DEFAULT_MODEL
from LiverXAILib.options import CLASS_FIELDS, EXPORT_FIELDS, METHOD_FIELDS, OUTPUT_OPTIONS
from module_specs import LIVERXAI, top_level_classes


def parameter_node_defaults() -> dict[str, object]:
    """The module's ``LiverXAIParameterNode`` fields with their defaults, read from its source
    (the wrapper itself needs the Slicer application)."""
    node = top_level_classes(LIVERXAI)["LiverXAIParameterNode"]
    defaults = {}
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            value = item.value
            if isinstance(value, ast.Name):  # a shared constant, e.g. DEFAULT_MODEL
                defaults[item.target.id] = getattr(constants, value.id)
            else:
                defaults[item.target.id] = ast.literal_eval(value) if value is not None else None
    return defaults


def test_defaults_are_the_modules_defaults():
    options = SegmentAndExplainOptions()
    assert options.model == DEFAULT_MODEL
    assert options.explainClasses == ("liver", "tumor")
    assert options.explainMethods == ("gradcam",)
    assert options.validate() == options


def test_lists_become_tuples_and_replace_gives_a_changed_copy():
    options = SegmentAndExplainOptions(explainClasses=["liver"], explainMethods="gradcam++")
    assert options.explainClasses == ("liver",) and options.explainMethods == ("gradcam++",)
    changed = options.replace(uncertainty="none")
    assert changed.uncertainty == "none" and options.uncertainty == "tta"
    assert hash(changed) != hash(options)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"batchSize": 0}, "batchSize=0"),
        ({"integratedGradientsSteps": 1.5}, "integratedGradientsSteps=1.5"),
        ({"integratedGradientsBaseline": float("nan")}, "integratedGradientsBaseline=nan"),
        ({"explainClasses": ("spleen",)}, "Cannot explain ['spleen']"),
        ({"explainMethods": ("lime",)}, "unknown explanation method(s) ['lime']"),
        ({"uncertainty": "ensemble"}, "unknown uncertainty 'ensemble'"),
        ({"existingResults": "overwrite"}, "existingResults='overwrite'"),
        ({"exports": ("png",)}, "Cannot export ['png']"),
    ],
)
def test_validate_names_the_option_out_of_range(changes, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        SegmentAndExplainOptions(**changes).validate()


def test_unknown_option_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"Unknown Segment & Explain option\(s\) \['uncertainy'\]"):
        SegmentAndExplainOptions().replace(uncertainy="none")


def test_validate_drops_repeated_methods():
    options = SegmentAndExplainOptions(explainMethods=("gradcam", "gradcam")).validate()
    assert options.explainMethods == ("gradcam",)


def test_output_settings_are_the_options_that_change_outputs():
    settings = SegmentAndExplainOptions().outputSettings()
    assert tuple(settings) == OUTPUT_OPTIONS
    assert "device" not in settings and "batchSize" not in settings


def test_every_field_of_the_parameter_node_is_read_into_the_options():
    fields = parameter_node_defaults()
    read_by_hand = {"inputVolume", "exportFolder"}  # the node itself and the export target
    mapped = {f.name for f in dataclasses.fields(SegmentAndExplainOptions)}
    mapped |= set(CLASS_FIELDS.values()) | set(METHOD_FIELDS.values()) | set(EXPORT_FIELDS.values())
    assert set(fields) - read_by_hand <= mapped


def test_the_parameter_node_defaults_give_the_options_defaults():
    params = type("Params", (), parameter_node_defaults())()
    options = SegmentAndExplainOptions.fromParameterNode(params)
    expected = SegmentAndExplainOptions(exports=("nifti",))  # the panel's export default
    assert options == expected


def test_parameter_node_choices_become_option_values():
    values = parameter_node_defaults()
    values.update(
        explainLiver=False, methodGradCam=False, methodIntegratedGradients=True, camLayer="",
        integratedGradientsBaseline="blurred", exportStl=True, exportNifti=False,
    )  # fmt: skip
    params = type("Params", (), values)()
    options = SegmentAndExplainOptions.fromParameterNode(params, existingResults="replace")
    assert options.explainClasses == ("tumor",)
    assert options.explainMethods == ("integrated-gradients",)
    assert options.integratedGradientsBaseline == "blurred"
    assert options.camLayer is None and options.exports == ("stl",)
    assert options.existingResults == "replace"
    values.update(methodIntegratedGradients=False)  # no method: nothing is explained
    assert SegmentAndExplainOptions.fromParameterNode(type("P", (), values)()).explainClasses == ()
