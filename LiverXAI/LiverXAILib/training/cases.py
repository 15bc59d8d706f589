"""Training and evaluation data: find CT + label pairs, split them by patient, load them.

Three layouts are recognised (:func:`discover_cases`):

- **LiTS** — ``volume-N.nii[.gz]`` beside ``segmentation-N.nii[.gz]``, in one folder or in
  sub-folders (the challenge's "Training Batch 1/2"); patient ``lits-N``.
- **Medical Segmentation Decathlon** — ``dataset.json`` with ``imagesTr/`` and ``labelsTr/``
  (Task03_Liver); the patient is the file's stem (``liver_7``).
- **CSV** — a file with an ``image,label`` header and optional ``case`` and ``patient``
  columns; relative paths are relative to the CSV's folder. Without a ``patient`` column each
  row is its own patient.

Splits are made by patient, never by slice, so no patient is in two parts (the source papers
split by slice, which leaks patients between training and test).
"""

from __future__ import annotations

import csv
import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_path
from ..io.volumes import read_volume, volume_stem
from ..segment.orientation import CanonicalOrientation, canonical_orientation, canonical_spacing

LABEL_VALUES = (0, 1, 2)
_LITS_VOLUME = re.compile(r"^volume-(\d+)\.nii(\.gz)?$")


@dataclass(frozen=True)
class Case:
    """One CT volume with its label volume (0 background, 1 liver, 2 tumour)."""

    image: Path
    label: Path
    case_id: str = ""
    patient: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        # Absolute, so a split file works from any working folder.
        object.__setattr__(self, "image", Path(self.image).expanduser().absolute())
        object.__setattr__(self, "label", Path(self.label).expanduser().absolute())
        if not self.case_id:
            object.__setattr__(self, "case_id", volume_stem(self.image))
        if not self.patient:
            object.__setattr__(self, "patient", self.case_id)

    def to_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


@dataclass
class DataSplit:
    """Cases assigned to training, validation and test, disjoint by patient."""

    train: list[Case] = field(default_factory=list)
    validation: list[Case] = field(default_factory=list)
    test: list[Case] = field(default_factory=list)
    seed: int = 0

    def part(self, name: str) -> list[Case]:
        """``train``, ``validation``, ``test`` or ``all`` (every case once)."""
        if name == "all":
            return self.train + self.validation + self.test
        if name not in ("train", "validation", "test"):
            raise ValueError(f"unknown split part {name!r}: train, validation, test or all")
        return list(getattr(self, name))

    def to_dict(self) -> dict:
        return {
            "seed": self.seed,
            **{
                part: [c.to_dict() for c in self.part(part)]
                for part in ("train", "validation", "test")
            },
        }

    def write(self, path: str | Path) -> None:
        """Write the split as JSON (atomically), so a run can be repeated and audited."""
        with atomic_path(path, suffix=".json") as temporary:
            temporary.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")

    @classmethod
    def read(cls, path: str | Path) -> DataSplit:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        parts = {
            part: [Case(**c) for c in data.get(part, [])]
            for part in ("train", "validation", "test")
        }
        return cls(**parts, seed=int(data.get("seed", 0)))


def _lits_cases(folder: Path) -> list[Case]:
    cases = []
    for image in folder.rglob("volume-*.nii*"):
        match = _LITS_VOLUME.match(image.name)
        if not match:
            continue
        number = match.group(1)
        labels = [image.with_name(f"segmentation-{number}.nii{s}") for s in (".gz", "")]
        label = next((p for p in labels if p.is_file()), None)
        if label is None:
            raise InputError(f"LiTS layout: {image.name} has no segmentation-{number}.nii[.gz].")
        cases.append(Case(image, label, f"volume-{number}", f"lits-{number}", folder.name))
    return sorted(cases, key=lambda c: int(c.case_id.split("-")[1]))


def _msd_cases(folder: Path) -> list[Case]:
    description = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    entries = description.get("training") or []
    if not entries:  # no list: pair imagesTr and labelsTr by file name
        entries = [
            {"image": f"imagesTr/{p.name}", "label": f"labelsTr/{p.name}"}
            for p in sorted((folder / "imagesTr").glob("*.nii*"))
            if not p.name.startswith(".")
        ]
    cases = []
    for entry in entries:
        image, label = folder / entry["image"], folder / entry["label"]
        if not image.is_file() or not label.is_file():
            raise InputError(f"dataset.json lists {entry['image']} / {entry['label']}, not found.")
        cases.append(Case(image, label, volume_stem(image), volume_stem(image), folder.name))
    return cases


