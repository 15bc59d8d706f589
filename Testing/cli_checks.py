"""Running ``python -m LiverXAILib`` in this process for the bad-input suites, and checking
what a user sees: the exit status, the lines on the console, the files left behind."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from conftest import SAMPLE_SMALL_CT, require
from LiverXAILib.cli import main as cli

FAST = ("--uncertainty", "none", "--explain", "liver")
OUTPUT_SUFFIXES = ("_label.nii.gz", ".seg.nrrd", "_overview.png", "_report.html", "_report.json")


def run(capsys, *argv: str) -> tuple[int, str]:
    """``python -m LiverXAILib *argv`` in this process: exit status and stderr."""
    capsys.readouterr()
    try:
        status = cli.main(list(argv))
    except SystemExit as exit_:  # argparse refusals
        status = exit_.code
    return status, capsys.readouterr().err


def error_lines(stderr: str) -> list[str]:
    """The lines a user reads, without progress lines."""
    return [line for line in stderr.strip().splitlines() if line and not line.startswith("[")]


def digest(path: Path) -> str:
    if path.is_dir():
        return "".join(digest(p) for p in sorted(path.rglob("*")) if p.is_file())
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


def nothing_written(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


def sample_image() -> sitk.Image:
    return sitk.ReadImage(str(require(SAMPLE_SMALL_CT)))


def write(image: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(image, str(path))
    return path


def from_array(array: np.ndarray, like: sitk.Image | None = None) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    if like is not None:
        image.CopyInformation(like)
    return image
