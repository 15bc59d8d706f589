"""The evaluation figure's data: which case and slices it shows, and Grad-CAM on them.

The figure shows the case with the most tumour (else the most liver): the slice with the
largest tumour area and slices spread over the tumour's (else the liver's) extent. Grad-CAM
runs on those slices only (each with its 2.5D neighbours) and is normalised once over them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..constants import CLASS_NAMES, LIVER, TUMOR
from ..explain.methods import normalize_volume
from ..segment.inference import SliceInferenceEngine
from ..segment.map_grid import upsample_slice
from ..segment.preprocessing import SliceInputSpec
from ..training.cases import CanonicalCase
from .model_evaluation import FigureData


def choose_figure_slices(labels: np.ndarray, count: int) -> list[int]:
    """Up to ``count`` slices for the figure, ascending.

    The slice with the largest tumour area, then slices spread evenly over the slices that hold
    tumour (over the liver's slices when there is no tumour, over all slices when there is
    neither); slices with liver fill up when too few hold tumour.
    """
    if count <= 0:
        return []
    flat = labels.reshape(labels.shape[0], -1)
    tumor_area = (flat == TUMOR).sum(axis=1)
    liver_area = (flat >= LIVER).sum(axis=1)
    if tumor_area.any():
        pools = [np.flatnonzero(tumor_area), np.flatnonzero(liver_area)]
        chosen = [int(tumor_area.argmax())]
    elif liver_area.any():
        pools, chosen = [np.flatnonzero(liver_area)], [int(liver_area.argmax())]
    else:
        pools, chosen = [np.arange(labels.shape[0])], []
    pools.append(np.arange(labels.shape[0]))
    for pool in pools:
        for fraction in np.linspace(0, 1, count + 2)[1:-1]:
            index = int(pool[int(round(fraction * (pool.size - 1)))])
            if len(chosen) < count and index not in chosen:
                chosen.append(index)
        for index in pool:  # a small pool: take all of it
            if len(chosen) < count and int(index) not in chosen:
                chosen.append(int(index))
    return sorted(chosen)


def figure_score(canonical: CanonicalCase) -> tuple[float, float]:
    """Tumour then liver volume (mL) of a case's truth: the figure shows the largest."""
    voxel_ml = math.prod(canonical.spacing) / 1000.0
    labels = canonical.labels
    tumor = int(np.count_nonzero(labels == TUMOR))
    return tumor * voxel_ml, int(np.count_nonzero(labels >= LIVER)) * voxel_ml


def gradcam_slices(
    model: torch.nn.Module,
    spec: SliceInputSpec,
    device: torch.device,
    volume: np.ndarray,
    slices: list[int],
    slice_spacing_mm: float | None = None,
) -> dict[str, np.ndarray]:
    """Grad-CAM of liver and tumour on ``slices`` only, normalised once over them.

    Each slice is stacked with its neighbours as the network sees it in the whole volume, so
    2.5D models get the same input; the engine runs on these small blocks. With a slice step
    the block's slices lie one step apart, so the block's spacing is the step.
    """
    k = spec.num_slices
    blocks = spec.stacks(volume, slices, slice_spacing_mm).reshape(-1, *volume.shape[1:])
    engine = SliceInferenceEngine(model, spec, device)
    outputs = engine.run(
        blocks,
        explain_classes=(LIVER, TUMOR),
        methods=("gradcam",),
        slice_spacing_mm=spec.slice_step_mm,
    )
    centres = [j * k + k // 2 for j in range(len(slices))]
    slice_shape = volume.shape[1:]
    return {
        CLASS_NAMES[c]: normalize_volume(
            np.stack(
                [upsample_slice(outputs.heatmaps["gradcam", c][i], slice_shape) for i in centres]
            ),
            "volume-max",
        )
        for c in (LIVER, TUMOR)
    }


def figure_data(
    model: torch.nn.Module,
    spec: SliceInputSpec,
    device: torch.device,
    canonical: CanonicalCase,
    labels: np.ndarray,
    slices: list[int],
) -> FigureData:
    """The figure's CT, truth, predicted ``labels`` and Grad-CAM on ``slices`` of a case."""
    return FigureData(
        case_id=canonical.case.case_id,
        slices=slices,
        ct=np.ascontiguousarray(canonical.image[slices]),
        truth=np.ascontiguousarray(canonical.labels[slices]),
        prediction=np.ascontiguousarray(labels[slices]),
        heatmaps=gradcam_slices(model, spec, device, canonical.image, slices, canonical.spacing[0]),
        spacing=canonical.spacing,
    )
