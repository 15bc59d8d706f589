"""A training run's data: its split by patient, the cached slices, the datasets.

The split is reused from ``OUT/split.json`` when resuming, else made (or taken from explicit
cases); a case whose label does not fit its CT is refused (or left out with ``keep_going``),
and the main process writes the split there. Every process extracts its share of the cases'
slices into the slice cache, then all of them open the training set (augmented) and the
validation set, which is the training cases' slices when there is no validation case.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from ..segment.preprocessing import SliceInputSpec
from .case_checks import without_unfit_cases
from .cases import Case, DataSplit, discover_cases, split_by_patient
from .distributed import DistributedContext
from .options import default_cache_dir
from .slice_cache import CachedCase, SliceCache
from .slice_dataset import SliceDataset
from .stop_request import StoppedWhilePreparing, StopRequest

if TYPE_CHECKING:
    from .trainer import TrainConfig

Log = Callable[[dict], None]


def resolve_split(config: TrainConfig) -> DataSplit:
    """The run's split: reused from ``OUT/split.json`` when resuming, else made and written."""
    split_file = Path(config.out_dir) / "split.json"
    if config.resume and split_file.is_file():
        return DataSplit.read(split_file)
    if config.data is not None:
        cases = discover_cases(config.data)
        split = split_by_patient(
            cases, config.validation_fraction, config.test_fraction, config.split_seed
        )
    elif config.train_cases:
        split = DataSplit(list(config.train_cases), list(config.validation_cases))
    else:
        raise InputError("No training data: give a data folder / CSV or training cases.")
    return split


def cache_cases(
    cases: list[Case],
    cache: SliceCache,
    context: DistributedContext,
    log: Log,
    stop: StopRequest,
) -> list[CachedCase]:
    """Extract every case's slices (each process its share), then look them all up."""
    for index, case in enumerate(cases):
        if index % context.world_size != context.rank:
            continue
        if stop.requested():
            raise StoppedWhilePreparing
        entry, reused = cache.ensure(case)
        log(
            {
                "event": "cache",
                "case": case.case_id,
                "index": index,
                "total": len(cases),
                "slices": entry.count,
                "cached": reused,
            }
        )
    context.barrier()
    cached = [cache.lookup(case) for case in cases]
    missing = [case.case_id for case, entry in zip(cases, cached, strict=True) if entry is None]
    if missing:
        raise RuntimeError(f"Slice cache entries missing after extraction: {missing}")
    return cached


def split_for_run(config: TrainConfig, context: DistributedContext, log: Log) -> DataSplit:
    """The run's split; the main process writes it to ``OUT/split.json`` and logs it."""
    out = Path(config.out_dir)
    split = without_unfit_cases(resolve_split(config), config.keep_going, log)
    if not split.train:
        raise InputError("The split left no case for training.")
    if context.is_main:
        split.write(out / "split.json")
        log(
            {
                "event": "split",
                **{
                    part: [c.case_id for c in split.part(part)]
                    for part in ("train", "validation", "test")
                },
                "file": str(out / "split.json"),
            }
        )
    return split


def selection_part(split: DataSplit) -> str:
    """The slices that choose ``best.pt``: the validation cases', else the training cases'."""
    return "validation" if split.validation else "training"


def open_datasets(
    config: TrainConfig,
    split: DataSplit,
    context: DistributedContext,
    log: Log,
    stop: StopRequest,
) -> tuple[SliceDataset, SliceDataset]:
    """Cache the split's slices and open the training and validation datasets.

    Raises ``StoppedWhilePreparing`` when a stop is requested while slices are extracted.
    """
    began = time.perf_counter()
    spec = SliceInputSpec(
        config.hu_window, config.input_size, config.num_slices, config.slice_step_mm
    )
    cache = SliceCache(
        config.cache_dir or default_cache_dir(), spec, config.keep_empty_fraction, config.split_seed
    )
    train_cached = cache_cases(split.train, cache, context, log, stop)
    validation_cached = (
        cache_cases(split.validation, cache, context, log, stop)
        if split.validation
        else train_cached
    )
    train_set = SliceDataset(train_cached, config.augmentations, seed=config.seed)
    validation_set = SliceDataset(validation_cached)
    log(
        {
            "event": "data",
            "train_slices": len(train_set),
            "validation_slices": len(validation_set),
            "selection": selection_part(split),
            "seconds": time.perf_counter() - began,
        }
    )
    return train_set, validation_set
