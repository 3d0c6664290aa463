"""LV localisation (after the paper's §2.1: motion analysis + Hough circles): where the crop
boxes of :mod:`LVMyoSegLib.preprocessing.preprocess` are centred.

1. each slice is resampled to ``pixel_mm`` on the central ``search_mm`` × ``search_mm``
   window of the image (the paper's 184 × 184 mm centre crop);
2. motion map per slice: temporal standard deviation over the cycle (impossible pixels
   first replaced, :func:`~LVMyoSegLib.preprocessing.preprocess.suppress_outliers`), Gaussian
   smoothed, scaled by its 99th percentile;
3. per slice, the few best Hough circles on the Canny edges of its motion map;
4. study centre: where the circles of the mid slices agree (most votes within
   ``consensus_mm``); per slice, circles near the study centre feed a robust
   line fit of the centre against the slice index (an oblique LV axis), kept
   within ``refine_mm`` of the study centre; slices without a circle of their own
   (often apical or basal) rely on that line (``fallback``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import canny
from skimage.transform import hough_circle

from ..cine import Cine
from .preprocess import (
    DEFAULT_PREPROCESSING,
    CropTransform,
    Localisation,
    crop_transform,
    resample_slice,
    suppress_outliers,
)


def _motion_maps(cine: Cine, window: CropTransform, smooth_mm: float) -> np.ndarray:
    """``[Z, S, S]`` temporal standard deviation per slice on the search window, scaled to ~[0, 1]."""
    maps = []
    for z in range(cine.n_slices):
        frames = resample_slice(suppress_outliers(cine.frames[:, z]), window, z)
        m = ndi.gaussian_filter(frames.std(axis=0), smooth_mm / window.pixel_mm)
        scale = np.percentile(m, 99)
        maps.append(m / scale if scale > 0 else m)
    return np.stack(maps).astype(np.float32)


def _circles(motion: np.ndarray, radii_px: np.ndarray, n_peaks: int, min_dist_px: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best Hough circles on the Canny edges of one motion map: centres (r, c), votes, radii."""
    edges = canny(motion, sigma=1.0)
    if not edges.any():
        return np.zeros((0, 2)), np.zeros(0), np.zeros(0)
    acc = hough_circle(edges, radii_px, normalize=True)
    best_k = acc.argmax(axis=0)
    score = np.take_along_axis(acc, best_k[None], axis=0)[0]
    rr, cc = np.mgrid[:score.shape[0], :score.shape[1]]
    centres, votes, rad = [], [], []
    for _ in range(n_peaks):  # greedy non-maximum suppression over centres
        r, c = np.unravel_index(int(np.argmax(score)), score.shape)
        if score[r, c] <= 0:
            break
        centres.append((r, c)); votes.append(score[r, c]); rad.append(radii_px[best_k[r, c]])  # noqa: E702
        score[(rr - r) ** 2 + (cc - c) ** 2 <= min_dist_px ** 2] = -1.0
    return np.array(centres, float).reshape(-1, 2), np.array(votes, float), np.array(rad, float)


def _robust_line(z: np.ndarray, points: np.ndarray, weights: np.ndarray, scale: float,
                 iterations: int = 10) -> np.ndarray:
    """``[2, 2]`` coefficients of ``centre(z) = a + b z`` by Cauchy-weighted least squares."""
    design = np.stack([np.ones_like(z), z], axis=1)
    w = weights.copy()
    for _ in range(iterations):
        root = np.sqrt(w)[:, None]
        coef = np.linalg.lstsq(design * root, points * root, rcond=None)[0]
        residual = np.linalg.norm(points - design @ coef, axis=1)
        w = weights / (1.0 + (residual / scale) ** 2)
    return coef


def preprocessing_problem(params: dict) -> str:
    """What is wrong with preprocessing parameters for :func:`localise` ("" when nothing): an
    unknown key, a pixel size that is not a positive number of mm, or a crop under 8 pixels."""
    import inspect

    known = [k for k in inspect.signature(localise).parameters if k != "cine"]
    unknown = sorted(set(params) - set(known))
    if unknown:
        return f"has unknown key(s) {', '.join(map(repr, unknown))}; known keys: {', '.join(known)}"
    pixel = params.get("pixel_mm", DEFAULT_PREPROCESSING["pixel_mm"])
    if isinstance(pixel, bool) or not isinstance(pixel, (int, float)) or not 0.1 <= pixel <= 10.0:
        return f"has pixel_mm {pixel!r}; it must be a pixel size between 0.1 and 10 mm"
    crop = params.get("crop_size", DEFAULT_PREPROCESSING["crop_size"])
    if isinstance(crop, bool) or not isinstance(crop, int) or not 8 <= crop <= 1024:
        return f"has crop_size {crop!r}; it must be a whole number of pixels between 8 and 1024"
    return ""


