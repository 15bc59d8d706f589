"""The training sampler draws the asked share of slices with tumour from a real cached case."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA, require
from LiverXAILib.constants import TUMOR
from LiverXAILib.segment.preprocessing import SliceInputSpec
from LiverXAILib.training.cases import Case
from LiverXAILib.training.sampler import training_sampler, tumor_slices
from LiverXAILib.training.slice_cache import SliceCache
from LiverXAILib.training.slice_dataset import SliceDataset
from torch.utils.data import RandomSampler, WeightedRandomSampler


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> SliceDataset:
    """The liver slices of a real HCC patient at 64 x 64: 3 of them hold tumour."""
    import SimpleITK as sitk

    folder = tmp_path_factory.mktemp("case")
    paths = []
    for kind in ("ct", "label"):
        image = sitk.ReadImage(str(require(SHARED_DATA / "hcctace_0697" / f"{kind}.nii.gz")))
        paths.append(folder / f"{kind}.nii.gz")
        sitk.WriteImage(image[:, :, 20:36], str(paths[-1]))
    spec = SliceInputSpec((-200.0, 300.0), (64, 64), 1)
    entry, _ = SliceCache(folder / "cache", spec, keep_empty_fraction=0.0).ensure(
        Case(paths[0], paths[1], "hcctace_0697")
    )
    return SliceDataset([entry])


def test_tumor_slices_are_the_labelled_ones(dataset):
    flags = tumor_slices(dataset)
    expected = [(dataset[i][1] == TUMOR).any().item() for i in range(len(dataset))]
    assert flags.tolist() == expected and 0 < flags.sum() < len(flags)


def test_without_a_share_every_slice_comes_once(dataset):
    sampler = training_sampler(dataset, None, seed=3)
    assert isinstance(sampler, RandomSampler)
    assert sorted(sampler) == list(range(len(dataset)))


@pytest.mark.parametrize("share", [0.25, 0.5, 0.8])
def test_a_share_draws_that_share_of_tumour_slices(dataset, share):
    flags = tumor_slices(dataset)
    sampler = training_sampler(dataset, share, seed=3)
    assert isinstance(sampler, WeightedRandomSampler)
    draws = []
    for epoch in range(300):
        sampler.generator.manual_seed(epoch)
        epoch_draw = list(sampler)
        assert len(epoch_draw) == len(dataset)  # an epoch keeps its length
        draws.extend(epoch_draw)
    observed = flags[np.asarray(draws)].mean()
    assert abs(observed - share) < 0.03, (observed, share, flags.mean())


def test_the_same_seed_draws_the_same_epoch(dataset):
    first = training_sampler(dataset, 0.5, seed=7)
    second = training_sampler(dataset, 0.5, seed=7)
    assert list(first) == list(second)
