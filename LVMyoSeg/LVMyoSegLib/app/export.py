"""Scene segmentations as cases of an LVMyoSeg training dataset (both modules add cases this way).

A result of LV Myocardium Segmentation contributes the slices the user edited (or all, when
the user reviewed every frame); any other segmentation sequence contributes the slices where it
holds LV labels. MRML only (slicer-core runs it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import mrml
from ..errors import InputError, LabelError
from ..io.dataset import add_case
from ..labels import CHANNELS, Labels
from .results import edited_slices, result_nodes
from .retraining import known_from_label_map, unique_case_id


def drawn_labels(cine_sequence, segmentation_sequence):
    """(Cine, Labels) of a cine and a user-drawn segmentation sequence: slices holding any LV
    label count as labelled (both channels). Refuses a segmentation with nothing drawn."""
    cine = mrml.cine_from_sequence(cine_sequence)
    label_map = mrml.labels_from_segmentation_sequence(segmentation_sequence, cine)
    known = known_from_label_map(label_map)
    if not known.any():
        raise LabelError(f"Segmentation '{segmentation_sequence.GetName()}' holds no 'LV myocardium' or "
                         "'LV blood pool' voxel on any frame; draw or correct them first.")
    return cine, Labels(label_map, known, source=segmentation_sequence.GetName())


def export_result(segmentation_sequence, dataset_dir: Path, case_id: str | None = None,
                  include_unedited: bool = False, notes: str = "") -> Path:
    """Add a result of LV Myocardium Segmentation (its cine and current segmentation) as a case;
    the edited slices are marked labelled, every slice with ``include_unedited``. Returns the case folder."""
    cine_sequence = result_nodes(segmentation_sequence)[0]
    cine = mrml.cine_from_sequence(cine_sequence)
    labels = mrml.labels_from_segmentation_sequence(segmentation_sequence, cine)
    edited = edited_slices(segmentation_sequence)
    known2d = np.ones_like(edited) if include_unedited else edited
    if not known2d.any():
        raise LabelError(f"No slice of '{segmentation_sequence.GetName()}' was edited. Correct the "
                         "segmentation with the Segment Editor first, or export all frames as reviewed.")
    known = np.repeat(known2d[:, :, None], len(CHANNELS), axis=2)
    dataset_dir = Path(dataset_dir)
    case_id = case_id or unique_case_id(dataset_dir, cine_sequence.GetName())
    return add_case(dataset_dir, case_id, cine, Labels(labels, known, source=cine_sequence.GetName()),
                    source=f"3D Slicer: {cine_sequence.GetName()}",
                    edited_frames=np.argwhere(edited).tolist(), notes=notes)


def add_scene_case(dataset_dir: Path | None, segmentation_sequence, cine_sequence=None,
                   case_id: str | None = None, all_reviewed: bool = False) -> Path:
    """Add any scene segmentation sequence as a new case; returns the case folder.

    A result of LV Myocardium Segmentation goes through :func:`export_result`; any other
    segmentation needs ``cine_sequence`` and contributes the slices where it holds LV labels.
    """
    if dataset_dir is None:
        raise InputError("Pick a dataset folder first.")
    if segmentation_sequence is None:
        raise InputError("Select the segmentation sequence to add.")
    if mrml.result_nodes(segmentation_sequence)[0] is not None:
        return export_result(segmentation_sequence, Path(dataset_dir), case_id=case_id,
                             include_unedited=all_reviewed)
    if cine_sequence is None:
        raise InputError(f"'{segmentation_sequence.GetName()}' was not made by LV Myocardium Segmentation; "
                         "select the cine it belongs to.")
    cine, labels = drawn_labels(cine_sequence, segmentation_sequence)
    case_id = case_id or unique_case_id(Path(dataset_dir), cine_sequence.GetName())
    return add_case(Path(dataset_dir), case_id, cine, labels,
                    source=f"3D Slicer: {cine_sequence.GetName()} + {segmentation_sequence.GetName()}",
                    edited_frames=np.argwhere(labels.known[:, :, 0]).tolist())
