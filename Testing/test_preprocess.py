"""Preprocessing: exact crop transform, LV localisation bar and round trips on real studies."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest

from LVMyoSegLib.cine import Cine, Geometry
from LVMyoSegLib.errors import GeometryError, InputError
from LVMyoSegLib.io.sunnybrook import cardiac_phases, list_studies, load_study, study_contours
from LVMyoSegLib.labels import CHANNELS
from LVMyoSegLib.preprocessing.localisation import localise
from LVMyoSegLib.preprocessing.preprocess import (CropTransform, crop_transform, interpolation_matrix,
                                                  labels_to_network, resample_to_network, suppress_outliers,
                                                  to_input, to_network)
from LVMyoSegLib.reporting.figures import preprocessing_figure


def _synthetic_cine(centre_mm=(15.0, -10.0), spacing=1.5, n=160, n_t=12, n_z=4) -> Cine:
    """Synthetic (not real) beating LV: bright cavity whose radius swings 18..28 mm, dark wall, grey
    background, plus a static bright blob; the LV centre is off the image centre by ``centre_mm``."""
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2.0) * spacing
    d_lv = np.hypot(yy - centre_mm[0], xx - centre_mm[1])
    blob = np.hypot(yy + 40.0, xx + 45.0) < 20.0
    frames = np.empty((n_t, n_z, n, n), np.float32)
    for t in range(n_t):
        r = 23.0 + 5.0 * np.cos(2 * np.pi * t / n_t)
        img = np.full((n, n), 80.0)
        img[d_lv < r + 9.0] = 30.0
        img[d_lv < r] = 200.0
        img[blob] = 220.0
        frames[t] = img
    return Cine(frames, Geometry((spacing, spacing, 8.0), (0.0, 0.0, 0.0)), np.arange(n_t) * 40.0,
                source="synthetic")


# --- exact mapping (synthetic, fast) --------------------------------------------------------


def test_interpolation_matrix_is_linear_interpolation():
    m = interpolation_matrix(7, 5, -0.5, 0.75)  # positions -0.5, 0.25, ..., 4.0
    v = np.array([1.0, 3.0, 2.0, 5.0, 4.0])
    pos = -0.5 + np.arange(7) * 0.75
    inside = (pos >= 0) & (pos <= 4)
    assert np.allclose(m @ v, np.where(inside, np.interp(pos, np.arange(5), v), 0.0))
    assert np.allclose(m.sum(axis=1), inside.astype(float))


def test_crop_transform_geometry_and_json():
    tr = crop_transform((3, 200, 180), (1.25, 1.5), np.array([[90.0, 80.0], [95.0, 85.5], [100, 70]]),
                        pixel_mm=1.0, crop_size=64)
    assert np.allclose(tr.centres_ji, [[90, 80], [95, 85.5], [100, 70]])
    assert np.allclose(tr.step_ji, [1 / 1.5, 1 / 1.25])
    a = tr.affine(1)
    assert np.allclose(a @ [0, 0, 1], [*tr.origin_ji[1], 1])
    assert np.allclose(a @ [63, 63, 1], [95 + 63 / 1.5, 85.5 + 63 / 1.25, 1] - np.r_[31.5 / 1.5, 31.5 / 1.25, 0])
    back = CropTransform.from_dict(json.loads(json.dumps(tr.to_dict())))
    assert back.input_shape_zyx == tr.input_shape_zyx and np.array_equal(back.origin_ji, tr.origin_ji)
    with pytest.raises(InputError, match="Re-run `lvmyoseg preprocess`"):
        CropTransform.from_dict({"crop_size": 64})


def test_smooth_image_round_trip_inside_box():
    n_t, n_z, ny, nx = 3, 2, 150, 170
    yy, xx = np.mgrid[:ny, :nx]
    img = np.exp(-((yy - 70) ** 2 + (xx - 90) ** 2) / (2 * 18.0 ** 2)) + 0.002 * xx
    stack = np.broadcast_to(img, (n_t, n_z, ny, nx)).astype(np.float32)
    tr = crop_transform((n_z, ny, nx), (1.37, 1.29), np.array([[70.0, 90.0], [60.3, 100.7]]), 1.0, 96)
    back = to_input(resample_to_network(stack, tr), tr)[..., 0]
    for z in range(n_z):
        lo, hi = tr.origin_ji[z], tr.origin_ji[z] + (tr.crop_size - 1) * tr.step_ji
        inside = (yy >= lo[0]) & (yy <= hi[0]) & (xx >= lo[1]) & (xx <= hi[1])
        assert inside.sum() > 0.15 * img.size
        err = np.abs(back[:, z] - stack[:, z])
        assert err[:, inside].max() < 2e-3 * np.ptp(img), err[:, inside].max()
        assert np.all(back[:, z][:, ~inside] == 0.0)


def test_shape_mismatch_raises():
    tr = crop_transform((2, 100, 100), (1.0, 1.0), np.array([50.0, 50.0]), 1.0, 32)
    with pytest.raises(GeometryError):
        to_input(np.zeros((3, 4, 32, 32, 2), np.float32), tr)
    with pytest.raises(GeometryError):
        to_network(_synthetic_cine(), tr)


def test_localise_synthetic_beating_lv():
    cine = _synthetic_cine()
    tr = localise(cine, pixel_mm=1.0, crop_size=128)  # the paper's grid
    n = cine.frames.shape[-1]
    truth = np.array([(n - 1) / 2 + 15.0 / 1.5, (n - 1) / 2 - 10.0 / 1.5])
    err_mm = np.linalg.norm((tr.centres_ji - truth) * 1.5, axis=1)
    assert err_mm.max() < 3.0, err_mm
    x = to_network(cine, tr)
    assert x.shape == (4, 12, 128, 128, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0


# --- real data ------------------------------------------------------------------------------


def _centroid_ji(points_xy: np.ndarray) -> np.ndarray:
    x, y = points_xy[:, 0], points_xy[:, 1]
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    cross = x * y1 - x1 * y
    area = cross.sum() / 2.0
    return np.array([((y + y1) * cross).sum(), ((x + x1) * cross).sum()]) / (6.0 * area)


@pytest.fixture(scope="module")
def real(sunnybrook_root):
    """Every study with its transform: (study, dicom, labels, contours, transform, seconds)."""
    out = []
    for study in list_studies(sunnybrook_root):
        dicom, labels = load_study(study)
        start = time.perf_counter()
        tr = localise(dicom.cine, pixel_mm=1.0, crop_size=128)  # the paper's grid
        out.append((study, dicom, labels, study_contours(study, dicom), tr, time.perf_counter() - start))
    return out


def test_localisation_bar_on_real_studies(real):
    """LV centre within 10 mm of the expert endocardial centroid (ED) on >= 95% of contoured slices;
    every expert contour inside its slice's crop box."""
    distances, margins = [], []
    for study, dicom, labels, contours, tr, secs in real:
        ed, _ = cardiac_phases(labels)
        mm = np.array(dicom.cine.spacing[:2])[::-1]  # (row, column) spacing
        for (t, z), drawn in contours.items():
            lo, hi = tr.origin_ji[z], tr.origin_ji[z] + (tr.crop_size - 1) * tr.step_ji
            for pts in drawn.values():
                ji = pts[:, ::-1]
                margins.append(float(np.min(np.concatenate([(ji - lo) * mm, (hi - ji) * mm]))))
            if t == ed:
                distances.append(float(np.linalg.norm((tr.centres_ji[z] - _centroid_ji(drawn["i"])) * mm)))
        print(f"{study.patient_id}: localise {secs:.2f} s, fallback slices "
              f"{np.flatnonzero(tr.localisation.fallback).tolist()}")
    d = np.array(distances)
    print(f"LV centre vs expert endocardial centroid over {len(d)} slices: worst {d.max():.1f} mm, "
          f"median {np.median(d):.1f} mm, within 10 mm {np.mean(d <= 10):.3f}; "
          f"min margin of expert contours to box edge {min(margins):.1f} mm")
    assert len(d) == 48
    assert np.mean(d <= 10.0) >= 0.95
    assert min(margins) > 0.0


