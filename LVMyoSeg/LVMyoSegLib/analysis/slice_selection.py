"""Which slices count towards the LV volumes, decided per slice and per phase.

Rules (after the SCMR post-processing guidelines), applied to a label map
``[T, Z, Y, X]`` (0 background, 1 LV myocardium, 2 LV blood pool):

- **Blood pool of a slice**: label 2 where present; else the hole of a closed
  myocardium ring; else, for an open ring (a basal C shape), the disc of the
  circle fitted to the myocardium (least squares), minus the myocardium
  (:func:`slice_blood_pool`): the pool the complete ring would enclose, so a
  short arc covers a small share of it.
- **Coverage** (the measure of the 50% rule): the angular share of the blood
  pool's boundary that myocardium covers. From the blood pool's centroid,
  ``n_rays`` rays equally spaced in angle (straight in mm) leave the pool at
  their last pool sample; a ray is *covered* when myocardium lies within
  ``gap_mm`` beyond that exit. Coverage = covered rays / rays. A ray that never
  meets the pool (centroid outside a curved pool) is not covered.
- **Slice order base -> apex** comes from the data: of the two end slices of the
  LV-bearing range (slices with myocardium or blood pool on some frame), the
  apex end is the one with the smaller LV cross-section (myocardium + pool
  area, largest over frames), when it is under 2/3 of the other. When the ends
  are alike (a small segmented fragment above the base can match the apex), the
  halves decide: the LV tapers towards the apex, so the half of the LV-bearing
  range whose summed section is under ``HALF_RATIO`` of the other half's is the
  apical one. On the 36 expert-contoured ED stacks of the Sunnybrook data
  (``tools/slice_order_study.py``) both rules decide the same 35 and agree on
  all; the halves matter on segmentations that run past the base (the bundled
  model's of SCD0000201: ends 458 / 543 px, halves 0.82). Otherwise the geometry prior
  decides (the slice normal oriented towards left-anterior-inferior points to
  the apex); :func:`orientation_is_missing` tells when it cannot be trusted.
  ``order_source`` says which: "data" or "geometry".
- **Atrium / outflow tract**: in the basal half of the LV-bearing slices, a slice
  whose blood-pool area over the cycle is anti-correlated with the LV cavity of
  the mid slices (Pearson r < ``atrial_r``) fills while the ventricle empties:
  it is atrium or outflow tract and counts on no frame. Needs >= 3 labelled
  frames (with two, a correlation is only a sign) and a varying LV cavity.
- **Per frame, from apex to base**: slices beyond the apical-most slice with LV
  labels hold no LV (apex = the last slice with LV myocardium or blood pool;
  that slice counts, with its pool, possibly empty). Walking towards the base,
  the first slice *of the basal half* (of the LV-bearing slices) whose coverage
  is below ``min_coverage`` (50%), or that is atrial, ends the LV on that frame:
  it and every slice beyond it do not count. The base therefore moves per phase
  (through-plane motion). In the apical half a low coverage is a segmentation
  gap, not the base: the slice counts (QC reports the open ring).
- A frame holding blood pool but no myocardium at all (sparse expert labels:
  cavity-only ES frames) counts its pool slices; coverage is not measurable.
- The user's choices (``overrides``: ``{(frame, slice): counted}``) win over
  the rules, and the reason says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy import ndimage

from ..cine import Geometry
from ..labels import BLOOD_POOL, MYOCARDIUM
from .metrics import ring_cavity

MIN_COVERAGE = 0.5
ATRIAL_R = -0.3
END_RATIO = 2.0 / 3.0  # ends rule: the smaller end section under this share of the larger is the apex
HALF_RATIO = 0.85  # halves rule: the half whose summed section is under this share of the other's is apical
APEX_DIRECTION_LPS = np.array([1.0, -1.0, -1.0]) / math.sqrt(3.0)  # left, anterior, inferior: the usual apex side


@dataclass(frozen=True)
class SliceDecisions:
    """Per frame and slice: counted or not, why, and the myocardial coverage of the blood pool.

    ``counted`` bool ``[T, Z]``; ``reasons[t][z]`` text; ``coverage`` ``[T, Z]`` (NaN where the
    slice has no blood pool or the frame no myocardium); ``base_to_apex``: slice indices from
    base to apex; ``order_source``: "data" or "geometry"; ``by_user`` bool ``[T, Z]``.
    """

    counted: np.ndarray
    reasons: tuple[tuple[str, ...], ...]
    coverage: np.ndarray
    base_to_apex: tuple[int, ...]
    order_source: str
    by_user: np.ndarray

    def rows(self) -> list[dict]:
        """One JSON-ready dict per frame and slice."""
        out = []
        for t in range(self.counted.shape[0]):
            for z in range(self.counted.shape[1]):
                c = float(self.coverage[t, z])
                out.append({"frame": t, "slice": z, "counted": bool(self.counted[t, z]),
                            "reason": self.reasons[t][z], "by_user": bool(self.by_user[t, z]),
                            "coverage": round(c, 3) if math.isfinite(c) else None})
        return out

    def counted_text(self, frame: int) -> str:
        """Counted slices of a frame as ranges, e.g. "1-9"."""
        zs = np.flatnonzero(self.counted[frame]).tolist()
        parts, start = [], None
        for i, z in enumerate(zs):
            start = z if start is None else start
            if i + 1 == len(zs) or zs[i + 1] != z + 1:
                parts.append(f"{start}" if start == z else f"{start}-{z}")
                start = None
        return ",".join(parts)


def slice_blood_pool(labels_2d: np.ndarray) -> tuple[np.ndarray, str]:
    """Blood pool of one slice and where it came from: "label", "ring", "open_ring" or "none"."""
    pool = labels_2d == BLOOD_POOL
    if pool.any():
        return pool, "label"
    myo = labels_2d == MYOCARDIUM
    if not myo.any():
        return pool, "none"
    hole, closed, _ = ring_cavity(myo)
    if closed:
        return hole, "ring"
    disc = _fitted_disc(myo) & ~myo
    if disc.any():
        return disc, "open_ring"
    return hole, "none"


def _fitted_disc(myo: np.ndarray) -> np.ndarray:
    """Pixels inside the least-squares circle through the myocardium's pixel centres."""
    r, c = np.nonzero(myo)
    if r.size < 3:
        return np.zeros_like(myo, dtype=bool)
    a = np.column_stack([r, c, np.ones_like(r)]).astype(np.float64)
    b = (r.astype(np.float64) ** 2 + c.astype(np.float64) ** 2)
    (p, q, k), *_ = np.linalg.lstsq(a, b, rcond=None)
    cr, cc = p / 2.0, q / 2.0
    radius2 = k + cr ** 2 + cc ** 2
    if not np.isfinite(radius2) or radius2 <= 0:
        return np.zeros_like(myo, dtype=bool)
    rr, ccol = np.indices(myo.shape)
    return (rr - cr) ** 2 + (ccol - cc) ** 2 <= radius2


