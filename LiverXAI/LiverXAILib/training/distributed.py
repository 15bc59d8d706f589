"""Distributed data parallel set-up for ``torchrun``: one process per GPU (or CPU worker).

``torchrun --nproc_per_node N -m LiverXAILib train ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; :func:`distributed_context` then joins the process group (NCCL on CUDA,
gloo on the CPU). A plain ``python -m LiverXAILib train`` is a world of one and needs none of
this. Only rank 0 writes files and prints progress.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass
class DistributedContext:
    """Where this process stands in the training world."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""
    device: str = "cpu"  # where collective tensors live: NCCL needs them on the GPU

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over all processes (a copy; the input is unchanged when alone)."""
        if not self.enabled:
            return values.clone()
        values = values.to(self.device, copy=True)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values.cpu()

    def any(self, flag: bool) -> bool:
        """True on every process if ``flag`` is true on any of them."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


#: Collectives wait this long: the first run of a large dataset extracts its slice cache
#: before the first barrier, which can take longer than PyTorch's default 10–30 minutes.
COLLECTIVE_TIMEOUT = timedelta(hours=6)


def distributed_context(device_type: str) -> DistributedContext:
    """Join the process group that ``torchrun`` describes, or return a world of one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_type == "cuda" else "gloo"
    device = "cpu"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
    return DistributedContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        backend=backend,
        device=device,
    )
