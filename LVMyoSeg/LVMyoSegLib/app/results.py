"""A segmentation result in the MRML scene: reading the background run's files into it, the
threshold, the cardiac-function tables (volumes, slices that count, QC review list, wall
thickness) and their summary, which sequences are cines. The review list's entries and the
jump to one are in :mod:`.review`.

MRML only (slicer-core runs it); no Qt and no ``slicer.util``. The scene is passed in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import mrml
from ..errors import GeometryError, InputError, LabelError, ModelError
from ..labels import labels_from_probabilities


def is_cine_sequence(node) -> bool:
    """Whether a sequence node can be segmented: two or more scalar volumes (not label maps),
    and not one of this module's own results."""
    return (node is not None and node.IsA("vtkMRMLSequenceNode") and node.GetNumberOfDataNodes() > 1
            and node.GetDataNodeClassName() == "vtkMRMLScalarVolumeNode" and not node.GetAttribute(mrml.ATTR_ROLE))


def sequences_that_are_not_cines(scene) -> list[str]:
    """Ids of the scene's sequence nodes an input selector should hide."""
    nodes = [scene.GetNthNodeByClass(i, "vtkMRMLSequenceNode")
             for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceNode"))]
    return [n.GetID() for n in nodes if not is_cine_sequence(n)]


def first_cine_sequence(scene):
    """The scene's first cine sequence, or None."""
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLSequenceNode")
        if is_cine_sequence(node):
            return node
    return None


def result_nodes(segmentation_sequence) -> tuple:
    """(cine, myocardium probability, blood-pool probability, volumes table) of a result; refuses others."""
    cine, myo, pool, table = mrml.result_nodes(segmentation_sequence)
    if cine is None or myo is None:
        raise InputError(f"'{segmentation_sequence.GetName()}' was not made by LV Myocardium Segmentation "
                         "(it has no cine or probability maps attached); select one of its results.")
    return cine, myo, pool, table


def result_threshold(segmentation_sequence) -> float | None:
    """The threshold a result was last derived with (None: not one of this module's results)."""
    value = segmentation_sequence.GetAttribute(mrml.ATTR_THRESHOLD) if segmentation_sequence else None
    return float(value) if value is not None else None


def read_outputs(out_dir: Path, cine) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities ``[T,Z,Y,X,2]`` float32, label map uint8) that the background run wrote,
    checked against the cine's grid."""
    from ..io.volume_files import read_volume_4d
    from ..segmentation.outputs import output_names

    names = output_names("nifti")  # what `lvmyoseg segment --format nifti` wrote
    volumes = {}
    for key in ("probabilities_myocardium", "probabilities_blood_pool", "labels"):
        name = names[key]
        path = Path(out_dir) / name
        if not path.is_file():
            raise ModelError(f"The segmentation process wrote no {name} into {out_dir}; see the log.")
        volume = read_volume_4d(path)
        if volume.array.shape != cine.frames.shape or not volume.geometry.matches(cine.geometry):
            raise GeometryError(f"{name} ({volume.array.shape}) is not on the cine's grid "
                                f"({cine.frames.shape}); the result cannot be shown on this cine.")
        volumes[key] = volume.array
    probabilities = np.stack([volumes["probabilities_myocardium"], volumes["probabilities_blood_pool"]],
                             axis=-1).astype(np.float32)
    return probabilities, volumes["labels"].astype(np.uint8)


def set_rv_insertion(segmentation_sequence, markups_node) -> None:
    """Record (or clear, with None) the RV insertion point list used for a result's wall thickness."""
    segmentation_sequence.SetNodeReferenceID(mrml.REF_RV_INSERTION, markups_node.GetID() if markups_node else None)


