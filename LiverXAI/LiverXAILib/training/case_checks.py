"""Cases whose label cannot belong to their CT: found from the file headers, before any work.

``train`` and ``crossval`` refuse such a case, naming it and the reason; with ``--keep-going``
they leave it out, log an ``excluded`` event and go on with the rest.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import InputError
from ..io.volumes import ijk_to_ras_from_image
from .cases import Case, DataSplit

KEEP_GOING_HINT = (
    "Fix the case, or leave it out and train on the others: --keep-going (in the Training "
    "module: Leave out cases whose label does not fit their CT)."
)


def label_fit_problem(case: Case) -> str | None:
    """Why ``case``'s label cannot belong to its CT, from the file headers; None if it can.

    Grid and placement must agree as :func:`.cases.load_canonical_case` requires (which also
    checks the label values when the case is read in full).
    """
    import SimpleITK as sitk

    readers = []
    for path in (case.image, case.label):
        if not path.is_file():
            return None  # a DICOM folder: checked when it is read
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as error:
            reason = str(error).split("sitk::ERROR:")[-1].strip().split("\n")[0]
            return f"cannot read {path.name}: {reason}"
        readers.append(reader)
    image, label = readers
    if label.GetDimension() != 3 or label.GetSize() != image.GetSize():
        return f"label {case.label.name} is {label.GetSize()} voxels, the CT {image.GetSize()}"
    if not np.allclose(*map(ijk_to_ras_from_image, (label, image)), atol=1e-3, rtol=1e-4):
        label_at, ct_at = (f"{r.GetSpacing()} mm at {r.GetOrigin()}" for r in (label, image))
        return f"label and CT have different geometry (label {label_at}, CT {ct_at}, or axes)"
    return None


def unfit_cases(cases: list[Case], keep_going: bool, log: Callable[[dict], None]) -> dict[str, str]:
    """``{case id: reason}`` for the cases whose label does not fit their CT, each logged as an
    ``excluded`` event; refused unless ``keep_going``.

    Raises:
        InputError: a case does not fit and ``keep_going`` is off (the first one, named).
    """
    excluded = {c.case_id: p for c in cases if (p := label_fit_problem(c)) is not None}
    if excluded and not keep_going:
        case_id, problem = next(iter(excluded.items()))
        raise InputError(f"Case {case_id}: {problem}. {KEEP_GOING_HINT}")
    for case_id, problem in excluded.items():
        log({"event": "excluded", "case": case_id, "reason": problem})
    return excluded


def without_unfit_cases(
    split: DataSplit, keep_going: bool, log: Callable[[dict], None]
) -> DataSplit:
    """``split`` without the cases whose label does not fit (see :func:`unfit_cases`)."""
    excluded = unfit_cases(split.part("all"), keep_going, log)
    parts = (split.train, split.validation, split.test)
    kept = ([c for c in part if c.case_id not in excluded] for part in parts)
    return DataSplit(*kept, seed=split.seed)
