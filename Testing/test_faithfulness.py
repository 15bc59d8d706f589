"""Deletion and insertion curves: a map that points at the evidence beats a random map, and
the whole-case function measures every class and map on the labels it is given."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from LiverXAILib.explain.faithfulness import (
    REFERENCE_MAPS,
    area_under_curve,
    choose_slices,
    deletion_insertion,
    faithfulness_curves,
    pixel_ranks,
    reference_map,
    step_fractions,
)
from LiverXAILib.segment.preprocessing import SliceInputSpec
from test_explain import RegionNet, bright_top_right_quadrant


def test_pixel_ranks_put_the_highest_first_and_break_ties_at_random():
    saliency = np.array([[0.0, 3.0], [1.0, 0.0]])
    ranks = pixel_ranks(saliency, np.random.default_rng(0))
    assert ranks.reshape(2, 2)[0, 1] == 0 and ranks.reshape(2, 2)[1, 0] == 1
    tied = {tuple(pixel_ranks(np.zeros(16), np.random.default_rng(s))[:4]) for s in range(5)}
    assert len(tied) > 1  # equal values come in no fixed order


def test_areas_run_over_the_fraction_of_pixels_changed():
    fractions = step_fractions(10)
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and np.all(np.diff(fractions) > 0)
    assert fractions[1] < 0.1 / 5  # dense at the start, where small regions are decided
    assert area_under_curve(np.ones(11)) == pytest.approx(1.0)
    assert area_under_curve(fractions) == pytest.approx(0.5)  # the line y = x
    assert area_under_curve(np.stack([np.zeros(11), np.ones(11)])) == pytest.approx([0.0, 1.0])


def test_reference_maps():
    inputs = torch.zeros(2, 1, 16, 16)
    inputs[..., 8:] = 1.0
    edge = reference_map(inputs, "edge")
    assert edge.shape == (2, 16, 16)
    assert edge[:, :, 7:9].min() > 0 and edge[:, :, :6].max() == 0 and edge[:, :, 10:].max() == 0
    first, again = reference_map(inputs, "random", 3), reference_map(inputs, "random", 3)
    assert torch.equal(first, again) and first.std() > 0.2
    with pytest.raises(ValueError, match="unknown reference"):
        reference_map(inputs, "sobel")


def test_a_map_on_the_evidence_deletes_and_inserts_faster_than_a_random_map():
    model = RegionNet().eval()
    inputs = bright_top_right_quadrant(2)
    explained = model(inputs).argmax(1) == 1
    evidence = torch.zeros(2, 64, 64)
    evidence[:, :32, 32:] = 1.0  # the quadrant RegionNet bases class 1 on
    random = reference_map(inputs, "random")
    results = {}
    for name, saliency in (("evidence", evidence), ("random", random)):
        deletion, insertion = deletion_insertion(model, inputs, saliency, explained, 1, steps=8)
        assert deletion.shape == insertion.shape == (2, 9)
        assert np.allclose(deletion[:, 0], insertion[:, -1])  # both end at the real image
        results[name] = area_under_curve(deletion).mean(), area_under_curve(insertion).mean()
    assert results["evidence"][0] < results["random"][0]
    assert results["evidence"][1] > results["random"][1]
    with pytest.raises(ValueError, match="do not match"):
        deletion_insertion(model, inputs, evidence[:1], explained, 1)


def test_slices_are_spread_over_those_that_hold_enough_of_the_class():
    explained = np.zeros((10, 8, 8), dtype=bool)
    explained[2:9, :4, :5] = True  # 20 pixels on slices 2..8
    explained[5, :, :] = False
    assert choose_slices(explained, 3) == [2, 4, 8]
    assert choose_slices(explained, 10) == [2, 3, 4, 6, 7, 8]
    assert choose_slices(explained, 3, min_pixels=21) == []


def test_faithfulness_curves_measure_each_class_and_map_on_the_given_labels():
    model = RegionNet().eval()
    volume = np.zeros((4, 64, 64), dtype=np.float32)
    volume[:, :32, 32:] = 300.0
    labels = np.zeros((4, 128, 128), dtype=np.uint8)  # at twice the map grid's size
    labels[1:3, :64, 64:] = 1
    spec = SliceInputSpec((0.0, 400.0), (64, 64))
    result = faithfulness_curves(
        model, spec, volume, labels, class_ids=(1, 2), max_slices=4, steps=6, ig_steps=4
    )
    assert list(result.per_class) == ["liver"]  # no tumour in the labels: left out
    assert result.slices == {"liver": [1, 2]}
    maps = result.per_class["liver"]
    assert list(maps) == ["gradcam", "gradcam++", "integrated-gradients", *REFERENCE_MAPS]
    for summary in maps.values():
        assert 0.0 <= summary.deletion_auc <= 1.0 and 0.0 <= summary.insertion_auc <= 1.0
        assert summary.slices == 2 and len(summary.deletion) == len(result.fractions) == 7
    assert maps["gradcam"].deletion_auc < maps["random"].deletion_auc
    data = json.loads(json.dumps(result.to_dict()))
    assert data["perClass"]["liver"]["gradcam"]["slices"] == 2
    assert data["settings"]["weighting"] == "channel-mean"
    with pytest.raises(ValueError, match="unknown reference"):
        faithfulness_curves(model, spec, volume, labels, references=("noise",))
