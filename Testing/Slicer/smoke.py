"""LiverXAI smoke test in the real 3D Slicer application (5.10 or later): both modules through
their GUI objects, as a user would click them.

From the repository root (modules from the source tree, or drop the module paths when the
extension is installed)::

    Slicer --no-main-window --additional-module-paths "$PWD/LiverXAI" "$PWD/LiverXAITraining" \\
        --python-script Testing/Slicer/smoke.py --out /tmp/liverxai-smoke

or in Slicer's Python console: ``exec(open("/path/to/Testing/Slicer/smoke.py").read())``.
Options (also as environment variables): ``--out`` (LIVERXAI_SMOKE_OUT; default a new temporary
folder), ``--device auto|cpu|cuda`` (LIVERXAI_SMOKE_DEVICE), ``--skip-training``
(LIVERXAI_SMOKE_SKIP_TRAINING=1), ``--timeout`` seconds per training or evaluation run.

1. The Slicer version and the Python packages (``dependency_flow``: installs after asking).
2. Segment & Explain: loads the bundled sample CT, sets the input, model, device, classes and
   methods through the panel's controls and clicks **Segment & Explain**; checks the labelmap
   has the input's geometry and only labels 0/1/2 with liver, each heatmap covers the CT's box
   with values in [0, 1], the segmentation has liver and tumour segments with closed surfaces,
   the results text and review table are filled; saves the module panel and the views.
3. Training: a tiny LiTS-layout data set made from the sample and the labelmap just produced
   (the liver slices plus a margin, at most 24 slices, twice as two patients), the Training
   panel's controls set (U-Net, 128, one epoch, no registration) and **Train** clicked; checks
   the run ends with best.pt, one history row and the curves chart; then **Evaluate** (all
   cases) and the metrics table; saves the Training panel and the plot view.

Writes ``smoke-report.json`` and ``smoke-report.md`` into the output folder with every check,
and exits 1 when one failed (0 otherwise) when run with ``--python-script``. The helpers above
``run()`` need neither Qt nor Slicer; ``Testing/test_slicer_smoke.py`` tests them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_NAME = "TotalSegmentatorExampleCT"
MAX_TRAINING_SLICES = 24


# --- helpers without Qt or Slicer ----------------------------------------------------------------
@dataclass
class Options:
    out: Path
    device: str = "auto"
    skip_training: bool = False
    timeout: float = 1800.0


def parse_arguments(argv: Sequence[str], environ: dict[str, str]) -> Options:
    """Options from the command line (unknown arguments, e.g. Slicer's, are ignored) and the
    environment."""
    parser = argparse.ArgumentParser(prog="smoke.py", add_help=False)
    parser.add_argument("--out", default=environ.get("LIVERXAI_SMOKE_OUT"))
    parser.add_argument("--device", default=environ.get("LIVERXAI_SMOKE_DEVICE", "auto"))
    parser.add_argument(
        "--skip-training",
        action="store_true",
        default=environ.get("LIVERXAI_SMOKE_SKIP_TRAINING") == "1",
    )
    parser.add_argument("--timeout", type=float, default=1800.0)
    args, _ = parser.parse_known_args(list(argv))
    if args.device not in ("auto", "cpu", "cuda"):
        raise SystemExit(f"--device must be auto, cpu or cuda, not {args.device!r}")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="liverxai-smoke-"))
    return Options(out, args.device, args.skip_training, args.timeout)


@dataclass
class Report:
    """Every check with its outcome; written as JSON and markdown."""

    checks: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"[NOTE] {text}")

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append({"check": name, "ok": bool(ok), "detail": detail})
        print(f"[{'PASS' if ok else 'FAIL'}] {name}" + (f": {detail}" if detail else ""))
        return bool(ok)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["ok"]]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or not self.checks else 0

    def markdown(self) -> str:
        lines = ["| check | result | detail |", "|---|---|---|"]
        for c in self.checks:
            detail = c["detail"].replace("|", "/").replace("\n", " ")
            lines.append(f"| {c['check']} | {'pass' if c['ok'] else 'FAIL'} | {detail} |")
        summary = f"{len(self.checks) - len(self.failed)} of {len(self.checks)} checks passed"
        notes = [f"- {n}" for n in self.notes]
        return "\n".join([f"# LiverXAI smoke test: {summary}", "", *lines, "", *notes, ""])

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        data = {
            "checks": self.checks,
            "notes": self.notes,
            "files": self.files,
            "exit_code": self.exit_code,
        }
        (folder / "smoke-report.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
        (folder / "smoke-report.md").write_text(self.markdown(), encoding="utf-8")


def geometry_problem(
    reference: np.ndarray, reference_dims: Sequence[int], other: np.ndarray, dims: Sequence[int]
) -> str:
    """ "" when two volumes share IJK-to-RAS matrix and dimensions, else what differs."""
    if tuple(dims) != tuple(reference_dims):
        return f"dimensions {tuple(dims)} != {tuple(reference_dims)}"
    if not np.allclose(other, reference, atol=1e-4):
        return f"IJK-to-RAS differs by up to {np.abs(other - reference).max():.3g}"
    return ""


def box_corners(ijk_to_ras: np.ndarray, dims: Sequence[int]) -> np.ndarray:
    """The 8 RAS corners of a volume's box (voxel edges, not centres), sorted."""
    corners = [
        ijk_to_ras @ [i, j, k, 1.0]
        for i in (-0.5, dims[0] - 0.5)
        for j in (-0.5, dims[1] - 0.5)
        for k in (-0.5, dims[2] - 0.5)
    ]
    return np.array(sorted(tuple(np.round(c[:3], 3)) for c in corners))


def crop_to_label(
    ct: np.ndarray,
    labels: np.ndarray,
    ijk_to_ras: np.ndarray,
    max_slices: int = MAX_TRAINING_SLICES,
    margin: int = 2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The slices (array axis 0 = K) around the labelled ones, at most ``max_slices`` centred on
    them, and the IJK-to-RAS matrix of the crop."""
    labelled = np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))
    if labelled.size == 0:
        raise ValueError("The labelmap is empty: nothing to train on.")
    first = max(int(labelled[0]) - margin, 0)
    last = min(int(labelled[-1]) + margin, labels.shape[0] - 1)
    if last - first + 1 > max_slices:
        centre = (first + last) // 2
        first = max(centre - max_slices // 2, 0)
        last = min(first + max_slices - 1, labels.shape[0] - 1)
    matrix = np.array(ijk_to_ras, dtype=float)
    matrix[:3, 3] = matrix[:3, 3] + matrix[:3, 2] * first
    return ct[first : last + 1].copy(), labels[first : last + 1].copy(), matrix


def write_training_cases(
    folder: Path, ct: np.ndarray, labels: np.ndarray, ijk_to_ras: np.ndarray, copies: int = 2
) -> Path:
    """LiTS layout (volume-N / segmentation-N) with ``copies`` patients of the same case."""
    from LiverXAILib.io.volumes import write_volume

    folder.mkdir(parents=True, exist_ok=True)
    for number in range(1, copies + 1):
        write_volume(folder / f"volume-{number}.nii.gz", ct.astype(np.int16), ijk_to_ras)
        write_volume(folder / f"segmentation-{number}.nii.gz", labels.astype(np.uint8), ijk_to_ras)
    return folder


def wait_until(
    done: Callable[[], bool],
    timeout: float,
    idle: Callable[[], None] = lambda: None,
    interval: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Call ``idle`` (Slicer: processEvents, so the module's timer runs) until ``done()``."""
    deadline = clock() + timeout
    while not done():
        if clock() > deadline:
            return False
        idle()
        sleep(interval)
    return True


# --- in Slicer ---------------------------------------------------------------------------------
def _matrix(node: Any) -> np.ndarray:
    import slicer
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def _dims(node: Any) -> tuple[int, int, int]:
    return tuple(node.GetImageData().GetDimensions())


def _save_widget(widget: Any, path: Path, report: Report) -> None:
    """Save a widget's look (OpenGL views included, through CTK) as PNG."""
    import ctk

    try:
        if not widget.isVisible():
            widget.resize(480, 1000)
        if not ctk.ctkWidgetsUtils.grabWidget(widget).save(str(path)):
            raise OSError("QImage.save returned False")
        report.files.append(str(path))
    except Exception as error:  # a screenshot is a record, not a check of LiverXAI
        report.note(f"screenshot {path.name} not saved: {error}")


def _save_views(out: Path, name: str, report: Report) -> None:
    import slicer

    manager = slicer.app.layoutManager()
    if manager is None:  # --no-main-window: no view widgets
        report.note(f"{name} views not saved: no layout manager (--no-main-window)")
        return
    slicer.util.forceRenderAllViews()
    slicer.app.processEvents()
    _save_widget(manager.viewport(), out / f"{name}-views.png", report)


def _select(combo: Any, text: str) -> None:
    index = combo.findText(text)
    if index < 0:
        index = combo.findData(text)
    if index < 0:
        raise ValueError(f"{combo.objectName} has no item {text!r}")
    combo.currentIndex = index


def check_segment_and_explain(options: Options, report: Report) -> tuple[Any, Any] | None:
    """Segment & Explain on the bundled sample through the panel; returns (CT, result)."""
    import slicer

    slicer.mrmlScene.Clear()  # no earlier results: no replace-or-keep question
    widget = slicer.util.getModuleWidget("LiverXAI")
    widget.enter()
    sample = Path(slicer.modules.liverxai.path).parent / "Resources" / "Data"
    ct = slicer.util.loadVolume(str(sample / f"{SAMPLE_NAME}.nii.gz"))
    before = slicer.util.arrayFromVolume(ct).copy()
    ui = widget.ui
    ui.inputVolumeSelector.setCurrentNode(ct)
    _select(ui.modelSelector, "unet-demo")
    _select(ui.deviceSelector, options.device)
    ui.explainLiverCheckBox.checked = ui.explainTumorCheckBox.checked = True
    ui.gradCamCheckBox.checked = True
    report.check("input bound to the parameter node", widget._parameterNode.inputVolume == ct)
    report.check("Segment & Explain button enabled", ui.applyButton.enabled)
    started = time.monotonic()
    ui.applyButton.click()
    result = widget._lastResult
    if not report.check(
        "Segment & Explain gave a result", result is not None, ui.resultsLabel.text
    ):
        return None
    report.note(f"Segment & Explain: {time.monotonic() - started:.1f} s on {result.device}")
    scene = slicer.mrmlScene
    labelmap = scene.GetNodeByID(result.labelmapNodeID)
    problem = geometry_problem(_matrix(ct), _dims(ct), _matrix(labelmap), _dims(labelmap))
    report.check("labelmap geometry = input geometry", not problem, problem)
    labels = slicer.util.arrayFromVolume(labelmap)
    values = sorted(int(v) for v in np.unique(labels))
    report.check(
        "labels are 0/1/2 with liver", set(values) <= {0, 1, 2} and 1 in values, str(values)
    )
    for name, node_id in result.heatmapNodeIDs.items():
        heatmap = scene.GetNodeByID(node_id)
        array = slicer.util.arrayFromVolume(heatmap)
        same_box = np.allclose(
            box_corners(_matrix(heatmap), _dims(heatmap)),
            box_corners(_matrix(ct), _dims(ct)),
            atol=1e-2,
        )
        in_range = float(array.min()) >= 0.0 and float(array.max()) <= 1.0
        report.check(f"heatmap {name} covers the CT with values in [0, 1]", same_box and in_range)
    report.check(
        "heatmaps for liver and tumour", sorted(result.heatmapNodeIDs) == ["liver", "tumor"]
    )
    segmentation = scene.GetNodeByID(result.segmentationNodeID).GetSegmentation()
    surface = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
    report.check(
        "segmentation: liver and tumour segments, closed surfaces",
        all(segmentation.GetSegmentIdBySegmentName(n) for n in ("liver", "tumor"))
        and segmentation.ContainsRepresentation(surface),
    )
    report.check("results text shown", "Liver:" in ui.resultsLabel.text, ui.resultsLabel.text[:80])
    report.check("review table filled", ui.reviewTable.rowCount == len(result.reviewItems))
    report.check("input CT unchanged", np.array_equal(before, slicer.util.arrayFromVolume(ct)))
    _save_widget(widget.parent, options.out / "segment-and-explain-panel.png", report)
    _save_views(options.out, "segment-and-explain", report)
    return ct, result


def check_training(options: Options, report: Report, ct: Any, result: Any) -> None:
    """One-epoch training and an evaluation on a tiny case, through the Training panel."""
    import slicer

    labels = slicer.util.arrayFromVolume(slicer.mrmlScene.GetNodeByID(result.labelmapNodeID))
    arrays = crop_to_label(slicer.util.arrayFromVolume(ct), labels, _matrix(ct))
    data = write_training_cases(options.out / "training-data", *arrays)
    report.note(f"training data: {arrays[0].shape[0]} slices of the sample, twice ({data})")
    widget = slicer.util.getModuleWidget("LiverXAITraining")
    widget.enter()
    ui = widget.ui
    run = options.out / "training-run"
    ui.dataPathLineEdit.text = str(data)
    ui.outputFolderLineEdit.text = str(run)
    ui.cacheFolderLineEdit.text = str(options.out / "training-cache")
    _select(ui.architectureSelector, "unet")
    _select(ui.inputSizeSelector, "128")
    _select(ui.deviceSelector, options.device)
    ui.epochsSpinBox.value = 1
    ui.batchSizeSpinBox.value = 8
    ui.registerCheckBox.checked = False
    report.check("Train button enabled", ui.trainButton.enabled)
    ui.trainButton.click()
    ended = wait_until(lambda: not widget.logic.busy, options.timeout, slicer.app.processEvents)
    training = widget.logic.training
    detail = training.error_message if training is not None else "not started"
    ok = ended and training is not None and training.returncode == 0
    report.check("one-epoch training finished", ok, detail or ui.statusLabel.text)
    report.check("best.pt written", (run / "best.pt").is_file())
    report.check("curves: one epoch in the table", widget.logic.plots.rowCount == 1)
    report.check(
        "curves chart in the scene", slicer.mrmlScene.IsNodePresent(widget.logic.plots.chartNode)
    )
    _save_widget(widget.parent, options.out / "training-panel.png", report)
    _save_views(options.out, "training", report)
    _select(ui.evaluationPartSelector, "all")
    report.check("Evaluate button enabled", ui.evaluateButton.enabled)
    ui.evaluateButton.click()
    ended = wait_until(lambda: not widget.logic.busy, options.timeout, slicer.app.processEvents)
    table = ui.metricsTextEdit.plainText
    report.check("evaluation finished with a metrics table", ended and "|" in table, table[:120])


def run(options: Options) -> Report:
    """Every step; a step that raises is a failed check, and the next steps still run."""
    import slicer
    from LiverXAILib.slicer import dependency_flow, slicer_version

    report = Report()
    problem = slicer_version.current_problem()
    if not report.check(
        "supported Slicer", problem is None, problem or slicer.app.applicationVersion
    ):
        return report
    outcome = dependency_flow.ensure_in_slicer()
    if not report.check("Python packages", outcome.ready, outcome.reason):
        return report
    try:
        made = check_segment_and_explain(options, report)
    except Exception:
        made = None
        report.check("Segment & Explain step", False, traceback.format_exc())
    if made is not None and not options.skip_training:
        try:
            check_training(options, report, *made)
        except Exception:
            report.check("Training step", False, traceback.format_exc())
    return report


def main() -> int:
    import slicer

    options = parse_arguments(sys.argv[1:], dict(os.environ))
    options.out.mkdir(parents=True, exist_ok=True)
    report = run(options)
    report.write(options.out)
    print(report.markdown())
    print(f"Report and screenshots: {options.out}")
    script = str(getattr(slicer.app.commandOptions(), "pythonScript", "") or "")
    if script.endswith("smoke.py"):  # started with --python-script: the exit status tells
        slicer.util.exit(report.exit_code)
    return report.exit_code


if __name__ == "__main__":
    main()
