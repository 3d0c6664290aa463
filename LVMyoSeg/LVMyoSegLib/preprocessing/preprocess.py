"""Preprocessing (paper §2.1): 1 mm in-plane resampling, crop box, and back.

Coordinates: an input pixel is ``(j, i)`` = (row, column) of a frame of the cine
``[T, Z, Y, X]``; a crop pixel is ``(r, c)`` of the network grid ``[Z, T, H, W]``.
Pixel centres sit at integer coordinates on both grids. For slice ``z`` the
mapping is a rotation-free scale + translation::

    j = origin_ji[z, 0] + r * step_ji[0]      step_ji = pixel_mm / (row spacing, column spacing)
    i = origin_ji[z, 1] + c * step_ji[1]

so the crop box of slice ``z`` covers input pixels ``origin .. origin + (crop_size-1)*step``
and its centre pixel ``(crop_size-1)/2`` falls on the LV centre of that slice.
Every frame of a slice uses the same box; only in-plane resampling is done
(slices stay slices, phases stay phases).

Resampling is separable linear interpolation (:func:`interpolation_matrix`,
one matrix per axis, applied to all frames at once); positions off the source
grid give 0. :func:`to_input` interpolates the crop grid at every input pixel
centre, so a forward then inverse mapping of a smooth image returns it inside
the box up to interpolation error.

LV localisation, which finds the boxes' centres, is in :mod:`LVMyoSegLib.preprocessing.localisation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
from scipy import ndimage as ndi

from ..cine import Cine
from ..errors import GeometryError, InputError
from ..labels import CHANNELS, Labels

# The product's network grid, the one default everywhere (a model bundle's manifest carries its own):
# 4/3 mm pixels (the acquisitions' own 1.29-1.37 mm) x 96 px = a 128 mm box.
DEFAULT_PREPROCESSING = MappingProxyType({"pixel_mm": 4 / 3, "crop_size": 96})
OUTLIER_PERCENTILES = (0.5, 99.5)  # robust range of a slice cycle (:func:`suppress_outliers`)


@dataclass(frozen=True)
class Localisation:
    """What LV localisation (:func:`~LVMyoSegLib.preprocessing.localisation.localise`) found, per slice,
    in input pixel coordinates ``(j, i)``.

    ``detected_ji`` / ``radii_mm``: the slice's own best circle near the study
    centre, NaN where it has none; ``fallback[z]`` is True for those slices, whose
    box centre then comes from the study-level LV axis alone.
    """

    study_centre_ji: tuple[float, float]
    study_radius_mm: float
    detected_ji: np.ndarray
    radii_mm: np.ndarray
    fallback: np.ndarray

    def to_dict(self) -> dict:
        return {
            "study_centre_ji": [float(v) for v in self.study_centre_ji],
            "study_radius_mm": _num(self.study_radius_mm),
            "detected_ji": [[_num(v) for v in row] for row in np.asarray(self.detected_ji)],
            "radii_mm": [_num(v) for v in np.asarray(self.radii_mm)],
            "fallback": [bool(v) for v in np.asarray(self.fallback)],
        }

    @staticmethod
    def from_dict(d: dict) -> "Localisation":
        return Localisation(
            study_centre_ji=tuple(float(v) for v in d["study_centre_ji"]),
            study_radius_mm=float("nan") if d["study_radius_mm"] is None else float(d["study_radius_mm"]),
            detected_ji=np.array([[np.nan if v is None else v for v in row]
                                  for row in d["detected_ji"]], dtype=float).reshape(-1, 2),
            radii_mm=np.array([np.nan if v is None else v for v in d["radii_mm"]], dtype=float),
            fallback=np.array(d["fallback"], dtype=bool),
        )


def _num(v: float) -> float | None:
    return None if not np.isfinite(v) else float(v)


@dataclass(frozen=True)
class CropTransform:
    """Exact mapping between the input grid and the network's crop grid (see module doc).

    Attributes:
        input_shape_zyx: (Z, Y, X) of the input cine.
        input_spacing_xy: input pixel spacing (column, row) in mm.
        pixel_mm: crop pixel size in mm.
        crop_size: crop box side in crop pixels (H = W = crop_size).
        origin_ji: ``[Z, 2]`` input pixel (j, i) of crop pixel (0, 0), per slice.
        localisation: how the box centres were found (None when given by hand).
    """

    input_shape_zyx: tuple[int, int, int]
    input_spacing_xy: tuple[float, float]
    pixel_mm: float
    crop_size: int
    origin_ji: np.ndarray
    localisation: Localisation | None = field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape_zyx", tuple(int(v) for v in self.input_shape_zyx))
        object.__setattr__(self, "input_spacing_xy", tuple(float(v) for v in self.input_spacing_xy))
        origin = np.asarray(self.origin_ji, dtype=np.float64).reshape(-1, 2)
        if origin.shape[0] != self.input_shape_zyx[0]:
            raise GeometryError(f"Crop transform has {origin.shape[0]} slice boxes for "
                                f"{self.input_shape_zyx[0]} slices; recompute it for this cine.")
        if self.pixel_mm <= 0 or self.crop_size < 8 or min(self.input_spacing_xy) <= 0:
            raise GeometryError(f"Crop transform with pixel {self.pixel_mm} mm, size {self.crop_size}, "
                                f"input spacing {self.input_spacing_xy} is not usable.")
        object.__setattr__(self, "origin_ji", origin)

    @property
    def step_ji(self) -> np.ndarray:
        """Input pixels per crop pixel along rows and columns."""
        sx, sy = self.input_spacing_xy
        return np.array([self.pixel_mm / sy, self.pixel_mm / sx])

    @property
    def centres_ji(self) -> np.ndarray:
        """``[Z, 2]`` input pixel (j, i) of each box's centre."""
        return self.origin_ji + (self.crop_size - 1) / 2.0 * self.step_ji

    def affine(self, z: int) -> np.ndarray:
        """3x3 matrix taking homogeneous crop (r, c, 1) to input (j, i, 1) for slice ``z``."""
        m = np.eye(3)
        m[0, 0], m[1, 1] = self.step_ji
        m[:2, 2] = self.origin_ji[z]
        return m

    def to_dict(self) -> dict:
        return {
            "input_shape_zyx": list(self.input_shape_zyx),
            "input_spacing_xy": list(self.input_spacing_xy),
            "pixel_mm": float(self.pixel_mm),
            "crop_size": int(self.crop_size),
            "origin_ji": self.origin_ji.tolist(),
            "localisation": None if self.localisation is None else self.localisation.to_dict(),
        }

    @staticmethod
    def from_dict(d: dict, where: str = "") -> "CropTransform":
        try:
            loc = d.get("localisation")
            return CropTransform(
                input_shape_zyx=tuple(d["input_shape_zyx"]),
                input_spacing_xy=tuple(d["input_spacing_xy"]),
                pixel_mm=float(d["pixel_mm"]),
                crop_size=int(d["crop_size"]),
                origin_ji=np.asarray(d["origin_ji"], dtype=np.float64),
                localisation=None if loc is None else Localisation.from_dict(loc),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"Crop transform record{f' {where}' if where else ''} is incomplete or malformed "
                             f"({exc!r}): it was edited or written by another program. Re-run "
                             "`lvmyoseg preprocess` (or segment) to write a new one.") from None


