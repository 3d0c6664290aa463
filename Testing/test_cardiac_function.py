"""Tests of LVMyoSegLib.analysis.cardiac_function: synthetic rings (synthetic) and real Sunnybrook labels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
from skimage.draw import polygon

from LVMyoSegLib.analysis import cardiac_function as CF
from LVMyoSegLib.cine import Geometry
from LVMyoSegLib.errors import InputError, LabelError
from LVMyoSegLib.reporting import figures

CENTRE = (64.3, 63.8)


def radius_mm(shape=(128, 128), spacing_rc=(1.0, 1.0), centre=CENTRE) -> np.ndarray:
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return np.hypot((rr - centre[0]) * spacing_rc[0], (cc - centre[1]) * spacing_rc[1])


def synthetic_rings(inner_radii, wall=10.0, n_slices=5, spacing_rc=(1.0, 1.0), blood_label=True):
    """Synthetic label map: per frame a stack of identical rings (a cylinder), radii in mm."""
    r = radius_mm(spacing_rc=spacing_rc)
    lm = np.zeros((len(inner_radii), n_slices) + r.shape, np.uint8)
    for t, ri in enumerate(inner_radii):
        lm[t, :][:, (r >= ri) & (r < ri + wall)] = 1
        if blood_label:
            lm[t, :][:, r < ri] = 2
    return lm


# ------------------------------------------------------------------ volumes, EF, HR

@pytest.mark.parametrize("blood_label", [True, False])
def test_cylinder_volumes_within_one_percent(blood_label):
    step = 8.0
    lm = synthetic_rings([30.0, 20.0], n_slices=6, blood_label=blood_label)
    res = CF.compute_cardiac_function(lm, Geometry((1.0, 1.0, step), (0, 0, 0)))
    for t, ri in enumerate([30.0, 20.0]):
        blood = math.pi * ri ** 2 * 6 * step / 1000
        myo = math.pi * ((ri + 10) ** 2 - ri ** 2) * 6 * step / 1000
        assert res.blood_volume_ml[t] == pytest.approx(blood, rel=0.01)
        assert res.myocardium_volume_ml[t] == pytest.approx(myo, rel=0.01)
    assert res.ed_frame == 0 and res.es_frame == 1
    assert res.lv_mass_g == pytest.approx(1.05 * res.myocardium_volume_ml[0])
    assert res.slices.counted.all()


def test_slice_step_comes_from_geometry_not_thickness():
    lm = synthetic_rings([25.0, 20.0], n_slices=3)
    iso = CF.compute_cardiac_function(lm, Geometry((1.0, 1.0, 6.7), (0, 0, 0)))
    # sheared stack: k axis tilted 30 degrees off the normal, same spacing[2]
    tilt = np.radians(30)
    d = np.column_stack([[1, 0, 0], [0, 1, 0], [0, np.sin(tilt), np.cos(tilt)]])
    sheared = CF.compute_cardiac_function(lm, Geometry((1.0, 1.0, 6.7), (0, 0, 0), d))
    assert iso.slice_step_mm == pytest.approx(6.7)
    assert sheared.slice_step_mm == pytest.approx(6.7 * np.cos(tilt))
    assert sheared.edv_ml == pytest.approx(iso.edv_ml * np.cos(tilt))


def test_phantom_ef_heart_rate_and_cardiac_output():
    radii = [30.0, 27.0, 22.0, 19.0, 21.0, 26.0]  # ED at frame 0, ES at frame 3
    lm = synthetic_rings(radii)
    times = np.arange(len(radii)) * 125.0  # RR ~ 625 + 125 = 750 ms -> 80 bpm
    res = CF.compute_cardiac_function(lm, Geometry((1.0, 1.0, 10.0), (0, 0, 0)), times)
    ef_true = 100 * (1 - radii[3] ** 2 / radii[0] ** 2)
    assert (res.ed_frame, res.es_frame) == (0, 3)
    assert res.ef_percent == pytest.approx(ef_true, abs=1.0)
    assert res.sv_ml == pytest.approx(res.edv_ml - res.esv_ml)
    assert res.rr_interval_ms == pytest.approx(750.0)
    assert res.heart_rate_bpm == pytest.approx(80.0)
    assert res.cardiac_output_l_min == pytest.approx(res.sv_ml * 80.0 / 1000)
    # trigger "times" that are frame indices give an implausible rate: not reported
    idx = CF.compute_cardiac_function(lm, Geometry((1.0, 1.0, 10.0), (0, 0, 0)),
                                      np.arange(len(radii)))
    assert math.isnan(idx.heart_rate_bpm) and any("implausible" in n for n in idx.notes)
    # forced ED/ES frames are honoured
    forced = CF.compute_cardiac_function(lm, Geometry((1.0, 1.0, 10.0), (0, 0, 0)),
                                         ed_frame=1, es_frame=4)
    assert forced.edv_ml == pytest.approx(res.blood_volume_ml[1])
    assert forced.esv_ml == pytest.approx(res.blood_volume_ml[4])


def test_unlabelled_frames_are_nan_not_zero():
    lm = synthetic_rings([30.0, 25.0, 20.0])
    lm[1] = 0  # middle frame not segmented
    res = CF.compute_cardiac_function(lm, Geometry((1.0, 1.0, 10.0), (0, 0, 0)))
    assert math.isnan(res.blood_volume_ml[1])
    assert (res.ed_frame, res.es_frame) == (0, 2)
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))  # strict JSON
    assert d["blood_volume_ml"][1] is None
    for key in ("edv_ml", "esv_ml", "sv_ml", "ef_percent", "lv_mass_g", "ed_frame", "es_frame",
                "heart_rate_bpm", "cardiac_output_l_min", "myocardium_volume_ml", "thickness",
                "slices", "withheld", "notes"):
        assert key in d


def test_basal_c_shape_counts_by_the_50_percent_rule():
    """SCMR: a basal slice counts when myocardium surrounds >= 50% of the blood pool (for an
    open ring, the disc its fitted circle encloses); below 50% it does not."""
    lm = synthetic_rings([25.0, 20.0], n_slices=4, blood_label=False)
    rr, cc = np.mgrid[:128, :128]
    gap = np.abs(np.degrees(np.arctan2(rr - CENTRE[0], cc - CENTRE[1]))) < 25
    lm[0, 3][gap] = 0  # basal-like C-shaped ring on frame 0, slice 3 (86% coverage)
    res = CF.compute_cardiac_function(lm, Geometry((1.0, 1.0, 10.0), (0, 0, 0)))
    assert res.slices.counted.all()
    assert 0.8 < res.slices.coverage[0, 3] < 0.92
    assert "surrounds" in res.slices.reasons[0][3]
    closed_slice = math.pi * 25.0 ** 2 * 10.0 / 1000
    assert res.slice_blood_ml[0, 3] == pytest.approx(closed_slice, rel=0.1)  # the disc
    wide = np.abs(np.degrees(np.arctan2(rr - CENTRE[0], cc - CENTRE[1]))) < 150
    lm[0, 3][wide] = 0  # now under half of the pool is surrounded
    res = CF.compute_cardiac_function(lm, Geometry((1.0, 1.0, 10.0), (0, 0, 0)))
    assert res.slices.coverage[0, 3] < 0.5 and not res.slices.counted[0, 3]
    assert res.slices.reasons[0][3].startswith("base: myocardium surrounds")
    assert res.blood_volume_ml[0] == pytest.approx(3 * closed_slice, rel=0.01)
    lm[0, 3] = np.where(gap, 0, synthetic_rings([25.0], n_slices=4, blood_label=False)[0, 3])
    res = CF.compute_cardiac_function(lm, Geometry((1.0, 1.0, 10.0), (0, 0, 0)))
    # the thickness rays through the gap are NaN, the others still measured
    sl = next(s for s in res.thickness if s.frame == 0 and s.slice == 3)
    n_rays = sum(sec.n_rays for sec in sl.sectors)
    assert 360 * (1 - 60 / 360) < n_rays < 360 * (1 - 40 / 360)


def test_bad_labels_raise():
    g = Geometry((1.0, 1.0, 10.0), (0, 0, 0))
    with pytest.raises(LabelError, match="only 0"):
        CF.compute_cardiac_function(np.full((2, 1, 32, 32), 3, np.uint8), g)
    with pytest.raises(LabelError, match="nothing"):
        CF.compute_cardiac_function(np.zeros((2, 1, 32, 32), np.uint8), g)
    with pytest.raises(InputError, match="trigger times"):
        CF.compute_cardiac_function(synthetic_rings([20.0, 25.0]), g, [0.0])


# ------------------------------------------------------------------ wall thickness

@pytest.mark.parametrize("spacing_rc", [(1.0, 1.0), (0.8, 1.3)])
def test_ring_thickness_within_half_a_pixel(spacing_rc):
    lm = synthetic_rings([20.0], wall=10.0, n_slices=1, spacing_rc=spacing_rc)
    lm = np.concatenate([lm, lm])  # two frames (ED = ES here)
    g = Geometry((spacing_rc[1], spacing_rc[0], 10.0), (0, 0, 0))
    res = CF.compute_cardiac_function(lm, g)
    (sl,) = res.thickness
    assert len(sl.sectors) == 6 and res.thickness_reference == "relative"
    for sec in sl.sectors:
        assert sec.n_rays == 60
        assert sec.mean_mm == pytest.approx(10.0, abs=0.5 * max(spacing_rc))


def _thick_septum_phantom(n_slices=6):
    """Ring thickened (wall 16 mm instead of 10) over screen angles 180..240 degrees.

    Identity geometry: +column = patient left, +row = posterior, slices along
    superior. On screen (row down) anterior is up and the septum (towards the RV,
    patient right) is on the left; screen angles grow counterclockwise.
    """
    lm = synthetic_rings([20.0, 20.0], n_slices=n_slices)
    rr, cc = np.mgrid[:128, :128]
    screen = np.degrees(np.arctan2(-(rr - CENTRE[0]), cc - CENTRE[1])) % 360
    r = radius_mm()
    lm[:, :][:, :, (screen > 180) & (screen < 240) & (r >= 30) & (r < 36)] = 1
    return lm


def test_relative_and_aha_sector_numbering():
    lm = _thick_septum_phantom()
    g = Geometry((1.0, 1.0, 10.0), (0, 0, 0))
    rel = CF.compute_cardiac_function(lm, g)
    for sl in rel.thickness:
        best = max(sl.sectors, key=lambda s: s.mean_mm)
        assert best.sector == 4 and best.aha_segment is None  # [180, 240) from +column, ccw
        assert best.mean_mm == pytest.approx(16.0, abs=0.5)
    assert any("relative" in n for n in rel.notes)
    # anterior RV insertion point up-left, at screen angle 120 degrees from the centre
    ins_rc = (CENTRE[0] - 25 * math.sin(math.radians(120)),
              CENTRE[1] + 25 * math.cos(math.radians(120)))
    aha = CF.compute_cardiac_function(lm, g, rv_insertion=ins_rc)
    # LPS point of the same place gives the same numbering
    lps = (g.index_to_lps() @ np.array([ins_rc[1], ins_rc[0], 2.0, 1.0]))[:3]
    aha_lps = CF.compute_cardiac_function(lm, g, rv_insertion=lps)
    assert aha.thickness_reference == "aha"
    levels = {}
    for sl, sl2 in zip(aha.thickness, aha_lps.thickness):
        levels[sl.slice] = sl.level
        best = max(sl.sectors, key=lambda s: s.mean_mm)
        # thick wall at screen 180-240 = 60-120 degrees past the insertion point: inferoseptal
        expected = {"basal": 3, "mid": 9, "apical": 14}[sl.level]  # apical: septal 15-105
        assert best.aha_segment == expected
        assert [s.aha_segment for s in sl.sectors] == [s.aha_segment for s in sl2.sectors]
    # identity geometry: the apex lies inferior (-z), so slice 0 is apical
    assert levels == {0: "apical", 1: "apical", 2: "mid", 3: "mid", 4: "basal", 5: "basal"}
    apical = next(sl for sl in aha.thickness if sl.level == "apical")
    assert [s.aha_segment for s in apical.sectors] == [13, 14, 15, 16]


def test_plots_are_written(tmp_path):
    lm = _thick_septum_phantom(n_slices=3)
    lm[1] = synthetic_rings([15.0], n_slices=3)[0]
    res = CF.compute_cardiac_function(lm, Geometry((1.0, 1.0, 10.0), (0, 0, 0)), [0.0, 300.0],
                                      rv_insertion=(40.0, 50.0))
    for fn, name in ((figures.plot_volume_curve, "curve.png"), (figures.plot_thickness, "bullseye.png")):
        out = fn(res, tmp_path / name)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rel = CF.compute_cardiac_function(lm, Geometry((1.0, 1.0, 10.0), (0, 0, 0)))
    assert figures.plot_thickness(rel, tmp_path / "sectors.png").stat().st_size > 1000
    assert figures.plot_thickness(rel, tmp_path / "none.png", frame=5).stat().st_size > 1000
    with pytest.raises(InputError, match="does not exist"):
        figures.plot_volume_curve(res, tmp_path / "missing" / "x.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bullseye.png", "curve.png", "none.png",
                                                          "sectors.png"]


# ------------------------------------------------------------------ real data

def _read_sunnybrook_study(dicom_dir: Path):
    """Headers -> (geometry, trigger times per phase, {instance: (phase, slice)}, slice steps).

    Independent of the project's readers: slices sorted by position along the
    slice normal, phases by trigger time.
    """
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in dicom_dir.glob("*.dcm")]
    iop = np.array(headers[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    pos = np.array([np.array(h.ImagePositionPatient, dtype=float) @ normal for h in headers])
    levels = np.unique(np.round(pos, 1))
    slices: dict[int, list] = {}
    for h, p in zip(headers, pos):
        slices.setdefault(int(np.argmin(np.abs(levels - p))), []).append(h)
    where, ipp, times = {}, [], []
    for z in range(len(levels)):
        hs = sorted(slices[z], key=lambda h: float(h.TriggerTime))
        where.update({int(h.InstanceNumber): (t, z) for t, h in enumerate(hs)})
        ipp.append(np.array(hs[0].ImagePositionPatient, dtype=float))
        times.append([float(h.TriggerTime) for h in hs])
    ipp = np.array(ipp)
    steps = np.abs(np.diff(ipp @ normal))  # per pair of adjacent slices
    k = (ipp[-1] - ipp[0]) / np.linalg.norm(ipp[-1] - ipp[0])
    ps = [float(v) for v in headers[0].PixelSpacing]  # (row, column) spacing
    geometry = Geometry((ps[1], ps[0], float(steps.mean())), tuple(ipp[0]),
                        np.column_stack([iop[:3], iop[3:], k]))
    return geometry, np.mean(times, axis=0), where, steps, (int(headers[0].Rows),
                                                            int(headers[0].Columns)), ps


def _shoelace_px(xy: np.ndarray) -> tuple[float, float]:
    """(area, perimeter) of a closed polygon in pixel units."""
    x, y = xy[:, 0], xy[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    return area, float(np.hypot(np.diff(x, append=x[0]), np.diff(y, append=y[0])).sum())


def test_real_expert_edv_matches_polygon_areas(sunnybrook_root):
    """SCD0000101 / SC-HF-I-1: EDV, ESV and mass from rasterised expert contours.

    Reference: shoelace polygon areas of the contour files x pixel area x slice
    step (from ImagePositionPatient along the normal). Rasterising (pixel centres
    in the polygon, skimage.draw.polygon) moves each slice's area by less than
    half a pixel times the perimeter; that bound is the tolerance.
    """
    geometry, times, where, steps, shape, ps = _read_sunnybrook_study(
        sunnybrook_root / "dicom" / "SCD0000101")
    con = sunnybrook_root / "contours" / "SC-HF-I-1"
    lm = np.zeros((len(times), len(steps) + 1) + shape, np.uint8)
    ref = {}  # (kind, phase) -> [area mm2 * step, tolerance]
    step = float(np.median(steps))
    for kind, value in (("o", 1), ("i", 2)):
        for f in sorted((con / f"{kind}-contours").glob("*.txt")):
            t, z = where[int(f.name.split("-")[2])]
            xy = np.loadtxt(f)
            rr, cc = polygon(xy[:, 1], xy[:, 0], shape)
            lm[t, z][rr, cc] = value
            area, perim = _shoelace_px(xy)
            acc = ref.setdefault((kind, t), [0.0, 0.0])
            acc[0] += area * ps[0] * ps[1] * step / 1000
            acc[1] += 0.5 * perim * ps[0] * ps[1] * step / 1000
    ed = {t for kind, t in ref if kind == "o"}.pop()  # ED: the phase with epicardial contours
    es = ({t for kind, t in ref if kind == "i"} - {ed}).pop()
    assert np.ptp(steps) < 0.01  # even slice spacing, so one step serves every slice

    res = CF.compute_cardiac_function(lm, geometry, times)
    assert (res.ed_frame, res.es_frame) == (ed, es)
    assert res.slice_step_mm == pytest.approx(step, abs=1e-3)
    edv_ref, edv_tol = ref[("i", ed)]
    esv_ref, esv_tol = ref[("i", es)]
    assert res.edv_ml == pytest.approx(edv_ref, abs=edv_tol)
    assert res.esv_ml == pytest.approx(esv_ref, abs=esv_tol)
    myo_ref = ref[("o", ed)][0] - edv_ref
    assert res.lv_mass_g == pytest.approx(1.05 * myo_ref, abs=1.05 * (ref[("o", ed)][1] + edv_tol))
    # exact cross-check: pixel counts x per-pair slice step (no shared code path)
    counts = (lm[ed] == 2).sum(axis=(1, 2))
    assert res.edv_ml == pytest.approx(counts.sum() * ps[0] * ps[1] * steps.mean() / 1000, rel=1e-6)
    assert 20 < res.ef_percent < 40  # heart failure with infarct: reduced EF
    assert 40 < res.heart_rate_bpm < 120
    assert res.thickness and all(2 < s.mean_mm < 15 for s in res.thickness if s.frame == ed)

    # myocardium only (as a network without a blood-pool channel would give): the cavity
    # comes from the closed rings, and from the convex hull of open rings that count
    myo_only = np.where(lm == 1, 1, 0).astype(np.uint8)
    res2 = CF.compute_cardiac_function(myo_only, geometry)
    counted = [z for z in range(lm.shape[1]) if res2.slices.counted[ed, z]]
    assert len(counted) >= 8
    assert res2.blood_volume_ml[ed] == pytest.approx(res.edv_ml, rel=0.1)
