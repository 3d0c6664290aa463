"""Cine <-> volume sequence (one scalar volume node per phase), the sequence browser that plays
one, and the jump of a browser and the slice views to a phase and a position."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import slicer

from ..cine import Cine
from ..errors import GeometryError, InputError
from .geometry import GEOMETRY_TOLERANCE_MM, geometry_from_ijk_to_ras, ijk_to_ras, volume_ijk_to_ras
from .nodes import add_node, data_nodes
from .volumes import new_volume_node, volume_array


def _index_times_ms(sequence_node) -> np.ndarray | None:
    """Trigger times from a numeric time index (ms or s), else None."""
    if sequence_node.GetIndexType() != slicer.vtkMRMLSequenceNode.NumericIndex:
        return None
    scale = {"ms": 1.0, "msec": 1.0, "s": 1000.0, "sec": 1000.0, "": 1.0}.get(
        (sequence_node.GetIndexUnit() or "").strip().lower())
    if scale is None:  # e.g. a spatial index in mm: not a time
        return None
    try:
        values = [float(sequence_node.GetNthIndexValue(i))
                  for i in range(sequence_node.GetNumberOfDataNodes())]
    except ValueError:
        return None
    times = np.asarray(values) * scale
    return times if np.all(np.isfinite(times)) else None


def cine_from_volume_nodes(volume_nodes: Sequence, trigger_times_ms: Sequence[float] | None = None,
                           source: str = "") -> Cine:
    """:class:`Cine` from one scalar volume node per phase (all on one voxel grid)."""
    if len(volume_nodes) == 0:
        raise InputError(f"No volumes given{f' ({source})' if source else ''}; a cine needs one volume "
                         "per cardiac phase.")
    frames, matrix0 = [], None
    for t, node in enumerate(volume_nodes):
        if node is None or not node.IsA("vtkMRMLScalarVolumeNode"):
            kind = node.GetClassName() if node is not None else "nothing"
            raise InputError(f"Phase {t} of {source or 'the cine'} is a {kind}, not a scalar volume. "
                             "Select a volume sequence (a cine loaded from DICOM or a 4D file).")
        matrix = volume_ijk_to_ras(node)
        frame = volume_array(node)
        if matrix0 is None:
            matrix0, shape0 = matrix, frame.shape
        elif frame.shape != shape0 or not np.allclose(matrix, matrix0, atol=GEOMETRY_TOLERANCE_MM, rtol=0):
            raise GeometryError(f"Phase {t} ('{node.GetName()}') of {source or 'the cine'} has shape "
                                f"{frame.shape[::-1]} / IJK-to-RAS {np.round(matrix, 3).tolist()} but phase 0 "
                                f"has {shape0[::-1]} / {np.round(matrix0, 3).tolist()}; every phase of a "
                                "cine must share one voxel grid. Resample the phases onto one grid.")
        frames.append(frame)
    times = (np.arange(len(frames), dtype=np.float64) if trigger_times_ms is None
             else np.asarray(trigger_times_ms, dtype=np.float64))
    return Cine(np.stack(frames), geometry_from_ijk_to_ras(matrix0), times, source=source)


def cine_from_sequence(sequence_node) -> Cine:
    """:class:`Cine` from a vtkMRMLSequenceNode of scalar volumes (one per phase).

    Trigger times come from the sequence index when it is a numeric time (ms or s);
    otherwise they are the frame numbers.
    """
    name = sequence_node.GetName()
    nodes = data_nodes(sequence_node)
    if not nodes:
        raise InputError(f"Sequence '{name}' is empty; load the cine (all phases) into it first.")
    return cine_from_volume_nodes(nodes, _index_times_ms(sequence_node), source=name)


def _index_values(times_ms: np.ndarray) -> list[str] | None:
    values = [f"{t:.6g}" for t in times_ms]
    return values if len(set(values)) == len(values) else None


def sequence_from_cine(scene, cine: Cine, name: str, *, add_browser: bool = True) -> tuple:
    """Add ``cine`` to ``scene`` as a volume sequence (+ a browser node); returns ``(sequence, browser)``.

    The index is the trigger time in ms; when trigger times repeat it is the frame number.
    ``browser`` is None when ``add_browser`` is False.
    """
    sequence = add_node(scene, "vtkMRMLSequenceNode", name)
    values = _index_values(cine.trigger_times_ms)
    if values is None:
        values, index_name, unit = [str(t) for t in range(cine.n_phases)], "frame", ""
    else:
        index_name, unit = "time", "ms"
    sequence.SetIndexName(index_name)
    sequence.SetIndexUnit(unit)
    sequence.SetIndexType(slicer.vtkMRMLSequenceNode.NumericIndex)
    matrix = ijk_to_ras(cine.geometry)
    was_modifying = sequence.StartModify()
    for t in range(cine.n_phases):
        sequence.SetDataNodeAtValue(new_volume_node(cine.frames[t], matrix, f"{name} {t}"), values[t])
    sequence.EndModify(was_modifying)
    browser = None
    if add_browser:
        browser = add_node(scene, "vtkMRMLSequenceBrowserNode", f"{name} browser")
        browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    return sequence, browser


def find_browser_node(scene, sequence_node):
    """First sequence browser that plays ``sequence_node`` (as master or synchronised), or None."""
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode")):
        browser = scene.GetNthNodeByClass(i, "vtkMRMLSequenceBrowserNode")
        if browser.IsSynchronizedSequenceNodeID(sequence_node.GetID(), True):
            return browser
    return None


def jump_to_frame_and_slice(scene, browser, frame: int, ras: Sequence[float]) -> None:
    """Show phase ``frame`` in ``browser`` and move every slice view to ``ras`` (centred)."""
    n = browser.GetNumberOfItems()
    if not 0 <= frame < n:
        raise InputError(f"Frame {frame} is outside the {n} phases of browser '{browser.GetName()}'.")
    browser.SetSelectedItemNumber(int(frame))
    r, a, s = (float(v) for v in ras)
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, r, a, s, slicer.vtkMRMLSliceNode.CenteredJumpSlice)
