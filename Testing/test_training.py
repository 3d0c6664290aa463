"""Tests of LVMyoSegLib.training.loop and .augment on the SYNTHETIC phantom (small, fast models).

Models here are ResNets with 1 unit per stage and width 4 (the product uses 9 and
16): the training machinery is the same, the runs take seconds.
"""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from LVMyoSegLib.errors import CancelledError, InputError  # noqa: E402
from LVMyoSegLib.io.phantom import make_synthetic_cine, sparsify_like_sunnybrook  # noqa: E402
from LVMyoSegLib.model import losses, networks  # noqa: E402
from LVMyoSegLib.training import loop as training  # noqa: E402
from LVMyoSegLib.training.augment import AugmentConfig, augment_batch, draw_transform  # noqa: E402

SMALL = dict(width=4, units=1)


def synthetic_network_arrays(n_phases=8, n_slices=6, size=48, seed=0, sparse=False):
    """Network-space arrays [Z, T, H, W, ...] of the SYNTHETIC phantom, per-slice standardised."""
    cine, labels = make_synthetic_cine(n_phases=n_phases, n_slices=n_slices, size=size,
                                       spacing=(2.0, 2.0, 8.0), seed=seed)
    if sparse:
        labels = sparsify_like_sunnybrook(labels)
    x = np.transpose(cine.frames, (1, 0, 2, 3))[..., None]
    x = (x - x.mean(axis=(1, 2, 3, 4), keepdims=True)) / x.std(axis=(1, 2, 3, 4), keepdims=True)
    y = np.transpose(labels.targets(), (1, 0, 2, 3, 4))
    k = np.transpose(labels.known, (1, 0, 2))
    return x.astype(np.float32), y, k


@pytest.fixture(scope="module")
def phantom_arrays():
    return synthetic_network_arrays()


# ------------------------------------------------------------------ loss

def _loss_inputs(seed=0):
    rng = np.random.default_rng(seed)
    targets = (rng.random((2, 4, 8, 8, 2)) > 0.7).astype(np.float32)
    probs = rng.uniform(0.05, 0.95, targets.shape).astype(np.float32)
    weight = np.ones((2, 4, 2), np.float32)
    weight[0, 1, :] = 0      # an unlabelled frame
    weight[1, 3, 0] = 0      # a frame with only the blood pool labelled
    return targets, probs, weight


@pytest.mark.parametrize("dice_weight", [0.0, 0.5])
def test_masked_loss_gives_zero_gradient_to_unlabelled_frames(dice_weight):
    targets, probs, weight = _loss_inputs()
    p = tf.Variable(probs)
    with tf.GradientTape() as tape:
        loss = losses.masked_loss(targets, p, weight, dice_weight)
    grad = tape.gradient(loss, p).numpy()
    assert np.all(grad[0, 1] == 0) and np.all(grad[1, 3, ..., 0] == 0)
    assert np.all(grad[1, 3, ..., 1] != 0) and np.all(grad[0, 0] != 0)
    altered = targets.copy()
    altered[0, 1] = 1 - altered[0, 1]
    altered[1, 3, ..., 0] = -7.0
    assert float(losses.masked_loss(altered, probs, weight, dice_weight)) == float(loss)


def test_masked_loss_is_cross_entropy_over_labelled_pixels():
    targets, probs, weight = _loss_inputs(1)
    w = np.broadcast_to(weight[:, :, None, None, :], targets.shape).astype(bool)
    bce = -(targets * np.log(probs) + (1 - targets) * np.log(1 - probs))
    assert float(losses.masked_loss(targets, probs, weight)) == pytest.approx(bce[w].mean(), rel=1e-5)
    packed = losses.pack_targets(targets, weight > 0)
    assert np.all(packed[0, 1] == losses.UNKNOWN)
    loss_fn = losses.MaskedSegmentationLoss(dice_weight=0.5)
    assert float(loss_fn(packed, probs)) == pytest.approx(
        float(losses.masked_loss(targets, probs, weight, 0.5)), rel=1e-6)


