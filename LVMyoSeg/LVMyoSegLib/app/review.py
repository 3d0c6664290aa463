"""A result's quality-control list in the scene: the "review these frames first" entries (from
the review table that :func:`~LVMyoSegLib.app.results.update_function_tables` writes) and the
jump to one of them: the sequence browser to its phase, the slice views onto its slice.

MRML only (slicer-core runs it); no Qt and no ``slicer.util``. The scene is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import mrml
from ..errors import InputError
from .results import result_nodes


@dataclass(frozen=True)
class ReviewItem:
    """One entry of the list, worst first: the frame (phase) and slice, and its line of text."""

    frame: int
    slice: int
    text: str


def review_items(segmentation_sequence) -> list[ReviewItem]:
    """The result's "review these frames first" entries, worst first ([] before it has a review table)."""
    review = segmentation_sequence.GetNodeReference(mrml.REF_REVIEW_TABLE) if segmentation_sequence else None
    if review is None:
        return []
    columns = mrml.table_columns(review, ("frame", "slice", "score", "why"), "review")
    items = []
    for i in range(review.GetTable().GetNumberOfRows()):
        frame = columns["frame"].GetVariantValue(i).ToInt()
        slice_index = columns["slice"].GetVariantValue(i).ToInt()
        score = columns["score"].GetVariantValue(i).ToDouble()
        why = columns["why"].GetVariantValue(i).ToString()
        items.append(ReviewItem(frame, slice_index, f"frame {frame}, slice {slice_index}: score {score:.2f} ({why})"))
    return items


def jump_to(scene, segmentation_sequence, frame: int, slice_index: int) -> None:
    """Show phase ``frame`` in the browser that plays the result and centre every slice view on
    slice ``slice_index`` of its cine."""
    cine_sequence = result_nodes(segmentation_sequence)[0]
    browser = mrml.find_browser_node(scene, segmentation_sequence)
    if browser is None:
        raise InputError(f"No sequence browser plays '{segmentation_sequence.GetName()}'; add it to the cine's "
                         "browser in the Sequences module.")
    cine = mrml.cine_from_sequence(cine_sequence)
    n_slices = cine.frames.shape[1]
    if not 0 <= slice_index < n_slices:
        raise InputError(f"Slice {slice_index} is outside the {n_slices} slices of '{cine_sequence.GetName()}'.")
    ras = mrml.slice_centre_ras(cine.geometry, slice_index, cine.frames.shape[2:])
    mrml.jump_to_frame_and_slice(scene, browser, frame, ras)
