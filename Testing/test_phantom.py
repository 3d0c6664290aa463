"""The SYNTHETIC beating-heart phantom behaves like a short-axis cine (for fast unit tests)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from LVMyoSegLib.io.phantom import contraction, make_synthetic_cine, sparsify_like_sunnybrook, synthetic_es_phase
from LVMyoSegLib.labels import BLOOD_POOL, CHANNELS, MYOCARDIUM


@pytest.fixture(scope="module")
def phantom():
    t0 = time.perf_counter()
    cine, labels = make_synthetic_cine()
    return cine, labels, time.perf_counter() - t0


def _radii_mm(labels, spacing):
    """Equivalent endo/epi radii [T, Z] from cavity and cavity+myocardium areas."""
    px = spacing[0] * spacing[1]
    cav = (labels.label_map == BLOOD_POOL).sum(axis=(2, 3)) * px
    myo = (labels.label_map == MYOCARDIUM).sum(axis=(2, 3)) * px
    return np.sqrt(cav / np.pi), np.sqrt((cav + myo) / np.pi), myo


def test_shapes_times_and_labels_known(phantom):
    cine, labels, seconds = phantom
    assert cine.frames.shape == labels.label_map.shape == (20, 6, 128, 128)
    assert labels.known.all() and labels.known.shape == (20, 6, len(CHANNELS))
    assert np.all(np.diff(cine.trigger_times_ms) > 0)
    assert "synthetic" in cine.source and "synthetic" in labels.source
    assert cine.geometry.spacing == (1.4, 1.4, 8.0)
    assert seconds < 3.0, f"phantom took {seconds:.2f} s; it must stay fast for unit tests"


def test_cavity_shrinks_to_end_systole_and_wall_thickens(phantom):
    cine, labels, _ = phantom
    r_endo, r_epi, myo_area = _radii_mm(labels, cine.spacing)
    volume = r_endo.sum(axis=1)
    es = synthetic_es_phase(cine.n_phases)
    assert es == 8 and int(np.argmin(volume)) == es and int(np.argmax(volume)) == 0
    thickness = r_epi - r_endo
    assert np.all(thickness[es] > 1.2 * thickness[0])
    # myocardial area is conserved over the cycle (incompressible wall), within rasterisation
    assert np.all(np.abs(myo_area / myo_area[0] - 1) < 0.05)
    assert contraction(20)[0] == 0 and contraction(20)[es] == pytest.approx(1.0)


def test_myocardium_surrounds_cavity(phantom):
    _, labels, _ = phantom
    for t, z in [(0, 0), (8, 3), (15, 5)]:
        cav = labels.label_map[t, z] == BLOOD_POOL
        ring = binary_dilation(cav) & ~cav
        assert np.all(labels.label_map[t, z][ring] == MYOCARDIUM)


def test_contrast_offset_infarct_and_lesion(phantom):
    cine, labels, _ = phantom
    f, lm = cine.frames, labels.label_map
    blood, myo = np.median(f[lm == BLOOD_POOL]), np.median(f[lm == MYOCARDIUM])
    assert blood > 2.0 * myo
    # LV centre is offset from the image centre
    ys, xs = np.nonzero(lm[0, 0] == BLOOD_POOL)
    assert np.hypot(xs.mean() - 63.5, ys.mean() - 63.5) > 8
    # thinned infarct sector: wall thickness differs around the ring
    cav = lm[0, 0] == BLOOD_POOL
    cy, cx = ys.mean(), xs.mean()
    yy, xx = np.mgrid[:128, :128]
    angle = np.arctan2(yy - cy, xx - cx)
    sectors = np.floor((angle + np.pi) / (np.pi / 6)).astype(int) % 12
    counts = np.array([np.count_nonzero((lm[0, 0] == MYOCARDIUM) & (sectors == s)) for s in range(12)])
    assert counts.min() < 0.7 * counts.max()
    assert cav.sum() > 0
    # hypointense wall lesion on the middle slices only
    dark = [np.percentile(f[0, z][lm[0, z] == MYOCARDIUM], 2) for z in range(6)]
    assert min(dark[2:4]) < 0.6 * min(dark[:2] + dark[4:])


def test_rv_blob_and_noise(phantom):
    cine, labels, _ = phantom
    f, lm = cine.frames[0, 0], labels.label_map[0, 0]
    bright_outside_lv = (f > 0.6 * np.median(f[lm == BLOOD_POOL])) & (lm == 0)
    assert bright_outside_lv.sum() > 200  # the right ventricle
    assert f[:3, :3].min() > 0  # Rician noise: air is not exactly 0


def test_seed_changes_noise_and_sizes_are_free():
    a, _ = make_synthetic_cine(n_phases=6, n_slices=2, size=64, seed=1)
    b, _ = make_synthetic_cine(n_phases=6, n_slices=2, size=64, seed=1)
    c, _ = make_synthetic_cine(n_phases=6, n_slices=2, size=64, seed=2)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)
    assert a.frames.shape == (6, 2, 64, 64)


def test_sparsify_like_sunnybrook(phantom):
    cine, labels, _ = phantom
    sparse = sparsify_like_sunnybrook(labels, slices=(1, 2, 3, 4))
    es = synthetic_es_phase(cine.n_phases)
    myo, pool = CHANNELS.index("myocardium"), CHANNELS.index("blood_pool")
    assert sparse.labelled_frames("myocardium") == [(0, z) for z in (1, 2, 3, 4)]
    assert sparse.labelled_frames("blood_pool") == [(t, z) for t in (0, es) for z in (1, 2, 3, 4)]
    assert sparse.known[:, :, myo].sum() == 4 and sparse.known[:, :, pool].sum() == 8
    np.testing.assert_array_equal(sparse.label_map[0, 1], labels.label_map[0, 1])
    assert set(np.unique(sparse.label_map[es])) == {0, BLOOD_POOL}  # no myocardium drawn at ES
    assert not sparse.label_map[[t for t in range(20) if t not in (0, es)]].any()
    assert not sparse.label_map[:, [0, 5]].any()
    sparse.check_fits(cine)