def coverage(myo: np.ndarray, pool: np.ndarray, spacing_rc: tuple[float, float],
             n_rays: int = 120, gap_mm: float = 3.0) -> float:
    """Angular share of the blood pool's boundary covered by myocardium (module docstring)."""
    myo, pool = np.asarray(myo, bool), np.asarray(pool, bool)
    if not pool.any():
        return float("nan")
    sy, sx = (float(v) for v in spacing_rc)
    cr, cc = ndimage.center_of_mass(pool)
    rr, ccol = np.nonzero(pool | myo)
    r_max = float(np.hypot((rr - cr) * sy, (ccol - cc) * sx).max()) + gap_mm + 2 * max(sy, sx)
    dr = 0.5 * min(sy, sx)
    radii = np.arange(0.0, r_max + dr, dr)
    ang = 2 * np.pi * np.arange(n_rays) / n_rays
    rows = cr + radii[None, :] * np.sin(ang)[:, None] / sy
    cols = cc + radii[None, :] * np.cos(ang)[:, None] / sx
    coords = np.stack([rows.ravel(), cols.ravel()])

    def inside(m: np.ndarray) -> np.ndarray:
        return ndimage.map_coordinates(m.astype(np.float32), coords, order=1, mode="constant",
                                       cval=0.0).reshape(rows.shape) >= 0.5

    in_pool, in_myo = inside(pool), inside(myo)
    n = radii.size
    last = n - 1 - np.argmax(in_pool[:, ::-1], axis=1)
    idx = np.arange(n)[None, :]
    window = (idx > last[:, None]) & (idx <= last[:, None] + int(math.ceil(gap_mm / dr)))
    covered = (in_myo & window).any(axis=1) & in_pool.any(axis=1)
    return float(covered.mean())


