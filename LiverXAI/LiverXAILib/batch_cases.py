"""Finding the CT cases of a folder for a batch run, and one output-folder name per case.

A case is a NIfTI, NRRD or MetaImage file, or a sub-folder holding a DICOM series; hidden
files, segmentations, LiverXAI's own output folders and unrelated files are not cases.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .batch_summary import SUMMARY_FILE
from .errors import InputError

CASE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
IGNORED_SUFFIXES = (".seg.nrrd",)  # segmentations (ours or the user's), not CT


def natural_key(name: str) -> list[Any]:
    """Sort key putting ``case2`` before ``case10`` (case-insensitive, numbers by value)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower())]


def is_case_file(path: Path) -> bool:
    name = path.name.lower()
    return (
        not path.name.startswith(".")
        and name.endswith(CASE_SUFFIXES)
        and not name.endswith(IGNORED_SUFFIXES)
        and path.is_file()
    )


def has_dicom_series(folder: Path) -> bool:
    """Whether ``folder`` itself (not its sub-folders) holds a DICOM series."""
    import SimpleITK as sitk

    if not folder.is_dir():
        return False
    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # "No Series were found" is an answer
    try:
        return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)


def is_output_folder(folder: Path) -> bool:
    """A batch output folder (it has ``summary.csv``) or one case's output folder."""
    return (folder / SUMMARY_FILE).is_file() or (folder / f"{folder.name}_report.json").is_file()


def find_cases(input_dir: str | Path) -> list[Path]:
    """The CT cases of a folder, in natural name order: NIfTI and NRRD files (also MetaImage
    .mha/.mhd) and sub-folders holding a DICOM series. Hidden files, segmentations
    (.seg.nrrd), LiverXAI's own output folders and unrelated files are ignored; sub-folders
    are not searched further. Raises ``InputError`` for a missing folder or one without cases.
    """
    folder = Path(input_dir)
    if not folder.is_dir():
        raise InputError(f"Input folder not found: {folder}")
    cases = []
    for path in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            if not is_output_folder(path) and has_dicom_series(path):
                cases.append(path)
        elif is_case_file(path):
            cases.append(path)
    if not cases:
        raise InputError(
            f"No CT cases found in {folder}: expected NIfTI (.nii, .nii.gz) or NRRD (.nrrd, "
            ".nhdr) files, or sub-folders each holding a DICOM series."
        )
    return cases


def case_names(inputs: Sequence[Path]) -> list[str]:
    """One unique output-folder name per input: its stem (``ct.nii.gz`` → ``ct``); inputs
    sharing a stem keep their suffix (``ct_nii_gz``, ``ct_nrrd``), then get a number."""
    from .volume_io import volume_stem

    stems = [volume_stem(path) for path in inputs]
    names = [
        path.name.replace(".", "_") if stems.count(stem) > 1 else stem
        for path, stem in zip(inputs, stems, strict=True)
    ]
    unique: list[str] = []
    taken: set[str] = set()  # case-insensitive: folders on macOS and Windows
    for name in names:
        candidate, number = name, 2
        while candidate.lower() in taken:
            candidate, number = f"{name}-{number}", number + 1
        unique.append(candidate)
        taken.add(candidate.lower())
    return unique
