"""The source files of a CT loaded through Slicer's DICOM module, from its DICOM database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import slicer

from ..io.dicom_seg import DicomSegError


def files_from_dicom_database(volume_node: Any) -> list[Path] | None:
    """Source files of a volume loaded through Slicer's DICOM module, or None when the node has
    no ``DICOM.instanceUIDs`` or there is no DICOM database (headless)."""
    uids = (volume_node.GetAttribute("DICOM.instanceUIDs") or "").split()
    if not uids:
        return None
    database = getattr(slicer, "dicomDatabase", None)
    if database is None:
        return None
    files = [database.fileForInstance(uid) for uid in uids]
    missing = sum(1 for f in files if not f)
    if missing:
        raise DicomSegError(
            f"{missing} of the {len(uids)} source DICOM files of {volume_node.GetName()} are not "
            "in the DICOM database any more; a DICOM SEG must reference the source images."
        )
    return [Path(f) for f in files]
