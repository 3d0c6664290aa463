"""The `lvmyoseg` command line end to end on the real sample study (with a tiny untrained
bundle where a network is needed: these tests check the path, not accuracy)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from LVMyoSegLib.cli.main import main
from LVMyoSegLib.io.volume_files import read_4d, read_labels_4d
from LVMyoSegLib.labels import CHANNELS
from LVMyoSegLib.model.bundle import read_manifest
from LVMyoSegLib.resources import bundled_model_dir, sample_case_dir

SAMPLE = sample_case_dir() / "cine.nrrd"


def test_inspect_json(capsys, sunnybrook_root: Path) -> None:
    assert main(["inspect", str(sunnybrook_root / "dicom" / "SCD0000301"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["T"], info["Z"]) == (20, 10)
    assert info["spacing_mm_xyz"][0] == pytest.approx(1.2891) and info["spacing_mm_xyz"][2] == pytest.approx(8.0, abs=1e-3)
    assert len(info["trigger_times_ms"]) == 20


def test_preprocess_crops_as_segment_does_with_the_same_model(tmp_path: Path, tiny_bundle: Path) -> None:
    assert main(["preprocess", str(SAMPLE), "-o", str(tmp_path / "pre")]) == 0
    assert (tmp_path / "pre" / "preprocessing.png").stat().st_size > 10_000
    transform = json.loads((tmp_path / "pre" / "crop_transform.json").read_text())
    bundled = read_manifest(bundled_model_dir()).preprocessing
    assert (transform["pixel_mm"], transform["crop_size"]) == (bundled["pixel_mm"], bundled["crop_size"])
    other = read_manifest(tiny_bundle).preprocessing
    assert other != bundled
    assert main(["preprocess", str(SAMPLE), "-o", str(tmp_path / "pre2"), "--model", str(tiny_bundle)]) == 0
    transform = json.loads((tmp_path / "pre2" / "crop_transform.json").read_text())
    assert (transform["pixel_mm"], transform["crop_size"]) == (other["pixel_mm"], other["crop_size"])


def test_segment_outputs_are_aligned_with_input(tmp_path: Path, tiny_bundle: Path) -> None:
    out = tmp_path / "seg"
    code = main(["segment", str(SAMPLE), "-o", str(out), "--model", str(tiny_bundle), "--members", "1",
                 "--threshold", "0.5"])
    assert code in (0, 3)  # 3: an untrained model's doubtful output gets its function values withheld
    cine = read_4d(SAMPLE)
    labels = read_labels_4d(out / "labels.nrrd", cine)  # raises unless voxel-aligned with the input
    assert labels.shape == cine.frames.shape
    for channel in CHANNELS:
        prob = read_4d(out / f"probabilities_{channel}.nrrd")
        assert prob.geometry.matches(cine.geometry)
        assert prob.frames.shape == cine.frames.shape
        assert 0.0 <= prob.frames.min() and prob.frames.max() <= 1.0
    report = json.loads((out / "report.json").read_text())
    trust = report["model"].pop("trust")
    assert report["model"] == {"id": "tiny-untrained", "dir": str(tiny_bundle), "members_used": 1,
                               "rotations": 1}  # the bundle's own views (write_bundle's default)
    assert trust["verified"] is False and trust["anchor"] == "none"  # a folder nothing vouches for
    assert report["input"]["shape_tzyx"] == list(cine.frames.shape)
    assert set(report["timing_s"]) >= {"read", "preprocess", "network", "inverse_mapping", "write"}
    assert "cardiac_function" in report and (out / "overlay.png").is_file()
    assert (code == 3) == bool(report["function_withheld"])
    assert not list(tmp_path.glob(".seg.partial*"))


def test_bad_model_leaves_no_output(tmp_path: Path, tiny_bundle: Path, capsys) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{}")
    out = tmp_path / "seg"
    assert main(["segment", str(SAMPLE), "-o", str(out), "--model", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "manifest" in err and str(broken) in err
    assert not out.exists()
    assert main(["segment", str(tmp_path / "nothing.nii.gz"), "-o", str(out), "--model", str(tiny_bundle)]) == 2
    assert not out.exists()


def test_rv_insertion_outside_the_image_is_refused_before_the_network(tmp_path: Path, tiny_bundle: Path,
                                                                      capsys) -> None:
    out = tmp_path / "seg"
    far = ["--rv-insertion", "5000", "0", "0"]
    assert main(["segment", str(SAMPLE), "-o", str(out), "--model", str(tiny_bundle), *far]) == 2
    err = capsys.readouterr().err
    assert "RV insertion point" in err and "outside the image" in err and "LPS" in err
    assert not out.exists()
