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
- Wall thickness at ED and ES, on their counted slices: :mod:`LVMyoSegLib.analysis.wall_thickness`
  (rays from the cavity centroid; 6 sectors per slice, AHA segments with an RV insertion point).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from ..cine import Geometry
from ..errors import InputError, LabelError
from ..labels import MYOCARDIUM, Labels, checked_label_map
from .slice_selection import SliceDecisions, decide_slices, orientation_is_missing, slice_blood_pool
from .wall_thickness import SliceThickness, thickness_of_frames

MYOCARDIAL_DENSITY_G_PER_ML = 1.05


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


# ---------------------------------------------------------------- parts of the computation

@dataclass(frozen=True)
class _Volumes:
    """Blood-pool and myocardial volumes (mL) per slice ``[T, Z]`` and, over the counted slices,
    per frame ``[T]`` (NaN on frames holding no label)."""

    step_mm: float
    decisions: SliceDecisions
    slice_blood_ml: np.ndarray
    slice_myocardium_ml: np.ndarray
    labelled: np.ndarray  # indices of the frames holding any label
    blood_ml: np.ndarray
    myocardium_ml: np.ndarray


class _EdEsValues(NamedTuple):
    """The global function values, named as in :class:`CardiacFunction`."""

    edv_ml: float
    esv_ml: float
    sv_ml: float
    ef_percent: float
    lv_mass_g: float
    withheld: str | None


