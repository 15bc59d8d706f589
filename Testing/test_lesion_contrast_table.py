"""``bench/lesion_contrast.py``: the tumour's contrast to its liver, read from the labels."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import SimpleITK as sitk
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))


def _write_case(folder, hu_liver: float, hu_tumour: float | None) -> tuple[str, str]:
    image = np.full((6, 32, 32), -50.0, dtype=np.float32)  # (z, y, x): fat around
    labels = np.zeros(image.shape, dtype=np.uint8)
    image[1:5, 4:28, 4:28], labels[1:5, 4:28, 4:28] = hu_liver, 1
    if hu_tumour is not None:
        image[2:4, 10:16, 10:16], labels[2:4, 10:16, 10:16] = hu_tumour, 2
    names = []
    for name, array in (("ct.nii.gz", image.astype(np.int16)), ("label.nii.gz", labels)):
        volume = sitk.GetImageFromArray(array)
        volume.SetSpacing((0.8, 0.8, 2.5))
        volume.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # LPS-flipped, as DICOM gives
        sitk.WriteImage(volume, str(folder / name))
        names.append(f"{folder.name}/{name}")
    return tuple(names)


def test_the_table_gives_each_case_its_contrast_and_a_tumour_free_case_none(tmp_path):
    for case, liver, tumour in (("hypo", 100, 70), ("hyper", 60, 85), ("clean", 110, None)):
        (tmp_path / case).mkdir()
        _write_case(tmp_path / case, liver, tumour)
    (tmp_path / "cases.csv").write_text(
        "image,label,case\n"
        + "".join(f"{c}/ct.nii.gz,{c}/label.nii.gz,{c}\n" for c in ("hypo", "hyper", "clean"))
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "lesion_contrast.py"), str(tmp_path / "cases.csv")],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines()[2:]}
    assert "| 2.5 | 100 ± 0 | 70 ± 0 | -30 |" in rows["hypo"]
    assert "| 60 ± 0 | 85 ± 0 | +25 |" in rows["hyper"]
    assert "| 110 ± 0 | no tumour |" in rows["clean"]
