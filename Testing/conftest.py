"""Shared test set-up: import path, the real CT cases in ../shared/data, a headless MRML scene."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "LiverXAI"))

SHARED_DATA = ROOT.parent / "shared" / "data"
IRCADB_CT = SHARED_DATA / "ircadb17" / "ct.nii.gz"
IRCADB_LABEL = SHARED_DATA / "ircadb17" / "label.nii.gz"
SAMPLE_CT = ROOT / "LiverXAI" / "Resources" / "Data" / "TotalSegmentatorExampleCT.nii.gz"
SAMPLE_SMALL_CT = SHARED_DATA / "totalseg_example" / "example_ct_sm.nii.gz"

# Models registered by tests go to a private folder, never to the user's ~/.liverxai.
os.environ["LIVERXAI_MODELS_DIR"] = tempfile.mkdtemp(prefix="liverxai-models-")
os.environ.setdefault("LIVERXAI_CACHE", tempfile.mkdtemp(prefix="liverxai-cache-"))


def require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(
            f"test data not found: {path} (the shared data folder sits beside the checkout)"
        )
    return path


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    """A private, empty user model folder for each test."""
    folder = tmp_path / "user-models"
    monkeypatch.setenv("LIVERXAI_MODELS_DIR", str(folder))
    return folder


@pytest.fixture
def headless():
    """A fresh MRML scene with the module logics LiverXAI looks up by name."""
    from LiverXAILib.slicer.headless import create_headless_application

    return create_headless_application()


def load_volume_node(app, path: Path, name: str | None = None):
    """Read a CT file into a new scalar volume node of ``app``'s scene."""
    from LiverXAILib.io.volumes import read_volume, volume_stem
    from LiverXAILib.slicer.scene import add_volume_from_array

    array, ijk_to_ras = read_volume(require(path))
    return add_volume_from_array(app.scene, array, ijk_to_ras, name or volume_stem(path))


def restored(array, ijk_to_ras, permutation, flips):
    """The same physical image stored with permuted and flipped array axes, and its matrix."""
    import numpy as np

    stored = np.transpose(array, permutation)
    matrix = ijk_to_ras.copy()
    columns = ijk_to_ras[:3, :3].copy()
    origin = ijk_to_ras[:3, 3].copy()
    for new_axis, old_axis in enumerate(permutation):  # array axis a holds voxel axis 2 - a
        matrix[:3, 2 - new_axis] = columns[:, 2 - old_axis]
    for axis, flip in enumerate(flips):
        if flip:
            stored = np.flip(stored, axis)
            column = matrix[:3, 2 - axis].copy()
            origin = origin + column * (stored.shape[axis] - 1)
            matrix[:3, 2 - axis] = -column
    matrix[:3, 3] = origin
    return np.ascontiguousarray(stored), matrix
