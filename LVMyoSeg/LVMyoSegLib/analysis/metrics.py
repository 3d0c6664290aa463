"""Segmentation metrics per 2D slice, in millimetres: DSC, HD, APD.

Pinned definitions (every boundary-based metric here uses the same ones):

- **Boundary** of a binary mask: the sub-pixel iso-contours at level 0.5 of the
  mask padded by one background pixel on every side (so every contour is a
  closed polyline), from :func:`skimage.measure.find_contours` with
  ``fully_connected="high"`` (foreground 8-connected, background 4-connected,
  the topology :func:`scipy.ndimage.binary_fill_holes` uses). Every vertex lies
  half way between the centre of a foreground pixel and that of a 4-neighbouring
  background pixel. A myocardium ring has two contours (endo and epi); the
  boundary is the union of *all* contours of the mask (islands and holes too).
- **Coordinates**: pixel centres at integer ``(row, col)``; millimetres are
  ``(row * spacing_rc[0], col * spacing_rc[1])``.
- **Distance from a point to a boundary**: to the nearest point of any of its
  polylines (point-to-segment, not point-to-vertex).
- **HD** (symmetric Hausdorff): ``max(h(A, B), h(B, A))`` with ``h(A, B)`` the
  largest distance from a vertex of boundary A to boundary B.
- **APD** (average perpendicular distance, Radau et al. 2009, Sunnybrook
  evaluation): mean over the vertices of the *automatic* boundary of their
  distance to the *manual* boundary. Directional: automatic -> manual.
- **DSC**: ``2|A ∩ B| / (|A| + |B|)``; 1.0 when both masks are empty.
- **Empty masks**: HD and APD are NaN when either mask is empty (no boundary
  to measure from or to). :func:`summarize` skips NaN explicitly and counts it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage
from skimage.measure import find_contours
from skimage.morphology import convex_hull_image

from ..errors import InputError

Polyline = np.ndarray  # (N, 2) float array of (row, col) vertices

_EIGHT = np.ones((3, 3), dtype=bool)
_CHUNK_ELEMENTS = 1_000_000  # points x segments evaluated at once (memory bound)


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or a.shape != b.shape:
        raise InputError(f"Metrics compare two 2D masks of the same shape; got {a.shape} and "
                         f"{b.shape}. Pass one slice [rows, cols] of each segmentation.")
    return a.astype(bool), b.astype(bool)


def _check_spacing(spacing_rc: Sequence[float]) -> np.ndarray:
    s = np.asarray(spacing_rc, dtype=np.float64).reshape(-1)
    if s.shape != (2,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise InputError(f"Pixel spacing {tuple(spacing_rc)} must be two positive numbers "
                         "(row spacing, column spacing) in mm.")
    return s


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice similarity coefficient ``2|A ∩ B| / (|A| + |B|)``; 1.0 when both are empty."""
    a, b = _check_pair(a, b)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / total


def boundary_contours(mask: np.ndarray, fully_connected: str = "high") -> list[Polyline]:
    """All closed boundary polylines of a 2D mask, in pixel ``(row, col)`` (module definition)."""
    m = np.pad(np.asarray(mask, dtype=bool).astype(np.float64), 1)
    if not m.any():
        return []
    return [c - 1.0 for c in find_contours(m, 0.5, fully_connected=fully_connected)]


def _segments(polylines: Sequence[Polyline]) -> np.ndarray:
    """(M, 2, 2) segments of the polylines; a one-vertex polyline gives a zero-length segment."""
    segs = []
    for p in polylines:
        p = np.asarray(p, dtype=np.float64).reshape(-1, 2)
        if len(p) == 1:
            segs.append(np.stack([p, p], axis=1))
        elif len(p) > 1:
            segs.append(np.stack([p[:-1], p[1:]], axis=1))
    return np.concatenate(segs) if segs else np.zeros((0, 2, 2))


