"""The summary of a batch run: one row per case, written as ``summary.csv`` (atomically),
printed as a table by the CLI and added to the scene as a table node by the Logic.

``summary.csv`` describes the whole output folder, not one run: a run replaces the rows of its
own cases and keeps the others (``earlier_rows``), so running a folder and then a few more files
into the same output folder lists them all.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_path
from ..slicer.results import review_item_slices

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
    "warnings",
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
log = logging.getLogger(__name__)


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
        review = [s for item in report.get("reviewItems") or [] for s in review_item_slices(item)]
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
        # the input's and the result's warnings (odd spacing, liver cut off by the scan, ...)
        "warnings": " | ".join(str(text) for text in report.get("warnings") or []),
        "output_folder": case,
    }


def report_path(output_dir: Path, case: str) -> Path:
    return output_dir / case / f"{case}_report.json"


def read_complete_report(output_dir: Path, case: str) -> dict[str, Any] | None:
    """The report of a case folder that is complete, else None. A case folder appears only
    by renaming a finished temporary folder, and its report is the last file written."""
    path = report_path(output_dir, case)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and "liverVolumeMl" in report else None


def report_seconds(report: dict[str, Any]) -> float | None:
    """The seconds the batch run that wrote a case report took for it."""
    return (report.get("batch") or {}).get("seconds")


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def read_summary_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of an existing ``summary.csv``, numbers as numbers and empty cells as None,
    each case once; [] when there is none or it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
        records = list(csv.DictReader(io.StringIO(text)))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        if path.exists():
            log.warning("Cannot read %s (%s): it is rebuilt from the case folders", path, error)
        return []
    rows, seen = [], set()
    for record in records:
        case = (record.get("case") or "").strip()
        if not case or case in seen:
            continue
        seen.add(case)
        row = empty_row(case, str(record.get("status") or PENDING), record.get("reason") or "")
        for column in SUMMARY_COLUMNS[1:]:
            if column in NUMBER_COLUMNS:
                row[column] = _number(record.get(column))
        row["output_folder"] = record.get("output_folder") or ""
        rows.append(row)
    return rows


def natural_key(name: str) -> list[Any]:
    """Sort key putting ``case2`` before ``case10`` (case-insensitive, numbers by value)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower())]


def earlier_rows(output_dir: Path, cases: Sequence[str]) -> list[dict[str, Any]]:
    """The summary rows an output folder already has, for ``merge_rows`` to keep.

    The rows of ``summary.csv`` in their order, then the complete case folders it does not
    list (a lost summary, an older LiverXAI), in natural order. Rows of ``cases`` (this run)
    only hold their place. A case with a complete folder is listed from its report's numbers
    ("done", or its earlier "skipped"), unless its last row says "failed" or "cancelled": that
    row is kept as it was. A "done"/"skipped" row whose folder is gone (removed by the user)
    is dropped; a "pending" row without a folder (a killed run) becomes "cancelled".
    """
    current = set(cases)
    rows = []
    listed = set()
    for row in read_summary_rows(output_dir / SUMMARY_FILE):
        case, status = row["case"], row["status"]
        listed.add(case)
        report = None if case in current else read_complete_report(output_dir, case)
        if case in current or status in (FAILED, CANCELLED):
            rows.append(row)
        elif report is not None:
            kept = status if status in (DONE, SKIPPED) else DONE
            reason = row["reason"] if status == kept else ""
            rows.append(row_from_report(case, report, kept, report_seconds(report), reason))
        elif status == PENDING:
            reason = "not finished: its run was interrupted"
            rows.append({**row, "status": CANCELLED, "reason": reason})
    try:
        folders = sorted(output_dir.iterdir(), key=lambda p: natural_key(p.name))
    except OSError:
        folders = []
    for folder in folders:
        case = folder.name
        if case.startswith(".") or case in listed or case in current or not folder.is_dir():
            continue
        report = read_complete_report(output_dir, case)
        if report is not None:
            rows.append(row_from_report(case, report, DONE, report_seconds(report)))
    return rows


def merge_rows(
    earlier: Sequence[dict[str, Any]], current: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The folder's summary: ``earlier`` rows in their order, each replaced by this run's row
    of the same case, then this run's other cases in input order."""
    by_case = {row["case"]: row for row in current}
    merged = [by_case.pop(row["case"], row) for row in earlier]
    return merged + [row for row in current if row["case"] in by_case]


def cell_text(column: str, value: Any) -> str:
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
        writer.writerow([cell_text(column, row.get(column)) for column in SUMMARY_COLUMNS])
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
    # rows summary.csv already had (``earlier_rows``): kept, except those of this run's cases
    previous: list[dict[str, Any]] = field(default_factory=list)

    @property
    def summary_path(self) -> Path:
        return self.output_dir / SUMMARY_FILE

    def summary_rows(self) -> list[dict[str, Any]]:
        """Every row of the output folder's ``summary.csv``: earlier cases and this run's."""
        return merge_rows(self.previous, self.rows)

    def write_summary(self) -> None:
        """Write the folder's ``summary.csv`` (atomically)."""
        write_summary(self.summary_path, self.summary_rows())

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
        lines = [[row["case"], *(cell_text(c, row[c]) for c in columns[1:])] for row in self.rows]
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
        text += [
            f"{row['case']}: warning: {row['warnings']}" for row in self.rows if row["warnings"]
        ]
        return "\n".join(text)
