"""The ``lesion`` augmentation: redraw how much darker or brighter a tumour is than its liver.

On the six development patients the tumours differ from the liver around them by only 20–34
HU, hypodense in five (metastases and HCC) and hyperdense in one (an HCC), while the liver
itself lies between 55 and 121 HU (``bench/lesion_contrast.py``). A network trained on a few
patients learns their tumours' one contrast. With probability ``prob``, a slice that shows
both liver and tumour gets its tumour shifted so that the tumour's mean differs from the
slice's liver mean by a new contrast drawn from ±[``min_hu``, ``max_hu``] (sign at random):
hypo- or hyperdense, never invisible. The shift follows a slightly blurred tumour mask so no
artificial edge marks the lesion; the lesion's own texture is kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.transforms import MapTransform, RandomizableTransform

from ..constants import DEFAULT_HU_WINDOW, LIVER, TUMOR


def _blurred(mask: torch.Tensor) -> torch.Tensor:
    """A (H, W) 0/1 mask smoothed by a 3x3 box twice (edge ramp of about 2 pixels)."""
    kernel = torch.full((1, 1, 3, 3), 1.0 / 9.0)
    smooth = mask[None, None].float()
    for _ in range(2):
        smooth = F.conv2d(F.pad(smooth, (1, 1, 1, 1), mode="replicate"), kernel)
    return smooth[0, 0]


class RandLesionContrastd(RandomizableTransform, MapTransform):
    """Shift the tumour of ``{"image": (C, H, W) in [0, 1], "label": (1, H, W)}`` to a new
    contrast against the liver; ``window`` converts HU into the image's units."""

    def __init__(
        self,
        prob: float = 0.5,
        min_hu: float = 15.0,
        max_hu: float = 60.0,
        window: tuple[float, float] = DEFAULT_HU_WINDOW,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, ("image", "label"))
        if not 0 < min_hu <= max_hu:
            raise ValueError(f"need 0 < min_hu <= max_hu, got {min_hu}, {max_hu}")
        scale = 1.0 / (window[1] - window[0])
        self.low, self.high = min_hu * scale, max_hu * scale
        self.contrast = 0.0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        sign = 1.0 if self.R.rand() < 0.5 else -1.0
        self.contrast = sign * self.R.uniform(self.low, self.high)

    def __call__(self, data: dict) -> dict:
        self.randomize()
        label = torch.as_tensor(data["label"])[0].round()
        tumour, liver = label == TUMOR, label == LIVER
        if not self._do_transform or not tumour.any() or not liver.any():
            return data
        image = torch.as_tensor(data["image"]).float()
        centre = image[image.shape[0] // 2]
        shift = self.contrast - (centre[tumour].mean() - centre[liver].mean())
        out = dict(data)
        out["image"] = image + shift * _blurred(tumour)
        return out
