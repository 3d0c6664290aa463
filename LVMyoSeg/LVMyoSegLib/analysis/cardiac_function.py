"""Cardiac function from a label map and its geometry: volumes, EF, LV mass, wall thickness.

Works on any label map ``[T, Z, Y, X]`` (0 background, 1 LV myocardium, 2 LV
blood pool): network output or expert labels. Conventions:

- Slice step: the distance between slice planes along the slice normal,
  ``spacing[2] * |d_k . (d_i x d_j)|`` (``d_*`` the direction columns); it is
  ``spacing[2]`` for an orthonormal geometry. Never DICOM SliceThickness.
- Volumes (Simpson's rule by discs): per frame, the sum over slices of
  (pixel count x pixel area x slice step), in mL. A frame holding no label at
  all has NaN volumes (it was not segmented), so sparse expert labels work.
- Which slices count, per frame: :mod:`LVMyoSegLib.analysis.slice_selection` (SCMR 50%
  rule at the base, atrium and outflow tract excluded, apex = last slice with LV
  labels; slice order found from the data). Volumes sum the counted slices only;
  the decision and its reason per frame and slice are in ``slices``.
- Function values are *withheld* (NaN, ``withheld`` says why) when they would be
  numbers without meaning: no myocardium at ED, a zero slice step, or no counted
  slice with a blood pool at ED.
- ED = frame of largest blood-pool volume, ES = smallest (unless given).
  SV = EDV - ESV, EF = 100 SV / EDV, LV mass = myocardial volume at ED x 1.05 g/mL.
- Heart rate: trigger times are ms after the R wave, so the RR interval is
  estimated as the last trigger time + one frame interval (median step of the
  trigger times); HR = 60000 / RR, reported only when strictly increasing trigger
  times give 20-250 bpm. Cardiac output = SV x HR.
- Wall thickness (at ED and ES, where myocardium is labelled): along ``n_rays``
  rays from the cavity centroid (rays straight in mm), thickness = distance
  from the last exit of the cavity to the exit of the filled myocardium
  (iso-level 0.5 of the bilinearly interpolated masks, the boundary of
  :mod:`LVMyoSegLib.analysis.metrics`); NaN on rays that cross no myocardium (the gap of
  an open ring). Each slice has 6 angular sectors of 60 degrees.
- Sector numbering: angles turn in the anterior -> septal sense, a positive turn
  about the base -> apex axis. That axis is the slice normal oriented towards
  left-anterior-inferior (LPS ``(+1, -1, -1)``), the apex direction of a normally
  placed heart. With an anterior RV insertion point the six sectors are AHA
  positions 1 anterior, 2 anteroseptal, 3 inferoseptal, 4 inferior,
  5 inferolateral, 6 anterolateral (the insertion point is the anterior /
  anteroseptal border); the myocardium-bearing slices of a frame are split base
  to apex in thirds (basal: AHA 1-6, mid: 7-12, apical: 13-16 with 4 sectors of
  90 degrees, septal centred 60 degrees past the insertion point). Without it,
  sector 1 starts at the image +column direction and numbering is relative
  (``thickness_reference == "relative"``).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from ..cine import Geometry
from ..errors import InputError, LabelError
from ..labels import BLOOD_POOL, MYOCARDIUM, Labels
from .metrics import ring_cavity
from .slice_selection import SliceDecisions, decide_slices, slice_blood_pool

MYOCARDIAL_DENSITY_G_PER_ML = 1.05
_APEX_LPS = np.array([1.0, -1.0, -1.0]) / math.sqrt(3.0)
_LEVELS = ("basal", "mid", "apical")


@dataclass(frozen=True)
class SectorThickness:
    """Wall thickness over one angular sector of one slice (mm)."""

    sector: int
    aha_segment: int | None
    angle_start_deg: float
    angle_end_deg: float
    mean_mm: float
    sd_mm: float
    min_mm: float
    max_mm: float
    n_rays: int


@dataclass(frozen=True)
class SliceThickness:
    """Wall thickness of one slice of one frame; angles relative to the reference direction.

    ``level`` is the slice's third of the myocardium-bearing slices, base to apex
    ("basal", "mid", "apical"); sectors carry AHA numbers only with an RV insertion point.
    """

    frame: int
    slice: int
    level: str | None
    centroid_rc: tuple[float, float]
    mean_mm: float
    sectors: list[SectorThickness]


@dataclass(frozen=True)
class CardiacFunction:
    """Global LV function of one cine plus per-frame volumes and wall thickness."""

    edv_ml: float
    esv_ml: float
    sv_ml: float
    ef_percent: float
    lv_mass_g: float
    ed_frame: int
    es_frame: int
    heart_rate_bpm: float
    cardiac_output_l_min: float
    rr_interval_ms: float
    slice_step_mm: float
    blood_volume_ml: np.ndarray
    myocardium_volume_ml: np.ndarray
    trigger_times_ms: np.ndarray | None
    thickness: list[SliceThickness] = field(default_factory=list)
    thickness_reference: str = "relative"
    slices: SliceDecisions | None = None
    slice_blood_ml: np.ndarray | None = None
    slice_myocardium_ml: np.ndarray | None = None
    withheld: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN becomes None, arrays become lists); ``slices`` as one row per
        frame and slice with its decision, reason and volumes."""
        d = {f.name: getattr(self, f.name) for f in fields(self)
             if f.name not in ("slices", "slice_blood_ml", "slice_myocardium_ml", "thickness")}
        d["thickness"] = [asdict(s) for s in self.thickness]
        d = _jsonable(d)
        if self.slices is not None:
            rows = self.slices.rows()
            for r in rows:
                r["blood_ml"] = _jsonable(self.slice_blood_ml[r["frame"], r["slice"]])
                r["myocardium_ml"] = _jsonable(self.slice_myocardium_ml[r["frame"], r["slice"]])
            d["slices"] = {"base_to_apex": list(self.slices.base_to_apex),
                           "order_source": self.slices.order_source, "rows": rows}
        return d


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_jsonable(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v)]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(float(v)) else float(v)
    return v


