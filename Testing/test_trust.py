"""Verified models: the bundled model is pinned in the code, registered versions in the registry;
a bundle is refused when its manifest differs from its pin, when a member is not the declared
variant or width, or when its preprocessing has unknown keys. Other folders load as unverified."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from LVMyoSegLib import resources
from LVMyoSegLib.errors import ModelError
from LVMyoSegLib.files import sha256_file
from LVMyoSegLib.labels import CHANNELS
from LVMyoSegLib.model.bundle import BUNDLE_MANIFEST, load_ensemble, load_members, verify_bundle, write_bundle
from LVMyoSegLib.model.networks import build_cnn, build_model
from LVMyoSegLib.model.registry import list_models, register, resolve
from LVMyoSegLib.model.trust import BUNDLED_MANIFEST_SHA256, PINS_NAME, bundle_trust

PREPROCESSING = {"pixel_mm": 2.0, "crop_size": 32}


@pytest.fixture(scope="module")
def members() -> dict[str, object]:
    cnn = lambda s, w=4: build_cnn(crop_size=32, width=w, units=1, seed=s)  # noqa: E731
    return {"multi": build_model("multi_level", cnn(0), seed=0),
            "one": build_model("one_level", cnn(1), seed=1),
            "wide": build_model("multi_level", cnn(2, w=8), seed=2)}


def _bundle(path: Path, models: list, **kw) -> Path:
    write_bundle(path, models, model_id=path.name, variant="multi_level", channels=CHANNELS,
                 preprocessing=PREPROCESSING, **kw)
    return path


def _swap_member(bundle: Path, model, index: int = 0) -> None:
    """The attack of issue 17: put another network in, and recompute its hash in the manifest."""
    name = f"member_{index}.keras"
    (bundle / name).unlink()
    model.save(bundle / name)
    manifest = json.loads((bundle / BUNDLE_MANIFEST).read_text())
    manifest["members"][index]["sha256"] = sha256_file(bundle / name)
    (bundle / BUNDLE_MANIFEST).write_text(json.dumps(manifest))


def test_shipped_bundle_matches_the_pinned_manifest_hash() -> None:
    manifest = resources.bundled_model_dir() / BUNDLE_MANIFEST
    assert hashlib.sha256(manifest.read_bytes()).hexdigest() == BUNDLED_MANIFEST_SHA256, (
        "the bundled model changed: update trust.BUNDLED_MANIFEST_SHA256")
    trust = bundle_trust(resources.bundled_model_dir())
    assert trust.verified and trust.anchor == "bundled"


def test_edited_bundled_model_is_refused(tmp_path, monkeypatch, members) -> None:
    shipped = resources.bundled_model_dir()
    copy = tmp_path / "bundled"
    shutil.copytree(shipped, copy)
    monkeypatch.setattr(resources, "bundled_model_dir", lambda: copy)  # as if installed here
    verify_bundle(copy)  # untouched: accepted
    manifest = json.loads((copy / BUNDLE_MANIFEST).read_text())
    manifest["preprocessing"]["pixel_mm"] = 2.0  # the "EF 29 %" edit
    (copy / BUNDLE_MANIFEST).write_text(json.dumps(manifest, indent=2))
    with pytest.raises(ModelError, match="not the one this LVMyoSeg version shipped with.*Reinstall"):
        verify_bundle(copy)
    shutil.copy2(shipped / BUNDLE_MANIFEST, copy / BUNDLE_MANIFEST)
    _swap_member(copy, members["multi"])  # another network, its hash recomputed in the manifest
    with pytest.raises(ModelError, match="shipped with"):
        load_ensemble(copy)


def test_member_of_another_variant_or_width_is_refused(tmp_path, members) -> None:
    swapped = _bundle(tmp_path / "swapped", [members["multi"]])
    _swap_member(swapped, members["one"])
    for load in (load_ensemble, load_members):
        with pytest.raises(ModelError, match="is a 'one_level' network, but the manifest declares variant "
                                             "'multi_level'.*Re-copy the bundle"):
            load(swapped)
    wide = _bundle(tmp_path / "wide", [members["wide"]], training={"settings": {"cnn": {"width": 4}}})
    with pytest.raises(ModelError, match="has base width 8, but the manifest declares width 4"):
        load_ensemble(wide)


@pytest.mark.parametrize("block, words", [
    ({"pixel_mm": 2.0, "crop_size": 32, "gamma": 3}, "unknown key(s) 'gamma'; known keys: pixel_mm, crop_size"),
    ({"pixel_mm": 0, "crop_size": 32}, "pixel_mm 0"),
    ({"pixel_mm": 2.0, "crop_size": "big"}, "crop_size 'big'"),
])
def test_bad_preprocessing_block_is_refused_with_a_message(tmp_path, members, block, words) -> None:
    path = _bundle(tmp_path / "b", [members["multi"]])
    manifest = json.loads((path / BUNDLE_MANIFEST).read_text())
    manifest["preprocessing"] = block
    (path / BUNDLE_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelError) as info:
        verify_bundle(path)
    assert words in str(info.value) and str(path / BUNDLE_MANIFEST) in str(info.value)


def test_registered_versions_are_pinned_and_other_folders_unverified(tmp_path, members) -> None:
    source = _bundle(tmp_path / "src" / "mine", [members["multi"]])
    assert bundle_trust(source).to_dict()["verified"] is False
    registry = tmp_path / "registry"
    register(source, registry)
    pins = json.loads((registry / PINS_NAME).read_text())
    assert pins == {"mine": hashlib.sha256((registry / "mine" / BUNDLE_MANIFEST).read_bytes()).hexdigest()}
    path = resolve("mine", registry)
    assert bundle_trust(path).anchor == "registry"
    assert [(e.model_id, e.verified, e.problem) for e in list_models(registry)] == [
        ("bundled", True, ""), ("mine", True, "")]
    (registry / "copied-by-hand").mkdir()  # a version put there without registering: listed as unverified
    shutil.copy2(source / "member_0.keras", registry / "copied-by-hand")
    shutil.copy2(source / BUNDLE_MANIFEST, registry / "copied-by-hand")
    hand = [e for e in list_models(registry) if e.model_id == "copied-by-hand"][0]
    assert not hand.verified and hand.label().startswith("copied-by-hand (UNVERIFIED")
    _swap_member(path, members["one"])  # tampered with after registration
    with pytest.raises(ModelError, match="was modified after it was registered.*Register the model again"):
        verify_bundle(path)
    mine = [e for e in list_models(registry) if e.model_id == "mine"][0]
    assert "modified after it was registered" in mine.problem


def test_registered_versions_carry_and_check_their_onnx_members(tmp_path, members) -> None:
    source = _bundle(tmp_path / "src" / "mine", [members["multi"]])
    registry = tmp_path / "registry"
    register(source, registry)
    path = resolve("mine", registry)
    onnx = path / "member_0.onnx"
    assert onnx.read_bytes() == (source / "member_0.onnx").read_bytes()
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="member_0.onnx does not match its SHA-256"):
        verify_bundle(path)
    manifest = json.loads((path / BUNDLE_MANIFEST).read_text())  # the hash recomputed: the pin refuses it
    manifest["members"][0]["onnx_sha256"] = sha256_file(onnx)
    (path / BUNDLE_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="was modified after it was registered"):
        verify_bundle(path)