def orientation_is_missing(geometry: Geometry) -> bool:
    """True when the direction matrix is the identity: short-axis planes are oblique, so such a
    header (some NIfTI exports) has lost the patient orientation and the geometry prior is a guess."""
    return bool(np.allclose(geometry.direction, np.eye(3), atol=1e-6))


def half_section_ratio(lv_section: np.ndarray) -> float:
    """Summed LV section ``[Z]`` of the low-index half of the LV-bearing range over that of the
    high-index half (an odd range's middle slice in neither); NaN for fewer than two LV slices."""
    lv_section = np.asarray(lv_section, dtype=float)
    lv_z = np.flatnonzero(lv_section > 0)
    if lv_z.size < 2:
        return float("nan")
    run = lv_section[lv_z[0]:lv_z[-1] + 1]
    return float(run[:run.size // 2].sum() / run[(run.size + 1) // 2:].sum())


def apex_by_end_sections(lv_section: np.ndarray) -> bool | None:
    """End rule: whether the apex is at the low-index end (the smaller end section, when under
    ``END_RATIO`` of the other); None when the ends are alike or fewer than two slices hold LV."""
    lv_section = np.asarray(lv_section, dtype=float)
    lv_z = np.flatnonzero(lv_section > 0)
    if lv_z.size < 2:
        return None
    lo, hi = lv_section[lv_z[0]], lv_section[lv_z[-1]]
    return bool(lo < hi) if min(lo, hi) < END_RATIO * max(lo, hi) else None


def apex_by_halves(lv_section: np.ndarray) -> bool | None:
    """Halves rule: whether the apex is at the low-index end (the half whose summed section is
    under ``HALF_RATIO`` of the other's); None when the halves are alike or undefined."""
    ratio = half_section_ratio(lv_section)
    if not math.isfinite(ratio) or min(ratio, 1.0 / ratio) >= HALF_RATIO:
        return None
    return ratio < 1.0  # the low-index half tapers: the apex is there


def apex_is_low_k(lv_section: np.ndarray) -> bool | None:
    """Whether the apex is at the low-index end, from the LV sections ``[Z]`` (module docstring):
    the end rule, else the halves rule; None when the data cannot tell."""
    by_ends = apex_by_end_sections(lv_section)
    return by_ends if by_ends is not None else apex_by_halves(lv_section)


def _geometry_apex_is_low_k(geometry: Geometry) -> bool:
    d = geometry.direction
    n = np.cross(d[:, 0], d[:, 1])
    n = n / np.linalg.norm(n)
    towards_apex = n if float(n @ APEX_DIRECTION_LPS) >= 0 else -n
    return float(d[:, 2] @ towards_apex) < 0  # slice index grows away from the apex


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def decide_slices(label_map: np.ndarray, geometry: Geometry, *,
                  overrides: Mapping[tuple[int, int], bool] | None = None,
                  min_coverage: float = MIN_COVERAGE, atrial_r: float = ATRIAL_R,
                  pools: np.ndarray | None = None) -> SliceDecisions:
    """Which slices of ``label_map`` ``[T, Z, Y, X]`` count, per frame (module docstring).

    ``pools`` (bool ``[T, Z, Y, X]``) may pass the blood pools already found by
    :func:`slice_blood_pool`.
    """
    lm = np.asarray(label_map)
    n_t, n_z = lm.shape[:2]
    sx, sy, _ = geometry.spacing
    if pools is None:
        pools = np.stack([np.stack([slice_blood_pool(lm[t, z])[0] for z in range(n_z)])
                          for t in range(n_t)])
    myo = lm == MYOCARDIUM
    pool_area = pools.sum(axis=(2, 3)).astype(float)
    myo_area = myo.sum(axis=(2, 3)).astype(float)
    labelled = lm.reshape(n_t, -1).any(axis=1)
    frame_has_myo = myo_area.sum(axis=1) > 0
    cov = np.full((n_t, n_z), np.nan)
    for t in range(n_t):
        if not frame_has_myo[t]:
            continue
        for z in range(n_z):
            if pool_area[t, z] > 0:
                cov[t, z] = coverage(myo[t, z], pools[t, z], (sy, sx))

    # slice order base -> apex
    lv_any = (pool_area + myo_area)[labelled].max(axis=0) if labelled.any() else np.zeros(n_z)
    lv_z = np.flatnonzero(lv_any > 0)
    from_data = apex_is_low_k(lv_any)
    low_k_apex = _geometry_apex_is_low_k(geometry) if from_data is None else from_data
    source = "geometry" if from_data is None else "data"
    apex_to_base = list(range(n_z)) if low_k_apex else list(range(n_z))[::-1]

    # atrium / outflow tract: basal half, blood pool anti-correlated with the mid LV cavity
    atrial: dict[int, float] = {}
    ordered_lv = [z for z in apex_to_base if z in set(lv_z.tolist())]
    basal_half = set(ordered_lv[len(ordered_lv) // 2:])
    frames = np.flatnonzero(labelled)
    if len(ordered_lv) >= 3 and frames.size >= 3:
        third = len(ordered_lv) // 3
        mid = ordered_lv[third:len(ordered_lv) - third] or ordered_lv
        reference = pool_area[np.ix_(frames, mid)].sum(axis=1)
        for z in sorted(basal_half):
            r = _pearson(pool_area[frames, z], reference)
            if math.isfinite(r) and r < atrial_r:
                atrial[z] = r

    counted = np.zeros((n_t, n_z), bool)
    reasons = [["" for _ in range(n_z)] for _ in range(n_t)]
    for t in range(n_t):
        if not labelled[t]:
            for z in range(n_z):
                reasons[t][z] = "frame not segmented"
            continue
        has_lv = (pool_area[t] + myo_area[t]) > 0
        ended = None
        seen_apex = False
        for z in apex_to_base:
            if ended is not None:
                reasons[t][z] = f"beyond the base at this phase (slice {ended} ended the LV)"
                continue
            if not has_lv[z]:
                reasons[t][z] = ("apical to the apex: no LV myocardium or blood pool" if not seen_apex
                                 else "no LV myocardium or blood pool on this slice")
                continue
            if z in atrial:
                reasons[t][z] = (f"atrium or outflow tract: its blood pool fills while the LV empties "
                                 f"(r = {atrial[z]:.2f} with the mid-ventricular cavity)")
                ended = z
                continue
            if not seen_apex:
                seen_apex = True
                counted[t, z] = True
                reasons[t][z] = "apex: the last slice with LV myocardium or blood pool"
                continue
            c = cov[t, z]
            if not frame_has_myo[t]:
                counted[t, z] = True
                reasons[t][z] = "blood pool labelled (no myocardium on this frame: coverage not measured)"
            elif not math.isfinite(c):
                counted[t, z] = True
                reasons[t][z] = "myocardium without blood pool"
            elif c < min_coverage and z in basal_half:
                reasons[t][z] = (f"base: myocardium surrounds {100 * c:.0f}% of the blood pool "
                                 f"(< {100 * min_coverage:.0f}%)")
                ended = z
            elif c < min_coverage:
                counted[t, z] = True
                reasons[t][z] = (f"LV (apical half): myocardium surrounds only {100 * c:.0f}% of the "
                                 "blood pool; the 50% rule applies at the base")
            else:
                counted[t, z] = True
                reasons[t][z] = f"LV: myocardium surrounds {100 * c:.0f}% of the blood pool"
    by_user = np.zeros((n_t, n_z), bool)
    for (t, z), value in (overrides or {}).items():
        t, z = int(t), int(z)
        if 0 <= t < n_t and 0 <= z < n_z and bool(value) != counted[t, z]:
            reasons[t][z] = (("included" if value else "excluded") + " by the user (rule: "
                             + reasons[t][z] + ")")
            counted[t, z] = bool(value)
            by_user[t, z] = True
    return SliceDecisions(counted, tuple(tuple(r) for r in reasons), cov,
                          tuple(apex_to_base[::-1]), source, by_user)
