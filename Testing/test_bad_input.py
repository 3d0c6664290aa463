"""Every bad input gives one clear error (class + what + which file) and writes nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import tree

from LVMyoSegLib.errors import GeometryError, InputError
from LVMyoSegLib.io.readers import read_cine
from LVMyoSegLib.io.volume_files import read_frames, write_4d


def _refused(tmp_path: Path, path, error: type[Exception], *words: str) -> str:
    """read_cine(path) raises exactly ``error`` whose message holds ``words``; nothing is written."""
    before = tree(tmp_path)
    with pytest.raises(error) as info:
        read_cine(path)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in: {message}"
    assert tree(tmp_path) == before, "a failed read changed the folder"
    return message


def _image(array: np.ndarray, path: Path, **kw) -> Path:
    img = sitk.GetImageFromArray(array, isVector=False)
    if "origin" in kw:
        img.SetOrigin(kw["origin"])
    if "spacing" in kw:
        img.SetSpacing(kw["spacing"])
    sitk.WriteImage(img, str(path))
    return path


def _cine_4d(path: Path) -> Path:
    frames = np.random.default_rng(0).random((5, 3, 24, 24)).astype(np.float32)
    write_4d(path, frames, _geometry(), np.arange(5) * 40.0)
    return path


def _geometry():
    from LVMyoSegLib.cine import Geometry

    return Geometry((1.4, 1.4, 8.0), (0.0, 0.0, 0.0))


def test_nonexistent_path(tmp_path):
    _refused(tmp_path, tmp_path / "nope.nii.gz", InputError, "nope.nii.gz", "does not exist")


def test_unknown_extension(tmp_path):
    (tmp_path / "cine.png").write_bytes(b"\x89PNG\r\n")
    _refused(tmp_path, tmp_path / "cine.png", InputError, "cine.png", "unknown file type", ".nii.gz")


@pytest.mark.parametrize("name", ["notes.nii.gz", "notes.nrrd", "notes.nii"])
def test_text_file_renamed_as_image(tmp_path, name):
    (tmp_path / name).write_text("This is a text file, not an image.\n" * 20)
    _refused(tmp_path, tmp_path / name, InputError, name, "not an image file")


def test_single_3d_volume_is_not_a_cine(tmp_path):
    path = _image(np.ones((6, 32, 32), np.float32), tmp_path / "one_phase.nii.gz")
    _refused(tmp_path, path, InputError, "one_phase.nii.gz", "single 3D volume (T=1)", "not a cine")
    _refused(tmp_path, [path], InputError, "one_phase.nii.gz", "single 3D volume (T=1)")


def test_2d_image(tmp_path):
    path = _image(np.ones((32, 32), np.float32), tmp_path / "slice.nrrd")
    _refused(tmp_path, path, InputError, "slice.nrrd", "2D image")
    with pytest.raises(InputError, match="slice.nrrd.*2D"):
        read_frames([path, path])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_voxels(tmp_path, bad):
    frames = np.ones((4, 2, 24, 24), np.float32)
    frames[2, 1, 5, 7] = bad
    img = sitk.GetImageFromArray(frames, isVector=False)
    for name in ("bad.nii.gz", "bad.nii", "bad.nrrd"):  # ITK's NIfTI reader alone would zero them
        sitk.WriteImage(img, str(tmp_path / name))
        _refused(tmp_path, tmp_path / name, InputError, name, "1 NaN/Inf voxels")
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(4):
        _image(frames[t], folder / f"f{t}.nrrd")
    _refused(tmp_path, folder, InputError, "f2.nrrd", "NaN/Inf")


def test_mismatched_frame_geometry(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(4):
        _image(np.ones((3, 24, 24), np.float32), folder / f"phase{t + 1}.mha",
               origin=(0.0, 0.0, 5.0 if t == 2 else 0.0))
    _refused(tmp_path, folder, GeometryError, "phase3.mha", "phase1.mha", "does not match")
    _image(np.ones((3, 24, 26), np.float32), folder / "phase3.mha")
    _refused(tmp_path, folder, GeometryError, "phase3.mha", "size")
    _image(np.ones((3, 24, 24), np.float32), folder / "phase3.mha", spacing=(1.0, 1.0, 2.0))
    _refused(tmp_path, sorted(folder.iterdir()), GeometryError, "phase3.mha", "spacing")


@pytest.mark.parametrize("ext", [".nii", ".nii.gz", ".nrrd"])
@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_volume_file(tmp_path, ext, keep):
    good = _cine_4d(tmp_path / f"good{ext}")
    data = good.read_bytes()
    bad = tmp_path / f"cut{ext}"
    bad.write_bytes(data[: int(len(data) * keep)])
    good.unlink()
    msg = _refused(tmp_path, bad, InputError, f"cut{ext}")
    assert "truncated" in msg or "damaged" in msg


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    _refused(tmp_path, tmp_path / "empty", InputError, "empty", "is empty")


def test_folder_without_images(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here")
    _refused(tmp_path, folder, InputError, "docs", "no DICOM image files")


def test_write_where_it_fails_leaves_no_partial_file(tmp_path):
    frames = np.zeros((3, 2, 20, 20), np.float32)
    (tmp_path / "out.nrrd").mkdir()  # a folder is in the way of the output file
    for target in (tmp_path / "out.nrrd", tmp_path / "gone" / "out.nrrd"):
        before = tree(tmp_path)
        with pytest.raises(InputError, match="out.nrrd"):
            write_4d(target, frames, _geometry(), [0, 1, 2])
        assert tree(tmp_path) == before
    with pytest.raises(InputError, match="out.txt"):
        write_4d(tmp_path / "out.txt", frames, _geometry(), [0, 1, 2])


# ------------------------------------------------------------------ DICOM (real Sunnybrook files)

@pytest.fixture
def dicom_copy(tmp_path, sunnybrook_root) -> Path:
    """Two slices x 20 phases of a real Sunnybrook study (files 1-40), copied into tmp_path."""
    folder = tmp_path / "SCD0000101_part"
    folder.mkdir()
    for n in range(1, 41):
        shutil.copyfile(sunnybrook_root / "dicom" / "SCD0000101" / f"{n}.dcm", folder / f"{n}.dcm")
    return folder


def test_good_dicom_copy_reads(dicom_copy):
    cine = read_cine(dicom_copy)
    assert cine.frames.shape == (20, 2, 256, 256)


def test_truncated_dicom_pixel_data(tmp_path, dicom_copy):
    victim = dicom_copy / "25.dcm"
    victim.write_bytes(victim.read_bytes()[:-5000])
    _refused(tmp_path, dicom_copy, InputError, "25.dcm", "truncated")


def test_truncated_dicom_header(tmp_path, dicom_copy):
    victim = dicom_copy / "25.dcm"
    victim.write_bytes(victim.read_bytes()[:1000])
    _refused(tmp_path, dicom_copy, InputError, "25.dcm")


def test_text_file_renamed_dcm(tmp_path, dicom_copy):
    (dicom_copy / "41.dcm").write_text("not DICOM at all")
    _refused(tmp_path, dicom_copy, InputError, "41.dcm")


def test_single_dicom_file(tmp_path, dicom_copy):
    _refused(tmp_path, dicom_copy / "1.dcm", InputError, "1.dcm", "single DICOM file", "folder")