def test_boundary_weight_counts_the_pixels_beside_a_contour_more():
    targets = np.zeros((1, 1, 9, 9, 2), np.float32)
    targets[0, 0, 2:7, 2:7, 0] = 1  # a 5x5 square; channel 1 empty, so it has no contour
    band = np.asarray(losses.boundary_band(targets))
    expected = np.zeros((9, 9), bool)
    expected[1:8, 1:8] = True   # the square grown by one pixel ...
    expected[3:6, 3:6] = False  # ... less the square shrunk by one
    np.testing.assert_array_equal(band[0, 0, ..., 0] > 0, expected)
    assert band[..., 1].sum() == 0 and band[0, 0, 4, 4, 0] == 0  # no contour, and the square's centre
    targets, probs, weight = _loss_inputs(2)
    bce = -(targets * np.log(probs) + (1 - targets) * np.log(1 - probs))
    w = np.broadcast_to(weight[:, :, None, None, :], targets.shape).astype(bool)
    weighted = bce * (1 + 3.0 * np.asarray(losses.boundary_band(targets * w)))
    assert float(losses.masked_loss(targets, probs, weight, boundary_weight=3.0)) == pytest.approx(
        weighted[w].sum() / w.sum(), rel=1e-5)
    loss_fn = losses.MaskedSegmentationLoss(dice_weight=0.5, boundary_weight=3.0)
    assert keras.losses.deserialize(keras.losses.serialize(loss_fn)).boundary_weight == 3.0
    assert "boundary_weight" not in training.TrainConfig().to_dict()  # runs without it read as before
    assert training.TrainConfig(boundary_weight=2.0).to_dict()["boundary_weight"] == 2.0


def test_unlabelled_frame_targets_do_not_change_the_model_gradient():
    cnn = networks.build_cnn(seed=0, **SMALL)
    x, y, k = synthetic_network_arrays(n_phases=3, n_slices=1, size=32)
    k = k.copy()
    k[0, 1] = False
    loss_fn = losses.MaskedSegmentationLoss(dice_weight=0.5)

    def grads(targets):
        with tf.GradientTape() as tape:
            loss = loss_fn(losses.pack_targets(targets, k), cnn(x, training=True))
        return [g.numpy() for g in tape.gradient(loss, cnn.trainable_weights)]

    y2 = y.copy()
    y2[0, 1] = 1.0 - y2[0, 1]
    for a, b in zip(grads(y), grads(y2)):
        np.testing.assert_array_equal(a, b)


def test_dice_scores_per_frame_and_channel():
    ref = np.zeros((1, 2, 4, 4, 2), np.float32)
    ref[0, 0, :2, :, 0] = 1
    pred = ref.copy()
    pred[0, 0, 2, :, 0] = 1                      # 8 true + 4 extra pixels: 16 / 20
    known = np.array([[[True, True], [True, False]]])
    d = training.dice_scores(pred, ref, known)
    assert d[0, 0, 0] == pytest.approx(0.8) and d[0, 0, 1] == 1.0 and d[0, 1, 0] == 1.0
    assert np.isnan(d[0, 1, 1])


def test_split_keeps_groups_on_one_side():
    groups = np.repeat(np.arange(5), 4)
    tr, va = training.split_sequences(20, 0.2, seed=3, groups=groups)
    assert len(va) == 4 and not set(groups[tr]) & set(groups[va])
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(20))
    tr2, va2 = training.split_sequences(20, 0.2, seed=3, groups=groups)
    np.testing.assert_array_equal(va, va2)


# ------------------------------------------------------------------ augmentation