def localise(cine: Cine, pixel_mm: float = DEFAULT_PREPROCESSING["pixel_mm"],
             crop_size: int = DEFAULT_PREPROCESSING["crop_size"], search_mm: float = 184.0,
             radius_mm: tuple[float, float] = (20.0, 40.0), smooth_mm: float = 2.0,
             consensus_mm: float = 10.0, refine_mm: float = 12.0, n_peaks: int = 3) -> CropTransform:
    """Find the LV centre on every slice and return the crop boxes around it.

    Steps (module doc): motion maps on the central ``search_mm`` window; per
    slice, the ``n_peaks`` best Hough circles (radii ``radius_mm``: the outer
    edge of the moving LV wall; smaller radii mostly pick up small edge loops)
    on the Canny edges of its motion map. Study centre: among the circles of
    the mid slices, the one whose ``consensus_mm`` neighbourhood gathers the
    most votes (the LV is where circles agree across slices); the vote-weighted
    mean of that neighbourhood. Per slice: circles within ``refine_mm`` of the
    study centre feed a robust straight-line fit of the centre against the
    slice index (the LV long axis may be oblique to the stack); each slice's
    centre is that line, kept within ``refine_mm`` of the study centre. Slices
    with no circle of their own near the study centre (``fallback``) rely on the
    line alone; with fewer than two such slices the study centre is used.
    """
    n_z, ny, nx = cine.frames.shape[1:]
    sx, sy = cine.spacing[:2]
    size = int(round(search_mm / pixel_mm))
    image_centre = np.array([(ny - 1) / 2.0, (nx - 1) / 2.0])
    window = crop_transform((n_z, ny, nx), (sx, sy), image_centre, pixel_mm, size)
    motion = _motion_maps(cine, window, smooth_mm)
    radii = np.arange(radius_mm[0], radius_mm[1] + 1e-6, 2.0 * pixel_mm) / pixel_mm
    found = [_circles(motion[z], radii, n_peaks, max(1, int(round(5.0 / pixel_mm))))
             for z in range(n_z)]

    lo, hi = n_z // 4, max(n_z - n_z // 4, n_z // 4 + 1)
    pos = np.concatenate([found[z][0] for z in range(lo, hi)])
    votes = np.concatenate([found[z][1] for z in range(lo, hi)])
    rads = np.concatenate([found[z][2] for z in range(lo, hi)])
    if len(pos):
        dist = np.linalg.norm(pos[:, None] - pos[None], axis=2) * pixel_mm
        support = ((dist <= consensus_mm) * votes[None]).sum(axis=1)
        near = dist[int(np.argmax(support))] <= consensus_mm
        study_rc = (pos[near] * votes[near, None]).sum(0) / votes[near].sum()
        study_radius = float((rads[near] * votes[near]).sum() / votes[near].sum()) * pixel_mm
    else:  # no moving circular structure at all: keep the image centre, every slice falls back
        study_rc = (size - 1) / 2.0 * np.ones(2)
        study_radius = float("nan")

    detected = np.full((n_z, 2), np.nan)
    detected_r = np.full(n_z, np.nan)
    zs, pts, wts = [], [], []
    for z, (p, v, r) in enumerate(found):
        ok = np.linalg.norm(p - study_rc, axis=1) * pixel_mm <= refine_mm
        if ok.any():
            best = int(np.flatnonzero(ok)[np.argmax(v[ok])])
            detected[z], detected_r[z] = p[best], r[best] * pixel_mm
            zs += [z] * int(ok.sum()); pts.append(p[ok]); wts.append(v[ok])  # noqa: E702
    fallback = np.isnan(detected[:, 0])
    centres_rc = np.tile(study_rc, (n_z, 1))
    if len(set(zs)) >= 2:
        coef = _robust_line(np.array(zs, float), np.concatenate(pts), np.concatenate(wts),
                            scale=consensus_mm / 2.0 / pixel_mm)
        line = coef[0] + np.arange(n_z)[:, None] * coef[1]
        offset = line - study_rc
        norm = np.linalg.norm(offset, axis=1, keepdims=True) * pixel_mm
        centres_rc = study_rc + offset * np.minimum(1.0, refine_mm / np.maximum(norm, 1e-9))

    def to_ji(rc: np.ndarray) -> np.ndarray:
        return window.origin_ji[0] + np.asarray(rc) * window.step_ji

    loc = Localisation(tuple(to_ji(study_rc)), study_radius, to_ji(detected), detected_r, fallback)
    return crop_transform((n_z, ny, nx), (sx, sy), to_ji(centres_rc), pixel_mm, crop_size, loc)