def update_function_tables(scene, segmentation_sequence, labels: np.ndarray | None = None):
    """(Re)compute a result's cardiac function and its tables: per-frame volumes, the slices
    table (which slices count per frame and why; the user's changes to its ``counted`` column are
    kept and applied), the QC "review first" table and the wall thickness (AHA segments when the
    result has an RV insertion point). Values QC or the rules withhold are stored with their
    reason (``mrml.ATTR_WITHHELD``). Returns (volumes table, function); raises
    :class:`LabelError` when nothing can be measured (e.g. no myocardium on any frame)."""
    from ..analysis.function_report import assess

    cine_sequence, myo, pool, table = result_nodes(segmentation_sequence)
    cine = mrml.cine_from_sequence(cine_sequence)
    if labels is None:
        labels = mrml.labels_from_segmentation_sequence(segmentation_sequence, cine)
    name = segmentation_sequence.GetName()
    rv_insertion = mrml.rv_insertion_lps(segmentation_sequence.GetNodeReference(mrml.REF_RV_INSERTION))
    slices = segmentation_sequence.GetNodeReference(mrml.REF_SLICES_TABLE)
    choices = mrml.slice_choices(slices) if slices is not None else None
    report = assess(labels, cine.geometry, cine.trigger_times_ms, rv_insertion=rv_insertion, include=choices,
                    probabilities=mrml.probabilities_from_sequences(myo, pool))
    if report.function is None:
        raise LabelError(f"No cardiac function for '{name}': {report.withheld}")
    function = report.function
    table = mrml.volumes_table(scene, function, name=f"{name} volumes", table_node=table)
    segmentation_sequence.SetNodeReferenceID(mrml.REF_VOLUMES_TABLE, table.GetID())
    slices = mrml.slices_table(scene, function, report.qc, name=f"{name} slices", table_node=slices)
    segmentation_sequence.SetNodeReferenceID(mrml.REF_SLICES_TABLE, slices.GetID())
    review = mrml.review_table(scene, report.qc, name=f"{name} review first",
                               table_node=segmentation_sequence.GetNodeReference(mrml.REF_REVIEW_TABLE))
    segmentation_sequence.SetNodeReferenceID(mrml.REF_REVIEW_TABLE, review.GetID())
    thickness = mrml.thickness_table(scene, function, name=f"{name} wall thickness",
                                     table_node=segmentation_sequence.GetNodeReference(mrml.REF_THICKNESS_TABLE))
    segmentation_sequence.SetNodeReferenceID(mrml.REF_THICKNESS_TABLE, thickness.GetID())
    return table, function


def function_summary(segmentation_sequence) -> str:
    """One-paragraph EDV/ESV/SV/EF/LV mass text from a result's volumes table, or why those
    values are withheld ("" before it has a table)."""
    table = mrml.result_nodes(segmentation_sequence)[3]
    if table is None or table.GetAttribute("LVMyoSeg.EDV_mL") is None:
        return ""
    withheld = table.GetAttribute(mrml.ATTR_WITHHELD)
    if withheld:
        return f"Cardiac function withheld: {withheld}. Per-frame volumes: table '{table.GetName()}'."

    def a(key: str) -> float:
        return float(table.GetAttribute(f"LVMyoSeg.{key}"))

    text = (f"EDV {a('EDV_mL'):.1f} mL (frame {int(a('EDFrame'))}), ESV {a('ESV_mL'):.1f} mL "
            f"(frame {int(a('ESFrame'))}), SV {a('SV_mL'):.1f} mL, EF {a('EF_percent'):.1f} %, "
            f"LV mass {a('LVMass_g'):.1f} g. Per-frame volumes: table '{table.GetName()}'.")
    thickness = segmentation_sequence.GetNodeReference(mrml.REF_THICKNESS_TABLE)
    if thickness is not None:
        layout = ("AHA segments" if thickness.GetAttribute(mrml.ATTR_THICKNESS_REFERENCE) == "aha"
                  else "sectors relative to the image (no RV insertion point)")
        text += f" Wall thickness by {layout}: table '{thickness.GetName()}'."
    slices = segmentation_sequence.GetNodeReference(mrml.REF_SLICES_TABLE)
    if slices is not None:
        text += (f" Slices counted per frame and why: table '{slices.GetName()}' (set 'counted' to 0 or 1, "
                 "then Recompute).")
    return text


def apply_threshold(scene, segmentation_sequence, threshold: float) -> np.ndarray:
    """Re-derive every frame's segments from the stored probabilities (no network run); returns the labels."""
    _, myo, pool, _ = result_nodes(segmentation_sequence)
    labels = mrml.update_segmentations_from_probabilities(segmentation_sequence, myo, threshold, pool)
    update_function_tables(scene, segmentation_sequence, labels)
    return labels


def edited_slices(segmentation_sequence) -> np.ndarray:
    """Bool ``[T, Z]``: slices whose LV labels differ from what the probabilities give at the
    result's threshold, i.e. the slices the user edited."""
    cine_sequence, myo, pool, _ = result_nodes(segmentation_sequence)
    cine = mrml.cine_from_sequence(cine_sequence)
    labels = mrml.labels_from_segmentation_sequence(segmentation_sequence, cine)
    threshold = result_threshold(segmentation_sequence) or 0.5
    derived = labels_from_probabilities(mrml.probabilities_from_sequences(myo, pool), threshold)
    return (labels != derived).any(axis=(2, 3))