# ---------------------------------------------------------------- geometry helpers

def slice_step_mm(geometry: Geometry) -> float:
    """Distance between adjacent slice planes along the slice normal (mm)."""
    d = geometry.direction
    n = np.cross(d[:, 0], d[:, 1])
    n /= np.linalg.norm(n)
    return float(geometry.spacing[2] * abs(float(d[:, 2] @ n)))


def _apex_axis(geometry: Geometry) -> tuple[int, int, float]:
    """(handedness s, +1 if slice index k grows towards the apex else -1, |cos| to the prior)."""
    d = geometry.direction
    n = np.cross(d[:, 0], d[:, 1])
    n /= np.linalg.norm(n)
    c = float(n @ _APEX_LPS)
    s = 1 if c >= 0 else -1
    k_dir = 1 if float(d[:, 2] @ (s * n)) >= 0 else -1
    return s, k_dir, abs(c)


def _insertion_rc(rv_insertion: Sequence[float] | None, geometry: Geometry,
                  shape_yx: tuple[int, int]) -> np.ndarray | None:
    if rv_insertion is None:
        return None
    p = np.asarray(rv_insertion, dtype=np.float64).reshape(-1)
    if p.shape == (2,) and np.all(np.isfinite(p)):
        return p
    return rv_insertion_pixel(p, geometry, shape_yx)  # refuses anything but 3 finite LPS values


