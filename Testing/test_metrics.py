"""Tests of LVMyoSegLib.analysis.metrics: DSC, HD, APD (mm) on known shapes and real Sunnybrook contours."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from skimage.draw import polygon

from LVMyoSegLib.analysis import metrics as M
from LVMyoSegLib.errors import InputError


def radius_map(shape, centre, spacing_rc=(1.0, 1.0)):
    """Distance (mm) of every pixel centre from ``centre`` (pixel row, col)."""
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return np.hypot((rr - centre[0]) * spacing_rc[0], (cc - centre[1]) * spacing_rc[1])


def contour_mask(path: Path, shape=(256, 256)) -> np.ndarray:
    """Rasterise a Sunnybrook contour file (x = column, y = row) with skimage.draw.polygon."""
    xy = np.loadtxt(path)
    mask = np.zeros(shape, dtype=bool)
    rr, cc = polygon(xy[:, 1], xy[:, 0], shape)
    mask[rr, cc] = True
    return mask


# ------------------------------------------------------------------ DSC

def test_dice_identical_disjoint_and_hand_counted():
    a = np.zeros((10, 10), bool)
    a[2:5, 2:5] = True  # 9 pixels
    b = np.zeros_like(a)
    b[2:5, 3:6] = True  # 9 pixels, 6 shared
    assert M.dice(a, a) == 1.0
    assert M.dice(a, np.roll(a, 5, axis=0)) == 0.0
    assert M.dice(a, b) == pytest.approx(2 * 6 / 18)
    empty = np.zeros_like(a)
    assert M.dice(empty, empty) == 1.0  # documented convention
    assert M.dice(a, empty) == 0.0


# ------------------------------------------------------------------ distances

def test_point_to_segment_not_point_to_vertex():
    seg = [np.array([[0.0, 0.0], [0.0, 10.0]])]
    d = M.distances_to_polylines(np.array([[1.0, 5.0], [0.0, 12.0], [-2.0, -2.0]]), seg)
    # nearest vertex would give sqrt(26) for the first point
    assert d == pytest.approx([1.0, 2.0, math.sqrt(8.0)])


def test_boundary_contours_closed_and_half_pixel_outside():
    m = np.zeros((8, 8), bool)
    m[2:5, 3:7] = True  # rows 2..4, cols 3..6
    (c,) = M.boundary_contours(m)
    assert np.allclose(c[0], c[-1])
    assert c[:, 0].min() == 1.5 and c[:, 0].max() == 4.5
    assert c[:, 1].min() == 2.5 and c[:, 1].max() == 6.5


# ------------------------------------------------------------------ known shapes

def test_concentric_circles_hd_apd_equal_radius_difference():
    sp = (0.1, 0.1)  # fine grid: 0.1 mm pixels
    r = radius_map((300, 300), (150.3, 149.8), sp)
    r1, r2 = 8.0, 11.0
    inner, outer = r <= r1, r <= r2
    expected = r2 - r1
    # each iso-contour lies within half a pixel of its true circle -> 1 pixel overall
    tol = 1.0 * sp[0]
    assert M.hausdorff_mm(inner, outer, sp) == pytest.approx(expected, abs=tol)
    assert M.apd_mm(inner, outer, sp) == pytest.approx(expected, abs=tol)
    assert M.apd_mm(outer, inner, sp) == pytest.approx(expected, abs=tol)


@pytest.mark.parametrize("spacing, axis, d_px", [((1.0, 1.0), 1, 3),
                                                 ((0.5, 1.5), 0, 4),
                                                 ((0.5, 1.5), 1, 4)])
def test_shifted_ring_hd_is_shift_in_mm(spacing, axis, d_px):
    # ring round in mm; a translated closed convex curve is at Hausdorff distance = |shift|
    r = radius_map((160, 160), (80, 80), spacing)
    ring = (r >= 20) & (r <= 30)
    shifted = np.roll(ring, d_px, axis=axis)
    expected = d_px * spacing[axis]
    assert M.hausdorff_mm(ring, shifted, spacing) == pytest.approx(expected, abs=0.5 * max(spacing))
    # swapping the spacing order must change the answer (anisotropy really used)
    if spacing[0] != spacing[1]:
        wrong = M.hausdorff_mm(ring, shifted, spacing[::-1])
        assert abs(wrong - expected) > 1.0


def test_apd_is_directional():
    r = radius_map((100, 100), (40, 40))
    manual = r <= 20
    auto = manual.copy()
    auto[85:90, 85:90] = True  # a false island far from the manual boundary
    there = M.apd_mm(auto, manual, (1.0, 1.0))
    back = M.apd_mm(manual, auto, (1.0, 1.0))
    assert there > back + 1.0
    assert back < 0.5  # manual boundary lies on the auto boundary


def test_empty_masks_give_nan_and_are_counted():
    a = np.zeros((20, 20), bool)
    b = a.copy()
    b[5:10, 5:10] = True
    m = M.slice_metrics(a, b, (1.0, 1.0), ring=True)
    assert m["dsc"] == 0.0 and math.isnan(m["hd_mm"]) and math.isnan(m["apd_mm"])
    assert m["auto_empty"] and not m["manual_empty"]
    assert math.isnan(m["apd_endo_mm"]) and math.isnan(m["apd_epi_mm"])
    both = M.slice_metrics(a, a, (1.0, 1.0))
    assert both["dsc"] == 1.0 and math.isnan(both["hd_mm"])
    s = M.summarize([1.0, 2.0, 3.0, float("nan")])
    assert s == {"mean": 2.0, "sd": 1.0, "n": 3, "n_nan": 1}  # sd with ddof=1
    assert math.isnan(M.summarize([float("nan")])["mean"])


def test_bad_input_raises_input_error():
    with pytest.raises(InputError, match="same shape"):
        M.dice(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(InputError, match="spacing"):
        M.hausdorff_mm(np.ones((4, 4)), np.ones((4, 4)), (1.0, 0.0))


# ------------------------------------------------------------------ rings: endo / epi

def test_ring_contours_and_endo_epi_apd():
    r = radius_map((120, 120), (60.2, 59.7))
    manual = (r >= 20) & (r <= 30)
    auto = (r >= 24) & (r <= 30)  # endocardium 4 px further out, same epicardium
    endo, epi = M.ring_contours(manual)
    assert len(endo) == 1 and len(epi) == 1
    assert np.hypot(*(endo[0] - (60.2, 59.7)).T).max() < 21
    assert np.hypot(*(epi[0] - (60.2, 59.7)).T).min() > 29
    e, p = M.apd_endo_epi_mm(auto, manual, (1.0, 1.0))
    assert e == pytest.approx(4.0, abs=0.5) and p == pytest.approx(0.0, abs=1e-9)
    m = M.slice_metrics(auto, manual, (1.0, 1.0), ring=True)
    # whole-boundary APD mixes both contours: between the two
    assert p < m["apd_mm"] < e


def test_open_ring_is_detected_and_split():
    c = (60, 60)
    r = radius_map((120, 120), c)
    rr, cc = np.mgrid[:120, :120]
    angle = np.degrees(np.arctan2(rr - c[0], cc - c[1]))
    ring = (r >= 20) & (r <= 30)
    open_ring = ring & ~(np.abs(angle) < 20)  # a 40 degree gap
    assert M.ring_cavity(ring)[1] is True
    hole, closed, hull_cav = M.ring_cavity(open_ring)
    assert closed is False and not hole.any() and hull_cav.sum() > np.pi * 19 ** 2
    endo, epi = M.ring_contours(open_ring)
    endo_r = np.hypot(*(np.concatenate(endo) - c).T)
    epi_r = np.hypot(*(np.concatenate(epi) - c).T)
    assert epi_r.min() > 29  # epicardium never strays to the inside
    assert np.mean(endo_r < 21) > 0.7  # mostly the inner arc (the gap's cut faces count as endo)
    e, p = M.apd_endo_epi_mm(open_ring, ring, (1.0, 1.0))
    assert np.isfinite(e) and p < 0.5


# ------------------------------------------------------------------ real data vs SimpleITK

def _four_connected_boundary(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels with a 4-neighbour in the background (outside the image counts)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _sitk_hd(a: np.ndarray, b: np.ndarray, spacing_rc) -> float:
    images = []
    for m in (a, b):
        img = sitk.GetImageFromArray(m.astype(np.uint8))
        img.SetSpacing((float(spacing_rc[1]), float(spacing_rc[0])))  # SimpleITK: (x=col, y=row)
        images.append(img)
    f = sitk.HausdorffDistanceImageFilter()
    f.Execute(*images)
    return f.GetHausdorffDistance()


@pytest.mark.parametrize("spacing", [(1.367188, 1.367188), (1.0, 2.0)])
def test_hd_matches_simpleitk_on_real_contours(sunnybrook_root, spacing):
    """HD of ED vs ES endocardium (same slice, patient SC-HF-I-1) against SimpleITK.

    Boundary definitions differ: ours is the sub-pixel 0.5 iso-contour (vertices
    half way between a foreground and a 4-neighbouring background pixel centre,
    distances to the polyline); SimpleITK gets the pixel centres of the
    4-connected inner boundary. Every vertex is 0.5 px from such a pixel and
    every such pixel 0.5 px from a vertex, so the two point sets are within
    0.5 * max(spacing) of each other (Hausdorff), giving at most max(spacing)
    between the two HDs; measuring to the polyline instead of its vertices
    moves ours by at most half a segment (0.5 * max(spacing)). Tolerance:
    1.5 * max(spacing). (SimpleITK on the *filled* masks measures something else:
    interior points have distance 0; ours is never smaller than that, minus the tolerance.)
    """
    contours = sunnybrook_root / "contours" / "SC-HF-I-1" / "i-contours"
    by_slice: dict[int, list[Path]] = {}
    for f in sorted(contours.glob("*.txt")):
        n = int(f.name.split("-")[2])
        by_slice.setdefault((n - 1) // 20, []).append(f)
    pairs = [v for v in by_slice.values() if len(v) == 2]
    assert len(pairs) >= 9
    tol = 1.5 * max(spacing)
    values = []
    for ed_file, es_file in pairs:
        a, b = contour_mask(ed_file), contour_mask(es_file)
        ours = M.hausdorff_mm(a, b, spacing)
        ref = _sitk_hd(_four_connected_boundary(a), _four_connected_boundary(b), spacing)
        assert ours == pytest.approx(ref, abs=tol), (ed_file.name, es_file.name)
        assert ours >= _sitk_hd(a, b, spacing) - tol
        values.append(ours)
    assert np.median(values) > 2 * tol  # ED vs ES differ: the comparison is not trivial


def test_real_myocardium_ring_endocardium_is_the_icontour_boundary(sunnybrook_root):
    con = sunnybrook_root / "contours" / "SC-HF-I-1"
    checked = 0
    for o_file in sorted((con / "o-contours").glob("*.txt")):
        i_file = con / "i-contours" / o_file.name.replace("ocontour", "icontour")
        outer, inner = contour_mask(o_file), contour_mask(i_file)
        if (inner & ~outer).any():
            continue  # the i-contour pokes through the o-contour: ring may be open here
        endo, epi = M.ring_contours(outer & ~inner)
        d_endo = M.distances_to_polylines(np.concatenate(endo), M.boundary_contours(inner))
        d_epi = M.distances_to_polylines(np.concatenate(epi), M.boundary_contours(outer))
        assert d_endo.max() < 1e-9 and d_epi.max() < 1e-9
        checked += 1
    assert checked >= 5
