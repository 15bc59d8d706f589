"""Sanity checks of Adebayo et al. (2018) for every explanation method: cascading model
randomisation on the bundled demo U-Net and real CT slices, label permutation on a small
synthetic liver task, and the verdict that ``METHODS[...].sanity`` declares."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SAMPLE_CT, require
from LiverXAILib.explain.methods import METHODS, attribute
from LiverXAILib.explain.sanity_checks import (
    RandomizationStep,
    attribute_on_region,
    average_cascades,
    cascading_randomization,
    judge,
    label_permutation_similarity,
    randomization_blocks,
    randomize_module,
    rank_similarity,
)
from LiverXAILib.io.volumes import read_volume
from LiverXAILib.models.catalog import resolve_model
from LiverXAILib.models.checkpoints import load_checkpoint
from LiverXAILib.models.networks import available_models, build_model
from LiverXAILib.segment.orientation import canonical_orientation

LIVER = 1
DEMO_SLICES = [100, 106]  # canonical axial slices of the sample CT through the liver dome
IG_OPTIONS = {"steps": 8, "internal_batch_size": 16}
SEEDS = (0, 1, 2)  # the cascade is judged on the mean |rho| over these randomisation draws
SYNTHETIC_SIZE = 64
TRAINING_STEPS = 50
TRAINING_BATCH = 8


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: with other work on the two cores, OpenMP's waiting threads would
    make these many small passes many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def method_options(method: str, hu_window: tuple[float, float]) -> dict:
    options = {"hu_window": hu_window}
    if method == "integrated-gradients":
        options.update(IG_OPTIONS)
    return options


def steps_of(*values: float) -> list[RandomizationStep]:
    return [RandomizationStep(f"block{i}", value) for i, value in enumerate(values)]


# --- the demo U-Net on real CT slices ---------------------------------------------------------


@pytest.fixture(scope="module")
def demo():
    """The bundled demo U-Net, its metadata and a batch of liver slices of the sample CT."""
    model, metadata = load_checkpoint(resolve_model("unet-demo"))
    array, ijk_to_ras = read_volume(require(SAMPLE_CT))
    canonical = canonical_orientation(ijk_to_ras).apply(array)
    inputs = metadata.input_spec().batch(canonical, DEMO_SLICES)
    return model, metadata, inputs


@pytest.fixture(scope="module")
def demo_cascades(demo):
    """Cascading randomisation of the demo U-Net, one per seed, computed once per method."""
    model, metadata, inputs = demo
    cache: dict[str, list[list[RandomizationStep]]] = {}

    def cascades(method: str) -> list[list[RandomizationStep]]:
        if method not in cache:
            options = method_options(method, metadata.hu_window)
            cache[method] = [
                cascading_randomization(model, inputs, LIVER, method, seed=seed, **options)
                for seed in SEEDS
            ]
        return cache[method]

    return cascades


def test_demo_model_predicts_liver_on_the_chosen_slices(demo):
    model, _, inputs = demo
    with torch.no_grad():
        predicted = model(inputs).argmax(dim=1)
    liver_fraction = (predicted == LIVER).flatten(1).float().mean(dim=1)
    assert inputs.shape == (len(DEMO_SLICES), 1, 128, 128)
    assert torch.all(liver_fraction > 0.1), liver_fraction


def test_default_blocks_of_the_unet_run_from_head_to_stem(demo):
    model, _, inputs = demo
    assert randomization_blocks(model, inputs) == [
        "head",
        *(f"decoder.{i}" for i in (3, 2, 1, 0)),
        *(f"encoder.{i}" for i in (3, 2, 1, 0)),
        "stem",
    ]


@pytest.mark.parametrize("architecture", available_models())
def test_default_blocks_start_at_the_head_and_cover_every_parameter(architecture: str):
    model = build_model(architecture).eval()
    size = 128 if architecture == "transunet" else 64
    blocks = randomization_blocks(model, torch.zeros(1, 1, size, size))
    assert blocks[0].startswith("head")
    modules = dict(model.named_modules())
    covered = {id(p) for name in blocks for p in modules[name].parameters()}
    covered |= {id(p) for p in model.parameters(recurse=False)}  # re-drawn with the last block
    assert covered == {id(p) for p in model.parameters()}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_cascade_on_the_demo_model_has_one_finite_step_per_block(method: str, demo, demo_cascades):
    model, _, inputs = demo
    for steps in demo_cascades(method):
        assert [step.layers for step in steps] == randomization_blocks(model, inputs)
        assert all(-1.0 <= step.spearman <= 1.0 for step in steps)
        assert not any(step.note for step in steps), steps  # the fixed region keeps maps non-empty


# --- label permutation on a synthetic liver task ----------------------------------------------


def synthetic_liver_images(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images with a bright ellipse (liver, 1) holding a brighter disc (tumour, 2)."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(count, 1, 1, generator=generator)

    rows, columns = torch.meshgrid(
        torch.arange(SYNTHETIC_SIZE, dtype=torch.float32),
        torch.arange(SYNTHETIC_SIZE, dtype=torch.float32),
        indexing="ij",
    )
    centre_row, centre_column = uniform(20, 44), uniform(20, 44)
    radius_row, radius_column = uniform(9, 16), uniform(9, 16)
    liver = ((rows - centre_row) / radius_row) ** 2 + (
        (columns - centre_column) / radius_column
    ) ** 2 <= 1
    tumour_row = centre_row + uniform(-0.4, 0.4) * radius_row
    tumour_column = centre_column + uniform(-0.4, 0.4) * radius_column
    tumour = (rows - tumour_row) ** 2 + (columns - tumour_column) ** 2 <= uniform(2.5, 4.5) ** 2
    tumour &= liver
    labels = liver.long() + tumour.long()
    images = 0.15 + 0.4 * liver.float() + 0.35 * tumour.float()
    images = images + 0.05 * torch.randn(images.shape, generator=generator)
    return images[:, None].clamp(0, 1), labels


def train(labels: torch.Tensor, images: torch.Tensor, seed: int) -> torch.nn.Module:
    """A small U-Net after a fixed number of seeded Adam steps on (images, labels)."""
    torch.manual_seed(seed)
    model = build_model("unet", features=(8, 16, 32, 64))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(TRAINING_STEPS):
        batch = torch.randperm(images.shape[0], generator=order)[:TRAINING_BATCH]
        loss = F.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def derangement(count: int, seed: int) -> torch.Tensor:
    """A permutation with no fixed point: image i gets the label map of image j != i."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        permutation = torch.randperm(count, generator=generator)
        if not torch.any(permutation == torch.arange(count)):
            return permutation