def rv_insertion_pixel(point_lps: Sequence[float], geometry: Geometry, shape_yx: tuple[int, int]) -> np.ndarray:
    """(row, col) of an RV insertion point given in LPS mm; refused unless it projects inside the
    ``shape_yx`` image plane (a point outside is usually RAS given as LPS)."""
    p = np.asarray(point_lps, dtype=np.float64).reshape(-1)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise InputError(f"RV insertion point {tuple(p.tolist())} must be 3 finite LPS coordinates (mm).")
    ijk = np.linalg.solve(geometry.index_to_lps(), np.append(p, 1.0))[:3]
    rows, cols = shape_yx
    if not (-0.5 <= ijk[1] <= rows - 0.5 and -0.5 <= ijk[0] <= cols - 0.5):
        raise InputError(f"RV insertion point {tuple(np.round(p, 1).tolist())} (LPS mm) falls outside the "
                         f"image (column {ijk[0]:.0f}, row {ijk[1]:.0f} of {cols} x {rows}). Give patient "
                         "LPS coordinates; 3D Slicer shows RAS: negate its first two values.")
    return np.array([ijk[1], ijk[0]])


# ---------------------------------------------------------------- wall thickness

def _crossing(prof: np.ndarray, idx: np.ndarray, dr: float) -> np.ndarray:
    """Radius where ``prof`` falls through 0.5 between samples idx and idx + 1 (per ray)."""
    rows = np.arange(len(idx))
    v0, v1 = prof[rows, idx], prof[rows, np.minimum(idx + 1, prof.shape[1] - 1)]
    frac = np.divide(v0 - 0.5, v0 - v1, out=np.zeros_like(v0), where=(v0 - v1) != 0)
    return (idx + np.clip(frac, 0.0, 1.0)) * dr


def ray_thickness(myo: np.ndarray, cavity: np.ndarray, spacing_rc: Sequence[float],
                  angles_rad: np.ndarray, handedness: int = 1,
                  centre_rc: Sequence[float] | None = None) -> np.ndarray:
    """Radial wall thickness (mm) along rays from the cavity centroid.

    A ray at angle ``a`` runs along ``cos(a)`` x image columns + ``handedness *
    sin(a)`` x image rows, in mm. Thickness = exit radius of
    ``fill_holes(myo | cavity)`` minus the last exit radius of the cavity before
    it; NaN when the ray never leaves the filled region, starts outside the
    cavity without meeting it, or crosses less than 50 % myocardium in between.
    """
    sy, sx = (float(v) for v in spacing_rc)
    myo, cavity = np.asarray(myo, bool), np.asarray(cavity, bool)
    filled = ndimage.binary_fill_holes(myo | cavity)
    if centre_rc is None:
        centre_rc = ndimage.center_of_mass(cavity)
    cr, cc = (float(v) for v in centre_rc)
    rr, ccol = np.nonzero(filled)
    r_max = float(np.hypot((rr - cr) * sy, (ccol - cc) * sx).max()) + 3.0 * max(sy, sx)
    dr = 0.2 * min(sy, sx)
    radii = np.arange(0.0, r_max + dr, dr)
    u, v = np.cos(angles_rad), handedness * np.sin(angles_rad)
    rows = cr + radii[None, :] * v[:, None] / sy
    cols = cc + radii[None, :] * u[:, None] / sx
    coords = np.stack([rows.ravel(), cols.ravel()])

    def profile(m: np.ndarray) -> np.ndarray:
        return ndimage.map_coordinates(m.astype(np.float32), coords, order=1, mode="constant",
                                       cval=0.0).reshape(rows.shape)

    pf, pc, pm = profile(filled), profile(cavity), profile(myo)
    out_f = pf < 0.5
    has_exit = out_f.any(axis=1)
    i_epi = np.argmax(out_f, axis=1) - 1  # last sample inside the filled region
    n = radii.size
    before = np.arange(n)[None, :] <= i_epi[:, None]
    in_c = (pc >= 0.5) & before
    has_cav = in_c.any(axis=1)
    i_endo = n - 1 - np.argmax(in_c[:, ::-1], axis=1)  # last cavity sample before the exit
    i_epi_c, i_endo_c = np.maximum(i_epi, 0), np.minimum(i_endo, n - 1)
    r_epi = _crossing(pf, i_epi_c, dr)
    r_endo = _crossing(pc, i_endo_c, dr)
    between = (np.arange(n)[None, :] > i_endo_c[:, None]) & before
    n_between = between.sum(axis=1)
    myo_frac = np.divide((pm * between).sum(axis=1), n_between,
                         out=np.zeros(len(angles_rad)), where=n_between > 0)
    ok = has_exit & has_cav & (i_epi >= 0) & (myo_frac >= 0.5)
    return np.where(ok, r_epi - r_endo, np.nan)


