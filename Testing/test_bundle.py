"""Model bundles: save/load gives identical predictions; damaged or unknown bundles are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_with_flipped_byte

from LVMyoSegLib.errors import ModelError
from LVMyoSegLib.labels import CHANNELS
from LVMyoSegLib.model.bundle import load_ensemble, load_members, read_manifest, verify_bundle, write_bundle
from LVMyoSegLib.model.ensemble import predict_ensemble
from LVMyoSegLib.model.networks import build_cnn, build_model, cnn_from_model
from LVMyoSegLib.model.variants import VARIANTS

PREPROCESSING = {"pixel_mm": 1.0, "crop_size": 32}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> tuple[Path, list]:
    models = [build_model("multi_level", build_cnn(crop_size=32, width=4, seed=s), seed=s) for s in (0, 1)]
    path = tmp_path_factory.mktemp("bundles") / "tiny"
    write_bundle(path, models, model_id="tiny-test", variant="multi_level", channels=CHANNELS,
                 preprocessing=PREPROCESSING, training={"note": "untrained, for format tests"},
                 member_info=[{"seed": 0}, {"seed": 1}])
    return path, models


def test_round_trip_gives_identical_predictions(bundle) -> None:
    path, models = bundle
    manifest, loaded = load_members(path)
    assert manifest.variant == "multi_level" and manifest.preprocessing == PREPROCESSING
    assert [m["seed"] for m in manifest.members] == [0, 1]
    x = np.random.default_rng(0).normal(size=(2, 5, 32, 32, 1)).astype(np.float32)
    for original, restored in zip(models, loaded):
        assert np.array_equal(np.asarray(original(x)), np.asarray(restored(x)))
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
