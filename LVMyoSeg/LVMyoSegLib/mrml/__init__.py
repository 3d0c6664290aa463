"""Cine and segmentation results <-> MRML nodes (volume sequences, segmentations, tables).

The only package of LVMyoSegLib that imports MRML classes. It uses ``import slicer`` for
the MRML classes and ``vtk`` for images and matrices, never Qt or ``slicer.util``, so it
runs inside 3D Slicer and with the ``slicer-core`` package alike (build the scene with
``slicer.vtkMRMLScene()`` there). Callers use ``from LVMyoSegLib import mrml`` and the names
below; the modules hold: :mod:`.geometry` (matrices), :mod:`.volumes` (voxel arrays),
:mod:`.sequences` (cines, browsers), :mod:`.segmentations` (LV segments), :mod:`.results`
(a result's sequences), :mod:`.tables` (tables and charts), :mod:`.nodes` (reference roles,
attributes).

Conventions:
- MRML volumes carry an IJK-to-RAS matrix; :class:`~LVMyoSegLib.cine.Geometry` is LPS
  (ITK / DICOM): ``IJKToRAS = diag(-1, -1, 1, 1) @ Geometry.index_to_lps()``.
- A frame's vtkImageData stores voxels i-fastest, i.e. it is the numpy array ``[k, j, i]``.
- A cine is a vtkMRMLSequenceNode whose data nodes are vtkMRMLScalarVolumeNode (what the
  DICOM module and the Sequences module give for a cine); the n-th item is phase n.
- Results are sequences with the cine's index (name, unit, values), added to the cine's
  vtkMRMLSequenceBrowserNode, so that scrubbing phases shows matching frames.
"""

from .geometry import (
    GEOMETRY_TOLERANCE_MM,
    LPS_TO_RAS,
    geometry_from_ijk_to_ras,
    ijk_to_ras,
    rv_insertion_lps,
    slice_centre_ras,
    volume_ijk_to_ras,
)
from .nodes import (
    ATTR_ROLE,
    ATTR_THICKNESS_REFERENCE,
    ATTR_THRESHOLD,
    ATTR_WITHHELD,
    REF_BLOOD_POOL_PROBABILITY,
    REF_CINE,
    REF_MYOCARDIUM_PROBABILITY,
    REF_REVIEW_TABLE,
    REF_RV_INSERTION,
    REF_SLICES_TABLE,
    REF_THICKNESS_TABLE,
    REF_VOLUMES_TABLE,
)
from .results import (
    ResultNodes,
    add_results_to_scene,
    probabilities_from_sequences,
    result_nodes,
    update_segmentations_from_probabilities,
)
from .segmentations import (
    BLOOD_POOL_SEGMENT,
    MYOCARDIUM_SEGMENT,
    SEGMENTS,
    SegmentSpec,
    fill_segmentation,
    labels_from_segmentation,
    labels_from_segmentation_sequence,
    segmentation_node_from_labels,
    terminology_entry,
)
from .sequences import (
    cine_from_sequence,
    cine_from_volume_nodes,
    find_browser_node,
    jump_to_frame_and_slice,
    sequence_from_cine,
)
from .tables import (
    bar_chart,
    review_table,
    slice_choices,
    slices_table,
    table_columns,
    table_from_columns,
    thickness_table,
    volumes_table,
)
from .volumes import new_volume_node, volume_array

__all__ = [
    "ATTR_ROLE", "ATTR_THICKNESS_REFERENCE", "ATTR_THRESHOLD", "ATTR_WITHHELD", "BLOOD_POOL_SEGMENT",
    "GEOMETRY_TOLERANCE_MM", "LPS_TO_RAS", "MYOCARDIUM_SEGMENT", "REF_BLOOD_POOL_PROBABILITY", "REF_CINE",
    "REF_MYOCARDIUM_PROBABILITY", "REF_REVIEW_TABLE", "REF_RV_INSERTION", "REF_SLICES_TABLE", "REF_THICKNESS_TABLE",
    "REF_VOLUMES_TABLE", "SEGMENTS", "ResultNodes", "SegmentSpec", "add_results_to_scene", "bar_chart",
    "cine_from_sequence", "cine_from_volume_nodes", "fill_segmentation", "find_browser_node",
    "geometry_from_ijk_to_ras", "ijk_to_ras", "jump_to_frame_and_slice", "labels_from_segmentation",
    "labels_from_segmentation_sequence", "new_volume_node", "probabilities_from_sequences", "result_nodes",
    "review_table", "rv_insertion_lps", "segmentation_node_from_labels", "sequence_from_cine", "slice_centre_ras",
    "slice_choices", "slices_table", "table_columns", "table_from_columns", "terminology_entry", "thickness_table",
    "update_segmentations_from_probabilities", "volume_array", "volume_ijk_to_ras", "volumes_table",
]
