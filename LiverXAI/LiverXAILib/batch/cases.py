"""Finding the CT cases of a folder for a batch run, and one output-folder name per case.

A case is a NIfTI, NRRD or MetaImage file, or a sub-folder holding a DICOM series; hidden
files, segmentations, LiverXAI's own outputs (files and folders) and unrelated files are not
cases.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import InputError
from .summary import SUMMARY_FILE, natural_key

CASE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
IGNORED_SUFFIXES = (".seg.nrrd",)  # segmentations (ours or the user's), not CT


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


def output_tags() -> tuple[str, ...]:
    """The endings of the volumes LiverXAI writes for a case ``X`` (``outputs.write_outputs``,
    ``exports``): ``X_label``, ``X_uncertainty`` and ``X_<method>_<class>`` (e.g.
    ``X_gradcampp_tumor``), as ``.nii.gz`` or, exported, ``.nrrd``; ``X.seg.nrrd`` is a
    segmentation (``IGNORED_SUFFIXES``)."""
    from ..constants import EXPLAINABLE_CLASSES
    from ..io.result_files import FILE_SLUGS

    maps = [f"{slug}_{name}" for slug in FILE_SLUGS.values() for name in EXPLAINABLE_CLASSES]
    return ("label", "uncertainty", *maps)


def _file_stem(name: str) -> str:
    """A file-name stem as ``exports.safe_stem`` makes it (exports use it, outputs do not)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")


def output_owners(folder: Path, candidates: Iterable[Path]) -> set[str]:
    """The names ``X`` whose outputs ``X_<tag>`` may lie in ``folder``: every candidate case
    (a file's stem, a DICOM folder's name) and every ``X`` with an ``X_report.json`` there,
    each also as its file-safe stem."""
    from ..io.volumes import volume_stem

    names = {path.name if path.is_dir() else volume_stem(path) for path in candidates}
    names |= {p.name[: -len("_report.json")] for p in folder.glob("*_report.json")}
    return names | {_file_stem(name) for name in names}


def is_our_output(path: Path, owners: set[str], tags: Sequence[str]) -> bool:
    """Whether a volume file is named ``X_<tag>`` (``output_tags``) with ``X`` in ``owners``."""
    from ..io.volumes import volume_stem

    stem = volume_stem(path)
    return any(stem.endswith(f"_{tag}") and stem[: -len(tag) - 1] in owners for tag in tags)


def find_cases(input_dir: str | Path) -> list[Path]:
    """The CT cases of a folder, in natural name order: NIfTI and NRRD files (also MetaImage
    .mha/.mhd) and sub-folders holding a DICOM series. Sub-folders are not searched further.

    Ignored: hidden files, segmentations (.seg.nrrd), LiverXAI's output folders, unrelated
    files, and the volumes LiverXAI writes beside a case (a single-case run whose output folder
    is the input folder): a file ``X_<tag>`` with a tag of ``output_tags`` (``X_label.nii.gz``,
    ``X_uncertainty.nii.gz``, ``X_gradcam_liver.nii.gz``, ``X_ig_tumor.nrrd``, ...) is an
    output, not a case, when ``X`` is itself a case of the folder (``X.nii.gz``, a DICOM
    folder ``X/``) or ``X_report.json`` lies beside it. So a CT that merely ends like an output
    (``liver_label.nii.gz`` alone) is still a case. Raises ``InputError`` for a missing folder
    or one without cases.
    """
    folder = Path(input_dir)
    if not folder.is_dir():
        raise InputError(f"Input folder not found: {folder}")
    candidates = []
    for path in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            if not is_output_folder(path) and has_dicom_series(path):
                candidates.append(path)
        elif is_case_file(path):
            candidates.append(path)
    owners, tags = output_owners(folder, candidates), output_tags()
    cases = [p for p in candidates if p.is_dir() or not is_our_output(p, owners, tags)]
    if not cases:
        raise InputError(
            f"No CT cases found in {folder}: expected NIfTI (.nii, .nii.gz) or NRRD (.nrrd, "
            ".nhdr) files, or sub-folders each holding a DICOM series."
        )
    return cases


def case_names(inputs: Sequence[Path]) -> list[str]:
    """One unique output-folder name per input: its stem (``ct.nii.gz`` → ``ct``); inputs
    sharing a stem keep their suffix (``ct_nii_gz``, ``ct_nrrd``), then get a number."""
    from ..io.volumes import volume_stem

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