def test_real_label_round_trip_dsc(real):
    worst = 1.0
    for study, dicom, labels, _, tr, _ in real:
        targets, known = labels_to_network(labels, tr)
        assert targets.shape == (dicom.cine.n_slices, dicom.cine.n_phases, 128, 128, 2)
        assert np.array_equal(known, labels.known.transpose(1, 0, 2))
        back = to_input(targets, tr) >= 0.5
        for c, name in enumerate(CHANNELS):
            expert = labels.channel(name)
            for t, z in labels.labelled_frames(name):
                a, b = expert[t, z], back[t, z, :, :, c]
                dsc = 2.0 * (a & b).sum() / (a.sum() + b.sum())
                worst = min(worst, dsc)
                assert dsc > 0.95, (study.patient_id, name, t, z, dsc)
    print(f"worst round-trip DSC {worst:.4f}")


def test_real_network_input_and_figure(real, tmp_path):
    study, dicom, labels, _, tr, _ = real[0]
    x = to_network(dicom.cine, tr)
    assert x.shape == (dicom.cine.n_slices, dicom.cine.n_phases, 128, 128, 1)
    assert np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0
    assert all(np.ptp(x[z]) > 0.5 for z in range(x.shape[0]))  # each slice spans its range
    out = preprocessing_figure(dicom.cine, tr, tmp_path / "prep.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind
    with pytest.raises(InputError, match="does not exist"):
        preprocessing_figure(dicom.cine, tr, tmp_path / "missing" / "prep.png")


def test_isolated_extreme_pixels_change_neither_localisation_nor_network_input(real):
    """0.2% of voxels at ±32767 (a damaged read-out) once moved the sample's EF from 26% to 45%."""
    study, dicom, _, _, tr, _ = real[0]
    cine = dicom.cine
    rng = np.random.default_rng(0)
    frames = cine.frames.astype(np.float32)
    hit = rng.random(frames.shape) < 0.002
    frames[hit] = np.where(rng.random(int(hit.sum())) < 0.5, 32767.0, -32767.0)
    spiky = dataclasses.replace(cine, frames=frames)
    for z in range(cine.n_slices):  # an ordinary slice has no impossible pixel: it comes back as it was
        assert np.array_equal(suppress_outliers(cine.frames[:, z]), cine.frames[:, z].astype(np.float32))
    tr_spiky = localise(spiky, pixel_mm=1.0, crop_size=128)
    assert np.abs(tr_spiky.origin_ji - tr.origin_ji).max() <= 1.0  # pixels of the input grid
    clean, noisy = to_network(cine, tr), to_network(spiky, tr)
    assert np.mean(np.abs(noisy - clean) > 0.05) < 0.01
