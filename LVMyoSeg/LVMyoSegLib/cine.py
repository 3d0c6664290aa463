"""The `Cine` value: one cardiac cycle of a short-axis stack, with its geometry.

Conventions (the same as ITK / SimpleITK / DICOM):
- ``frames`` is indexed ``[t, k, j, i]`` = ``[phase, slice, row, column]``.
- ``Geometry.spacing`` is ``(column, row, slice)`` spacing in mm, i.e. along i, j, k.
- ``Geometry.origin`` is the LPS position (mm) of voxel ``(i, j, k) = (0, 0, 0)``.
- ``Geometry.direction`` is a 3x3 matrix whose columns are the LPS unit vectors
  of the i, j and k axes.
MRML works in RAS; :mod:`LVMyoSegLib.mrml` converts at the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import GeometryError, InputError


@dataclass(frozen=True)
class Geometry:
    """Voxel-to-physical mapping of one 3D frame (all frames of a cine share it)."""

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        spacing = tuple(float(s) for s in self.spacing)
        origin = tuple(float(o) for o in self.origin)
        direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise GeometryError(f"Voxel spacing {spacing} is not three positive numbers; "
                                "check the image header (PixelSpacing / slice positions).")
        if not np.all(np.isfinite(origin)) or not np.all(np.isfinite(direction)):
            raise GeometryError("Image origin or direction holds NaN/Inf; the header is damaged.")
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    def index_to_lps(self) -> np.ndarray:
        """4x4 matrix taking homogeneous (i, j, k, 1) to LPS millimetres."""
        m = np.eye(4)
        m[:3, :3] = self.direction @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    def reversed_slices(self, n_slices: int) -> "Geometry":
        """The geometry of the same ``n_slices`` planes stored in the opposite slice order."""
        direction = self.direction.copy()
        direction[:, 2] *= -1
        origin = np.asarray(self.origin) + self.direction[:, 2] * self.spacing[2] * (n_slices - 1)
        return Geometry(self.spacing, tuple(origin), direction)

    def matches(self, other: "Geometry", tol_mm: float = 1e-3) -> bool:
        """True when both geometries place every voxel within ``tol_mm`` of each other."""
        a, b = self.index_to_lps(), other.index_to_lps()
        return bool(np.allclose(a, b, atol=tol_mm, rtol=0))


@dataclass(frozen=True)
class Cine:
    """One cardiac cycle of a short-axis cine stack.

    Attributes:
        frames: float32 array ``[T, Z, Y, X]``; T >= 2 phases, Z >= 1 slices.
        geometry: geometry shared by every frame.
        trigger_times_ms: ``[T]`` trigger time of each phase (ms after the R wave);
            evenly spaced indices when the source has none.
        source: where the cine came from (path or node name), for messages and reports.
    """

    frames: np.ndarray
    geometry: Geometry
    trigger_times_ms: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        frames = np.asarray(self.frames)
        where = f" ({self.source})" if self.source else ""
        if frames.ndim != 4:
            raise InputError(f"A cine needs 4 dimensions [time, slice, row, column], got shape "
                             f"{frames.shape}{where}. Load a multi-phase short-axis cine series, "
                             "not a single 2D or 3D image.")
        if frames.shape[0] < 2:
            raise InputError(f"The volume{where} has a single phase (T=1): it is not a cine. "
                             "Load the cine series with all phases of the cardiac cycle.")
        if min(frames.shape[2:]) < 16:
            raise InputError(f"Frames of {frames.shape[3]}x{frames.shape[2]} pixels{where} are too "
                             "small to be short-axis cine images.")
        frames = frames.astype(np.float32, copy=False)
        if not np.all(np.isfinite(frames)):
            bad = int(np.count_nonzero(~np.isfinite(frames)))
            raise InputError(f"The cine{where} has {bad} NaN/Inf voxels. Fix or re-export the "
                             "images; LVMyoSeg does not guess values for them.")
        times = np.asarray(self.trigger_times_ms, dtype=np.float64).reshape(-1)
        if times.shape[0] != frames.shape[0]:
            raise InputError(f"{times.shape[0]} trigger times for {frames.shape[0]} phases{where}.")
        object.__setattr__(self, "frames", frames)
        object.__setattr__(self, "trigger_times_ms", times)

    @property
    def n_phases(self) -> int:
        return int(self.frames.shape[0])

    @property
    def n_slices(self) -> int:
        return int(self.frames.shape[1])

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.geometry.spacing

    def summary(self) -> dict:
        """JSON-ready description (what ``lvmyoseg inspect --json`` prints)."""
        t, z, y, x = self.frames.shape
        return {
            "source": self.source,
            "T": t,
            "Z": z,
            "shape_tzyx": [t, z, y, x],
            "spacing_mm_xyz": list(self.geometry.spacing),
            "origin_lps_mm": list(self.geometry.origin),
            "direction": self.geometry.direction.tolist(),
            "trigger_times_ms": [round(float(v), 3) for v in self.trigger_times_ms],
        }