def _checked_inputs(label_map: np.ndarray | Labels, geometry: Geometry,
                    trigger_times_ms: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The uint8 label map ``[T, Z, Y, X]`` and the trigger times ``[T]`` (or None), checked."""
    lm = label_map.label_map if isinstance(label_map, Labels) else np.asarray(label_map)
    if lm.ndim != 4:
        raise LabelError(f"Label map must be [T, Z, Y, X]; got shape {lm.shape}.")
    lm = checked_label_map(lm, "Label map")
    if not isinstance(geometry, Geometry):
        raise InputError("geometry must be an LVMyoSegLib.cine.Geometry (the cine's geometry).")
    if trigger_times_ms is None:
        return lm, None
    times = np.asarray(trigger_times_ms, dtype=np.float64).reshape(-1)
    if times.size != lm.shape[0]:
        raise InputError(f"{times.size} trigger times for {lm.shape[0]} frames of the label map.")
    return lm, times


def _volumes(lm: np.ndarray, geometry: Geometry, include: Mapping[tuple[int, int], bool] | None,
             notes: list[str]) -> _Volumes:
    """Volumes over the slices that count (``include``: the user's choices); notes on the rest."""
    n_t = lm.shape[0]
    sx, sy, _ = geometry.spacing
    step = slice_step_mm(geometry)
    pools = np.zeros(lm.shape, dtype=bool)
    for t, z in np.ndindex(lm.shape[:2]):
        pools[t, z] = slice_blood_pool(lm[t, z])[0]
    decisions = decide_slices(lm, geometry, overrides=include, pools=pools)
    voxel_ml = sx * sy * step / 1e3
    slice_blood = pools.sum(axis=(2, 3)) * voxel_ml
    slice_myo = (lm == MYOCARDIUM).sum(axis=(2, 3)) * voxel_ml
    labelled = np.flatnonzero(lm.reshape(n_t, -1).any(axis=1))
    if labelled.size == 0:
        raise LabelError("The label map holds no myocardium or blood pool on any frame; nothing "
                         "to measure. Segment the cine first.")
    blood = np.full(n_t, np.nan)
    myo = np.full(n_t, np.nan)
    blood[labelled] = (slice_blood * decisions.counted).sum(axis=1)[labelled]
    myo[labelled] = (slice_myo * decisions.counted).sum(axis=1)[labelled]
    if labelled.size < n_t:
        notes.append(f"{labelled.size} of {n_t} frames hold labels; the others have no volume.")
    left_out = int((~decisions.counted[labelled] & (slice_blood + slice_myo)[labelled].astype(bool)).sum())
    if left_out:
        notes.append(f"{left_out} frame-slice(s) with LV labels do not count (base, atrium or outflow "
                     "tract; see slices).")
    if decisions.order_source == "geometry" and orientation_is_missing(geometry):
        notes.append("Base and apex could not be told apart from the data, and the image holds no "
                     "patient orientation (identity direction matrix): which end is the base is a "
                     "guess. Check the slice choice (slices) and include or exclude slices.")
    elif decisions.order_source == "geometry":
        notes.append("Base and apex could not be told apart from the data; the slice normal decided.")
    return _Volumes(step, decisions, slice_blood, slice_myo, labelled, blood, myo)


def _ed_es_frames(volumes: _Volumes, ed_frame: int | None, es_frame: int | None) -> tuple[int, int]:
    """ED and ES: the frames given (checked), else the labelled frames of largest / smallest blood pool."""
    blood, labelled = volumes.blood_ml, volumes.labelled
    n_t = blood.size
    for name, f in (("ED", ed_frame), ("ES", es_frame)):
        if f is not None and not (0 <= int(f) < n_t and np.isfinite(blood[int(f)])):
            raise InputError(f"{name} frame {f} is outside 0..{n_t - 1} or holds no labels.")
    ed = int(ed_frame) if ed_frame is not None else int(labelled[np.argmax(blood[labelled])])
    es = int(es_frame) if es_frame is not None else int(labelled[np.argmin(blood[labelled])])
    return ed, es


def _ed_es_values(volumes: _Volumes, ed: int, es: int, notes: list[str]) -> _EdEsValues:
    """EDV, ESV, SV, EF and LV mass; all NaN, with the reasons in ``withheld``, when meaningless."""
    nan = float("nan")
    withheld: list[str] = []
    if volumes.step_mm <= 1e-6:
        withheld.append("the slice step is zero (all slices lie in one plane): no volume can be "
                        "measured; check the cine's slice positions")
    edv, esv = float(volumes.blood_ml[ed]), float(volumes.blood_ml[es])
    sv = edv - esv if ed != es else nan
    ef = 100.0 * sv / edv if ed != es and edv > 0 else nan
    if ed == es:
        notes.append("ED and ES are the same frame: SV and EF undefined.")
    mass = float(volumes.myocardium_ml[ed] * MYOCARDIAL_DENSITY_G_PER_ML)
    if mass == 0:
        withheld.append(f"no myocardium on the ED frame {ed}")
    if edv == 0:
        withheld.append(f"no counted slice holds LV blood pool on the ED frame {ed}")
    if withheld:
        return _EdEsValues(nan, nan, nan, nan, nan, "; ".join(withheld))
    return _EdEsValues(edv, esv, sv, ef, mass, None)


def _heart_rate(times: np.ndarray | None, notes: list[str]) -> tuple[float, float]:
    """(RR interval ms, heart rate bpm) from the trigger times; NaN, with a note, when implausible."""
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


# ---------------------------------------------------------------- main entry

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
    lm, times = _checked_inputs(label_map, geometry, trigger_times_ms)
    notes: list[str] = []
    volumes = _volumes(lm, geometry, include, notes)
    ed, es = _ed_es_frames(volumes, ed_frame, es_frame)
    values = _ed_es_values(volumes, ed, es, notes)
    rr, hr = _heart_rate(times, notes)
    co = values.sv_ml * hr / 1000.0 if math.isfinite(hr) else float("nan")
    thickness, reference = thickness_of_frames(lm, (ed, es), volumes.decisions, geometry, rv_insertion,
                                               n_rays, notes)
    return CardiacFunction(
        **values._asdict(), ed_frame=ed, es_frame=es, heart_rate_bpm=hr, cardiac_output_l_min=co,
        rr_interval_ms=rr, slice_step_mm=volumes.step_mm, blood_volume_ml=volumes.blood_ml,
        myocardium_volume_ml=volumes.myocardium_ml, trigger_times_ms=times, thickness=thickness,
        thickness_reference=reference, slices=volumes.decisions, slice_blood_ml=volumes.slice_blood_ml,
        slice_myocardium_ml=volumes.slice_myocardium_ml, notes=notes)
