"""A run's outputs as arrays, with the geometry to write them: what files are made from.

``LiverXAILogic.segmentAndExplain`` keeps them on its result (``result.arrays``), so the
volumes, the overview and the report are written from the arrays the run produced, never read
back out of the scene. Everything is in the canonical orientation (slice, row, column);
``orientation.invert`` and ``ijk_to_ras`` give back the input's voxel order and geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..constants import CLASS_NAMES
from .orientation import CanonicalOrientation, coarse_ijk_to_ras
from .pipeline import PipelineResult


@dataclass
class CaseArrays:
    """Labels, explanation maps and uncertainty of one run, canonical, with their geometry."""

    orientation: CanonicalOrientation
    ijk_to_ras: np.ndarray  # the input's
    spacing: tuple[float, float, float]  # canonical (slice, row, column), mm
    labels: np.ndarray  # uint8, full size
    heatmaps: dict[str, dict[str, np.ndarray]]  # method -> class name -> map (map grid)
    uncertainty: np.ndarray | None  # map grid

    @classmethod
    def from_pipeline(cls, pipeline: PipelineResult, ijk_to_ras: np.ndarray) -> CaseArrays:
        return cls(
            orientation=pipeline.orientation,
            ijk_to_ras=np.asarray(ijk_to_ras, dtype=float),
            spacing=pipeline.spacing,
            labels=pipeline.labels,
            heatmaps={
                method: {CLASS_NAMES[c]: values for c, values in per_class.items()}
                for method, per_class in pipeline.heatmaps.items()
            },
            uncertainty=pipeline.uncertainty,
        )

    def input_order(self, canonical: np.ndarray) -> np.ndarray:
        """An array of this run back in the input's (K, J, I) voxel order."""
        return self.orientation.invert(canonical)

    def map_ijk_to_ras(self, canonical_map: np.ndarray) -> np.ndarray:
        """IJK-to-RAS of a map on the network-size grid over the input's box (``map_grid``)."""
        shape = self.input_order(self.labels).shape
        return coarse_ijk_to_ras(self.ijk_to_ras, shape, self.input_order(canonical_map).shape)
