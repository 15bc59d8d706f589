"""2.5D inputs with neighbours a fixed distance apart (``--slice-step-mm``), end to end.

A synthetic case (2 mm slices, stored with its slice axis neither first nor unflipped, so the
spacing must be taken along the canonical slice axis) is trained on for one epoch with three
slices 3 mm apart; the step must reach the checkpoints, the slice cache and every input that
inference and evaluation build.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import restored
from LiverXAILib.cli.main import main
from LiverXAILib.constants import LIVER, TUMOR
from LiverXAILib.evaluation.evaluate import evaluate_models
from LiverXAILib.evaluation.figure_slices import gradcam_slices
from LiverXAILib.explain.faithfulness import faithfulness_curves
from LiverXAILib.explain.methods import normalize_volume
from LiverXAILib.io.volumes import read_volume, write_volume
from LiverXAILib.models.checkpoints import load_checkpoint, read_checkpoint
from LiverXAILib.models.networks import build_model
from LiverXAILib.segment.inference import SliceInferenceEngine
from LiverXAILib.segment.map_grid import labels_on_map_grid, upsample_slice
from LiverXAILib.segment.pipeline import run_pipeline
from LiverXAILib.segment.preprocessing import SliceInputSpec
from LiverXAILib.training.cases import Case, load_canonical_case
from LiverXAILib.training.options import SINGLE_SLICE_STEP
from LiverXAILib.training.slice_cache import CACHE_VERSION, SliceCache, _file_identity

SLICE_MM, ROW_MM, COLUMN_MM = 2.0, 0.8, 1.2
#: Canonical (slice, row, column) axes, LPS index order, as Slicer's IJK-to-RAS.
CANONICAL_MATRIX = np.diag([-COLUMN_MM, -ROW_MM, SLICE_MM, 1.0])
FEATURES = "features=[4,8,16,32,64]"


def synthetic_case() -> tuple[np.ndarray, np.ndarray]:
    """Canonical CT (HU) and labels: a body, a liver whose size changes along z, a tumour."""
    z, y, x = np.meshgrid(
        np.arange(16) * SLICE_MM, np.arange(40) * ROW_MM, np.arange(40) * COLUMN_MM, indexing="ij"
    )
    ct = np.full(z.shape, -1000.0)
    ct[(y - 16) ** 2 + (x - 24) ** 2 < 15**2] = 40.0
    liver = ((y - 16) / 9) ** 2 + ((x - 20) / 10) ** 2 + ((z - 15) / 12) ** 2 < 1
    tumour = (y - 16) ** 2 + (x - 20) ** 2 + (z - 15) ** 2 < 4**2
    ct[liver] = 60.0 + 3.0 * z[liver]  # the liver's HU change with z, as contrast does
    ct[tumour] = 150.0
    labels = liver.astype(np.uint8) + tumour.astype(np.uint8)
    return ct.astype(np.int16), labels


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Case:
    """The synthetic case in files, stored with permuted and flipped axes."""
    folder = tmp_path_factory.mktemp("step-case")
    ct, labels = synthetic_case()
    permutation, flips = (1, 2, 0), (False, True, True)
    paths = []
    for name, array in (("ct", ct), ("label", labels)):
        stored, matrix = restored(array, CANONICAL_MATRIX, permutation, flips)
        paths.append(folder / f"{name}.nii.gz")
        write_volume(paths[-1], stored, matrix)
    return Case(*paths, case_id="synthetic")


def test_the_case_is_read_back_with_its_slice_spacing_first(case):
    canonical = load_canonical_case(case)
    ct, labels = synthetic_case()
    np.testing.assert_array_equal(canonical.image, ct)
    np.testing.assert_array_equal(canonical.labels, labels)
    assert canonical.spacing == pytest.approx((SLICE_MM, ROW_MM, COLUMN_MM))


def test_the_cache_key_holds_the_step_and_entries_without_one_keep_theirs(case, tmp_path):
    keys = {
        step: SliceCache(tmp_path, SliceInputSpec((-200, 300), (64, 64), 3, step), 0.2).key(case)
        for step in (None, 2.5, 3.0)
    }
    assert len(set(keys.values())) == 3
    before = {  # the settings hashed before slice steps existed
        "version": CACHE_VERSION,
        "image": _file_identity(case.image),
        "label": _file_identity(case.label),
        "hu_window": [-200, 300],
        "input_size": [64, 64],
        "num_slices": 3,
        "keep_empty_fraction": 0.2,
        "seed": 0,
    }
    digest = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()
    assert keys[None] == f"synthetic-{digest[:16]}"


def test_the_figure_explains_a_step_model_on_the_inputs_of_the_whole_volume(case, monkeypatch):
    """The figure runs the engine on small blocks of each slice and its neighbours; with a
    step the blocks hold the interpolated neighbours and are spaced one step, so each figure
    slice gets the network input it has in the whole volume, and the same Grad-CAM."""
    torch.manual_seed(0)
    model = build_model("unet", in_channels=3, num_classes=3, features=(4, 8, 16, 32, 64))
    head = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        head.bias[LIVER] += 2.0  # predicts liver somewhere, so its map is not empty
    spec = SliceInputSpec((-200.0, 300.0), (64, 64), 3, 3.0)
    volume, slices = load_canonical_case(case).image, [0, 7, 15]
    expected_inputs = spec.batch(volume, slices, SLICE_MM)
    engine = SliceInferenceEngine(model.eval(), spec, torch.device("cpu"))
    whole = engine.run(volume, (LIVER, TUMOR), slice_spacing_mm=SLICE_MM)

    built = []
    original = SliceInputSpec.batch

    def recording(self, blocks, indices, slice_spacing_mm=None):
        built.append(original(self, blocks, indices, slice_spacing_mm))
        return built[-1]

    monkeypatch.setattr(SliceInputSpec, "batch", recording)
    figure = gradcam_slices(engine.model, spec, torch.device("cpu"), volume, slices, SLICE_MM)
    centres = torch.cat(built)[[1, 4, 7]]  # each block: neighbour, slice, neighbour
    torch.testing.assert_close(centres, expected_inputs, rtol=0, atol=1e-6)
    by_index = SliceInputSpec(spec.hu_window, spec.input_size, 3).batch(volume, slices)
    assert float((centres - by_index).abs().max()) > 0.01  # the step changed the input
    for class_id, name in ((LIVER, "liver"), (TUMOR, "tumor")):
        maps = [upsample_slice(whole.heatmaps["gradcam", class_id][i], (40, 40)) for i in slices]
        expected = normalize_volume(np.stack(maps), "volume-max")
        np.testing.assert_allclose(figure[name], expected, atol=1e-4)
    assert float(figure["liver"].max()) == pytest.approx(1.0)  # a map, not zeros


def test_explanations_and_faithfulness_build_their_inputs_with_the_spacing(case, spacings):
    torch.manual_seed(0)
    model = build_model("unet", in_channels=3, num_classes=3, features=(4, 8, 16, 32, 64))
    head = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        head.bias[LIVER] += 2.0
    spec = SliceInputSpec((-200.0, 300.0), (64, 64), 3, 3.0)
    canonical = load_canonical_case(case)
    engine = SliceInferenceEngine(model.eval(), spec, torch.device("cpu"), 8)
    engine.ig_options = {"steps": 2}
    outputs = engine.run(
        canonical.image, (LIVER,), methods=("integrated-gradients",), slice_spacing_mm=SLICE_MM
    )
    assert outputs.heatmaps["integrated-gradients", LIVER].any()
    grid = labels_on_map_grid(canonical.labels, (64, 64))
    engine.explain(canonical.image, grid, (LIVER,), ("gradcam",), slice_spacing_mm=SLICE_MM)
    result = faithfulness_curves(
        model, spec, canonical.image, canonical.labels, (LIVER,), ("gradcam",), ("random",),
        max_slices=2, steps=2, slice_spacing_mm=SLICE_MM,
    )  # fmt: skip
    assert len(result.slices["liver"]) == 2
    assert len(spacings) > 3 and set(spacings) == {SLICE_MM}
    for call in (
        lambda: engine.explain(canonical.image, grid, (LIVER,), ("gradcam",)),
        lambda: faithfulness_curves(model, spec, canonical.image, canonical.labels, (LIVER,)),
    ):
        with pytest.raises(ValueError, match="slice spacing"):
            call()


def train(arguments: list[str]) -> tuple[int, list[dict], str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(["train", *arguments])
    lines = stdout.getvalue().splitlines()
    return status, [json.loads(line) for line in lines if line.startswith("{")], stderr.getvalue()


def test_a_step_with_one_slice_per_input_is_refused(case, tmp_path):
    base = ["--case", str(case.image), str(case.label), "--out", str(tmp_path / "out")]
    status, events, stderr = train([*base, "--slices", "1", "--slice-step-mm", "3"])
    assert status == 2 and SINGLE_SLICE_STEP in stderr
    assert events[-1] == {"event": "error", "message": SINGLE_SLICE_STEP}
    assert not (tmp_path / "out").exists()


def test_crossval_carries_the_step_in_its_recipe(tmp_path):
    from LiverXAILib.cli.main import build_parser
    from LiverXAILib.evaluation.crossval import CrossvalConfig

    args = build_parser().parse_args(
        ["crossval", "--data", "d.csv", "--out", "o", "--slices", "3", "--slice-step-mm", "2.5"]
    )
    assert (args.slices, args.slice_step_mm) == (3, 2.5)
    config = CrossvalConfig(Path("d"), tmp_path, {"num_slices": 3, "slice_step_mm": 2.5})
    assert config.train_settings()["slice_step_mm"] == 2.5
    assert config.recipe()["slice_step_mm"] == 2.5
    assert CrossvalConfig(Path("d"), tmp_path).recipe()["slice_step_mm"] is None


@pytest.fixture
def spacings(monkeypatch) -> list:
    """The ``slice_spacing_mm`` of every network input built while the fixture is in use."""
    seen = []
    original = SliceInputSpec.batch

    def recording(self, volume, indices, slice_spacing_mm=None):
        seen.append(slice_spacing_mm)
        return original(self, volume, indices, slice_spacing_mm)

    monkeypatch.setattr(SliceInputSpec, "batch", recording)
    return seen


@pytest.mark.slow
def test_a_run_with_a_step_stores_it_and_every_input_uses_it(case, tmp_path, spacings):
    out, cache = tmp_path / "run", tmp_path / "cache"
    status, events, stderr = train(
        ["--case", str(case.image), str(case.label), "--out", str(out), "--cache", str(cache)]
        + ["--epochs", "1", "--size", "128", "--slices", "3", "--slice-step-mm", "3"]
        + ["--arch-option", FEATURES, "--augment", "none", "--keep-empty", "0"]
        + ["--batch-size", "8", "--device", "cpu"]
    )
    assert status == 0, stderr[-2000:]
    assert events[-1]["event"] == "done"
    assert spacings and set(spacings) == {SLICE_MM}  # the cache's extraction
    for name in ("best.pt", "last.pt"):
        assert read_checkpoint(out / name)["metadata"]["slice_step_mm"] == 3.0
    model, metadata = load_checkpoint(out / "best.pt")
    assert metadata.input_spec() == SliceInputSpec(metadata.hu_window, (128, 128), 3, 3.0)
    assert read_checkpoint(out / "last.pt")["training_state"]["config"]["slice_step_mm"] == 3.0

    # The cached training slices are the neighbours 3 mm apart of the 2 mm slices.
    (entry,) = [p for p in cache.iterdir() if (p / "manifest.json").is_file()]
    inputs = np.load(entry / "inputs.npy")
    indices = json.loads((entry / "manifest.json").read_text())["slice_indices"]
    canonical = load_canonical_case(case)
    spec = metadata.input_spec()
    expected = spec.batch(canonical.image, indices, SLICE_MM).numpy()
    np.testing.assert_allclose(inputs, expected, atol=1e-3)  # float16 storage
    by_index = SliceInputSpec(spec.hu_window, spec.input_size, 3).batch(canonical.image, indices)
    assert float(np.abs(inputs - by_index.numpy()).max()) > 0.01

    # Segment & Explain builds every input with the slice spacing, read off the stored axes.
    spacings.clear()
    engine = SliceInferenceEngine(model, spec, torch.device("cpu"), 8)
    array, ijk_to_ras = read_volume(case.image)
    assert array.shape != canonical.image.shape  # stored in another axis order
    result = run_pipeline(array, ijk_to_ras, engine, (LIVER, TUMOR), ("gradcam",))
    assert result.labels.shape == (16, 40, 40) and set(np.unique(result.labels)) <= {0, 1, 2}
    assert result.heatmaps["gradcam"][LIVER].shape == (16, 128, 128)
    assert spacings and set(spacings) == {SLICE_MM}
    with pytest.raises(ValueError, match="slice spacing"):
        engine.run(canonical.image)

    # Evaluation: the engine, the cross entropy and the figure's blocks (spaced one step).
    spacings.clear()
    (evaluation,) = evaluate_models([out / "best.pt"], [case], device="cpu", figure_slices=2)
    assert set(spacings) == {SLICE_MM, 3.0}
    assert math.isfinite(evaluation.per_case[0].cross_entropy)
    assert evaluation.figure.heatmaps["liver"].shape == (2, 40, 40)