def _sector_layout(n_sectors: int, aha: bool) -> tuple[float, float]:
    """(angle offset, width) in degrees of sector 1 relative to the reference direction."""
    width = 360.0 / n_sectors
    if not aha:
        return 0.0, width
    return (-60.0 if n_sectors == 6 else -75.0), width


def _sectors(thick: np.ndarray, rel_deg: np.ndarray, n_sectors: int, aha_level: str | None
             ) -> list[SectorThickness]:
    aha = aha_level is not None
    offset, width = _sector_layout(n_sectors, aha)
    idx = np.floor(((rel_deg - offset) % 360.0) / width).astype(int)
    base = {"basal": 0, "mid": 6, "apical": 12}.get(aha_level or "", 0)
    out = []
    for k in range(n_sectors):
        t = thick[idx == k]
        t = t[np.isfinite(t)]
        out.append(SectorThickness(
            sector=k + 1,
            aha_segment=(base + k + 1) if aha else None,
            angle_start_deg=offset + k * width,
            angle_end_deg=offset + (k + 1) * width,
            mean_mm=float(t.mean()) if t.size else float("nan"),
            sd_mm=float(t.std(ddof=1)) if t.size > 1 else float("nan"),
            min_mm=float(t.min()) if t.size else float("nan"),
            max_mm=float(t.max()) if t.size else float("nan"),
            n_rays=int(t.size),
        ))
    return out


def _frame_thickness(lm: np.ndarray, frame: int, spacing_rc: tuple[float, float],
                     handedness: int, base_to_apex: Sequence[int], ins_rc: np.ndarray | None,
                     n_rays: int, notes: list[str]) -> list[SliceThickness]:
    """Wall thickness of the slices ``base_to_apex`` (the counted ones) that hold myocardium."""
    sy, sx = spacing_rc
    order = [int(z) for z in base_to_apex if (lm[z] == MYOCARDIUM).any()]
    slices = sorted(order)
    level_of = {}
    for name, chunk in zip(_LEVELS, np.array_split(np.array(order, dtype=int), 3)):
        level_of.update({int(z): name for z in chunk})
    out = []
    for z in slices:
        myo = lm[z] == MYOCARDIUM
        cav = lm[z] == BLOOD_POOL
        if not cav.any():
            hole, closed, hull_cav = ring_cavity(myo)
            cav = hole if closed else hull_cav
        if not cav.any():
            notes.append(f"frame {frame} slice {z}: myocardium without cavity; no wall thickness.")
            continue
        cr, cc = ndimage.center_of_mass(cav)
        ref = 0.0
        if ins_rc is not None:
            du, dv = (ins_rc[1] - cc) * sx, (ins_rc[0] - cr) * sy
            ref = math.atan2(handedness * dv, du)
        rel = (np.arange(n_rays) + 0.5) * (360.0 / n_rays)
        thick = ray_thickness(myo, cav, spacing_rc, ref + np.radians(rel), handedness, (cr, cc))
        level = level_of[z] if ins_rc is not None else None
        n_sec = 4 if level == "apical" else 6
        finite = thick[np.isfinite(thick)]
        out.append(SliceThickness(
            frame=frame, slice=z, level=level_of[z], centroid_rc=(float(cr), float(cc)),
            mean_mm=float(finite.mean()) if finite.size else float("nan"),
            sectors=_sectors(thick, rel, n_sec, level)))
    return out