def dice(predicted: torch.Tensor, truth: torch.Tensor, label: int) -> float:
    a, b = predicted == label, truth == label
    return float(2 * (a & b).sum() / (a.sum() + b.sum()).clamp_min(1))


@pytest.fixture(scope="module")
def synthetic_models():
    """Models trained on true and on permuted labels, and held-out images with their labels."""
    images, labels = synthetic_liver_images(64, seed=1)
    trained = train(labels, images, seed=2)
    permuted = train(labels[derangement(64, seed=3)], images, seed=2)
    held_out, held_out_labels = synthetic_liver_images(8, seed=4)
    return trained, permuted, held_out, held_out_labels


@pytest.fixture(scope="module")
def permuted_similarities(synthetic_models):
    trained, permuted, held_out, _ = synthetic_models
    cache: dict[str, float] = {}

    def similarity(method: str) -> float:
        if method not in cache:
            options = method_options(method, (0.0, 1.0))
            cache[method] = label_permutation_similarity(
                trained, permuted, held_out, LIVER, method, **options
            )
        return cache[method]

    return similarity


def test_only_the_model_on_true_labels_learns_the_liver(synthetic_models):
    trained, permuted, held_out, truth = synthetic_models
    with torch.no_grad():
        assert dice(trained(held_out).argmax(1), truth, LIVER) > 0.85
        assert dice(permuted(held_out).argmax(1), truth, LIVER) < 0.7


@pytest.mark.parametrize("method", list(METHODS))
def test_a_model_is_perfectly_similar_to_itself(method: str, synthetic_models):
    trained, _, held_out, _ = synthetic_models
    options = method_options(method, (0.0, 1.0))
    similarity = label_permutation_similarity(trained, trained, held_out, LIVER, method, **options)
    assert similarity == pytest.approx(1.0)


@pytest.mark.parametrize("method", list(METHODS))
def test_a_fixed_region_changes_which_pixels_are_explained_not_the_gradients(
    method: str, synthetic_models
):
    trained, _, held_out, _ = synthetic_models
    options = method_options(method, (0.0, 1.0))
    with torch.no_grad():
        own = trained(held_out[:2]).argmax(dim=1)
    expected = attribute(trained, held_out[:2], LIVER, method, **options)
    actual = attribute_on_region(trained, held_out[:2], LIVER, method, own, **options)
    torch.testing.assert_close(actual, expected)
    left_half = own.clone()
    left_half[..., SYNTHETIC_SIZE // 2 :] = 0  # explain only the liver's left part
    partial = attribute_on_region(trained, held_out[:2], LIVER, method, left_half, **options)
    assert partial.sum() > 0 and not torch.allclose(partial, expected)


# --- the verdict declared in METHODS -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_sanity_verdict_matches_the_declared_label(
    method: str, demo_cascades, permuted_similarities
):
    cascades = demo_cascades(method)
    result = judge(
        method,
        average_cascades(cascades),
        permuted_similarities(method),
        seed_finals=[cascade[-1].spearman for cascade in cascades],
    )
    print(json.dumps({**result.to_dict(), "per_seed": [[s.spearman for s in c] for c in cascades]}))
    declared_pass = METHODS[method].sanity.startswith("passed")
    assert METHODS[method].sanity.startswith(("passed", "FAILS"))
    assert result.passed == declared_pass, result.reason


