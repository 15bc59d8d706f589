"""How many slices a CPU batch holds: enough to keep the cores busy, few enough that every
feature map is recycled by the C allocator instead of being mapped afresh.

On the CPU a batch of many slices buys no speed: the convolutions of one batch of a few
slices already keep every core busy. It costs page faults instead. glibc's ``malloc`` gives a
block above its mmap threshold (adaptive, at most 32 MiB) freshly mapped memory, which the
kernel zeroes page by page on first touch, and hands big freed heap tops back to the system.
With feature maps of a few MiB per slice, a batch of 16 slices at 128 x 128 made about 200,000
page faults per Segment & Explain run of the 119-slice IRCADb CT and was 8 % slower with
Grad-CAM than a batch of 8, which made none (``make bench``). The engine therefore caps CPU
batches so that the largest tensor a layer takes or gives stays within
:data:`CPU_FEATURE_MAP_BUDGET_BYTES`.
"""

from __future__ import annotations

import torch
from torch import nn

from .preprocessing import SliceInputSpec

CPU_FEATURE_MAP_BUDGET_BYTES = 16 * 2**20


def largest_feature_map_bytes(model: nn.Module, spec: SliceInputSpec) -> int:
    """Bytes of the largest tensor any module of ``model`` takes or gives for one slice,
    found by one forward pass of a blank slice."""
    largest = 0

    def note(values) -> None:
        nonlocal largest
        for value in values if isinstance(values, tuple | list) else (values,):
            if isinstance(value, torch.Tensor):
                largest = max(largest, value.numel() * value.element_size())

    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(lambda _m, inputs: note(inputs)))
        handles.append(module.register_forward_hook(lambda _m, _i, output: note(output)))
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    try:
        with torch.inference_mode():
            model(torch.zeros(1, spec.num_slices, *spec.input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return largest


def cpu_batch_limit(
    model: nn.Module, spec: SliceInputSpec, budget_bytes: int = CPU_FEATURE_MAP_BUDGET_BYTES
) -> int:
    """The most slices per CPU batch whose largest feature map fits ``budget_bytes`` (>= 1)."""
    return max(1, budget_bytes // max(1, largest_feature_map_bytes(model, spec)))