# ---------------------------------------------------------------- main entry

def _heart_rate(times: np.ndarray | None, notes: list[str]) -> tuple[float, float]:
    nan = float("nan")
    if times is None:
        notes.append("No trigger times: heart rate and cardiac output not reported.")
        return nan, nan
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    dt = np.diff(t)
    if t.size < 2 or not np.all(np.isfinite(t)) or np.any(dt <= 0):
        notes.append("Trigger times are not strictly increasing: heart rate not reported.")
        return nan, nan
    rr = float(t[-1] + np.median(dt))
    hr = 60000.0 / rr
    if not 20.0 <= hr <= 250.0:
        notes.append(f"Trigger times give RR = {rr:.1f} ms ({hr:.0f} bpm), implausible (are they "
                     "frame indices, not ms?): heart rate not reported.")
        return nan, nan
    notes.append("RR interval estimated as last trigger time + one frame interval "
                 f"({rr:.1f} ms).")
    return rr, hr


def compute_cardiac_function(label_map: np.ndarray | Labels, geometry: Geometry,
                             trigger_times_ms: Sequence[float] | None = None,
                             ed_frame: int | None = None, es_frame: int | None = None,
                             rv_insertion: Sequence[float] | None = None, n_rays: int = 360,
                             include: Mapping[tuple[int, int], bool] | None = None
                             ) -> CardiacFunction:
    """Volumes, EDV/ESV/SV/EF, LV mass, heart rate and wall thickness (module docstring).

    Args:
        label_map: ``[T, Z, Y, X]`` labels 0/1/2 (or a :class:`Labels`).
        geometry: the cine's geometry; ``spacing`` = (column, row, slice) mm.
        trigger_times_ms: ``[T]`` ms after the R wave, for heart rate / cardiac output.
        ed_frame, es_frame: force ED / ES (0-based); default: largest / smallest cavity.
        rv_insertion: anterior RV insertion point, pixel ``(row, col)`` or LPS ``(x, y, z)``
            mm; enables AHA segment numbering.
        n_rays: rays per slice for wall thickness (a multiple of 24 gives equal sectors).
        include: the user's slice choices ``{(frame, slice): counted}``, over the rules of
            :mod:`LVMyoSegLib.analysis.slice_selection`.
    """
    lm = label_map.label_map if isinstance(label_map, Labels) else np.asarray(label_map)
    if lm.ndim != 4:
        raise LabelError(f"Label map must be [T, Z, Y, X]; got shape {lm.shape}.")
    values = set(np.unique(lm).tolist())
    if not values <= {0, MYOCARDIUM, BLOOD_POOL}:
        raise LabelError(f"Label map holds values {sorted(values)}; only 0, 1 (LV myocardium) "
                         "and 2 (LV blood pool) are allowed.")
    if not isinstance(geometry, Geometry):
        raise InputError("geometry must be an LVMyoSegLib.cine.Geometry (the cine's geometry).")
    n_t = lm.shape[0]
    times = None
    if trigger_times_ms is not None:
        times = np.asarray(trigger_times_ms, dtype=np.float64).reshape(-1)
        if times.size != n_t:
            raise InputError(f"{times.size} trigger times for {n_t} frames of the label map.")
    sx, sy, _ = geometry.spacing
    step = slice_step_mm(geometry)
    px_area = sx * sy
    notes: list[str] = []
    withheld: list[str] = []
    if step <= 1e-6:
        withheld.append("the slice step is zero (all slices lie in one plane): no volume can be "
                        "measured; check the cine's slice positions")

    n_z = lm.shape[1]
    pools = np.zeros(lm.shape, dtype=bool)
    for t in range(n_t):
        for z in range(n_z):
            pools[t, z] = slice_blood_pool(lm[t, z])[0]
    decisions = decide_slices(lm, geometry, overrides=include, pools=pools)
    voxel_ml = px_area * step / 1e3
    slice_blood = pools.sum(axis=(2, 3)) * voxel_ml
    slice_myo = (lm == MYOCARDIUM).sum(axis=(2, 3)) * voxel_ml
    labelled = np.flatnonzero(lm.reshape(n_t, -1).any(axis=1))
    if labelled.size == 0:
        raise LabelError("The label map holds no myocardium or blood pool on any frame; nothing "
                         "to measure. Segment the cine first.")
    blood = np.full(n_t, np.nan)
    myo_v = np.full(n_t, np.nan)
    blood[labelled] = (slice_blood * decisions.counted).sum(axis=1)[labelled]
    myo_v[labelled] = (slice_myo * decisions.counted).sum(axis=1)[labelled]
    for name, f in (("ED", ed_frame), ("ES", es_frame)):
        if f is not None and not (0 <= int(f) < n_t and np.isfinite(blood[int(f)])):
            raise InputError(f"{name} frame {f} is outside 0..{n_t - 1} or holds no labels.")
    ed = int(ed_frame) if ed_frame is not None else int(labelled[np.argmax(blood[labelled])])
    es = int(es_frame) if es_frame is not None else int(labelled[np.argmin(blood[labelled])])
    if labelled.size < n_t:
        notes.append(f"{labelled.size} of {n_t} frames hold labels; the others have no volume.")
    left_out = int((~decisions.counted[labelled] & (slice_blood + slice_myo)[labelled].astype(bool)).sum())
    if left_out:
        notes.append(f"{left_out} frame-slice(s) with LV labels do not count (base, atrium or outflow "
                     "tract; see slices).")
    if decisions.order_source == "geometry":
        notes.append("Base and apex could not be told apart from the data; the slice normal decided.")
    edv, esv = float(blood[ed]), float(blood[es])
    sv = edv - esv if ed != es else float("nan")
    ef = 100.0 * sv / edv if ed != es and edv > 0 else float("nan")
    if ed == es:
        notes.append("ED and ES are the same frame: SV and EF undefined.")
    mass = float(myo_v[ed] * MYOCARDIAL_DENSITY_G_PER_ML)
    if mass == 0:
        mass = float("nan")
        withheld.append(f"no myocardium on the ED frame {ed}")
    if edv == 0:
        withheld.append(f"no counted slice holds LV blood pool on the ED frame {ed}")
    if withheld:
        edv = esv = sv = ef = mass = float("nan")
    rr, hr = _heart_rate(times, notes)
    co = sv * hr / 1000.0 if math.isfinite(hr) else float("nan")

    s, _, cos_prior = _apex_axis(geometry)
    if cos_prior < 0.3:
        notes.append("The slice normal is far from the usual long axis: base/apex and sector "
                     "orientation may be wrong.")
    ins = _insertion_rc(rv_insertion, geometry, lm.shape[2:])
    if ins is None:
        notes.append("No RV insertion point: sectors are numbered from the image +column "
                     "direction (relative), not AHA segments.")
    thickness: list[SliceThickness] = []
    for f in sorted({ed, es}):
        counted = [z for z in decisions.base_to_apex if decisions.counted[f, z]]
        thickness += _frame_thickness(lm[f], f, (sy, sx), s, counted, ins, n_rays, notes)

    return CardiacFunction(
        edv_ml=edv, esv_ml=esv, sv_ml=sv, ef_percent=ef, lv_mass_g=mass, ed_frame=ed,
        es_frame=es, heart_rate_bpm=hr, cardiac_output_l_min=co, rr_interval_ms=rr,
        slice_step_mm=step, blood_volume_ml=blood, myocardium_volume_ml=myo_v,
        trigger_times_ms=times, thickness=thickness,
        thickness_reference="aha" if ins is not None else "relative",
        slices=decisions, slice_blood_ml=slice_blood, slice_myocardium_ml=slice_myo,
        withheld="; ".join(withheld) or None, notes=notes)