def distances_to_polylines(points: np.ndarray, polylines: Sequence[Polyline]) -> np.ndarray:
    """Distance from each point ``(N, 2)`` to the nearest point of any polyline (same units)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    segs = _segments(polylines)
    if len(segs) == 0:
        return np.full(len(pts), np.nan)
    a = segs[:, 0]
    ab = segs[:, 1] - a
    len2 = np.einsum("md,md->m", ab, ab)
    inv = np.divide(1.0, len2, out=np.zeros_like(len2), where=len2 > 0)
    out = np.empty(len(pts))
    step = max(1, _CHUNK_ELEMENTS // len(segs))
    for s in range(0, len(pts), step):
        ap = pts[s:s + step, None, :] - a[None]
        t = np.clip(np.einsum("nmd,md->nm", ap, ab) * inv, 0.0, 1.0)
        d = ap - t[..., None] * ab[None]
        out[s:s + step] = np.sqrt(np.einsum("nmd,nmd->nm", d, d).min(axis=1))
    return out


def _to_mm(polylines: Sequence[Polyline], spacing: np.ndarray) -> list[Polyline]:
    return [np.asarray(p, dtype=np.float64) * spacing for p in polylines]


def _vertices(polylines: Sequence[Polyline]) -> np.ndarray:
    return np.concatenate(polylines) if polylines else np.zeros((0, 2))


def _directed_mm(src: Sequence[Polyline], dst: Sequence[Polyline]) -> np.ndarray:
    """Distances (mm) from every vertex of ``src`` to the polylines of ``dst``."""
    pts = _vertices(src)
    if len(pts) == 0 or not dst:
        return np.zeros(0)
    return distances_to_polylines(pts, dst)


def _boundaries_mm(auto: np.ndarray, manual: np.ndarray,
                   spacing_rc: Sequence[float]) -> tuple[list[Polyline], list[Polyline]]:
    """The boundaries of both masks, in millimetres."""
    a, b = _check_pair(auto, manual)
    s = _check_spacing(spacing_rc)
    return _to_mm(boundary_contours(a), s), _to_mm(boundary_contours(b), s)


def _hd_apd(auto_mm: list[Polyline], manual_mm: list[Polyline]) -> tuple[float, float]:
    """(HD, APD) from boundaries in mm; the auto -> manual distances are computed once."""
    if not auto_mm or not manual_mm:
        return float("nan"), float("nan")
    to_manual = _directed_mm(auto_mm, manual_mm)
    return float(max(to_manual.max(), _directed_mm(manual_mm, auto_mm).max())), float(to_manual.mean())


def hausdorff_mm(auto: np.ndarray, manual: np.ndarray, spacing_rc: Sequence[float]) -> float:
    """Symmetric Hausdorff distance (mm) between the boundaries; NaN if either mask is empty."""
    return _hd_apd(*_boundaries_mm(auto, manual, spacing_rc))[0]


def apd_mm(auto: np.ndarray, manual: np.ndarray, spacing_rc: Sequence[float]) -> float:
    """Average perpendicular distance (mm), automatic -> manual boundary; NaN if either is empty."""
    auto_mm, manual_mm = _boundaries_mm(auto, manual, spacing_rc)
    if not auto_mm or not manual_mm:
        return float("nan")
    return float(_directed_mm(auto_mm, manual_mm).mean())


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a 2D mask (empty mask -> empty mask)."""
    lab, n = ndimage.label(np.asarray(mask, dtype=bool), structure=_EIGHT)
    if n == 0:
        return lab > 0
    sizes = np.bincount(lab.ravel())[1:]
    return lab == (1 + int(np.argmax(sizes)))


