"""Slices that count on the real sample, QC, and degenerate results withheld (strict JSON)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from LVMyoSegLib.analysis.function_report import assess
from LVMyoSegLib.analysis.slice_selection import coverage, decide_slices, half_section_ratio
from LVMyoSegLib.cine import Geometry
from LVMyoSegLib.labels import BLOOD_POOL, MYOCARDIUM

GEOMETRY = Geometry((1.0, 1.0, 10.0), (0, 0, 0))


def strict(d: dict) -> dict:
    """Round trip through JSON refusing NaN/Infinity on both ends."""
    def refuse(name):
        raise ValueError(f"non-strict JSON constant {name}")
    return json.loads(json.dumps(d, allow_nan=False), parse_constant=refuse)


def rings(n_t: int = 5, n_z: int = 6, size: int = 96) -> np.ndarray:
    """Synthetic beating cylinder tapering towards slice 0 (the apex)."""
    rr, cc = np.mgrid[:size, :size]
    r = np.hypot(rr - size / 2, cc - size / 2)
    lm = np.zeros((n_t, n_z, size, size), np.uint8)
    for t in range(n_t):
        squeeze = 1.0 - 0.3 * math.sin(math.pi * t / (n_t - 1))
        for z in range(n_z):
            ri = (6 + 3 * z) * squeeze
            lm[t, z][(r >= ri) & (r < ri + 8)] = MYOCARDIUM
            lm[t, z][r < ri] = BLOOD_POOL
    return lm


def test_coverage_is_the_angular_share_of_the_pool_boundary() -> None:
    rr, cc = np.mgrid[:80, :80]
    r, a = np.hypot(rr - 40, cc - 40), np.degrees(np.arctan2(rr - 40, cc - 40))
    pool = r < 15
    ring = (r >= 15) & (r < 22)
    assert coverage(ring, pool, (1.0, 1.0)) == pytest.approx(1.0)
    assert coverage(ring & (a > 0), pool, (1.0, 1.0)) == pytest.approx(0.5, abs=0.05)
    assert coverage(ring & (np.abs(a) < 45), pool, (1.0, 1.0)) == pytest.approx(0.25, abs=0.05)
    assert math.isnan(coverage(ring, np.zeros_like(pool), (1.0, 1.0)))


def test_reversed_slices_place_every_voxel_where_it_was() -> None:
    g = Geometry((1.2, 1.4, 8.0), (-30.0, 12.0, 55.0),
                 np.array([[0.8, -0.6, 0.0], [0.36, 0.48, -0.8], [0.48, 0.64, 0.6]]))
    back = g.reversed_slices(7)
    for i, j, k in ((0, 0, 0), (5, 3, 2), (9, 1, 6)):
        there = g.index_to_lps() @ np.array([i, j, 6 - k, 1.0])
        assert back.index_to_lps() @ np.array([i, j, k, 1.0]) == pytest.approx(there)
    assert back.reversed_slices(7).matches(g)


def test_order_from_the_data_and_atrium_excluded_on_every_phase() -> None:
    lm = rings()
    # the stack is written apex -> base along k, but the geometry says the opposite: the data wins
    flipped = Geometry((1.0, 1.0, 10.0), (0, 0, 0), np.diag([1.0, 1.0, -1.0]))
    d = decide_slices(lm, flipped)
    assert d.base_to_apex == (5, 4, 3, 2, 1, 0) and d.order_source == "data"
    assert d.counted.all() and d.reasons[0][0].startswith("apex")
    # slice 5 turns atrial: its pool fills while the LV empties
    atrial = lm.copy()
    size = lm.shape[-1]
    rr, cc = np.mgrid[:size, :size]
    r = np.hypot(rr - size / 2, cc - size / 2)
    for t in range(lm.shape[0]):
        atrial[t, 5] = 0
        ri = 14 + 4 * math.sin(math.pi * t / (lm.shape[0] - 1))
        atrial[t, 5][r < ri] = BLOOD_POOL
        atrial[t, 5][(r >= ri) & (r < ri + 3) & (cc > size / 2)] = MYOCARDIUM
    d = decide_slices(atrial, GEOMETRY)
    assert not d.counted[:, 5].any() and d.counted[:, :5].all()
    assert all(d.reasons[t][5].startswith("atrium or outflow tract") for t in range(lm.shape[0]))
    # the user's choice wins, and says so
    d = decide_slices(atrial, GEOMETRY, overrides={(2, 5): True, (2, 4): False})
    assert d.counted[2, 5] and not d.counted[2, 4] and d.by_user[2, 5] and d.by_user[2, 4]
    assert d.reasons[2][5].startswith("included by the user")


def test_ends_alike_the_halves_tell_the_base() -> None:
    """A small fragment segmented above the base makes both end sections alike; the LV tapers
    towards the apex, so the halves' summed sections decide, against a geometry saying the opposite."""
    lm = rings(n_z=7)
    lm[:, 6] = lm[:, 0]
    flipped = Geometry((1.0, 1.0, 10.0), (0, 0, 0), np.diag([1.0, 1.0, -1.0]))
    d = decide_slices(lm, flipped)
    assert d.order_source == "data" and d.base_to_apex[0] == 6 and d.base_to_apex[-1] == 0
    assert half_section_ratio(np.array([0, 500, 900, 1900, 2000, 600, 0])) == pytest.approx(1400 / 2600)
    assert math.isnan(half_section_ratio(np.array([0, 800, 0])))


