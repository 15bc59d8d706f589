"""Shared test set-up: import path, the real CT cases in ../shared/data, a headless MRML scene."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "LiverXAI"))

SHARED_DATA = ROOT.parent / "shared" / "data"
IRCADB_CT = SHARED_DATA / "ircadb17" / "ct.nii.gz"
IRCADB_LABEL = SHARED_DATA / "ircadb17" / "label.nii.gz"
SAMPLE_CT = ROOT / "LiverXAI" / "Resources" / "Data" / "TotalSegmentatorExampleCT.nii.gz"
SAMPLE_SMALL_CT = SHARED_DATA / "totalseg_example" / "example_ct_sm.nii.gz"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(
            f"test data not found: {path} (the shared data folder sits beside the checkout)"
        )
    return path


@pytest.fixture
def headless():
    """A fresh MRML scene with the module logics LiverXAI looks up by name."""
    from LiverXAILib.headless import create_headless_application

    return create_headless_application()
