"""Standard terminology for LiverXAI's segments: SNOMED CT codes for liver and tumour.

Each segment carries a DICOM-style coded triplet for its category and type (and, for the
tumour, the anatomic region it lies in), so a DICOM SEG export says "Liver" and "Mass of the
liver" in codes any PACS viewer understands, and Slicer's terminology selector shows them.
The codes are those of Slicer's "3D Slicer General Anatomy list" (DICOM CID 7150/7151).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Code:
    """A coded concept: coding scheme designator, code value and meaning (e.g. SCT)."""

    scheme: str
    value: str
    meaning: str

    def slicer(self) -> str:
        return f"{self.scheme}^{self.value}^{self.meaning}"


EMPTY = "^^"
SLICER_TERMINOLOGY = "Segmentation category and type - 3D Slicer General Anatomy list"
SLICER_ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"

ANATOMICAL_STRUCTURE = Code("SCT", "123037004", "Anatomical Structure")
MORPHOLOGICALLY_ALTERED_STRUCTURE = Code("SCT", "49755003", "Morphologically Altered Structure")
LIVER = Code("SCT", "10200004", "Liver")
MASS = Code("SCT", "4147007", "Mass")


@dataclass(frozen=True)
class SegmentTerm:
    """What a segment is: category, type and (optionally) the anatomic region it lies in."""

    category: Code
    type: Code
    anatomic_region: Code | None = None

    def slicer_entry(self) -> str:
        """The segment's terminology entry in Slicer's serialised form
        (context~category~type~type modifier~anatomic context~region~region modifier)."""
        region = self.anatomic_region.slicer() if self.anatomic_region else EMPTY
        return "~".join(
            (
                SLICER_TERMINOLOGY,
                self.category.slicer(),
                self.type.slicer(),
                EMPTY,
                SLICER_ANATOMIC_CONTEXT,
                region,
                EMPTY,
            )
        )


SEGMENT_TERMS: dict[str, SegmentTerm] = {
    "liver": SegmentTerm(ANATOMICAL_STRUCTURE, LIVER),
    "tumor": SegmentTerm(MORPHOLOGICALLY_ALTERED_STRUCTURE, MASS, LIVER),
}


def apply_terminology(segmentation_node: Any) -> None:
    """Tag the liver and tumour segments of a segmentation node with their SNOMED CT codes."""
    segmentation = segmentation_node.GetSegmentation()
    for name, term in SEGMENT_TERMS.items():
        segment_id = segmentation.GetSegmentIdBySegmentName(name)
        if segment_id:
            segmentation.GetSegment(segment_id).SetTerminology(term.slicer_entry())
