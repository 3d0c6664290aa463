"""A segmentation result in the scene: probability and segmentation sequences added beside
their cine (synchronised by its browser, recorded on the segmentation sequence), read back,
and re-derived at another threshold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import slicer

from ..errors import GeometryError, InputError
from ..labels import checked_label_map, labels_from_probabilities
from .geometry import volume_ijk_to_ras
from .nodes import (
    ATTR_ROLE,
    ATTR_THRESHOLD,
    REF_BLOOD_POOL_PROBABILITY,
    REF_CINE,
    REF_MYOCARDIUM_PROBABILITY,
    REF_VOLUMES_TABLE,
    add_node,
    data_nodes,
)
from .segmentations import fill_segmentation, segmentation_node_from_labels
from .sequences import find_browser_node
from .volumes import new_volume_node, volume_array


@dataclass(frozen=True)
class ResultNodes:
    """Nodes created by :func:`add_results_to_scene` (all synchronised by ``browser``)."""

    browser: "slicer.vtkMRMLSequenceBrowserNode"
    myocardium_probability: "slicer.vtkMRMLSequenceNode"
    blood_pool_probability: "slicer.vtkMRMLSequenceNode"
    segmentation: "slicer.vtkMRMLSequenceNode"


def _copy_index(source, target) -> None:
    target.SetIndexName(source.GetIndexName())
    target.SetIndexUnit(source.GetIndexUnit())
    target.SetIndexType(source.GetIndexType())


def _check_result_shapes(cine_sequence_node, probabilities: np.ndarray, label_map: np.ndarray) -> list:
    frames = data_nodes(cine_sequence_node)
    name = cine_sequence_node.GetName()
    if not frames or not all(f is not None and f.IsA("vtkMRMLScalarVolumeNode") for f in frames):
        raise InputError(f"Sequence '{name}' is not a volume sequence; results go with the cine they "
                         "were computed from.")
    nx, ny, nz = frames[0].GetImageData().GetDimensions()
    expected = (len(frames), nz, ny, nx)
    if probabilities.shape != expected + (2,) or label_map.shape != expected:
        raise GeometryError(f"Results of shape {probabilities.shape} (probabilities) and {label_map.shape} "
                            f"(labels) do not fit cine '{name}' of shape {expected} [T, Z, Y, X]; "
                            "they were computed from another cine.")
    return frames


def add_results_to_scene(scene, cine_sequence_node, probabilities: np.ndarray, label_map: np.ndarray,
                         browser_node=None, *, name: str | None = None,
                         threshold: float | None = None) -> ResultNodes:
    """Add probability and segmentation sequences for a cine, synchronised with its browser.

    Args:
        probabilities: float ``[T, Z, Y, X, 2]`` (myocardium, blood pool) on the cine grid.
        label_map: uint8 ``[T, Z, Y, X]`` (0 background, 1 myocardium, 2 blood pool).
        browser_node: the cine's sequence browser; found in the scene (or created) when None.
        name: base name of the new nodes (default: the cine's name).
        threshold: the threshold that made ``label_map``, recorded on the segmentation sequence.

    Every frame's segmentation and probability volume has the IJK-to-RAS matrix of the
    cine frame with the same index value. Changes to the segmentation proxy (Segment Editor)
    are saved into the sequence.
    """
    probabilities = np.asarray(probabilities)
    label_map = np.asarray(label_map)
    frames = _check_result_shapes(cine_sequence_node, probabilities, label_map)
    label_map = checked_label_map(label_map, f"Label map for cine '{cine_sequence_node.GetName()}'")
    base = name or cine_sequence_node.GetName()
    myo_seq = add_node(scene, "vtkMRMLSequenceNode", f"{base} myocardium probability")
    pool_seq = add_node(scene, "vtkMRMLSequenceNode", f"{base} blood pool probability")
    seg_seq = add_node(scene, "vtkMRMLSequenceNode", f"{base} LV segmentation")
    states = []
    for seq in (myo_seq, pool_seq, seg_seq):
        _copy_index(cine_sequence_node, seq)
        states.append((seq, seq.StartModify()))
    for t, frame in enumerate(frames):
        value = cine_sequence_node.GetNthIndexValue(t)
        matrix = volume_ijk_to_ras(frame)
        myo_seq.SetDataNodeAtValue(
            new_volume_node(probabilities[t, ..., 0].astype(np.float32), matrix, f"{base} myo p {t}"), value)
        pool_seq.SetDataNodeAtValue(
            new_volume_node(probabilities[t, ..., 1].astype(np.float32), matrix, f"{base} pool p {t}"), value)
        seg_seq.SetDataNodeAtValue(segmentation_node_from_labels(label_map[t], matrix, f"{base} seg {t}"), value)
    for seq, state in states:
        seq.EndModify(state)

    seg_seq.SetAttribute(ATTR_ROLE, "segmentation")
    if threshold is not None:
        seg_seq.SetAttribute(ATTR_THRESHOLD, f"{threshold:g}")
    seg_seq.SetNodeReferenceID(REF_CINE, cine_sequence_node.GetID())
    seg_seq.SetNodeReferenceID(REF_MYOCARDIUM_PROBABILITY, myo_seq.GetID())
    seg_seq.SetNodeReferenceID(REF_BLOOD_POOL_PROBABILITY, pool_seq.GetID())
    myo_seq.SetAttribute(ATTR_ROLE, "myocardium probability")
    pool_seq.SetAttribute(ATTR_ROLE, "blood pool probability")

    browser = browser_node or find_browser_node(scene, cine_sequence_node)
    if browser is None:
        browser = add_node(scene, "vtkMRMLSequenceBrowserNode", f"{base} browser")
        browser.SetAndObserveMasterSequenceNodeID(cine_sequence_node.GetID())
    elif not browser.IsSynchronizedSequenceNodeID(cine_sequence_node.GetID(), True):
        raise InputError(f"Sequence browser '{browser.GetName()}' does not play cine "
                         f"'{cine_sequence_node.GetName()}'; pick the cine's own browser.")
    for seq in (myo_seq, pool_seq, seg_seq):
        browser.AddSynchronizedSequenceNodeID(seq.GetID())
    browser.SetSaveChanges(seg_seq, True)
    return ResultNodes(browser, myo_seq, pool_seq, seg_seq)


def result_nodes(segmentation_sequence_node) -> tuple:
    """``(cine, myocardium probability, blood pool probability, volumes table)`` sequences/nodes
    recorded on a result segmentation sequence (None where absent)."""
    ref = segmentation_sequence_node.GetNodeReference
    return (ref(REF_CINE), ref(REF_MYOCARDIUM_PROBABILITY), ref(REF_BLOOD_POOL_PROBABILITY),
            ref(REF_VOLUMES_TABLE))


def probabilities_from_sequences(myocardium_probability_node, blood_pool_probability_node=None) -> np.ndarray:
    """Float32 ``[T, Z, Y, X, 2]`` probabilities (myocardium, blood pool) read from result sequences."""
    myo = np.stack([volume_array(n) for n in data_nodes(myocardium_probability_node)])
    if blood_pool_probability_node is None:
        pool = np.zeros_like(myo)
    else:
        pool = np.stack([volume_array(n) for n in data_nodes(blood_pool_probability_node)])
        if pool.shape != myo.shape:
            raise GeometryError(f"Probability sequences '{myocardium_probability_node.GetName()}' "
                                f"{myo.shape} and '{blood_pool_probability_node.GetName()}' {pool.shape} "
                                "differ in shape; they come from different runs.")
    return np.stack([myo, pool], axis=-1).astype(np.float32, copy=False)


def update_segmentations_from_probabilities(segmentation_sequence_node, myocardium_probability_node,
                                            threshold: float,
                                            blood_pool_probability_node=None) -> np.ndarray:
    """Re-derive every frame's segments from the probability sequences at ``threshold``.

    No network runs. The rule is :func:`LVMyoSegLib.labels.labels_from_probabilities`.
    Replaces the LV segments of every frame (manual edits of them included). Returns the new
    label map ``[T, Z, Y, X]``.
    """
    seg_nodes = data_nodes(segmentation_sequence_node)
    myo_nodes = data_nodes(myocardium_probability_node)
    pool_nodes = data_nodes(blood_pool_probability_node) if blood_pool_probability_node else None
    name = segmentation_sequence_node.GetName()
    if len(myo_nodes) != len(seg_nodes) or (pool_nodes is not None and len(pool_nodes) != len(seg_nodes)):
        raise GeometryError(f"Probability sequences ({len(myo_nodes)} frames) do not match segmentation "
                            f"sequence '{name}' ({len(seg_nodes)} frames); they come from different runs.")
    labels = []
    was_modifying = segmentation_sequence_node.StartModify()
    try:
        for t, seg_node in enumerate(seg_nodes):
            myo = volume_array(myo_nodes[t])
            pool = volume_array(pool_nodes[t]) if pool_nodes is not None else np.zeros_like(myo)
            frame_labels = labels_from_probabilities(np.stack([myo, pool], axis=-1), threshold)
            fill_segmentation(seg_node.GetSegmentation(), frame_labels, volume_ijk_to_ras(myo_nodes[t]))
            seg_node.Modified()
            labels.append(frame_labels)
        segmentation_sequence_node.SetAttribute(ATTR_THRESHOLD, f"{threshold:g}")
        segmentation_sequence_node.Modified()
    finally:
        segmentation_sequence_node.EndModify(was_modifying)
    return np.stack(labels)
