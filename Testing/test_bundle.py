"""Model bundles: save/load gives the stored (compact) model's predictions, within 1e-3 of the model
given; members carry no optimizer state and fine-tune; damaged or unknown bundles are refused."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_with_flipped_byte

from LVMyoSegLib.errors import InputError, ModelError
from LVMyoSegLib.labels import CHANNELS
from LVMyoSegLib.model.bundle import (
    WEIGHT_STORAGE,
    load_ensemble,
    load_members,
    read_manifest,
    stored_copy,
    verify_bundle,
    write_bundle,
)
from LVMyoSegLib.model.ensemble import predict_ensemble
from LVMyoSegLib.model.networks import build_cnn, build_model, cnn_from_model
from LVMyoSegLib.model.variants import VARIANTS
from LVMyoSegLib.model.weight_storage import FIXED_POINT_MIN_SIZE, fixed_point16

PREPROCESSING = {"pixel_mm": 1.0, "crop_size": 32}
TOL = 1e-3  # the contract: compact storage moves predictions by less than this


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> tuple[Path, list]:
    models = [build_model("multi_level", build_cnn(crop_size=32, width=4, seed=s), seed=s) for s in (0, 1)]
    path = tmp_path_factory.mktemp("bundles") / "tiny"
    write_bundle(path, models, model_id="tiny-test", variant="multi_level", channels=CHANNELS,
                 preprocessing=PREPROCESSING, training={"note": "untrained, for format tests"},
                 member_info=[{"seed": 0}, {"seed": 1}])
    return path, models


def test_round_trip_gives_the_stored_models_predictions(bundle) -> None:
    path, models = bundle
    manifest, loaded = load_members(path)
    assert manifest.variant == "multi_level" and manifest.preprocessing == PREPROCESSING
    assert [m["seed"] for m in manifest.members] == [0, 1]
    assert all(m["weight_storage"] == WEIGHT_STORAGE for m in manifest.members)
    x = np.random.default_rng(0).normal(size=(2, 5, 32, 32, 1)).astype(np.float32)
    # lossless from the stored copy; closeness to the model given is tested on trained or calibrated
    # models (below, test_onnx.py): these untrained 56-layer members amplify any rounding
    for original, restored in zip(models, loaded):
        stored = stored_copy(original)
        assert all(np.array_equal(a, b) for a, b in zip(stored.get_weights(), restored.get_weights()))
        assert np.array_equal(np.asarray(stored(x)), np.asarray(restored(x)))
    _, one = load_members(path, members=1)
    assert len(one) == 1
    with pytest.raises(ModelError, match="has 2 members"):
        load_members(path, members=3)


def test_flipped_byte_is_refused(bundle, tmp_path: Path) -> None:
    path, _ = bundle
    copy = copy_with_flipped_byte(path, tmp_path / "copy", "member_1.keras")
    with pytest.raises(ModelError, match="member_1.keras.*SHA-256"):
        load_members(copy)


def test_unknown_or_broken_manifests_are_refused(bundle, tmp_path: Path) -> None:
    import shutil

    path, _ = bundle
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="format version 99"):
        verify_bundle(copy)
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        read_manifest(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(ModelError, match="no manifest.json"):
        read_manifest(copy)
    with pytest.raises(ModelError, match="never overwritten"):
        write_bundle(path, [], model_id="x", variant="cnn", channels=CHANNELS, preprocessing={})


def test_inference_rotations_are_the_bundles_and_checked(bundle, tmp_path: Path) -> None:
    import shutil

    path, _ = bundle
    assert read_manifest(path).inference == {"rotations": 1} and read_manifest(path).rotations == 1
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["inference"]  # a bundle written before the setting: evaluated without rotations
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert read_manifest(copy).rotations == 1
    manifest["inference"] = {"rotations": 3}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="inference.rotations 3 is not one of 1, 2, 4"):
        read_manifest(copy)
    with pytest.raises(InputError, match="rotations 3: choose 1"):
        write_bundle(tmp_path / "new", [], model_id="x", variant="cnn", channels=CHANNELS,
                     preprocessing=PREPROCESSING, rotations=3)
    assert not (tmp_path / "new").exists()


def test_member_outside_bundle_is_refused(bundle, tmp_path: Path) -> None:
    import shutil

    path, _ = bundle
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["members"][0]["file"] = "../member_0.keras"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="outside"):
        verify_bundle(copy)


def _calibrated_members(variant: str, seeds=(0, 1)) -> list:
    """Members with data-calibrated BatchNorm statistics (distinct in every layer, as after training)."""
    frames = np.random.default_rng(3).normal(size=(8, 1, 32, 32, 1)).astype(np.float32)
    members = []
    for s in seeds:
        cnn = build_cnn(crop_size=32, width=4, units=2, seed=s)
        for _ in range(3):
            cnn(frames + s, training=True)
        members.append(build_model(variant, cnn_from_model(cnn), seed=s))
    return members


@pytest.mark.parametrize("variant", VARIANTS)
def test_ensemble_reads_each_member_as_keras_loads_it(variant, tmp_path: Path) -> None:
    path = tmp_path / variant
    write_bundle(path, _calibrated_members(variant, seeds=(0, 1, 2)), model_id="t", variant=variant,
                 channels=CHANNELS, preprocessing=PREPROCESSING)
    _, models = load_members(path)
    _, ensemble = load_ensemble(path)
    assert len(ensemble) == 3 and ensemble.model.name == models[0].name
    for member, model in zip(ensemble.weights, models):
        reference = model.get_weights()
        assert len(member) == len(reference)
        assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(member, reference))
    x = np.random.default_rng(1).normal(size=(2, 3, 32, 32, 1)).astype(np.float32)
    mean = np.mean([np.asarray(m(x, training=False)) for m in models], axis=0)
    assert np.max(np.abs(predict_ensemble(ensemble, x) - mean)) < 1e-3
    _, first_two = load_ensemble(path, members=2)
    assert len(first_two) == 2
    with pytest.raises(ModelError, match="has 3 members"):
        load_ensemble(path, members=4)


def test_ensemble_refuses_mixed_architectures_and_nan_weights(tmp_path: Path) -> None:
    multi, one = _calibrated_members("multi_level", seeds=(0,))[0], _calibrated_members("one_level", seeds=(1,))[0]
    write_bundle(tmp_path / "mixed", [multi, one], model_id="m", variant="multi_level", channels=CHANNELS,
                 preprocessing=PREPROCESSING)
    for load in (load_ensemble, load_members):  # each member is a valid Keras model, but not of the declared variant
        with pytest.raises(ModelError, match="member_1.keras is a 'one_level' network, but the manifest "
                                             "declares variant 'multi_level'"):
            load(tmp_path / "mixed")
    narrow = build_model("multi_level", build_cnn(crop_size=32, width=2, units=2, seed=5), seed=5)
    write_bundle(tmp_path / "widths", [multi, narrow], model_id="w", variant="multi_level", channels=CHANNELS,
                 preprocessing=PREPROCESSING)
    with pytest.raises(ModelError, match="member_1.keras does not have the architecture of member_0.keras"):
        load_ensemble(tmp_path / "widths")

    weights = multi.get_weights()
    weights[5] = np.full_like(weights[5], np.nan)
    multi.set_weights(weights)
    write_bundle(tmp_path / "nan", [_calibrated_members("multi_level", seeds=(2,))[0], multi], model_id="n",
                 variant="multi_level", channels=CHANNELS, preprocessing=PREPROCESSING)
    with pytest.raises(ModelError, match="member_1.keras holds NaN or infinite weights"):
        load_ensemble(tmp_path / "nan")
    write_bundle(tmp_path / "nan_first", [multi], model_id="n0", variant="multi_level", channels=CHANNELS,
                 preprocessing=PREPROCESSING)
    with pytest.raises(ModelError, match="member_0.keras holds NaN or infinite weights"):
        load_ensemble(tmp_path / "nan_first")


def test_fixed_point16_rounds_per_channel_and_keeps_small_or_odd_tensors() -> None:
    rng = np.random.default_rng(0)
    kernel = (rng.normal(size=(3, 3, 16, 8)) * np.geomspace(1e-3, 10, 8)).astype(np.float32)
    q, step = fixed_point16(kernel, axis=-1)
    assert q.dtype == np.int16 and step.dtype == np.float32 and step.shape == (1, 1, 1, 8)
    assert np.array_equal(np.abs(q).max(axis=(0, 1, 2)), np.full(8, 32767))  # each channel's own range
    assert np.all(np.abs(q * step - kernel) <= step / 2 * 1.001)
    q2, step2 = fixed_point16(kernel, axis=-1, power_of_two=True)
    exact = q2.astype(np.float32) * step2
    assert np.all(np.log2(step2) == np.round(np.log2(step2))) and np.abs(q2).max() <= 32767
    again = fixed_point16(exact, axis=-1, power_of_two=True)
    assert np.array_equal(again[0].astype(np.float32) * again[1], exact)  # rounding twice: the same values
    zero_channel = kernel.copy()
    zero_channel[..., 3] = 0
    assert np.all(fixed_point16(zero_channel, axis=-1)[0][..., 3] == 0)
    small = kernel[:, :, :4, :4]
    assert small.size < FIXED_POINT_MIN_SIZE and fixed_point16(small, axis=-1) is None
    nan = kernel.copy()
    nan[0, 0, 0, 0] = np.nan
    for odd in (nan, kernel.astype(np.float64), kernel.reshape(-1)):
        assert fixed_point16(odd, axis=-1) is None


def _archive_groups(path: Path) -> list[str]:
    """Every HDF5 path in the weights of the .keras archive ``path``."""
    import h5py

    with zipfile.ZipFile(path) as archive:
        data = archive.read("model.weights.h5")
    names: list[str] = []
    with h5py.File(io.BytesIO(data), "r") as f:
        f.visit(names.append)
    return names


@pytest.mark.slow
def test_members_carry_no_optimizer_state_and_fine_tune(tmp_path: Path) -> None:
    """A trained model (its head compiled with a built Adam, as training leaves it) is written without
    optimizer state, smaller than Keras writes it, and fine-tunes from the bundle (a new optimizer)."""
    from LVMyoSegLib.io.phantom import make_synthetic_cine
    from LVMyoSegLib.training import loop as training

    cine, labels = make_synthetic_cine(n_phases=5, n_slices=3, size=32, spacing=(2.0, 2.0, 8.0), seed=0)
    x = np.transpose(cine.frames, (1, 0, 2, 3))[..., None]
    x = ((x - x.mean(axis=(1, 2, 3, 4), keepdims=True)) / x.std(axis=(1, 2, 3, 4), keepdims=True)).astype(np.float32)
    y, k = np.transpose(labels.targets(), (1, 0, 2, 3, 4)), np.transpose(labels.known, (1, 0, 2))
    small = dict(width=16, units=1, augment=False, validation_fraction=0.0)
    cnn = build_cnn(crop_size=32, width=16, units=1, seed=0)
    trained = training.fit_rnn(x, y, k, cnn, tmp_path / "run", training.TrainConfig(epochs=1, **small)).model
    trained.save(tmp_path / "as_keras_saves_it.keras")
    assert any("optimizer" in name for name in _archive_groups(tmp_path / "as_keras_saves_it.keras"))

    write_bundle(tmp_path / "bundle", [trained], model_id="t", variant="multi_level", channels=CHANNELS,
                 preprocessing=PREPROCESSING)
    member = tmp_path / "bundle" / "member_0.keras"
    assert not any("optimizer" in name for name in _archive_groups(member))
    assert member.stat().st_size < 0.5 * (tmp_path / "as_keras_saves_it.keras").stat().st_size
    with zipfile.ZipFile(member) as archive:
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_DEFLATED}

    _, (loaded,) = load_members(tmp_path / "bundle")
    xs = x[:2]
    assert np.abs(np.asarray(loaded(xs)) - np.asarray(trained(xs))).max() < TOL
    before = [w.copy() for w in loaded.get_weights()]
    # fine-tuning as `--init` does it (both stages start from the member, each with a new Adam)
    config = training.TrainConfig(epochs=1, learning_rate=1e-3, **small)
    tuned_cnn = training.fit_cnn(x, y, k, tmp_path / "tuned_cnn", config, initial=loaded).model
    tuned = training.fit_rnn(x, y, k, tuned_cnn, tmp_path / "tuned", config, initial=loaded).model
    assert all(np.array_equal(a, b) for a, b in zip(before, loaded.get_weights()))  # the member is untouched
    assert any(not np.array_equal(a, b) for a, b in zip(before, tuned.get_weights()))
    assert all(np.isfinite(w).all() for w in tuned.get_weights())