def test_augmentation_is_deterministic_and_the_same_for_every_frame(phantom_arrays):
    x, y, _ = phantom_arrays
    static_x = np.repeat(x[:2, :1], 5, axis=1)
    static_y = np.repeat(y[:2, :1], 5, axis=1)
    cfg = AugmentConfig(noise_std=0.0)
    a = augment_batch(static_x, static_y, np.random.default_rng(4), cfg)
    b = augment_batch(static_x, static_y, np.random.default_rng(4), cfg)
    np.testing.assert_array_equal(a[0], b[0])
    for arr in a:
        assert np.all(arr == arr[:, :1]), "frames of one sequence got different transforms"
    assert not np.allclose(a[0][0], static_x[0]) and not np.allclose(a[0][0], a[0][1])
    assert set(np.unique(a[1]).tolist()) <= {0.0, 1.0}
    # mean and spread of each sequence are kept (the preprocessing's scale)
    np.testing.assert_allclose(a[0].mean(axis=(1, 2, 3, 4)), static_x.mean(axis=(1, 2, 3, 4)), atol=1e-4)
    np.testing.assert_allclose(a[0].std(axis=(1, 2, 3, 4)), static_x.std(axis=(1, 2, 3, 4)), rtol=1e-3)
    # the myocardium keeps roughly its area (scaling is at most 15 %, no shearing)
    ratio = a[1][..., 0].sum() / static_y[..., 0].sum()
    assert 0.6 < ratio < 1.5


def test_augmented_targets_stay_on_the_augmented_anatomy(phantom_arrays):
    x, y, _ = phantom_arrays
    for seed in range(3):
        ax, ay = augment_batch(x, y, np.random.default_rng(seed))
        img, myo, pool = ax[..., 0], ay[..., 0] > 0, ay[..., 1] > 0
        # blood (bright) under the cavity label, darker myocardium under the wall label
        assert img[pool].mean() > img[myo].mean() + img.std()
        assert img[myo].mean() > img[~(myo | pool)].mean() - 0.1 * img.std()


def test_zero_strength_is_the_identity(phantom_arrays):
    x, y, _ = phantom_arrays
    out_x, out_y = augment_batch(x[:1], y[:1], np.random.default_rng(0), AugmentConfig(strength=0.0))
    np.testing.assert_allclose(out_x, x[:1], atol=1e-5)
    np.testing.assert_array_equal(out_y, y[:1])
    t = draw_transform(np.random.default_rng(0), (32, 32), AugmentConfig(strength=0.0))
    assert t.angle_rad == 0 and t.scale == 1 and t.gamma == 1 and t.noise_std == 0


def test_blur_is_opt_in_and_leaves_every_other_draw_alone(phantom_arrays):
    x, y, _ = phantom_arrays
    plain = draw_transform(np.random.default_rng(5), (32, 32))
    blurred = draw_transform(np.random.default_rng(5), (32, 32), AugmentConfig(blur_sigma_px=1.5))
    assert plain.blur_sigma_px == 0 and 0 < blurred.blur_sigma_px <= 1.5
    assert (plain.angle_rad, plain.scale, plain.gamma, plain.noise_std) == \
        (blurred.angle_rad, blurred.scale, blurred.gamma, blurred.noise_std)
    sharp, soft = (augment_batch(x[:1], y[:1], np.random.default_rng(2), AugmentConfig(noise_std=0.0, blur_sigma_px=b))
                   for b in (0.0, 3.0))
    edges = [np.abs(np.diff(a[0][0, 0, ..., 0], axis=0)).mean() for a in (sharp, soft)]
    assert edges[1] < 0.8 * edges[0]  # softer edges; the labels are the same anatomy
    np.testing.assert_array_equal(sharp[1], soft[1])
    assert "augment_blur_px" not in training.TrainConfig().to_dict()  # runs without it read as before
    assert training.TrainConfig(augment_blur_px=1.0).to_dict()["augment_blur_px"] == 1.0


# ------------------------------------------------------------------ training

