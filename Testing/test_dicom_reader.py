"""DICOM cine reader on the real Sunnybrook files."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from LVMyoSegLib.errors import GeometryError, InputError
from LVMyoSegLib.io.dicom_reader import read_dicom_cine

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")


def test_real_study_is_ordered_by_headers(sunnybrook_root: Path) -> None:
    folder = sunnybrook_root / "dicom" / "SCD0000101"
    d = read_dicom_cine(folder)
    assert d.cine.frames.shape == (20, 12, 256, 256)
    assert np.all(np.diff(d.cine.trigger_times_ms) > 0)
    # Every frame of a slice shares one position; positions rise along the normal by one step.
    normal = d.cine.geometry.direction[:, 2]
    positions = []
    for z in range(d.cine.n_slices):
        ipp = {tuple(pydicom.dcmread(d.files[t][z], stop_before_pixels=True).ImagePositionPatient)
               for t in range(d.cine.n_phases)}
        assert len(ipp) == 1
        positions.append(np.array(ipp.pop(), dtype=float) @ normal)
    assert np.allclose(np.diff(positions), d.cine.spacing[2], atol=0.05)
    # Voxel (0, 0, k) of the geometry is where ImagePositionPatient puts slice k.
    m = d.cine.geometry.index_to_lps()
    for z in (0, d.cine.n_slices - 1):
        ipp = np.array(pydicom.dcmread(d.files[0][z], stop_before_pixels=True).ImagePositionPatient, float)
        assert np.allclose(m @ [0, 0, z, 1], np.r_[ipp, 1], atol=1e-3)
    # Pixels match the file they came from.
    ds = pydicom.dcmread(d.files[5][3])
    assert np.array_equal(d.cine.frames[5, 3], ds.pixel_array.astype(np.float32))


def test_file_names_do_not_matter(sunnybrook_root: Path, tmp_path: Path) -> None:
    src = sunnybrook_root / "dicom" / "SCD0000301"
    files = sorted(src.glob("*.dcm"))
    names = [f"x{i:04d}.dcm" for i in range(len(files))]
    random.Random(1).shuffle(names)
    for f, n in zip(files, names):
        shutil.copy(f, tmp_path / n)
    a, b = read_dicom_cine(src), read_dicom_cine(tmp_path)
    assert np.array_equal(a.cine.frames, b.cine.frames)
    assert a.cine.geometry.matches(b.cine.geometry)


def test_several_series_are_listed(sunnybrook_root: Path, tmp_path: Path) -> None:
    for patient in ("SCD0000301", "SCD0000401"):
        shutil.copytree(sunnybrook_root / "dicom" / patient, tmp_path / patient)
    with pytest.raises(InputError, match="2 series") as info:
        read_dicom_cine(tmp_path)
    uid = str(pydicom.dcmread(next((tmp_path / "SCD0000401").glob("*.dcm"))).SeriesInstanceUID)
    assert uid in str(info.value)
    picked = read_dicom_cine(tmp_path, series_uid=uid)
    assert picked.cine.frames.shape[1] == 11


def test_truncated_and_missing_files(sunnybrook_root: Path, tmp_path: Path) -> None:
    src = sunnybrook_root / "dicom" / "SCD0000301"
    shutil.copytree(src, tmp_path / "s")
    victim = tmp_path / "s" / "45.dcm"
    victim.write_bytes(victim.read_bytes()[:20000])
    with pytest.raises(InputError, match="45.dcm"):
        read_dicom_cine(tmp_path / "s")
    (tmp_path / "s" / "45.dcm").unlink()
    with pytest.raises(GeometryError, match="different numbers of phases"):
        read_dicom_cine(tmp_path / "s")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM"):
        read_dicom_cine(tmp_path / "empty")
