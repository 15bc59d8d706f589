"""What the checks of the Slicer modules' files know about each module, and how they read them.

Shared by ``test_module_ui.py`` (the .ui files and parameter bindings) and
``test_module_files.py`` (module files, CMake, metadata). The module files import Slicer, so
they are read with ``ast`` rather than imported. Every check that applies to any scripted module
runs for each entry of ``MODULES`` (``@each_module``).
"""

from __future__ import annotations

import ast
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
    # The Widget's work lives in LiverXAILib/slicer: the panel class mixed into the Widget and
    # the files of panel, parameter node and self-test (the module file stays thin).
    panel: str = ""
    library_files: tuple[str, ...] = ()

    @property
    def folder(self) -> Path:
        return ROOT / self.name

    @property
    def module_py(self) -> Path:
        return self.folder / f"{self.name}.py"

    @property
    def implementation_files(self) -> list[Path]:
        """The module file and the library files that hold its Widget's work."""
        library = ROOT / "LiverXAI" / "LiverXAILib" / "slicer"
        return [self.module_py, *(library / name for name in self.library_files)]

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
        "gradCamCheckBox": "QCheckBox",
        "gradCamPlusPlusCheckBox": "QCheckBox",
        "integratedGradientsCheckBox": "QCheckBox",
        "uncertaintySelector": "QComboBox",
        "camLayerSelector": "QComboBox",
        "igStepsSpinBox": "QSpinBox",
        "igBaselineSelector": "QComboBox",
        "reviewTable": "QTableWidget",
        "openReportButton": "QPushButton",
        "downloadModelButton": "QPushButton",
        "importModelButton": "QPushButton",
        "volumeRenderingCheckBox": "QCheckBox",
        "ctVolumeRenderingCheckBox": "QCheckBox",
        "exportNiftiCheckBox": "QCheckBox",
        "exportNrrdCheckBox": "QCheckBox",
        "exportStlCheckBox": "QCheckBox",
        "exportObjCheckBox": "QCheckBox",
        "exportDicomSegCheckBox": "QCheckBox",
        "exportFolderLineEdit": "QLineEdit",
        "exportFolderButton": "QToolButton",
        "exportButton": "QPushButton",
    },
    bound_in_code={"model": "modelSelector", "camLayer": "camLayerSelector"},
    initially_disabled=("cancelButton", "openReportButton", "downloadModelButton", "exportButton"),
    initially_collapsed=("advancedCollapsibleButton",),
    panel="SegmentExplainPanel",
    library_files=(
        "parameter_node_panel.py",
        "segment_panel.py",
        "segment_parameters.py",
        "segment_self_test.py",
    ),
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
        "augmentContrastCheckBox": "QCheckBox",
        "augmentGammaCheckBox": "QCheckBox",
        "augmentLesionCheckBox": "QCheckBox",
        "registerCheckBox": "QCheckBox",
        "registerNameLineEdit": "QLineEdit",
        "resumeCheckBox": "QCheckBox",
        "keepGoingCheckBox": "QCheckBox",
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
    panel="TrainingPanel",
    library_files=(
        "parameter_node_panel.py",
        "training_panel.py",
        "training_parameters.py",
        "training_self_test.py",
    ),
)

MODULES = [LIVERXAI, TRAINING]
each_module = pytest.mark.parametrize("module", MODULES, ids=str)


def ui_root(module: ModuleSpec) -> ET.Element:
    return ET.parse(module.ui_file).getroot()


def ui_widgets(module: ModuleSpec) -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ui_root(module).iter("widget")}


def string_property(widget: ET.Element, name: str) -> str | None:
    prop = widget.find(f"property[@name='{name}']")
    return None if prop is None else prop.findtext("string")


def module_source(module: ModuleSpec) -> str:
    """The module file alone."""
    return module.module_py.read_text(encoding="utf-8")


def widget_source(module: ModuleSpec) -> str:
    """The module file and the library files of its Widget, one after the other."""
    return "\n\n".join(path.read_text(encoding="utf-8") for path in module.implementation_files)


def module_tree(module: ModuleSpec) -> ast.Module:
    return ast.parse(module_source(module))


def top_level_classes(module: ModuleSpec) -> dict[str, ast.ClassDef]:
    """Classes of the module file and of its Widget's library files, by name."""
    tree = ast.parse(widget_source(module))
    return {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