@pytest.mark.slow
def test_cnn_learns_the_synthetic_ring_within_a_minute(tmp_path, phantom_arrays):
    x, y, k = phantom_arrays
    t0 = time.perf_counter()
    events = []
    cfg = training.TrainConfig(epochs=30, frames_per_batch=8, learning_rate=3e-3, augment=False,
                               validation_fraction=0.2, **SMALL)
    result = training.fit_cnn(x, y, k, tmp_path / "cnn", cfg, progress=events.append)
    seconds = time.perf_counter() - t0
    assert seconds < 60, f"training took {seconds:.0f} s"
    assert result.best_val_dsc is not None and result.best_val_dsc > 0.8, result.history
    assert len(result.val_indices) == 1 and result.val_indices[0] not in result.train_indices
    probs = result.model.predict_on_batch(x[result.val_indices])
    dsc = training.dice_scores(probs, y[result.val_indices], k[result.val_indices])[..., 0]
    assert np.nanmean(dsc) == pytest.approx(result.best_val_dsc, abs=1e-6)
    epochs = [e for e in events if e.kind == "epoch"]
    assert [e.epoch for e in epochs] == list(range(1, 31))
    assert None not in (epochs[-1].epochs, epochs[-1].loss, epochs[-1].val_dsc, epochs[-1].eta_s)
    assert epochs[-1].eta_s == 0 and epochs[0].eta_s > 0 and epochs[-1].fraction == 1.0
    assert (tmp_path / "cnn" / "model.keras").is_file()


def _weights_equal(a, b) -> bool:
    return all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))


@pytest.mark.slow
def test_interrupted_training_resumes_to_the_same_result(tmp_path):
    x, y, k = synthetic_network_arrays(n_phases=4, n_slices=3, size=32)
    cfg = training.TrainConfig(epochs=3, frames_per_batch=4, validation_fraction=0.34, augment=True,
                               **SMALL)
    straight = training.fit_cnn(x, y, k, tmp_path / "straight", cfg)
    seen = []

    def cancel_in_third_epoch() -> bool:
        return bool(seen) and seen[-1].epoch == 2 and seen[-1].kind == "epoch"

    with pytest.raises(CancelledError, match="resume"):
        training.fit_cnn(x, y, k, tmp_path / "resumed", cfg, progress=seen.append,
                         cancel=cancel_in_third_epoch)
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 2 and not (tmp_path / "resumed" / "model.keras").exists()
    resumed = training.fit_cnn(x, y, k, tmp_path / "resumed", cfg)
    assert resumed.resumed_from_epoch == 2 and [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    assert _weights_equal(resumed.model, straight.model)
    with pytest.raises(InputError, match="different training"):
        training.fit_cnn(x, y, k, tmp_path / "resumed",
                         training.TrainConfig(epochs=3, learning_rate=0.5, **SMALL))
    # a finished model whose checkpoint is gone is refused, not trained again over
    shutil.rmtree(tmp_path / "resumed" / "checkpoint")
    before = (tmp_path / "resumed" / "model.keras").read_bytes()
    with pytest.raises(InputError, match="checkpoint folder .* is missing"):
        training.fit_cnn(x, y, k, tmp_path / "resumed", cfg)
    assert (tmp_path / "resumed" / "model.keras").read_bytes() == before


@pytest.mark.slow
def test_rnn_stage_trains_the_head_only_and_fine_tuning_starts_from_given_weights(tmp_path):
    x, y, k = synthetic_network_arrays(n_phases=5, n_slices=3, size=32, sparse=True)
    cnn = networks.build_cnn(seed=1, **SMALL)
    before = [w.copy() for w in cnn.get_weights()]
    for augment in (False, True):  # cached CNN features / CNN in the graph on augmented cycles
        cfg = training.TrainConfig(epochs=2, sequences_per_batch=2, augment=augment,
                                   validation_fraction=0.34, **SMALL)
        result = training.fit_rnn(x, y, k, cnn, tmp_path / f"rnn{augment}", cfg, variant="multi_level")
        model = result.model
        assert model.name == "multi_level" and len(result.history) == 2
        features, _ = networks.model_parts(model)
        for a, b in zip(networks.cnn_feature_model(cnn).get_weights(), features.get_weights()):
            np.testing.assert_array_equal(a, b)   # frozen: the CNN part did not move
    assert all(np.array_equal(a, b) for a, b in zip(before, cnn.get_weights()))
    # fine-tuning: starts from the given model, lower default learning rate, input untouched
    tuned = training.fit_rnn(x, y, k, cnn, tmp_path / "tuned",
                             training.TrainConfig(epochs=1, learning_rate=1e-12, augment=False, **SMALL),
                             variant="multi_level", initial=model)
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(tuned.model.get_weights(), model.get_weights()))
    refit = training.fit_cnn(x, y, k, tmp_path / "cnn_tuned",
                             training.TrainConfig(epochs=1, augment=False, **SMALL), initial=model)
    state = json.loads((tmp_path / "cnn_tuned" / "checkpoint" / "state.json").read_text())
    assert state["fine_tune"] and state["learning_rate"] == training.FINE_TUNE_LEARNING_RATE
    assert refit.model.name == "cnn"


