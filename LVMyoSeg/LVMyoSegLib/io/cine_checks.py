"""Refusals of images that are not a short-axis cine, before any network runs on them.

A network given an empty image, a long-axis stack or a thumbnail still returns masks, and
the cardiac function computed from them looks like a result. These checks refuse such
inputs with the reason and what to load instead.
"""

from __future__ import annotations

import numpy as np

from ..cine import Cine
from ..errors import GeometryError, InputError

MIN_FIELD_OF_VIEW_MM = 80.0  # a short-axis image holds the whole LV (about 50-60 mm across) and its surroundings
MAX_SLICES = 40  # short-axis stacks have 6-25 slices; long-axis or 3D acquisitions have many more
MIN_SLICE_ANGLE_DEG = 60.0  # angle between the slice axis and the image plane


def check_short_axis_cine(cine: Cine) -> None:
    """Raise :class:`InputError` (or :class:`GeometryError`) unless ``cine`` can be a short-axis cine."""
    where = cine.source or "the cine"
    frames = cine.frames
    lo, hi = float(frames.min()), float(frames.max())
    if lo == hi:
        raise InputError(f"Every voxel of {where} has the value {lo:g}: the image is empty. Load the cine "
                         "series itself (a blank or unreconstructed series cannot be segmented).")
    if not np.any(frames != frames[:1]):
        raise InputError(f"All {cine.n_phases} phases of {where} are identical: it is not a cine (the "
                         "heart does not move). Load the series with every phase of the cardiac cycle.")
    sx, sy, sz = cine.spacing
    fov_x, fov_y = frames.shape[3] * sx, frames.shape[2] * sy
    if min(fov_x, fov_y) < MIN_FIELD_OF_VIEW_MM:
        raise GeometryError(f"The field of view of {where} is {fov_x:.0f} x {fov_y:.0f} mm, too small to hold "
                            f"a heart (at least {MIN_FIELD_OF_VIEW_MM:.0f} mm each way). Load the full-size "
                            "short-axis images (not a crop or thumbnail), or fix the pixel spacing in the "
                            "image header.")
    if cine.n_slices > MAX_SLICES:
        raise GeometryError(f"{where} has {cine.n_slices} slices; a short-axis cine stack has at most "
                            f"{MAX_SLICES}. It looks like a long-axis or 3D acquisition: load the short-axis "
                            "stack.")
    d = cine.geometry.direction
    normal = np.cross(d[:, 0], d[:, 1])
    norms = np.linalg.norm(normal) * np.linalg.norm(d[:, 2])
    if cine.n_slices > 1 and norms > 0:
        angle = 90.0 - np.degrees(np.arccos(min(1.0, abs(float(normal @ d[:, 2])) / norms)))
        if angle < MIN_SLICE_ANGLE_DEG:
            raise GeometryError(f"The slice direction of {where} lies {angle:.0f} degrees from the image plane "
                                f"(a stack of slices is at least {MIN_SLICE_ANGLE_DEG:.0f} degrees from it): the "
                                "slice and row axes are mixed up. Check the image orientation in its header, "
                                "or re-export the series as a stack of short-axis slices.")