@pytest.mark.parametrize("direction, missing", [(np.eye(3), True), (np.diag([1.0, 1.0, -1.0]), False)])
def test_when_the_data_cannot_tell_the_note_says_whether_the_header_can(direction, missing) -> None:
    """A cylinder (every section alike) leaves base and apex to the geometry; with an identity
    direction matrix (orientation lost in export) the report says that the choice is a guess."""
    lm = rings()
    lm[:] = lm[:, 2:3]
    f = assess(lm, Geometry((1.0, 1.0, 10.0), (0, 0, 0), direction)).function
    assert f.slices.order_source == "geometry"
    assert any("holds no patient orientation" in n for n in f.notes) == missing
    assert any("slice normal decided" in n for n in f.notes) != missing


def test_function_report_is_strict_json_and_ranks_frames() -> None:
    lm = rings()
    probs = np.stack([(lm == MYOCARDIUM), (lm == BLOOD_POOL)], -1).astype(np.float32)
    probs[3, 2] = 0.5 * probs[3, 2] + 0.25  # doubt on frame 3, slice 2
    report = assess(lm, GEOMETRY, [0, 100, 200, 300, 400], probabilities=probs)
    assert report.withheld is None and report.function.ef_percent > 20
    d = strict(report.to_dict())
    review = d["qc"]["review_first"]
    doubted = [r for r in review if (r["frame"], r["slice"]) == (3, 2)]
    assert doubted and "uncertain" in doubted[0]["why"]
    assert doubted[0]["score"] == max(r["score"] for r in review if r["frame"] not in (0, 2))
    # ranked by consequence: the ED (0) and ES (2) frames' slices count double, so they lead the list
    assert [r["priority"] for r in review] == sorted((r["priority"] for r in review), reverse=True)
    assert all(r["priority"] == pytest.approx(2 * r["score"], abs=1e-3) for r in review if r["frame"] in (0, 2))
    assert review[0]["frame"] in (0, 2)
    # the base (slice 5) and apex (slice 0) of the figures' frames are among the first to review
    ends = {(r["frame"], r["slice"]) for r in review if "stack end" in r["why"]}
    assert {(0, 0), (0, 5), (2, 0), (2, 5)} <= ends
    rows = d["cardiac_function"]["slices"]["rows"]
    assert len(rows) == lm.shape[0] * lm.shape[1] and all(r["counted"] for r in rows)
    # small sections: the LV area as a share of the frame's largest, 0 at half of it, 1 at a fifth
    area = (lm > 0).sum(axis=(2, 3)).astype(float)
    share = area / area.max(axis=1, keepdims=True)
    small = {(r["frame"], r["slice"]): r["signals"]["small_section"] for r in d["qc"]["slices"]}
    for (t, z), got in small.items():
        assert got == pytest.approx(float(np.clip((0.5 - share[t, z]) / 0.3, 0, 1)), abs=0.02)
    assert small[(0, 0)] > 0.5 and small[(0, 5)] == 0.0  # the tapered apex, the widest slice
    assert "small section" in next(r["why"] for r in review if (r["frame"], r["slice"]) == (0, 0))


@pytest.mark.parametrize("case", ["no_myocardium_at_ed", "zero_step", "all_flagged", "fallback",
                                  "empty"])
def test_degenerate_results_are_withheld_with_the_reason(case: str) -> None:
    lm, geometry, kwargs = rings(), GEOMETRY, {}
    if case == "no_myocardium_at_ed":
        lm[0][lm[0] == MYOCARDIUM] = 0  # frame 0 is ED (largest pool)
        expected = "no myocardium on the ED frame"
    elif case == "zero_step":
        geometry = Geometry((1.0, 1.0, 10.0), (0, 0, 0), np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0.0]]))
        expected = "slice step is zero"
    elif case == "all_flagged":
        kwargs["probabilities"] = np.full(lm.shape + (2,), 0.5, np.float32)
        expected = "flags every counted slice"
    elif case == "fallback":
        kwargs["localisation_fallback"] = np.ones(lm.shape[1], bool)
        expected = "localisation found the LV on no slice"
    else:
        lm[:] = 0
        expected = "no myocardium or blood pool"
    report = assess(lm, geometry, **kwargs)
    assert report.withheld and expected in report.withheld
    d = strict(report.to_dict())
    assert expected in d["function_withheld"]
    if d["cardiac_function"] is not None:
        for key in ("edv_ml", "esv_ml", "sv_ml", "ef_percent", "lv_mass_g"):
            assert d["cardiac_function"][key] is None


def test_expert_labels_of_the_sample_count_the_expert_slices() -> None:
    """The expert contoured slices 1-9 at ED and ES: all count, nothing else; EF 25.8 %."""
    from LVMyoSegLib.io.dataset import read_case
    from LVMyoSegLib.resources import SAMPLE_DIR

    case = read_case(SAMPLE_DIR, "SCD0000101")
    report = assess(case.labels.label_map, case.cine.geometry, case.cine.trigger_times_ms)
    f = report.function
    assert (f.ed_frame, f.es_frame) == (18, 7)
    assert f.slices.counted_text(18) == "1-9" and f.slices.counted_text(7) == "1-9"
    assert f.ef_percent == pytest.approx(25.8, abs=0.1)
    strict(report.to_dict())
