"""Wall thickness of the LV myocardium per slice and per angular sector (AHA segments).

Works on a label map ``[T, Z, Y, X]`` (0 background, 1 LV myocardium, 2 LV blood pool)
and the slices that count (:mod:`LVMyoSegLib.analysis.slice_selection`). Conventions:

- Thickness (at the frames asked for, on their counted slices holding myocardium):
  along ``n_rays`` rays from the cavity centroid (rays straight in mm), thickness =
  distance from the last exit of the cavity to the exit of the filled myocardium
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
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from ..cine import Geometry
from ..errors import InputError
from ..labels import BLOOD_POOL, MYOCARDIUM
from .metrics import ring_cavity
from .slice_selection import APEX_DIRECTION_LPS, SliceDecisions

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


# ---------------------------------------------------------------- geometry helpers

def _apex_axis(geometry: Geometry) -> tuple[int, float]:
    """(handedness: +1 if the slice normal points to the apex prior else -1, |cos| to that prior)."""
    d = geometry.direction
    n = np.cross(d[:, 0], d[:, 1])
    n /= np.linalg.norm(n)
    c = float(n @ APEX_DIRECTION_LPS)
    return (1 if c >= 0 else -1), abs(c)


def _insertion_rc(rv_insertion: Sequence[float] | None, geometry: Geometry,
                  shape_yx: tuple[int, int]) -> np.ndarray | None:
    """Pixel ``(row, col)`` of the RV insertion point given as a pixel or in LPS mm (None: none)."""
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
    """Per-sector statistics of the ray thicknesses ``thick`` at angles ``rel_deg``."""
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



def thickness_of_frames(label_map: np.ndarray, frames: Iterable[int], decisions: SliceDecisions,
                        geometry: Geometry, rv_insertion: Sequence[float] | None, n_rays: int,
                        notes: list[str]) -> tuple[list[SliceThickness], str]:
    """Wall thickness of ``frames`` of ``label_map [T, Z, Y, X]`` on their counted slices, and the
    sector reference: "aha" with an RV insertion point (pixel ``(row, col)`` or LPS mm), else
    "relative". Caveats are appended to ``notes``."""
    handedness, cos_prior = _apex_axis(geometry)
    if cos_prior < 0.3:
        notes.append("The slice normal is far from the usual long axis: base/apex and sector "
                     "orientation may be wrong.")
    ins = _insertion_rc(rv_insertion, geometry, label_map.shape[2:])
    if ins is None:
        notes.append("No RV insertion point: sectors are numbered from the image +column "
                     "direction (relative), not AHA segments.")
    sx, sy, _ = geometry.spacing
    thickness: list[SliceThickness] = []
    for f in sorted(set(frames)):
        counted = [z for z in decisions.base_to_apex if decisions.counted[f, z]]
        thickness += _frame_thickness(label_map[f], f, (sy, sx), handedness, counted, ins, n_rays, notes)
    return thickness, "aha" if ins is not None else "relative"
