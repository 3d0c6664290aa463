"""Model bundles: save/load gives identical predictions; damaged or unknown bundles are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from LVMyoSegLib.bundle import load_members, read_manifest, verify_bundle, write_bundle
from LVMyoSegLib.errors import ModelError
from LVMyoSegLib.labels import CHANNELS
from LVMyoSegLib.networks import build_cnn, build_model

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
    import shutil

    path, _ = bundle
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    member = copy / "member_1.keras"
    data = bytearray(member.read_bytes())
    data[len(data) // 2] ^= 0x01
    member.write_bytes(bytes(data))
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