@pytest.mark.slow
def test_ensemble_members_use_their_own_seed_and_cnn(tmp_path):
    from types import SimpleNamespace

    from LVMyoSegLib.training.experiments import ExperimentConfig, PreparedCase, train_variants

    x, y, k = synthetic_network_arrays(n_phases=4, n_slices=3, size=32, sparse=True)
    cfg = training.TrainConfig(epochs=1, frames_per_batch=4, sequences_per_batch=2, augment=False,
                               seed=10, **SMALL)
    prepared = [PreparedCase(SimpleNamespace(case_id="synthetic"), None, x, y, k)]
    config = ExperimentConfig(variants=("one_level",), members=2, cnn=cfg, rnn=cfg)
    members = train_variants(prepared, tmp_path, config)["one_level"]
    assert [m.name for m in members] == ["one_level", "one_level"]
    cnns = [keras.saving.load_model(tmp_path / f"member_{i}" / "cnn" / "model.keras", safe_mode=True)
            for i in range(2)]
    for i, member in enumerate(members):
        state = json.loads((tmp_path / f"member_{i}" / "rnn_one_level" / "checkpoint" / "state.json").read_text())
        assert state["config"]["seed"] == 10 + i
        feats = networks.model_parts(member)[0].get_weights()
        assert all(np.array_equal(a, b) for a, b in
                   zip(networks.cnn_feature_model(cnns[i]).get_weights(), feats))
    assert not _weights_equal(cnns[0], cnns[1])
    # a second call finds both members finished and trains nothing
    again = train_variants(prepared, tmp_path, config)["one_level"]
    assert all(_weights_equal(a, b) for a, b in zip(again, members))
    # members of one run, trained here or reloaded from their checkpoints, form one ensemble
    from LVMyoSegLib.model.bundle import load_ensemble, write_bundle
    from LVMyoSegLib.model.ensemble import Ensemble

    assert len(Ensemble.of_models([members[0], again[1]])) == 2
    write_bundle(tmp_path / "bundle", members, model_id="t", variant="one_level", channels=("a", "b"),
                 preprocessing={})
    assert len(load_ensemble(tmp_path / "bundle")[1]) == 2


def test_bad_training_arrays_are_refused(tmp_path):
    x, y, k = synthetic_network_arrays(n_phases=2, n_slices=1, size=32)
    with pytest.raises(InputError, match="multiples of 4"):
        training.fit_cnn(x[:, :, :30], y[:, :, :30], k, tmp_path)
    with pytest.raises(InputError, match="nothing to train"):
        training.fit_cnn(x, y, np.zeros_like(k), tmp_path)