def _csv_cases(path: Path) -> list[Case]:
    with open(path, newline="", encoding="utf-8-sig") as stream:
        rows = list(csv.DictReader(stream))
    if not rows or not {"image", "label"} <= set(rows[0]):
        raise InputError(f"{path.name}: a CSV of cases needs an 'image,label' header line.")
    cases = []
    for number, row in enumerate(rows, start=2):
        image, label = (path.parent / row["image"].strip(), path.parent / row["label"].strip())
        for kind, file in (("image", image), ("label", label)):
            if not file.exists():
                raise InputError(f"{path.name} line {number}: {kind} {file} not found.")
        case_id = (row.get("case") or "").strip() or volume_stem(image)
        patient = (row.get("patient") or "").strip() or case_id
        cases.append(Case(image, label, case_id, patient, path.stem))
    return cases


def discover_cases(source: str | Path) -> list[Case]:
    """All cases of a LiTS folder, an MSD task folder or a CSV file (see module docstring).

    Raises:
        InputError: the path does not exist, matches no layout, or a listed file is missing.
    """
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        cases = _csv_cases(source)
    elif source.is_dir() and (source / "dataset.json").is_file():
        cases = _msd_cases(source)
    elif source.is_dir():
        cases = _lits_cases(source)
    else:
        raise InputError(f"Training data not found: {source}")
    if not cases:
        raise InputError(
            f"No cases in {source}: expected LiTS files (volume-N.nii, segmentation-N.nii), an "
            "MSD folder (dataset.json, imagesTr/, labelsTr/) or a CSV with image,label columns."
        )
    duplicates = {c.case_id for c in cases if sum(d.case_id == c.case_id for d in cases) > 1}
    if duplicates:
        raise InputError(f"{source}: case names used twice: {', '.join(sorted(duplicates))}")
    return cases


def split_by_patient(
    cases: list[Case],
    validation_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> DataSplit:
    """Shuffle patients with ``seed`` and cut them into train, validation and test.

    Each non-zero fraction gets at least one patient while at least one patient is left for
    training; with two patients that means one for training and one for validation.
    """
    if not 0 <= validation_fraction < 1 or not 0 <= test_fraction < 1:
        raise ValueError("validation and test fractions must lie in [0, 1)")
    if validation_fraction + test_fraction >= 1:
        raise ValueError("validation and test fractions must leave patients for training")
    patients = sorted({c.patient for c in cases})
    random.Random(seed).shuffle(patients)
    count = len(patients)

    def share(fraction: float, available: int) -> int:
        wanted = max(1, round(fraction * count)) if fraction > 0 else 0
        return max(0, min(wanted, available - 1))

    n_validation = share(validation_fraction, count)
    n_test = share(test_fraction, count - n_validation)
    validation = set(patients[:n_validation])
    test = set(patients[n_validation : n_validation + n_test])
    split = DataSplit(seed=seed)
    for case in cases:
        part = (
            "validation"
            if case.patient in validation
            else "test"
            if case.patient in test
            else "train"
        )
        getattr(split, part).append(case)
    return split


@dataclass
class CanonicalCase:
    """A case in the canonical axial orientation that inference uses (Slicer K, J, I order)."""

    case: Case
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    orientation: CanonicalOrientation


def load_canonical_case(case: Case) -> CanonicalCase:
    """Read a case and reorient image and labels exactly as inference does.

    Raises:
        InputError: the label volume's grid differs from the image's, or it holds values
            other than 0, 1 and 2.
    """
    image, ijk_to_ras = read_volume(case.image)
    labels, label_ijk_to_ras = read_volume(case.label)
    if labels.shape != image.shape:
        raise InputError(
            f"{case.case_id}: label {case.label.name} is {labels.shape[::-1]} voxels, the CT "
            f"{image.shape[::-1]}."
        )
    if not np.allclose(label_ijk_to_ras, ijk_to_ras, atol=1e-3, rtol=1e-4):
        raise InputError(f"{case.case_id}: label and CT have different geometry (origin/axes).")
    found = np.unique(labels)
    unexpected = sorted(set(found.tolist()) - set(LABEL_VALUES))
    if unexpected:
        raise InputError(
            f"{case.case_id}: label values {unexpected[:5]} found; expected 0 background, "
            "1 liver, 2 tumour."
        )
    orientation = canonical_orientation(ijk_to_ras)
    return CanonicalCase(
        case,
        orientation.apply(image),
        orientation.apply(labels.astype(np.uint8, copy=False)),
        canonical_spacing(ijk_to_ras, orientation),
        orientation,
    )
