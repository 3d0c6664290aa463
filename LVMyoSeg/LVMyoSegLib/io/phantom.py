"""SYNTHETIC beating-heart phantom, for fast unit tests only (it is not real data).

A short-axis stack over one cardiac cycle: a bright LV blood pool inside an
intermediate-intensity myocardial ring, offset from the image centre, with two
papillary muscles (labelled blood pool, as Sunnybrook experts draw them), a thinned
infarct sector, a hypointense lesion in the wall on some slices, a bright
right-ventricle blob beside the septum, a body ellipse, a smooth bias field and
Rician noise. The cavity shrinks and the wall thickens over the cycle (myocardial
area kept constant): contraction sin^2 peaks at end-systole, ~40 % of the cycle,
and the last 20 % is diastasis. End-diastole is phase 0.
Labels are known everywhere; :func:`sparsify_like_sunnybrook` keeps what Sunnybrook
experts drew (myocardium at ED, cavity at ED and ES).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from ..cine import Cine, Geometry
from ..labels import BLOOD_POOL, CHANNELS, MYOCARDIUM, Labels

ES_FRACTION = 0.4
SYSTOLE_DIASTOLE_FRACTION = 0.8  # contraction and relaxation; the rest is diastasis
INTENSITY = {"blood": 1.0, "myocardium": 0.33, "lesion": 0.12, "body": 0.22, "rv": 0.9}


def synthetic_es_phase(n_phases: int) -> int:
    """End-systolic phase index of the phantom (ED is phase 0)."""
    return int(round(ES_FRACTION * n_phases)) % n_phases


def contraction(n_phases: int) -> np.ndarray:
    """Contraction 0 (ED) .. 1 (ES) of each phase."""
    f = np.arange(n_phases) / n_phases
    c = np.sin(np.pi * f / SYSTOLE_DIASTOLE_FRACTION) ** 2
    return np.where(f < SYSTOLE_DIASTOLE_FRACTION, c, 0.0)


def make_synthetic_cine(n_phases: int = 20, n_slices: int = 6, size: int = 128,
                        spacing: tuple[float, float, float] = (1.4, 1.4, 8.0), seed: int = 0,
                        noise: float = 0.04, bias: float = 0.25, endo_radius_mm: float = 24.0,
                        wall_mm: float = 9.0, ejection: float = 0.35, rr_ms: float = 1000.0,
                        lesion_slices: tuple[int, ...] | None = None,
                        direction: np.ndarray | None = None) -> tuple[Cine, Labels]:
    """A SYNTHETIC cine ``[T, Z, size, size]`` and its fully known labels (for tests only).

    ``ejection`` is the fractional shortening of the endocardial radius at ES;
    ``lesion_slices`` (default: the middle third) carry a hypointense wall lesion.
    """
    rng = np.random.default_rng(seed)
    sx, sy, _ = spacing
    yy, xx = np.meshgrid(np.arange(size) * sy, np.arange(size) * sx, indexing="ij")
    extent_x, extent_y = size * sx, size * sy
    centre = np.array([extent_x * (0.5 + 0.1), extent_y * (0.5 - 0.07)])  # LV offset from image centre
    infarct_angle, infarct_width = rng.uniform(0, 2 * np.pi), np.deg2rad(60)
    rv_angle = np.pi + rng.uniform(-0.3, 0.3)  # RV on the septal side (towards -x)
    if lesion_slices is None:
        lesion_slices = tuple(range(n_slices // 3, max(n_slices // 3 + 1, 2 * n_slices // 3)))
    body = ((xx - extent_x * 0.5) / (extent_x * 0.46)) ** 2 + ((yy - extent_y * 0.5) / (extent_y * 0.40)) ** 2 < 1
    u, v = xx / extent_x - 0.5, yy / extent_y - 0.5
    bias_field = 1 + bias * (0.8 * u - 0.5 * v + 0.6 * u * v - 0.7 * v ** 2)

    c = contraction(n_phases)
    frames = np.zeros((n_phases, n_slices, size, size), dtype=np.float32)
    label_map = np.zeros(frames.shape, dtype=np.uint8)
    for z in range(n_slices):
        scale = 1.0 - 0.45 * z / max(n_slices - 1, 1)  # base (z=0) to apex
        cz = centre + np.array([0.6, -0.4]) * z * spacing[2] * 0.1  # slightly tilted long axis
        dx, dy = xx - cz[0], yy - cz[1]
        r, theta = np.hypot(dx, dy), np.arctan2(dy, dx)
        in_infarct = np.abs(np.angle(np.exp(1j * (theta - infarct_angle)))) < infarct_width / 2
        r_endo_ed = endo_radius_mm * scale
        area = np.pi * ((r_endo_ed + wall_mm * scale) ** 2 - r_endo_ed ** 2)
        for t in range(n_phases):
            r_endo = r_endo_ed * (1 - ejection * c[t])
            r_epi = np.sqrt(r_endo ** 2 + area / np.pi)
            r_epi_local = np.where(in_infarct, r_endo + 0.45 * (r_epi - r_endo), r_epi)
            cavity = r < r_endo
            myo = (r >= r_endo) & (r < r_epi_local)
            img = np.where(body, INTENSITY["body"], 0.0)
            rv_c = cz + (r_epi + 14 * scale) * np.array([np.cos(rv_angle), np.sin(rv_angle)])
            rv = (((xx - rv_c[0]) / (16 * scale)) ** 2 + ((yy - rv_c[1]) / (26 * scale)) ** 2 < 1) \
                & (r >= r_epi + 2.5)
            img[rv] = INTENSITY["rv"]
            img[myo | cavity] = INTENSITY["myocardium"]
            img[cavity] = INTENSITY["blood"]
            for k, ang in enumerate((infarct_angle + 2.2, infarct_angle + 3.4)):
                pc = cz + 0.75 * r_endo * np.array([np.cos(ang), np.sin(ang)])
                papillary = cavity & (np.hypot(xx - pc[0], yy - pc[1]) < (2.5 + k) * scale * (1 + 0.4 * c[t]))
                img[papillary] = INTENSITY["myocardium"]
            if z in lesion_slices:
                mid = 0.5 * (r_endo + r_epi)
                lc = cz + mid * np.array([np.cos(infarct_angle + 1.2), np.sin(infarct_angle + 1.2)])
                img[myo & (np.hypot(xx - lc[0], yy - lc[1]) < 0.4 * (r_epi - r_endo) + 1.5)] = INTENSITY["lesion"]
            img = gaussian_filter(img, 0.6) * bias_field
            re = img + rng.normal(0, noise, img.shape)
            im = rng.normal(0, noise, img.shape)
            frames[t, z] = 800.0 * np.hypot(re, im)
            label_map[t, z][myo] = MYOCARDIUM
            label_map[t, z][cavity] = BLOOD_POOL
    geometry = Geometry(spacing=spacing, origin=(-extent_x / 2, -extent_y / 2, 0.0),
                        direction=np.eye(3) if direction is None else direction)
    times = np.arange(n_phases) * rr_ms / n_phases
    known = np.ones((n_phases, n_slices, len(CHANNELS)), dtype=bool)
    return (Cine(frames, geometry, times, source="synthetic phantom"),
            Labels(label_map, known, source="synthetic phantom labels"))


def sparsify_like_sunnybrook(labels: Labels, ed_phase: int = 0, es_phase: int | None = None,
                             slices: tuple[int, ...] | None = None) -> Labels:
    """Keep what Sunnybrook experts drew: myocardium + cavity at ED, cavity only at ES.

    Everything else is erased (0) and marked unknown, like labels converted from real
    Sunnybrook contours. ``slices`` limits the labelled slices (default: all).
    """
    n_t, n_z = labels.label_map.shape[:2]
    es_phase = synthetic_es_phase(n_t) if es_phase is None else es_phase
    zs = np.arange(n_z) if slices is None else np.asarray(slices, dtype=int)
    myo, pool = CHANNELS.index("myocardium"), CHANNELS.index("blood_pool")
    lm = np.zeros_like(labels.label_map)
    known = np.zeros(labels.known.shape, dtype=bool)
    lm[ed_phase, zs] = labels.label_map[ed_phase, zs]
    lm[es_phase, zs] = np.where(labels.label_map[es_phase, zs] == BLOOD_POOL, BLOOD_POOL, 0)
    known[ed_phase, zs, myo] = True
    known[ed_phase, zs, pool] = True
    known[es_phase, zs, pool] = True
    return Labels(lm, known, source=f"{labels.source} (sparse: ED myocardium, ED+ES cavity)")
