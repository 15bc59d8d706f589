"""The Slicer smoke script (``Testing/Slicer/smoke.py``) without Slicer.

The script itself needs the Slicer application (Qt widgets, the module panels, ``slicer.app``),
which CI does not have, so here: it parses, it imports without Slicer or Qt, the widgets and
widget attributes it uses exist in the .ui files and module files, and its helpers work
(options, the report and exit status, geometry and box comparison, the tiny training case
written in LiTS layout and found by the trainer's data discovery, waiting with a timeout).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys

import numpy as np
import pytest
from module_specs import LIVERXAI, ROOT, TRAINING, ui_widgets, widget_source

SMOKE = ROOT / "Testing" / "Slicer" / "smoke.py"


@pytest.fixture(scope="module")
def smoke():
    spec = importlib.util.spec_from_file_location("liverxai_smoke", SMOKE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _functions() -> dict[str, ast.FunctionDef]:
    tree = ast.parse(SMOKE.read_text(encoding="utf-8"), feature_version=(3, 10))
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_parses_and_imports_nothing_of_slicer_at_the_top():
    tree = ast.parse(SMOKE.read_text(encoding="utf-8"), feature_version=(3, 10))
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            top.add((node.module or "").split(".")[0])
    assert not top & {"slicer", "qt", "ctk", "vtk", "LiverXAILib"}
    assert "main" in _functions() and "run" in _functions()


@pytest.mark.parametrize(
    ("function", "module"),
    [("check_segment_and_explain", LIVERXAI), ("check_training", TRAINING)],
)
def test_uses_widgets_and_attributes_the_modules_have(function, module):
    source = ast.unparse(_functions()[function])
    used = set(re.findall(r"\bui\.(\w+)", source))
    assert used and not used - set(ui_widgets(module)), used - set(ui_widgets(module))
    attributes = set(re.findall(r"\bwidget\.(\w+)", source)) - {"ui", "parent", "enter"}
    module_text = widget_source(module)
    for name in attributes:
        assert f"self.{name} =" in module_text, f"{module.name}Widget has no {name}"


def test_options(smoke, tmp_path):
    options = smoke.parse_arguments(["--ignored-by-us", "--out", str(tmp_path)], {})
    assert (options.out, options.device, options.skip_training) == (tmp_path, "auto", False)
    environ = {"LIVERXAI_SMOKE_DEVICE": "cpu", "LIVERXAI_SMOKE_SKIP_TRAINING": "1"}
    options = smoke.parse_arguments([], environ)
    assert options.device == "cpu" and options.skip_training and options.out.is_dir()
    with pytest.raises(SystemExit, match="--device"):
        smoke.parse_arguments(["--device", "tpu"], {})


def test_report_and_exit_status(smoke, tmp_path):
    report = smoke.Report()
    assert report.exit_code == 1  # no check ran: not a pass
    assert report.check("first", True)
    report.note("took 5 s")
    assert report.exit_code == 0
    assert not report.check("second | with a bar", False, "labels [0, 3]\nmore")
    assert report.exit_code == 1 and [c["check"] for c in report.failed] == ["second | with a bar"]
    report.write(tmp_path)
    data = json.loads((tmp_path / "smoke-report.json").read_text())
    assert data["exit_code"] == 1 and len(data["checks"]) == 2 and data["notes"] == ["took 5 s"]
    markdown = (tmp_path / "smoke-report.md").read_text()
    assert "1 of 2 checks passed" in markdown and "| FAIL | labels [0, 3] more |" in markdown


def test_geometry_and_box(smoke):
    matrix = np.diag([-0.8, -0.8, 2.5, 1.0])
    matrix[:3, 3] = [100.0, 80.0, -40.0]
    assert smoke.geometry_problem(matrix, (10, 12, 8), matrix.copy(), (10, 12, 8)) == ""
    assert "dimensions" in smoke.geometry_problem(matrix, (10, 12, 8), matrix, (10, 12, 9))
    shifted = matrix.copy()
    shifted[2, 3] += 1.25
    assert "differs by up to 1.25" in smoke.geometry_problem(
        matrix, (10, 12, 8), shifted, (10, 12, 8)
    )
    corners = smoke.box_corners(matrix, (10, 12, 8))
    assert corners.shape == (8, 3)
    assert corners[:, 2].min() == pytest.approx(-40.0 - 1.25)
    assert corners[:, 2].max() == pytest.approx(-40.0 + 7.5 * 2.5)
    # the same box on a coarser grid (as a heatmap on the network's grid)
    coarse = matrix.copy()
    coarse[:3, :3] = matrix[:3, :3] @ np.diag([2.0, 2.0, 1.0])
    coarse[:3, 3] = matrix[:3, 3] + matrix[:3, :3] @ [0.5, 0.5, 0.0]
    np.testing.assert_allclose(smoke.box_corners(coarse, (5, 6, 8)), corners, atol=1e-6)


def test_crop_keeps_the_liver_slices_and_their_position(smoke):
    ct = np.arange(112 * 4 * 5, dtype=np.int16).reshape(112, 4, 5)
    labels = np.zeros(ct.shape, np.uint8)
    labels[50:60, 1:3, 1:3] = 1
    matrix = np.diag([0.8, 0.8, 3.0, 1.0])
    matrix[:3, 3] = [1.0, 2.0, 3.0]
    small_ct, small_labels, small_matrix = smoke.crop_to_label(ct, labels, matrix, margin=2)
    assert small_ct.shape[0] == 14 and small_labels[2:12].any(axis=(1, 2)).all()
    np.testing.assert_array_equal(small_ct[0], ct[48])
    np.testing.assert_allclose(small_matrix @ [0, 0, 0, 1], matrix @ [0, 0, 48, 1])
    labels[10:100] = 1  # a long liver: at most MAX_TRAINING_SLICES, centred
    small_ct, small_labels, _ = smoke.crop_to_label(ct, labels, matrix)
    assert small_ct.shape[0] == smoke.MAX_TRAINING_SLICES
    np.testing.assert_array_equal(small_ct[0], ct[(8 + 101) // 2 - 12])
    with pytest.raises(ValueError, match="empty"):
        smoke.crop_to_label(ct, np.zeros_like(labels), matrix)


def test_training_case_in_lits_layout_is_found_by_the_trainer(smoke, tmp_path):
    from LiverXAILib.io.volumes import read_volume
    from LiverXAILib.training.cases import discover_cases

    labels = np.zeros((6, 16, 16), np.uint8)
    labels[2:4, 4:10, 4:10] = 1
    labels[3, 6:8, 6:8] = 2
    ct = np.full(labels.shape, -100, np.int16)
    matrix = np.diag([-0.7, -0.7, 3.0, 1.0])
    folder = smoke.write_training_cases(tmp_path / "data", ct, labels, matrix)
    cases = discover_cases(folder)
    assert [c.case_id for c in cases] == ["volume-1", "volume-2"]
    assert len({c.patient for c in cases}) == 2
    read_labels, read_matrix = read_volume(cases[1].label)
    np.testing.assert_array_equal(read_labels, labels)
    np.testing.assert_allclose(read_matrix, matrix, atol=1e-6)


def test_wait_until_gives_up_at_the_timeout(smoke):
    now = [0.0]
    idled = []
    assert not smoke.wait_until(
        lambda: False,
        1.0,
        lambda: idled.append(1),
        0.3,
        lambda: now[0],
        lambda s: now.__setitem__(0, now[0] + s),  # fmt: skip
    )
    assert len(idled) == 4
    assert smoke.wait_until(lambda: True, 0.0)
