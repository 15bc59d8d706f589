"""Why Grad-CAM's attention lay outside the body: each suspected factor measured on its own.

On every ``--step``-th slice that holds the class after the 3D clean-up, Grad-CAM of the
liver (and tumour) is computed directly with hooks, varying one factor at a time:

- the CAM layer (U-Net decoder stages at 1/8, 1/4, 1/2 and full resolution);
- the explained target: the sum over the explained pixels of the class logit (the product),
  of its softmax probability, or of its log-odds against the other classes;
- the weighting: slice-mean channel weights (Grad-CAM) or the gradient at each pixel
  (element-wise, HiResCAM);
- the convolutions' padding at inference: zeros (as trained), replicate or reflect (the
  share of pixels whose label stays the same is printed).

Printed per setting: ``inside`` (mass inside the class grown by 5 mm) and ``outside body``
(mass outside the body, as in ``explanation_targets.py``). Normalisation is left out: one
factor per volume changes neither share.

    .venv/bin/python bench/cam_factors.py ircadb01_p07 --step 6
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from explanation_targets import body_mask, case_path  # noqa: E402
from LiverXAILib.explain.attention_measures import region_for_class, with_margin  # noqa: E402
from LiverXAILib.explain.cam import cam_map  # noqa: E402
from LiverXAILib.io.volumes import read_volume  # noqa: E402
from LiverXAILib.models.catalog import resolve_model  # noqa: E402
from LiverXAILib.models.checkpoints import load_checkpoint  # noqa: E402
from LiverXAILib.segment.map_grid import labels_on_map_grid, map_spacing  # noqa: E402
from LiverXAILib.segment.orientation import canonical_orientation, canonical_spacing  # noqa: E402
from LiverXAILib.segment.postprocessing import clean_labels  # noqa: E402

LAYERS = ("decoder.0", "decoder.1", "decoder.2", "decoder.3")


def with_padding(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """A copy of ``model`` whose padded convolutions pad with ``mode``."""
    padded = copy.deepcopy(model)
    for module in padded.modules():
        if isinstance(module, torch.nn.Conv2d) and module.padding != (0, 0):
            module.padding_mode = mode
    return padded


def score(logits: torch.Tensor, explained: torch.Tensor, class_id: int, target: str):
    """The explained scalar of the batch for one choice of target."""
    if target == "logit":
        values = logits[:, class_id]
    elif target == "probability":
        values = torch.softmax(logits, dim=1)[:, class_id]
    else:  # log-odds against the other classes
        others = torch.cat([logits[:, :class_id], logits[:, class_id + 1 :]], dim=1)
        values = logits[:, class_id] - torch.logsumexp(others, dim=1)
    return (values * explained).sum()


def maps(model, inputs, explained, class_id, target, weighting) -> dict[str, np.ndarray]:
    """Grad-CAM at every layer of ``LAYERS`` from one forward and one backward pass."""
    store: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    hooks = [
        modules[name].register_forward_hook(lambda _m, _i, out, n=name: store.__setitem__(n, out))
        for name in LAYERS
    ]
    logits = model(inputs)
    for hook in hooks:
        hook.remove()
    gradients = torch.autograd.grad(
        score(logits, explained, class_id, target), [store[n] for n in LAYERS]
    )
    result = {}
    for name, gradient in zip(LAYERS, gradients, strict=True):
        cam = cam_map("gradcam", gradient.float(), store[name].detach().float(), weighting)
        cam = F.interpolate(cam, size=inputs.shape[-2:], mode="bilinear", align_corners=False)
        result[name] = cam[:, 0].clamp_min(0).numpy()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", help="sample, a folder of ../shared/data, or a file")
    parser.add_argument("--model", default="unet-demo")
    parser.add_argument("--step", type=int, default=6, help="every n-th explained slice")
    parser.add_argument("--classes", default="1,2")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, metadata = load_checkpoint(resolve_model(args.model))
    spec = metadata.input_spec()
    array, ijk_to_ras = read_volume(case_path(args.case))
    orientation = canonical_orientation(ijk_to_ras)
    volume, spacing = orientation.apply(array), canonical_spacing(ijk_to_ras, orientation)
    grid_spacing = map_spacing(spacing, volume.shape[1:], spec.input_size)
    with torch.no_grad():
        raw = torch.cat(
            [model(spec.batch(volume, [i], spacing[0])).argmax(1) for i in range(len(volume))]
        ).numpy()
    labels = clean_labels(raw.astype(np.uint8), grid_spacing)  # on the network's grid
    body = body_mask(labels_on_map_grid(volume, spec.input_size))
    settings = [
        ("zeros", t, w)
        for t in ("logit", "probability", "log-odds")
        for w in ("channel-mean", "element-wise")
    ]
    settings += [(p, "logit", "channel-mean") for p in ("replicate", "reflect")]
    for class_id in (int(c) for c in args.classes.split(",")):
        region = region_for_class(labels, class_id)
        chosen = np.flatnonzero((labels == class_id).any(axis=(1, 2)))[:: args.step]
        if not chosen.size:
            continue
        grown = with_margin(region, grid_spacing)[chosen]
        inputs = spec.batch(volume, chosen.tolist(), spacing[0])
        explained = torch.from_numpy(labels[chosen] == class_id).float()
        for padding, target, weighting in settings:
            network = model if padding == "zeros" else with_padding(model, padding)
            with torch.no_grad():
                same = (network(inputs).argmax(1).numpy() == raw[chosen]).mean()
            for layer, heat in maps(
                network, inputs, explained, class_id, target, weighting
            ).items():
                total = heat.sum()
                print(
                    f"{args.case} class {class_id} ({len(chosen)} slices) padding {padding:9s} "
                    f"[labels kept {same:.3f}] {layer} target {target:11s} {weighting:12s} "
                    f"inside {heat[grown].sum() / total:.3f}  "
                    f"outside body {heat[~body[chosen]].sum() / total:.3f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