def crop_transform(input_shape_zyx: tuple[int, int, int], input_spacing_xy: tuple[float, float],
                   centres_ji: np.ndarray, pixel_mm: float = 1.0, crop_size: int = 128,
                   localisation: Localisation | None = None) -> CropTransform:
    """Crop boxes of ``crop_size`` pixels of ``pixel_mm`` centred on ``centres_ji`` ``[Z, 2]``."""
    sx, sy = input_spacing_xy
    step = np.array([pixel_mm / sy, pixel_mm / sx])
    centres = np.broadcast_to(np.asarray(centres_ji, dtype=np.float64), (input_shape_zyx[0], 2))
    origin = centres - (crop_size - 1) / 2.0 * step
    return CropTransform(input_shape_zyx, input_spacing_xy, pixel_mm, crop_size, origin, localisation)


def interpolation_matrix(n_out: int, n_in: int, origin: float, step: float) -> np.ndarray:
    """``[n_out, n_in]`` linear-interpolation weights sampling positions ``origin + k * step``.

    Rows of positions outside ``[0, n_in - 1]`` are zero (no extrapolation), so
    ``M @ v`` is the linear interpolation of ``v`` with 0 outside its extent.
    """
    pos = origin + np.arange(n_out) * step
    m = np.zeros((n_out, n_in), dtype=np.float32)
    inside = np.flatnonzero((pos >= -1e-9) & (pos <= n_in - 1 + 1e-9))
    p = np.clip(pos[inside], 0.0, n_in - 1)
    lo = np.minimum(np.floor(p).astype(int), max(n_in - 2, 0))
    frac = p - lo
    m[inside, lo] = 1.0 - frac
    if n_in > 1:
        m[inside, lo + 1] += frac
    return m