def _largest_4(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask.astype(bool)
    return lab == (1 + int(np.argmax(np.bincount(lab.ravel())[1:])))


def ring_cavity(ring: np.ndarray, closed_fraction: float = 0.5
                ) -> tuple[np.ndarray, bool, np.ndarray]:
    """Cavity enclosed by a myocardium ring, and whether the ring really encloses it.

    ``hole`` = the largest 4-connected hole of the ring's largest component
    (``binary_fill_holes`` minus ring); ``hull_cavity`` = the largest
    4-connected component of (convex hull minus ring). The ring is *closed* when
    ``|hole| >= closed_fraction * |hull_cavity|`` and the hole is not empty; an
    open ring (a basal C shape, a gap in the wall) has no hole, or one much
    smaller than the hull cavity.

    Returns ``(hole, closed, hull_cavity)``; ``hole`` is empty when the ring is open.
    """
    comp = largest_component(ring)
    empty = np.zeros(comp.shape, dtype=bool)
    if not comp.any():
        return empty, False, empty
    hole = _largest_4(ndimage.binary_fill_holes(comp) & ~comp)
    hull_cav = _largest_4(convex_hull_image(comp) & ~comp)
    closed = bool(hole.any() and hole.sum() >= closed_fraction * hull_cav.sum())
    return (hole if closed else empty), closed, hull_cav


def _runs(labels: np.ndarray, pts: np.ndarray, want: bool) -> list[Polyline]:
    """Cyclic runs of vertices of a closed contour whose label equals ``want`` (>= 2 vertices)."""
    if np.all(labels == want):
        return [pts] if len(pts) >= 2 else []
    if not np.any(labels == want):
        return []
    lab, p = labels[:-1], pts[:-1]  # drop the closing duplicate vertex
    start = int(np.argmax(lab != lab[0]))  # rotate so that a run boundary sits at index 0
    lab, p = np.roll(lab, -start), np.roll(p, -start, axis=0)
    cuts = np.flatnonzero(np.diff(lab.astype(np.int8))) + 1
    out = []
    for seg_l, seg_p in zip(np.split(lab, cuts), np.split(p, cuts)):
        if seg_l[0] == want and len(seg_p) >= 2:
            out.append(seg_p)
    return out


def ring_contours(mask: np.ndarray) -> tuple[list[Polyline], list[Polyline]]:
    """Endo- and epicardial polylines ``(endo, epi)`` of a myocardium ring, pixel ``(row, col)``.

    Uses the largest 8-connected component of the mask. Closed ring (see
    :func:`ring_cavity`): endo = boundary of its cavity, epi = outer boundary of
    the filled ring, both closed. Open ring: its single outer contour is split
    vertex by vertex: a vertex nearer to the hull cavity than to the outside of
    the convex hull is endocardial, else epicardial; each list then holds the
    open runs of consecutive vertices (the gap's cut faces count as endo).
    No cavity at all (a solid apical cap): ``endo`` is empty. Empty mask: both empty.
    """
    comp = largest_component(mask)
    if not comp.any():
        return [], []
    hole, closed, hull_cav = ring_cavity(comp)
    outer = boundary_contours(ndimage.binary_fill_holes(comp))
    if closed:
        endo = boundary_contours(ndimage.binary_fill_holes(hole), fully_connected="low")
        return endo, outer
    if not hull_cav.any():
        return [], outer
    # padded by one pixel, like the contours, so the outside exists at the image border
    d_cav = ndimage.distance_transform_edt(~np.pad(hull_cav, 1))
    d_ext = ndimage.distance_transform_edt(np.pad(convex_hull_image(comp), 1))
    endo, epi = [], []
    for c in outer:
        coords = (c + 1.0).T
        is_endo = (ndimage.map_coordinates(d_cav, coords, order=1)
                   < ndimage.map_coordinates(d_ext, coords, order=1))
        endo += _runs(is_endo, c, True)
        epi += _runs(is_endo, c, False)
    return endo, epi


def apd_endo_epi_mm(auto_myo: np.ndarray, manual_myo: np.ndarray,
                    spacing_rc: Sequence[float]) -> tuple[float, float]:
    """APD (mm, automatic -> manual) of the endocardial and of the epicardial contour.

    Contours from :func:`ring_contours` (largest component of each mask); a
    contour missing on either side gives NaN for that contour.
    """
    a, b = _check_pair(auto_myo, manual_myo)
    s = _check_spacing(spacing_rc)
    (ea, pa), (eb, pb) = ring_contours(a), ring_contours(b)
    out = []
    for src, dst in ((ea, eb), (pa, pb)):
        d = _directed_mm(_to_mm(src, s), _to_mm(dst, s))
        out.append(float(d.mean()) if len(d) else float("nan"))
    return out[0], out[1]


def slice_metrics(auto_mask: np.ndarray, manual_mask: np.ndarray, spacing_rc: Sequence[float],
                  ring: bool = False) -> dict:
    """DSC, HD and APD of one slice: ``{"dsc", "hd_mm", "apd_mm"}`` (+ endo/epi APD if ``ring``).

    ``ring=True`` (myocardium) adds ``apd_endo_mm`` and ``apd_epi_mm``. HD and
    APD are NaN when either mask is empty; DSC is 1.0 when both are, 0.0 when
    only one is. ``auto_empty`` / ``manual_empty`` say which.
    """
    a, b = _check_pair(auto_mask, manual_mask)
    hd, apd = _hd_apd(*_boundaries_mm(a, b, spacing_rc))
    out = {
        "dsc": dice(a, b),
        "hd_mm": hd,
        "apd_mm": apd,
        "auto_empty": not a.any(),
        "manual_empty": not b.any(),
    }
    if ring:
        out["apd_endo_mm"], out["apd_epi_mm"] = apd_endo_epi_mm(a, b, spacing_rc)
    return out


def summarize(values: Sequence[float]) -> dict:
    """Mean, sample SD (ddof=1), count ``n`` of finite values and ``n_nan`` of skipped NaN.

    NaN values (undefined HD/APD) are skipped and counted, never averaged in.
    ``sd`` is NaN when fewer than two values remain, ``mean`` when none does.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    nan = np.isnan(v)
    ok = v[~nan]
    return {
        "mean": float(ok.mean()) if ok.size else float("nan"),
        "sd": float(ok.std(ddof=1)) if ok.size >= 2 else float("nan"),
        "n": int(ok.size),
        "n_nan": int(nan.sum()),
    }
