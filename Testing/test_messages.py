"""Messages that used to mislead (issue 17, item 9) now say what is wrong, where, and what to do."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_output_folder import hashes

from LVMyoSegLib.cine import Geometry
from LVMyoSegLib.errors import GeometryError, InputError, ModelError
from LVMyoSegLib.files import sha256_file
from LVMyoSegLib.io.readers import read_cine
from LVMyoSegLib.io.volume_files import write_4d
from LVMyoSegLib.labels import CHANNELS
from LVMyoSegLib.model.bundle import BUNDLE_MANIFEST, load_ensemble, verify_bundle, write_bundle
from LVMyoSegLib.preprocessing.preprocess import CropTransform

PREPROCESSING = {"pixel_mm": 2.0, "crop_size": 32}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from LVMyoSegLib.model.networks import build_cnn, build_model

    path = tmp_path_factory.mktemp("bundles") / "tiny"
    write_bundle(path, [build_model("multi_level", build_cnn(crop_size=32, width=4, units=1, seed=0))],
                 model_id="tiny", variant="multi_level", channels=CHANNELS, preprocessing=PREPROCESSING)
    return path


def _rehash(bundle: Path) -> None:
    manifest = json.loads((bundle / BUNDLE_MANIFEST).read_text())
    manifest["members"][0]["sha256"] = sha256_file(bundle / "member_0.keras")
    (bundle / BUNDLE_MANIFEST).write_text(json.dumps(manifest))


def test_hash_mismatch_shows_both_whole_hashes(tiny, tmp_path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(tiny, copy)
    data = bytearray((copy / "member_0.keras").read_bytes())
    data[len(data) // 2] ^= 1
    (copy / "member_0.keras").write_bytes(bytes(data))
    expected = json.loads((copy / BUNDLE_MANIFEST).read_text())["members"][0]["sha256"]
    with pytest.raises(ModelError) as info:
        verify_bundle(copy)
    assert f"expected {expected}, found {sha256_file(copy / 'member_0.keras')}" in str(info.value)


def test_lambda_member_is_refused_without_suggesting_unsafe_loading(tiny, tmp_path) -> None:
    import keras

    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Lambda(lambda x: x * 2)(inp), name="multi_level")
    shutil.copytree(tiny, tmp_path / "evil")  # write_bundle cannot write it: no ONNX graph of a Lambda
    (tmp_path / "evil" / "member_0.keras").unlink()
    model.save(tmp_path / "evil" / "member_0.keras")
    _rehash(tmp_path / "evil")
    with pytest.raises(ModelError) as info:
        load_ensemble(tmp_path / "evil")
    message = str(info.value)
    assert "holds Python code" in message and "never runs" in message
    assert "safe_mode" not in message and "incompatible version" not in message


def test_member_that_is_not_a_zip_archive_says_so(tiny, tmp_path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(tiny, copy)
    (copy / "member_0.keras").write_text("not a model")
    _rehash(copy)
    with pytest.raises(ModelError, match="member_0.keras matches its hash but is not a Keras model archive"):
        load_ensemble(copy)


def test_crop_transform_record_names_where_and_the_fix() -> None:
    with pytest.raises(InputError, match="Crop transform record crop_transform.json is incomplete.*lvmyoseg preprocess"):
        CropTransform.from_dict({"pixel_mm": 1}, where="crop_transform.json")


def test_missing_dataset_suggests_commands_that_exist(tmp_path) -> None:
    from LVMyoSegLib.io.dataset import list_cases

    with pytest.raises(InputError) as info:
        list_cases(tmp_path)
    assert "lvmyoseg sunnybrook-dataset" in str(info.value) and "dataset add" not in str(info.value)


def test_zero_axis_vector_is_called_what_it_is(tmp_path) -> None:
    path = tmp_path / "cine.nrrd"
    write_4d(path, np.random.default_rng(0).random((3, 4, 32, 32)).astype(np.float32),
             Geometry((1.0, 1.0, 8.0), (0.0, 0.0, 0.0)), np.arange(3) * 40.0)
    path.write_bytes(path.read_bytes().replace(b"(0.0,0.0,8.0) none", b"(0.0,0.0,0.0) none"))
    before = hashes(tmp_path)
    with pytest.raises(InputError) as info:
        read_cine(path)
    assert "zero or degenerate direction vector" in str(info.value) and "damaged" not in str(info.value)
    assert hashes(tmp_path) == before


@pytest.mark.parametrize("numbers, words", [((1, 2, 4, 5), "number(s) 3 are missing"),
                                            ((1, 2, 2, 3), "repeat number 2")])
def test_numbering_gap_in_a_folder_of_frames_is_refused(tmp_path, numbers, words) -> None:
    import SimpleITK as sitk

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, n in enumerate(numbers):
        name = f"frame_{n:02d}.nrrd" if i != 2 or numbers.count(n) == 1 else f"frame_{n}.nrrd"
        sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 32, 32), i, np.float32)), str(folder / name))
    before = hashes(tmp_path)
    with pytest.raises(InputError, match=re.escape(words)):
        read_cine(folder)
    assert hashes(tmp_path) == before


def test_duplicated_dicom_file_is_named(sunnybrook_root, tmp_path) -> None:
    study = sunnybrook_root / "dicom" / "SCD0000101"
    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    first = sorted(p for p in copy.rglob("*") if p.is_file())[0]
    shutil.copy2(first, first.with_name("copy_of_" + first.name))
    with pytest.raises(GeometryError) as info:
        read_cine(copy)
    message = str(info.value)
    assert f"copy_of_{first.name} duplicates {first.name}" in message or \
        f"{first.name} duplicates copy_of_{first.name}" in message
    assert "Remove one of them" in message and "incomplete" not in message


@pytest.mark.slow
def test_partly_built_sunnybrook_dataset_is_completed(sunnybrook_root, tmp_path) -> None:
    from LVMyoSegLib.io.dataset import list_cases
    from LVMyoSegLib.io.sunnybrook import sunnybrook_to_dataset

    dataset = tmp_path / "ds"
    first = sunnybrook_to_dataset(sunnybrook_root, dataset)
    kept = {p.name: hashes(p) for p in first[:-1]}
    shutil.rmtree(first[-1])  # as if the run had been stopped before the last case
    manifest = json.loads((dataset / "dataset.json").read_text())
    manifest["cases"] = manifest["cases"][:-1]
    (dataset / "dataset.json").write_text(json.dumps(manifest))
    again = sunnybrook_to_dataset(sunnybrook_root, dataset)
    assert [p.name for p in again] == [first[-1].name]
    assert list_cases(dataset) == [p.name for p in first]
    assert {p.name: hashes(p) for p in first[:-1]} == kept
