"""Training curves in the scene: epoch records → a table node and a plot chart.

One ``vtkMRMLTableNode`` holds a row per finished epoch (columns ``epoch`` — counted from 1
for the reader — ``loss``, ``val_loss``, ``val_liver_dice``, ``val_tumor_dice``; a missing value
is NaN), and one ``vtkMRMLPlotChartNode`` shows a ``vtkMRMLPlotSeriesNode`` per curve. The nodes
are created once and rewritten in place on every update. Works on any MRML scene (Slicer's or a
headless slicer-core scene); Slicer shows the chart with
``slicer.modules.plots.logic().ShowChartInLayout(chartNode)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import vtk

HISTORY_COLUMNS = ("epoch", "loss", "val_loss", "val_liver_dice", "val_tumor_dice")

# column, legend, colour (RGB 0-1), dashed
SERIES = (
    ("loss", "Training loss", (0.12, 0.47, 0.71), False),
    ("val_loss", "Validation loss", (1.0, 0.5, 0.05), False),
    ("val_liver_dice", "Validation liver Dice", (0.17, 0.63, 0.17), True),
    ("val_tumor_dice", "Validation tumour Dice", (0.84, 0.15, 0.16), True),
)

ROLE_ATTRIBUTE = "LiverXAITraining.Role"


def history_rows(history: Sequence[Mapping[str, Any]]) -> list[list[float]]:
    """One row of ``HISTORY_COLUMNS`` per epoch record (epoch shown from 1; missing → NaN)."""
    rows = []
    for record in history:
        row = []
        for column in HISTORY_COLUMNS:
            value = _number(record.get(column))
            if column == "epoch" and not math.isnan(value):
                value += 1  # events count epochs from 0; the curves from 1
            row.append(value)
        rows.append(row)
    return rows


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class TrainingPlots:
    """The table, chart and series nodes for one scene; ``update(history)`` redraws them."""

    def __init__(self, scene: Any, name: str = "LiverXAI training") -> None:
        self.scene = scene
        self.name = name
        self.tableNode: Any = None
        self.chartNode: Any = None
        self.seriesNodes: dict[str, Any] = {}

    def update(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Make the table hold exactly ``history`` (epoch events or history.csv records)."""
        self._ensureNodes()
        rows = history_rows(history)
        table = self.tableNode.GetTable()
        for index, column in enumerate(HISTORY_COLUMNS):
            array = table.GetColumnByName(column)
            array.SetNumberOfTuples(len(rows))
            for row, values in enumerate(rows):
                array.SetValue(row, values[index])
            array.Modified()
        table.Modified()
        self.tableNode.Modified()

    @property
    def rowCount(self) -> int:
        return 0 if self.tableNode is None else self.tableNode.GetNumberOfRows()

    def column(self, name: str) -> list[float]:
        """The values of one table column (for tests and reports)."""
        if self.tableNode is None:
            return []
        array = self.tableNode.GetTable().GetColumnByName(name)
        return [array.GetValue(i) for i in range(array.GetNumberOfTuples())]

    def _present(self, node: Any) -> bool:
        return node is not None and self.scene.IsNodePresent(node)

    def _ensureNodes(self) -> None:
        """Create the nodes once; again only if they were removed (e.g. the scene was closed)."""
        nodes = [self.tableNode, self.chartNode, *self.seriesNodes.values()]
        if len(self.seriesNodes) == len(SERIES) and all(self._present(n) for n in nodes):
            return
        for node in nodes:  # whatever is left of an incomplete set
            if self._present(node):
                self.scene.RemoveNode(node)

        table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{self.name} history")
        table.SetAttribute(ROLE_ATTRIBUTE, "history")
        for column in HISTORY_COLUMNS:
            array = vtk.vtkDoubleArray()
            array.SetName(column)
            table.AddColumn(array)

        chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{self.name} curves")
        chart.SetAttribute(ROLE_ATTRIBUTE, "chart")
        chart.SetTitle("Training curves")
        chart.SetXAxisTitle("epoch")
        chart.SetYAxisTitle("loss / Dice")
        series_nodes = {}
        for column, legend, color, dashed in SERIES:
            series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", legend)
            series.SetAttribute(ROLE_ATTRIBUTE, column)
            series.SetAndObserveTableNodeID(table.GetID())
            series.SetXColumnName("epoch")
            series.SetYColumnName(column)
            series.SetPlotType(series.PlotTypeScatter)  # x from the epoch column, joined by lines
            series.SetMarkerStyle(series.MarkerStyleCircle)
            series.SetMarkerSize(5)
            series.SetLineStyle(series.LineStyleDash if dashed else series.LineStyleSolid)
            series.SetColor(*color)
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
            series_nodes[column] = series
        self.tableNode, self.chartNode, self.seriesNodes = table, chart, series_nodes