def _separable(stack: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``rows @ image @ cols.T`` for every image of ``stack [B, Y, X]``, as two large products."""
    b, ny, nx = stack.shape
    a = np.ascontiguousarray(np.moveaxis(stack, 0, 1), dtype=np.float32).reshape(ny, b * nx)
    a = (rows @ a).reshape(rows.shape[0], b, nx)
    a = np.ascontiguousarray(np.moveaxis(a, 0, 1)).reshape(b * rows.shape[0], nx) @ cols.T
    return a.reshape(b, rows.shape[0], cols.shape[0])


def _matrices(transform: CropTransform, z: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column interpolation matrices (crop <- input) of slice ``z``."""
    _, ny, nx = transform.input_shape_zyx
    n, step, origin = transform.crop_size, transform.step_ji, transform.origin_ji[z]
    return (interpolation_matrix(n, ny, origin[0], step[0]),
            interpolation_matrix(n, nx, origin[1], step[1]))


def suppress_outliers(frames: np.ndarray, percentiles: tuple[float, float] = OUTLIER_PERCENTILES) -> np.ndarray:
    """One slice's cycle ``[T, Y, X]`` (float32) with impossible pixels replaced.

    A pixel is impossible when it lies further outside the cycle's robust range
    (``percentiles``) than that range is wide: a damaged or saturated read-out,
    which would otherwise leak into its neighbours through interpolation and
    dominate the motion map. Such pixels take the median of their 3×3
    neighbourhood (then clipped to the allowed band); ordinary images have none
    and come back unchanged.
    """
    frames = np.array(frames, dtype=np.float32)
    lo, hi = np.percentile(frames, percentiles)
    floor, ceiling = lo - (hi - lo), hi + (hi - lo)
    bad = (frames < floor) | (frames > ceiling)
    for t in np.flatnonzero(bad.any(axis=(1, 2))):
        frames[t][bad[t]] = ndi.median_filter(frames[t], size=3)[bad[t]]
    return np.clip(frames, floor, ceiling) if bad.any() else frames


def resample_slice(stack: np.ndarray, transform: CropTransform, z: int) -> np.ndarray:
    """Frames ``[T, Y, X]`` of slice ``z`` -> ``[T, H, W]`` (separable linear interpolation)."""
    rows, cols = _matrices(transform, z)
    return _separable(np.asarray(stack, dtype=np.float32), rows, cols)


def _inside_mask(transform: CropTransform, z: int) -> np.ndarray:
    """``[H, W]`` True where the crop pixel's centre lies on the input image."""
    _, ny, nx = transform.input_shape_zyx
    k = np.arange(transform.crop_size)
    j = transform.origin_ji[z, 0] + k * transform.step_ji[0]
    i = transform.origin_ji[z, 1] + k * transform.step_ji[1]
    return ((j >= 0) & (j <= ny - 1))[:, None] & ((i >= 0) & (i <= nx - 1))[None, :]


def _check_fits(shape_tzyx: tuple[int, ...], spacing_xy: tuple[float, float],
                transform: CropTransform, what: str) -> None:
    if tuple(shape_tzyx[1:4]) != transform.input_shape_zyx or not np.allclose(
            spacing_xy, transform.input_spacing_xy, rtol=1e-4):
        raise GeometryError(f"{what} of shape {tuple(shape_tzyx)} and spacing {spacing_xy} does not fit "
                            f"the crop transform (made for {transform.input_shape_zyx}, "
                            f"{transform.input_spacing_xy} mm); localise this cine again.")


def normalise_intensity(crop: np.ndarray, inside: np.ndarray,
                        percentiles: tuple[float, float] = (1.0, 99.0)) -> np.ndarray:
    """Scale one slice's cycle ``[T, H, W]`` to [0, 1] by its robust range.

    The low and high percentiles are taken over every frame of the slice (the
    whole cycle) at crop pixels that lie on the image (``inside`` ``[H, W]``);
    values are clipped to [0, 1] and pixels off the image are 0.
    """
    values = crop[:, inside]
    if values.size == 0:
        return np.zeros_like(crop, dtype=np.float32)
    lo, hi = np.percentile(values, percentiles)
    if hi <= lo:
        return np.zeros_like(crop, dtype=np.float32)
    out = np.clip((crop - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    out[:, ~inside] = 0.0
    return out


def resample_to_network(stack: np.ndarray, transform: CropTransform) -> np.ndarray:
    """Resample input-grid maps ``[T, Z, Y, X]`` or ``[T, Z, Y, X, C]`` to ``[Z, T, H, W, C]``.

    Linear interpolation only (no normalisation); crop pixels off the image are 0.
    """
    stack = np.asarray(stack, dtype=np.float32)
    if stack.ndim == 4:
        stack = stack[..., None]
    if stack.ndim != 5 or tuple(stack.shape[1:4]) != transform.input_shape_zyx:
        raise GeometryError(f"Maps of shape {stack.shape} do not fit the crop transform made for "
                            f"[T, {', '.join(map(str, transform.input_shape_zyx))}(, C)].")
    n_t, n_z, n_c = stack.shape[0], stack.shape[1], stack.shape[4]
    n = transform.crop_size
    out = np.empty((n_z, n_t, n, n, n_c), dtype=np.float32)
    for z in range(n_z):
        rows, cols = _matrices(transform, z)
        maps = np.moveaxis(stack[:, z], -1, 1).reshape(n_t * n_c, *stack.shape[2:4])  # [T*C, Y, X]
        out[z] = np.moveaxis(_separable(maps, rows, cols).reshape(n_t, n_c, n, n), 1, -1)
    return out


def to_network(cine: Cine, transform: CropTransform,
               percentiles: tuple[float, float] = (1.0, 99.0)) -> np.ndarray:
    """Network input ``[Z, T, H, W, 1]`` float32: linear resampling + per-slice normalisation.

    Normalisation (:func:`normalise_intensity`): the 1st..99th percentile range
    of the slice's whole cycle inside its crop box maps to [0, 1], clipped.
    """
    _check_fits(cine.frames.shape, cine.spacing[:2], transform, f"Cine {cine.source}")
    out = np.empty((cine.n_slices, cine.n_phases, transform.crop_size, transform.crop_size, 1),
                   dtype=np.float32)
    for z in range(cine.n_slices):
        out[z, ..., 0] = slice_to_network(cine.frames[:, z], transform, z, percentiles)
    return out


def slice_to_network(frames_tyx: np.ndarray, transform: CropTransform, z: int,
                     percentiles: tuple[float, float] = (1.0, 99.0)) -> np.ndarray:
    """Frames ``[T, Y, X]`` of slice ``z`` -> normalised crops ``[T, H, W]`` (as :func:`to_network`)."""
    crop = resample_slice(suppress_outliers(frames_tyx), transform, z)
    return normalise_intensity(crop, _inside_mask(transform, z), percentiles)


def mask_to_network(mask_tyx: np.ndarray, transform: CropTransform, z: int) -> np.ndarray:
    """Binary masks ``[T, Y, X]`` of slice ``z`` -> 0/1 crops ``[T, H, W]`` (as :func:`labels_to_network`)."""
    return (resample_slice(np.asarray(mask_tyx, np.float32), transform, z) >= 0.5).astype(np.float32)


def labels_to_network(labels: Labels, transform: CropTransform) -> tuple[np.ndarray, np.ndarray]:
    """Targets ``[Z, T, H, W, 2]`` float32 (0/1) and ``known [Z, T, 2]`` on the crop grid.

    Each binary channel (order :data:`CHANNELS`) is resampled with linear
    interpolation and thresholded at 0.5 (a crop pixel belongs to a structure
    when its centre lies on the structure's side of the interpolated boundary).
    """
    lm = labels.label_map
    # labels carry no spacing of their own: only their grid shape can be checked here
    _check_fits(lm.shape, transform.input_spacing_xy, transform, f"Labels {labels.source}")
    n_t, n_z = lm.shape[:2]
    out = np.zeros((n_z, n_t, transform.crop_size, transform.crop_size, len(CHANNELS)), np.float32)
    for z in range(n_z):
        for c, name in enumerate(CHANNELS):
            out[z, ..., c] = mask_to_network(labels.channel(name)[:, z], transform, z)
    return out, np.transpose(labels.known, (1, 0, 2)).copy()


def to_input(prob: np.ndarray, transform: CropTransform) -> np.ndarray:
    """Map network-grid maps ``[Z, T, H, W, C]`` back onto the input grid ``[T, Z, Y, X, C]``.

    Linear interpolation of the crop grid at each input pixel centre; input
    pixels outside slice ``z``'s crop box get 0.
    """
    prob = np.asarray(prob, dtype=np.float32)
    n_z, ny, nx = transform.input_shape_zyx
    if prob.ndim != 5 or prob.shape[0] != n_z or prob.shape[2:4] != (transform.crop_size,) * 2:
        raise GeometryError(f"Network output of shape {prob.shape} does not fit the crop transform "
                            f"({n_z} slices, {transform.crop_size}x{transform.crop_size} crops); it "
                            "must be [Z, T, H, W, C] from the same preprocessing.")
    n_t, n_c = prob.shape[1], prob.shape[4]
    out = np.zeros((n_t, n_z, ny, nx, n_c), dtype=np.float32)
    step = transform.step_ji
    for z in range(n_z):
        origin = transform.origin_ji[z]
        rows = interpolation_matrix(ny, transform.crop_size, -origin[0] / step[0], 1.0 / step[0])
        cols = interpolation_matrix(nx, transform.crop_size, -origin[1] / step[1], 1.0 / step[1])
        maps = np.moveaxis(prob[z], -1, 1).reshape(n_t * n_c, transform.crop_size, -1)  # [T*C, H, W]
        out[:, z] = np.moveaxis(_separable(maps, rows, cols).reshape(n_t, n_c, ny, nx), 1, -1)
    return out
