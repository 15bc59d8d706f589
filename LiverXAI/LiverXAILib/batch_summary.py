"""The summary of a batch run: one row per case, written as ``summary.csv`` (atomically),
printed as a table by the CLI and added to the scene as a table node by the Logic.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_path

SUMMARY_FILE = "summary.csv"
SUMMARY_COLUMNS = (
    "case",
    "liver_ml",
    "tumor_ml",
    "tumor_count",
    "largest_tumor_diameter_mm",
    "review_slices",
    "seconds",
    "status",
    "reason",
    "output_folder",
)
NUMBER_COLUMNS = {  # column → (decimals, unit, description)
    "liver_ml": (2, "mL", "Liver volume, tumour included"),
    "tumor_ml": (2, "mL", "Tumour volume"),
    "tumor_count": (0, "", "Number of tumours"),
    "largest_tumor_diameter_mm": (1, "mm", "Longest axial diameter of the largest tumour"),
    "review_slices": (0, "", "Number of distinct slices in the review list"),
    "seconds": (1, "s", "Time to read, segment, explain and write the case"),
}
# Statuses: "pending" (not reached yet), "done", "skipped" (already done by an earlier run),
# "failed" (see reason), "cancelled" (the run was cancelled during or before the case).
DONE, SKIPPED, FAILED, CANCELLED, PENDING = "done", "skipped", "failed", "cancelled", "pending"


def empty_row(case: str, status: str = PENDING, reason: str = "") -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(SUMMARY_COLUMNS)
    row.update(case=case, status=status, reason=reason, output_folder="")
    return row


def row_from_report(
    case: str, report: dict[str, Any], status: str, seconds: float | None, reason: str = ""
) -> dict[str, Any]:
    """A summary row from a case's JSON report (``build_report``'s dictionary)."""
    diameters = [lesion.get("longest_axial_diameter_mm") for lesion in report.get("lesions") or []]
    diameters = [d for d in diameters if isinstance(d, int | float) and math.isfinite(d)]
    # reviewSlices: the input slices of the review list, each once (several reasons may name
    # the same slice); the count is the number of slices a reader has to look at.
    review = report.get("reviewSlices")
    if review is None:
        review = [item.get("slice") for item in report.get("reviewItems") or []]
    return {
        "case": case,
        "liver_ml": report.get("liverVolumeMl"),
        "tumor_ml": report.get("tumorVolumeMl"),
        "tumor_count": report.get("tumorCount"),
        "largest_tumor_diameter_mm": max(diameters) if diameters else None,
        "review_slices": len(set(review)),
        "seconds": seconds,
        "status": status,
        "reason": reason,
        "output_folder": case,
    }


def _cell(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if column in NUMBER_COLUMNS:
        decimals = NUMBER_COLUMNS[column][0]
        return str(int(round(value))) if decimals == 0 else f"{float(value):.{decimals}f}"
    return " ".join(str(value).split())  # one line per row


def summary_csv(rows: Iterable[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    for row in rows:
        writer.writerow([_cell(column, row.get(column)) for column in SUMMARY_COLUMNS])
    return buffer.getvalue()


def write_summary(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write ``summary.csv`` atomically: readers see the previous or the new table, whole."""
    text = summary_csv(rows)
    with atomic_path(path, suffix=".csv") as temporary:
        temporary.write_text(text, encoding="utf-8")


@dataclass
class BatchResult:
    """What a batch run did: one summary row per case, in input order."""

    output_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    cancelled: bool = False
    # SegmentAndExplainResult by case name, for cases left in the scene (keep_in_scene)
    results: dict[str, Any] = field(default_factory=dict)
    tableNode: Any = None  # the summary's table node, once the Logic has added it

    @property
    def summary_path(self) -> Path:
        return self.output_dir / SUMMARY_FILE

    def count(self, status: str) -> int:
        return sum(row["status"] == status for row in self.rows)

    @property
    def ok(self) -> bool:
        """Every case was segmented now or by an earlier run (none failed or cancelled)."""
        return all(row["status"] in (DONE, SKIPPED) for row in self.rows)

    def describe(self) -> str:
        """One line, e.g. "3 cases: 2 done, 0 skipped, 1 failed"."""
        parts = [f"{self.count(s)} {s}" for s in (DONE, SKIPPED, FAILED)]
        if self.count(CANCELLED):
            parts.append(f"{self.count(CANCELLED)} cancelled")
        return f"{len(self.rows)} case{'s' if len(self.rows) != 1 else ''}: " + ", ".join(parts)

    def format_table(self) -> str:
        """The summary as fixed-width text (the CLI prints it); reasons listed below it."""
        headers = ("case", "liver mL", "tumour mL", "tumours", "largest mm", "review", "s")
        columns = SUMMARY_COLUMNS[:7]
        lines = [[row["case"], *(_cell(c, row[c]) for c in columns[1:])] for row in self.rows]
        table = [list(headers), *lines]
        for line, row in zip(table, [None, *self.rows], strict=True):
            line.append("status" if row is None else row["status"])
        widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
        text = [
            "  ".join(
                cell.ljust(width) if i in (0, len(line) - 1) else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
            for line in table
        ]
        text += [f"{row['case']}: {row['reason']}" for row in self.rows if row["status"] == FAILED]
        return "\n".join(text)

    def to_table_node(self, scene: Any, name: str = "LiverXAI batch summary") -> Any:
        """A new vtkMRMLTableNode with the summary's columns (numbers as numbers, empty
        cells as NaN), units and descriptions."""
        import vtk

        node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
        node.SetUseColumnTitleAsColumnHeader(True)
        for column in SUMMARY_COLUMNS:
            if column in NUMBER_COLUMNS:
                array = vtk.vtkDoubleArray()
                for row in self.rows:
                    value = row.get(column)
                    array.InsertNextValue(float("nan") if value is None else float(value))
            else:
                array = vtk.vtkStringArray()
                for row in self.rows:
                    array.InsertNextValue(_cell(column, row.get(column)))
            array.SetName(column)
            node.AddColumn(array)
            if column in NUMBER_COLUMNS:
                _decimals, unit, description = NUMBER_COLUMNS[column]
                node.SetColumnUnitLabel(column, unit)
                node.SetColumnDescription(column, description)
        node.SetAttribute("LiverXAI.BatchOutputFolder", str(self.output_dir))
        node.Modified()
        return node
