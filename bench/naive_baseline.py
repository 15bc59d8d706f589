"""The baseline a researcher following the papers would write: one slice per forward pass,
Grad-CAM from the ``grad-cam`` package (pytorch-grad-cam) one class per call.

Same model, same preprocessing and the same 3D clean-up as LiverXAI, so the comparison
measures the pipeline around the network, not a different network.

pytorch-grad-cam imports ``torchvision`` (``transforms``, ``transforms.functional.resize``) at
package import, for image helpers and methods the baseline never calls. PyPI's torchvision is
built against CUDA torch and cannot load beside the CPU torch of this project's dev
environment, so grad-cam is installed without it and, when torchvision cannot be imported,
:func:`_torchvision_transforms_placeholder` registers modules whose four names raise if
anything calls them. Grad-CAM itself runs unchanged.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F
from LiverXAILib.segment.orientation import canonical_orientation, canonical_spacing
from LiverXAILib.segment.postprocessing import clean_labels, label_statistics
from LiverXAILib.segment.preprocessing import SliceInputSpec
from torch import nn


def _torchvision_transforms_placeholder() -> None:
    try:
        import torchvision.transforms  # noqa: F401
    except Exception:
        import types

        def unavailable(*_args, **_kwargs):
            raise RuntimeError("torchvision is not installed (see bench/naive_baseline.py)")

        modules = {}
        for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
            modules[name] = types.ModuleType(name)
            modules[name].__path__ = []  # a package, so submodules can be imported
        modules["torchvision"].transforms = modules["torchvision.transforms"]
        modules["torchvision.transforms"].functional = modules["torchvision.transforms.functional"]
        for attribute in ("Compose", "Normalize", "ToTensor"):
            setattr(modules["torchvision.transforms"], attribute, unavailable)
        modules["torchvision.transforms.functional"].resize = unavailable
        sys.modules.update(modules)


def naive_segment_and_explain(
    array: np.ndarray,
    ijk_to_ras: np.ndarray,
    model: nn.Module,
    spec: SliceInputSpec,
    layer: nn.Module,
    classes: tuple[int, ...] = (1, 2),
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Labels and full-size Grad-CAM volumes (input order), slice by slice."""
    import cv2

    _torchvision_transforms_placeholder()
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    orientation = canonical_orientation(ijk_to_ras)
    volume = orientation.apply(array)
    spacing = canonical_spacing(ijk_to_ras, orientation)
    depth, rows, columns = volume.shape
    labels = np.zeros(volume.shape, dtype=np.uint8)
    heatmaps = {c: np.zeros(volume.shape, dtype=np.float32) for c in classes}
    model.eval()
    for index in range(depth):
        inputs = spec.batch(volume, [index], spacing[0])
        with torch.no_grad():
            logits = model(inputs)
        probabilities = F.interpolate(
            torch.softmax(logits, dim=1), size=(rows, columns), mode="bilinear"
        )
        labels[index] = probabilities.argmax(dim=1)[0].numpy()
        predicted = logits.argmax(dim=1)[0].numpy()
        for class_id in classes:
            mask = (predicted == class_id).astype(np.float32)
            with GradCAM(model=model, target_layers=[layer]) as cam:
                grayscale = cam(
                    input_tensor=inputs, targets=[SemanticSegmentationTarget(class_id, mask)]
                )[0]
            heatmaps[class_id][index] = cv2.resize(grayscale, (columns, rows))
    cleaned = clean_labels(labels, spacing)
    label_statistics(cleaned, spacing)
    return orientation.invert(cleaned), {c: orientation.invert(h) for c, h in heatmaps.items()}
