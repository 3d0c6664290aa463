"""Tests of LVMyoSegLib.model.ensemble: the fast ensemble path equals the plain Keras model call.

Models are real networks (small ones for speed, product-size ones on a real Sunnybrook
study) whose BatchNormalization statistics are calibrated on data, so folding them into
the convolutions is a real change. No timing is asserted here (see benchmarks/).
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from LVMyoSegLib.errors import CancelledError, InputError  # noqa: E402
from LVMyoSegLib.labels import CHANNELS  # noqa: E402
from LVMyoSegLib.model import networks  # noqa: E402
from LVMyoSegLib.model.bundle import load_ensemble, write_bundle  # noqa: E402
from LVMyoSegLib.model.ensemble import Ensemble, EnsemblePredictor, FoldedModel, predict_ensemble  # noqa: E402
from LVMyoSegLib.model.variants import VARIANTS  # noqa: E402

TOL = 1e-3  # the contract: within 1e-3 of the plain Keras model call


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _calibrate(cnn, frames: np.ndarray, steps: int = 8) -> None:
    """Move BatchNorm moving statistics toward the data's (as training does): non-trivial BN."""
    for _ in range(steps):
        cnn(frames, training=True)


def _plain_mean(models, x):
    return np.mean([np.asarray(m(x, training=False)) for m in models], axis=0)


def _bn_layers(model) -> int:
    count = 0
    for layer in model.layers:
        count += isinstance(layer, keras.layers.BatchNormalization)
        if isinstance(layer, keras.Model):
            count += _bn_layers(layer)
    return count


@pytest.fixture(scope="module")
def small_members():
    """Two members per variant, different seeds, calibrated BN (width 4, 2 units per stage)."""
    frames = _x((16, 1, 32, 32, 1), seed=9)
    out = {v: [] for v in VARIANTS}
    for seed in range(2):
        cnn = networks.build_cnn(width=4, units=2, seed=seed)
        _calibrate(cnn, frames)
        out["cnn"].append(cnn)
        for v in ("one_level", "multi_level"):
            out[v].append(networks.build_model(v, networks.cnn_from_model(cnn), seed=seed))
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_ensemble_equals_the_mean_of_plain_keras_calls(small_members, variant):
    models = small_members[variant]
    x = _x((3, 4, 32, 32, 1), seed=1)
    ref = _plain_mean(models, x)
    predictor = EnsemblePredictor(models)
    for spb in (1, 2):  # 2: the last batch is padded
        out = predict_ensemble(predictor, x, slices_per_batch=spb)
        assert out.shape == ref.shape and out.dtype == np.float32
        assert np.max(np.abs(out - ref)) < TOL, (variant, spb)
    # the members differ, so the mean is not any single member
    assert np.max(np.abs(np.asarray(models[0](x, training=False)) - ref)) > 1e-3


def test_folding_keeps_outputs_and_leaves_the_model_alone(small_members):
    x = _x((2, 4, 32, 32, 1), seed=2)
    for variant, models in small_members.items():
        model = models[0]
        before = [np.array(w) for w in model.get_weights()]
        folded = FoldedModel(model).model
        assert _bn_layers(model) > 0 and _bn_layers(folded) == 0, variant
        diff = np.max(np.abs(np.asarray(folded(x)) - np.asarray(model(x, training=False))))
        assert diff < TOL, variant
        assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, model.get_weights()))


def test_loaded_bundle_and_reused_predictor_over_two_frame_counts(small_members, tmp_path):
    write_bundle(tmp_path / "b", small_members["multi_level"], model_id="t", variant="multi_level",
                 channels=CHANNELS, preprocessing={"pixel_mm": 4 / 3, "crop_size": 32})
    _, loaded = load_ensemble(tmp_path / "b")
    predictor = EnsemblePredictor(loaded)
    for t in (20, 25):  # Sunnybrook and the paper's frame counts, one predictor
        x = _x((2, t, 32, 32, 1), seed=t)
        out = predict_ensemble(predictor, x, slices_per_batch=4)  # more than the slices
        assert np.max(np.abs(out - _plain_mean(small_members["multi_level"], x))) < TOL


def test_progress_reaches_one_and_cancel_stops_before_the_next_batch(small_members):
    models = small_members["cnn"][:2]
    before = [np.array(w) for w in models[0].get_weights()]
    x = _x((5, 2, 32, 32, 1))
    seen = []
    predict_ensemble(models, x, slices_per_batch=2, progress=seen.append)
    # member after member, 3 batches each (the last one padded)
    assert [e.fraction for e in seen] == pytest.approx([0.2, 0.4, 0.5, 0.7, 0.9, 1.0])
    assert "member 1 of 2" in seen[0].message and "member 2 of 2, slices 5-5 of 5" in seen[-1].message
    calls = []
    with pytest.raises(CancelledError, match="cancelled"):
        predict_ensemble(models, x, slices_per_batch=2,
                         cancel=lambda: calls.append(1) or len(calls) > 4)
    assert len(calls) == 5  # member 1 and one batch of member 2 ran, the next batch was refused
    # the second member's weights were swapped into the first member's model, and put back
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, models[0].get_weights()))


def test_bad_input_is_refused(small_members):
    models = small_members["cnn"][:1]
    with pytest.raises(InputError, match="slices, frames"):
        predict_ensemble(models, _x((3, 32, 32, 1)))
    with pytest.raises(InputError, match="No ensemble member"):
        predict_ensemble([], _x((1, 2, 32, 32, 1)))
    with pytest.raises(InputError, match="slices_per_batch"):
        predict_ensemble(models, _x((1, 2, 32, 32, 1)), slices_per_batch=0)
    with pytest.raises(InputError, match="at least one slice"):
        predict_ensemble(models, _x((0, 2, 32, 32, 1)))
    with pytest.raises(InputError, match="member 1 .* does not have the architecture of member 0"):
        predict_ensemble([small_members["cnn"][0], small_members["multi_level"][0]], _x((1, 2, 32, 32, 1)))
    ensemble = Ensemble.of_models(small_members["one_level"])
    assert len(ensemble.first(1)) == 1 and ensemble.first(2) is ensemble
    with pytest.raises(InputError, match="has 2 members; asked for 3"):
        ensemble.first(3)
    with pytest.raises(InputError, match="No ensemble member"):
        Ensemble(ensemble.model, ())
    with pytest.raises(InputError, match="weight arrays"):
        Ensemble(ensemble.model, (ensemble.weights[0][:-1],))


@pytest.mark.slow
def test_product_size_ensemble_on_a_real_study(sunnybrook_root):
    """A ResNet-56 (width 16) multi-level member at the product's 4/3 mm, 96-pixel crop, on real frames."""
    from LVMyoSegLib.io.readers import read_cine
    from LVMyoSegLib.preprocessing import preprocess
    from LVMyoSegLib.preprocessing.localisation import localise

    cine = read_cine(sunnybrook_root / "dicom" / "SCD0000101")
    transform = localise(cine, pixel_mm=4 / 3, crop_size=96)
    x = preprocess.to_network(cine, transform)[5:7]            # two mid-ventricular slices
    cnn = networks.build_cnn(width=16, seed=0)
    _calibrate(cnn, x.reshape(-1, 1, 96, 96, 1)[::4], steps=4)
    members = [networks.build_model("multi_level", networks.cnn_from_model(cnn), seed=0)]
    out = predict_ensemble(members, x, slices_per_batch=1)
    ref = _plain_mean(members, x)
    assert out.shape == (2, cine.n_phases, 96, 96, 2)
    assert np.max(np.abs(out - ref)) < TOL
