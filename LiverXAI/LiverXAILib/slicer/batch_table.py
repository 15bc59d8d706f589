"""A batch run's summary as a table node in the scene, with units and descriptions."""

from __future__ import annotations

from typing import Any

import vtk

from ..batch.summary import NUMBER_COLUMNS, SUMMARY_COLUMNS, BatchResult, cell_text


def summary_table_node(
    summary: BatchResult, scene: Any, name: str = "LiverXAI batch summary"
) -> Any:
    """A new vtkMRMLTableNode with a batch run's summary's columns (numbers as numbers, empty
    cells as NaN), units and descriptions."""
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    node.SetUseColumnTitleAsColumnHeader(True)
    for column in SUMMARY_COLUMNS:
        if column in NUMBER_COLUMNS:
            array = vtk.vtkDoubleArray()
            for row in summary.rows:
                value = row.get(column)
                array.InsertNextValue(float("nan") if value is None else float(value))
        else:
            array = vtk.vtkStringArray()
            for row in summary.rows:
                array.InsertNextValue(cell_text(column, row.get(column)))
        array.SetName(column)
        node.AddColumn(array)
        if column in NUMBER_COLUMNS:
            _decimals, unit, description = NUMBER_COLUMNS[column]
            node.SetColumnUnitLabel(column, unit)
            node.SetColumnDescription(column, description)
    node.SetAttribute("LiverXAI.BatchOutputFolder", str(summary.output_dir))
    node.Modified()
    return node
