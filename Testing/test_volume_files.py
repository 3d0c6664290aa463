"""4D NIfTI / NRRD round trips, Slicer sequence files, 3D frame lists, label files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LVMyoSegLib.cine import Cine, Geometry
from LVMyoSegLib.errors import GeometryError, InputError, LabelError
from LVMyoSegLib.io.phantom import make_synthetic_cine
from LVMyoSegLib.io.readers import read_cine
from LVMyoSegLib.io.volume_files import channel_path, read_4d, read_frames, read_labels_4d, read_volume_4d, write_4d

FORMATS = [".nii.gz", ".nii", ".nrrd"]


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _corners_mm(g: Geometry, shape_zyx: tuple[int, int, int]) -> np.ndarray:
    """LPS positions of the 8 corner voxels of a [Z, Y, X] grid."""
    z, y, x = shape_zyx
    idx = np.array([[i, j, k, 1] for i in (0, x - 1) for j in (0, y - 1) for k in (0, z - 1)], float)
    return (g.index_to_lps() @ idx.T).T[:, :3]


@pytest.fixture(scope="module")
def oblique_cine() -> Cine:
    cine, _ = make_synthetic_cine(n_phases=6, n_slices=3, size=48, spacing=(1.37, 1.37, 6.3),
                                  direction=_rotation(0.3, -0.5, 1.1))
    g = Geometry(cine.geometry.spacing, (236.585, -37.6925, 108.928), cine.geometry.direction)
    uneven = np.array([19.1, 57.4, 95.7, 134.0, 180.2, 210.5])
    return Cine(cine.frames, g, uneven, source="synthetic phantom")


@pytest.mark.parametrize("ext", FORMATS)
def test_image_round_trip_keeps_array_and_oblique_geometry(tmp_path, oblique_cine, ext):
    path = tmp_path / f"cine{ext}"
    written = write_4d(path, oblique_cine.frames, oblique_cine.geometry, oblique_cine.trigger_times_ms)
    assert written == [path] and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    back = read_cine(path)
    np.testing.assert_array_equal(back.frames, oblique_cine.frames)
    shape = oblique_cine.frames.shape[1:]
    err = np.abs(_corners_mm(back.geometry, shape) - _corners_mm(oblique_cine.geometry, shape)).max()
    assert err < 1e-4, f"corner voxels moved by {err} mm"
    np.testing.assert_allclose(back.geometry.direction, oblique_cine.geometry.direction, atol=1e-5)
    assert back.source == str(path)
    if ext == ".nrrd":  # exact, uneven trigger times
        np.testing.assert_allclose(back.trigger_times_ms, oblique_cine.trigger_times_ms, atol=1e-9)
    else:  # NIfTI keeps first time + mean step
        t = oblique_cine.trigger_times_ms
        expected = t[0] + np.arange(len(t)) * np.diff(t).mean()
        np.testing.assert_allclose(back.trigger_times_ms, expected, atol=1e-3)
        assert "ms" in read_volume_4d(path).time_source


@pytest.mark.parametrize("ext", FORMATS)
def test_probabilities_one_file_per_channel_and_labels_uint8(tmp_path, oblique_cine, ext):
    rng = np.random.default_rng(1)
    probs = rng.random(oblique_cine.frames.shape + (2,), dtype=np.float32)
    written = write_4d(tmp_path / f"probabilities{ext}", probs, oblique_cine.geometry,
                       oblique_cine.trigger_times_ms, kind="probabilities")
    assert [p.name for p in written] == [f"probabilities_myocardium{ext}", f"probabilities_blood_pool{ext}"]
    for c, p in enumerate(written):
        v = read_volume_4d(p)
        assert v.array.dtype == np.float32
        np.testing.assert_array_equal(v.array, probs[..., c])
        assert v.geometry.matches(oblique_cine.geometry, 1e-4)
    labels = rng.integers(0, 3, oblique_cine.frames.shape).astype(np.int64)
    (lab_path,) = write_4d(tmp_path / f"labels{ext}", labels, oblique_cine.geometry, oblique_cine.trigger_times_ms)
    assert read_volume_4d(lab_path).array.dtype == np.uint8
    np.testing.assert_array_equal(read_labels_4d(lab_path, oblique_cine), labels)


def test_nrrd_is_a_slicer_volume_sequence(tmp_path, oblique_cine):
    path = tmp_path / "labels.seq.nrrd"
    write_4d(path, np.zeros(oblique_cine.frames.shape, np.uint8), oblique_cine.geometry,
             oblique_cine.trigger_times_ms)
    with open(path, "rb") as f:
        header = f.read(2000).split(b"\n\n")[0].decode()
    assert "kinds: domain domain domain list" in header
    assert "space: left-posterior-superior" in header
    assert "axis 3 index values:=19.1 57.4 95.7 134.0 180.2 210.5" in header
    assert "DataNodeClassName:=vtkMRMLLabelMapVolumeNode" in header


def test_reads_older_slicer_sequence_with_list_axis_first(tmp_path):
    """Older Slicer .seq.nrrd files put the list (time) axis first: sizes T X Y Z."""
    frames = np.random.default_rng(2).integers(0, 900, (4, 3, 20, 24)).astype(np.int16)  # T Z Y X
    header = ("NRRD0005\ntype: short\ndimension: 4\nspace: right-anterior-superior\nsizes: 4 24 20 3\n"
              "space directions: none (1.5,0,0) (0,1.5,0) (0,0,7)\nkinds: list domain domain domain\n"
              'labels: "frame" "" "" ""\nendian: little\nencoding: gzip\nspace origin: (10,20,30)\n'
              "DataNodeClassName:=vtkMRMLScalarVolumeNode\naxis 0 index type:=numeric\n"
              "axis 0 index values:=0 41.5 83 124.5\n\n")
    path = tmp_path / "old.seq.nrrd"
    path.write_bytes(header.encode() + gzip.compress(np.moveaxis(frames, 0, -1).tobytes()))
    v = read_volume_4d(path)
    np.testing.assert_array_equal(v.array, frames)
    np.testing.assert_allclose(v.trigger_times_ms, [0, 41.5, 83, 124.5])
    assert "axis 0 index values" in v.time_source
    # RAS (10, 20, 30) is LPS (-10, -20, 30); RAS axes flip x and y
    np.testing.assert_allclose(v.geometry.origin, (-10, -20, 30))
    np.testing.assert_allclose(v.geometry.direction, np.diag([-1, -1, 1]), atol=1e-12)


def test_nifti_without_time_step_gives_phase_indices(tmp_path):
    img = sitk.GetImageFromArray(np.ones((5, 2, 20, 20), np.float32), isVector=False)  # spacing 1 everywhere
    sitk.WriteImage(img, str(tmp_path / "plain.nii.gz"))
    v = read_volume_4d(tmp_path / "plain.nii.gz")
    np.testing.assert_array_equal(v.trigger_times_ms, np.arange(5))
    assert "phase indices" in v.time_source


def _write_frame(path: Path, array: np.ndarray, origin=(0.0, 0.0, 0.0), spacing=(1.3, 1.3, 8.0)) -> None:
    img = sitk.GetImageFromArray(array)
    img.SetOrigin(origin)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))


def test_folder_of_3d_frames_in_natural_order(tmp_path):
    frames = np.random.default_rng(3).random((12, 2, 20, 22)).astype(np.float32)
    for t in range(12):  # frame_2 must come before frame_10
        _write_frame(tmp_path / f"frame_{t + 1}.{'mha' if t % 2 else 'nrrd'}", frames[t])
    (tmp_path / "notes.txt").write_text("not a frame")
    cine = read_cine(tmp_path)
    np.testing.assert_array_equal(cine.frames, frames)
    assert cine.geometry.spacing == pytest.approx((1.3, 1.3, 8.0))
    np.testing.assert_array_equal(cine.trigger_times_ms, np.arange(12))
    listed = read_frames([tmp_path / "frame_4.mha", tmp_path / "frame_1.nrrd"])
    np.testing.assert_array_equal(listed.frames, frames[[3, 0]])


def test_labels_checked_against_cine(tmp_path, oblique_cine):
    g = oblique_cine.geometry
    shape, times = oblique_cine.frames.shape, oblique_cine.trigger_times_ms
    shifted = Geometry(g.spacing, tuple(np.add(g.origin, (0.5, 0, 0))), g.direction)
    write_4d(tmp_path / "shifted.nrrd", np.zeros(shape, np.uint8), shifted, times)
    with pytest.raises(GeometryError, match="shifted.nrrd.*not aligned"):
        read_labels_4d(tmp_path / "shifted.nrrd", oblique_cine)
    write_4d(tmp_path / "small.nrrd", np.zeros((shape[0], shape[1], 40, 40), np.uint8), g, times)
    with pytest.raises(GeometryError, match="small.nrrd"):
        read_labels_4d(tmp_path / "small.nrrd", oblique_cine)
    write_4d(tmp_path / "values.nrrd", np.full(shape, 3.5, np.float32), g, times)  # float, so no value check
    with pytest.raises(LabelError, match=r"values.nrrd.*\[3\.5\]"):
        read_labels_4d(tmp_path / "values.nrrd", oblique_cine)


def test_failed_writes_leave_nothing_behind(tmp_path, oblique_cine):
    g, times = oblique_cine.geometry, oblique_cine.trigger_times_ms
    probs = np.full(oblique_cine.frames.shape + (2,), 0.5, np.float32)
    (tmp_path / "p_blood_pool.nii.gz").mkdir()  # the second channel's target is in the way
    with pytest.raises(InputError, match="p_blood_pool.nii.gz"):
        write_4d(tmp_path / "p.nii.gz", probs, g, times, kind="probabilities")
    with pytest.raises(InputError, match="outside 0..1"):
        write_4d(tmp_path / "q.nrrd", probs * 3, g, times, kind="probabilities")
    with pytest.raises(LabelError):
        write_4d(tmp_path / "l.nrrd", np.full(oblique_cine.frames.shape, 7, np.uint8), g, times)
    with pytest.raises(InputError, match="does not exist"):
        write_4d(tmp_path / "missing" / "c.nrrd", oblique_cine.frames, g, times)
    with pytest.raises(InputError, match="trigger times"):
        write_4d(tmp_path / "c.nrrd", oblique_cine.frames, g, times[:-1])
    assert [p.name for p in tmp_path.iterdir()] == ["p_blood_pool.nii.gz"]
    assert not any((tmp_path / "p_blood_pool.nii.gz").iterdir())


def test_existing_file_is_replaced_whole(tmp_path, oblique_cine):
    path = tmp_path / "c.nii.gz"
    path.write_bytes(b"old")
    write_4d(path, oblique_cine.frames, oblique_cine.geometry, oblique_cine.trigger_times_ms, kind="image")
    np.testing.assert_array_equal(read_4d(path).frames, oblique_cine.frames)
    assert [p.name for p in tmp_path.iterdir()] == ["c.nii.gz"]


def test_channel_path_names():
    assert channel_path(Path("out/p.seq.nrrd"), "myocardium") == Path("out/p_myocardium.seq.nrrd")
    assert channel_path(Path("p.nii"), "blood_pool") == Path("p_blood_pool.nii")


@pytest.fixture(scope="module")
def sunnybrook_cine(sunnybrook_root) -> Cine:
    return read_cine(sunnybrook_root / "dicom" / "SCD0000101")


@pytest.mark.slow
@pytest.mark.parametrize("ext", [".nrrd", ".nii.gz"])
def test_real_sunnybrook_study_round_trip(tmp_path, sunnybrook_cine, ext):
    cine = sunnybrook_cine
    assert cine.frames.shape == (20, 12, 256, 256)
    path = tmp_path / f"study{ext}"
    write_4d(path, cine.frames, cine.geometry, cine.trigger_times_ms)
    back = read_cine(path)
    np.testing.assert_array_equal(back.frames, cine.frames)
    shape = cine.frames.shape[1:]
    assert np.abs(_corners_mm(back.geometry, shape) - _corners_mm(cine.geometry, shape)).max() < 1e-4
    tol = 1e-9 if ext == ".nrrd" else 0.5  # NIfTI: evenly spaced; Sunnybrook times are within 0.5 ms of that
    np.testing.assert_allclose(back.trigger_times_ms, cine.trigger_times_ms, atol=tol)


def test_folder_with_one_4d_file_reads_it(tmp_path, oblique_cine):
    write_4d(tmp_path / "cine.nrrd", oblique_cine.frames, oblique_cine.geometry, oblique_cine.trigger_times_ms)
    np.testing.assert_array_equal(read_cine(tmp_path).frames, oblique_cine.frames)