# --- units -------------------------------------------------------------------------------------


def test_cascade_leaves_the_callers_model_untouched(synthetic_models):
    trained, _, held_out, _ = synthetic_models
    before = {name: value.clone() for name, value in trained.state_dict().items()}
    gradients = [None if p.grad is None else p.grad.clone() for p in trained.parameters()]
    steps = cascading_randomization(trained, held_out[:2], LIVER, "gradcam", seed=5)
    assert [step.layers for step in steps] == randomization_blocks(trained, held_out[:2])
    assert not trained.training
    after = trained.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    for parameter, gradient in zip(trained.parameters(), gradients, strict=True):
        assert (parameter.grad is None) == (gradient is None)
        assert gradient is None or torch.equal(parameter.grad, gradient)


def test_randomize_module_redraws_a_block_reproducibly_and_nothing_else():
    model = build_model("unet", features=(8, 16, 32, 64))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)  # no parameter keeps its initial value
        for name, buffer in model.named_buffers():
            if "running" in name:
                buffer.add_(3.0)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    rng_state = torch.random.get_rng_state()
    randomize_module(model.decoder[2], seed=7)
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    after = model.state_dict()
    for name, value in after.items():
        if "num_batches_tracked" in name:
            continue
        changed = not torch.equal(before[name], value)
        assert changed == name.startswith("decoder.2."), name
    assert torch.all(after["decoder.2.conv.1.running_mean"] == 0)
    assert torch.all(after["decoder.2.conv.1.running_var"] == 1)
    again = build_model("unet", features=(8, 16, 32, 64))
    randomize_module(again.decoder[2], seed=7)
    assert torch.equal(again.decoder[2].conv[0].weight, model.decoder[2].conv[0].weight)


def test_rank_similarity_compares_ranks_of_absolute_values():
    ramp = np.arange(12.0).reshape(3, 4)
    assert rank_similarity(ramp, ramp**3) == pytest.approx(1.0)
    assert rank_similarity(ramp, -(ramp**3)) == pytest.approx(1.0)  # absolute values
    assert rank_similarity(ramp, ramp[::-1, ::-1].copy()) == pytest.approx(-1.0)
    assert rank_similarity(ramp, np.zeros_like(ramp)) == 0.0  # constant: undefined, taken as 0
    with pytest.raises(ValueError):
        rank_similarity(ramp, ramp[:2])


def test_judge_passes_a_decorrelating_cascade():
    result = judge("gradcam", steps_of(0.9, 0.6, 0.3, 0.1), permuted_label_spearman=0.2)
    assert result.passed and result.reason.startswith("passed")
    assert json.loads(json.dumps(result.to_dict()))["randomization"][0]["layers"] == "block0"


def test_judge_passes_a_cascade_that_decorrelates_at_once_and_stays_near_zero():
    assert judge("gradcam", steps_of(0.02, -0.01, 0.04, 0.03)).passed
    assert judge("gradcam", steps_of(-0.8, -0.6, -0.2, 0.02)).passed  # magnitudes decrease


def test_a_map_that_survives_randomisation_for_one_draw_fails():
    result = judge("ig", steps_of(0.9, 0.4, 0.3), seed_finals=[0.15, 0.52, 0.2])
    assert not result.passed and "1 of 3 random draws" in result.reason
    assert judge("ig", steps_of(0.9, 0.4, 0.3), seed_finals=[0.15, -0.3, 0.2]).passed


def test_average_cascades_takes_the_mean_magnitude_per_block():
    averaged = average_cascades([steps_of(0.9, -0.2), steps_of(-0.5, 0.4)])
    assert [step.layers for step in averaged] == ["block0", "block1"]
    assert [step.spearman for step in averaged] == pytest.approx([0.7, 0.3])
    with pytest.raises(ValueError):
        average_cascades([steps_of(0.9, 0.1), steps_of(0.9)])


@pytest.mark.parametrize(
    ("cascade", "permuted", "failure"),
    [
        ((0.95, 0.9, 0.8, 0.7), None, "still correlate |rho| = 0.70"),
        ((0.9, 0.5, -0.6), None, "still correlate |rho| = 0.60"),  # inverted map: shared
        ((0.1, 0.2, 0.3, 0.45), None, "does not decrease"),
        ((0.9, 0.5, 0.2), -0.8, "permuted labels correlate |rho| = 0.80"),
    ],
)
def test_judge_fails_each_criterion(cascade, permuted, failure: str):
    result = judge("integrated-gradients", steps_of(*cascade), permuted)
    assert not result.passed
    assert result.reason.startswith("FAILS") and failure in result.reason
    assert "\n" not in result.reason


def test_judge_notes_constant_maps_and_needs_steps():
    steps = [RandomizationStep("head", 0.0, "second map constant")]
    assert "constant maps" in judge("gradcam", steps).reason
    with pytest.raises(ValueError):
        judge("gradcam", [])
