"""IJK/RAS/LPS matrices: :class:`~LVMyoSegLib.cine.Geometry` (LPS) <-> MRML's IJK-to-RAS,
numpy <-> vtkMatrix4x4, a volume node's matrix, points in LPS and RAS."""

from __future__ import annotations

import numpy as np
import vtk

from ..cine import Geometry
from ..errors import GeometryError, InputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
GEOMETRY_TOLERANCE_MM = 1e-3


def ijk_to_ras(geometry: Geometry) -> np.ndarray:
    """4x4 IJK-to-RAS matrix of ``geometry`` (MRML's convention)."""
    return LPS_TO_RAS @ geometry.index_to_lps()


def geometry_from_ijk_to_ras(matrix: np.ndarray) -> Geometry:
    """:class:`Geometry` (LPS) from a 4x4 IJK-to-RAS matrix."""
    lps = LPS_TO_RAS @ np.asarray(matrix, dtype=np.float64)
    axes = lps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    if np.any(spacing <= 0):
        raise GeometryError(f"IJK-to-RAS matrix {matrix.tolist()} has a zero-length axis; the volume's "
                            "spacing is broken. Fix it in the Volumes module (Volume Information).")
    return Geometry(tuple(spacing), tuple(lps[:3, 3]), axes / spacing)


def to_vtk_matrix(matrix: np.ndarray) -> vtk.vtkMatrix4x4:
    """vtkMatrix4x4 holding a 4x4 numpy matrix."""
    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(matrix[r, c]))
    return out


def _from_vtk_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def volume_ijk_to_ras(volume_node) -> np.ndarray:
    """4x4 IJK-to-RAS matrix of a volume node."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return _from_vtk_matrix(matrix)


def rv_insertion_lps(markups_node) -> tuple[float, float, float] | None:
    """The anterior RV insertion point of a markups point list, in LPS mm (None without a node).

    Uses the first control point (world coordinates, so a transformed list counts where it is
    shown); a list without points is refused.
    """
    if markups_node is None:
        return None
    if markups_node.GetNumberOfControlPoints() < 1:
        raise InputError(f"The point list '{markups_node.GetName()}' has no point; place the anterior RV "
                         "insertion point in it, or select no point list.")
    ras = [0.0, 0.0, 0.0]
    markups_node.GetNthControlPointPositionWorld(0, ras)
    lps = LPS_TO_RAS[:3, :3] @ np.asarray(ras, dtype=np.float64)  # its own inverse
    return (float(lps[0]), float(lps[1]), float(lps[2]))


def slice_centre_ras(geometry: Geometry, slice_index: int, shape_yx: tuple[int, int]) -> np.ndarray:
    """RAS position (mm) of the centre of slice ``slice_index`` of an image on ``geometry``."""
    rows, cols = shape_yx
    ijk = np.array([(cols - 1) / 2.0, (rows - 1) / 2.0, float(slice_index), 1.0])
    return (ijk_to_ras(geometry) @ ijk)[:3]
