"""The LV segments of a segmentation: their names, colours and terminology; one frame's label
map ``[k, j, i]`` (0/1/2) <-> the segments of a vtkSegmentation (resampled onto the cine grid
when drawn on another); a segmentation sequence -> label map ``[T, Z, Y, X]``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import slicer

from ..cine import Cine
from ..errors import LabelError
from ..labels import BLOOD_POOL, MYOCARDIUM
from .geometry import ijk_to_ras
from .nodes import data_nodes
from .volumes import image_array, oriented_image

# Terminology contexts of Slicer's Terminologies module (current serialisation format:
# context~category~type~typeModifier~anatomicContext~region~regionModifier, codes as
# scheme^value^meaning).
_TYPE_CONTEXT = "Segmentation category and type - DICOM master list"
_ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
_SCT_ANATOMICAL_STRUCTURE = ("SCT", "123037004", "Anatomical Structure")
_SCT_TISSUE = ("SCT", "85756007", "Tissue")
_SCT_MYOCARDIUM = ("SCT", "74281007", "Myocardium")
_SCT_BLOOD = ("SCT", "87612001", "Blood")
_SCT_LEFT_VENTRICLE = ("SCT", "87878005", "Left ventricle")


def terminology_entry(category: tuple[str, str, str], type_: tuple[str, str, str],
                      region: tuple[str, str, str] | None = None) -> str:
    """Serialised terminology entry, the string Slicer keeps in a segment's terminology tag."""
    code = "^".join
    return "~".join([_TYPE_CONTEXT, code(category), code(type_), "^^", _ANATOMIC_CONTEXT,
                     code(region) if region else "^^", "^^"])


@dataclass(frozen=True)
class SegmentSpec:
    """One output segment: its ID, display name, value in the label map, colour and terminology."""

    segment_id: str
    name: str
    label_value: int
    color: tuple[float, float, float]
    terminology: str


MYOCARDIUM_SEGMENT = SegmentSpec(
    "LV_myocardium", "LV myocardium", MYOCARDIUM, (152 / 255, 55 / 255, 13 / 255),
    terminology_entry(_SCT_ANATOMICAL_STRUCTURE, _SCT_MYOCARDIUM, _SCT_LEFT_VENTRICLE))
BLOOD_POOL_SEGMENT = SegmentSpec(
    "LV_blood_pool", "LV blood pool", BLOOD_POOL, (216 / 255, 101 / 255, 79 / 255),
    terminology_entry(_SCT_TISSUE, _SCT_BLOOD, _SCT_LEFT_VENTRICLE))
SEGMENTS: tuple[SegmentSpec, ...] = (MYOCARDIUM_SEGMENT, BLOOD_POOL_SEGMENT)


def _binary_labelmap_name() -> str:
    _ensure_converter_rules()
    return slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()


def _ensure_converter_rules() -> None:
    """Register the labelmap <-> surface conversion rules when nobody did.

    3D Slicer registers them at start-up (so this is a no-op there); a bare ``slicer-core``
    process has none, and segmentations then cannot even hold a binary labelmap.
    """
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if len(factory.GetConverterRules()) == 0:
        factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
        factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


def _reference_image(matrix_ijk_to_ras: np.ndarray, shape_zyx: tuple[int, int, int]):
    return oriented_image(np.zeros(shape_zyx, dtype=np.uint8), matrix_ijk_to_ras)


def fill_segmentation(segmentation, label_frame: np.ndarray, matrix_ijk_to_ras: np.ndarray) -> None:
    """Replace the LV segments of a vtkSegmentation with the labels of one frame ``[k, j, i]``.

    Both segments share one binary labelmap (values 1 and 2) on the frame's voxel grid, which
    is also set as the segmentation's reference geometry. Names, colours and terminology that a
    user gave the existing segments are kept; other segments are left alone.
    """
    labelmap = _binary_labelmap_name()
    set_source = getattr(segmentation, "SetSourceRepresentationName", None) or \
        segmentation.SetMasterRepresentationName
    set_source(labelmap)
    image = oriented_image(label_frame.astype(np.uint8, copy=False), matrix_ijk_to_ras)
    segmentation.SetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),
        slicer.vtkSegmentationConverter.SerializeImageGeometry(image))
    new_segments = []
    for spec in SEGMENTS:
        segment = slicer.vtkSegment()
        old_id = _find_segment_id(segmentation, spec)
        if old_id is not None:
            segment.DeepCopyMetadata(segmentation.GetSegment(old_id))
            segmentation.RemoveSegment(old_id)
        else:
            segment.SetName(spec.name)
            segment.SetColor(*spec.color)
            segment.SetTag(segment.GetTerminologyEntryTagName(), spec.terminology)
        segment.SetLabelValue(spec.label_value)
        segment.AddRepresentation(labelmap, image)
        new_segments.append((spec.segment_id, segment))
    for segment_id, segment in new_segments:
        segmentation.AddSegment(segment, segment_id)


def segmentation_node_from_labels(label_frame: np.ndarray, matrix_ijk_to_ras: np.ndarray, name: str = ""):
    """A vtkMRMLSegmentationNode (not in any scene) with the LV segments of one frame."""
    _ensure_converter_rules()  # before the segmentation exists: it copies the rules' parameters
    node = slicer.vtkMRMLSegmentationNode()
    node.SetName(name)
    fill_segmentation(node.GetSegmentation(), label_frame, matrix_ijk_to_ras)
    return node


def _find_segment_id(segmentation, spec: SegmentSpec) -> str | None:
    if segmentation.GetSegment(spec.segment_id) is not None:
        return spec.segment_id
    by_name = segmentation.GetSegmentIdBySegmentName(spec.name)
    return by_name or None


def _segment_mask(segmentation, segment_id: str, reference, where: str) -> np.ndarray:
    """Boolean ``[k, j, i]`` mask of one segment on the reference grid (nearest neighbour)."""
    labelmap = _binary_labelmap_name()
    segment = segmentation.GetSegment(segment_id)
    image = segment.GetRepresentation(labelmap)
    if image is None:  # source representation is not a labelmap: convert a copy
        copy = slicer.vtkSegmentation()
        copy.DeepCopy(segmentation)
        copy.CreateRepresentation(labelmap)
        segment = copy.GetSegment(segment_id)
        image = segment.GetRepresentation(labelmap)
        if image is None:
            raise LabelError(f"Segment '{segment.GetName()}' of {where} cannot be converted to a binary "
                             "labelmap; set the segmentation's source representation to binary labelmap "
                             "in the Segmentations module.")
    nz, ny, nx = (reference.GetDimensions()[2], reference.GetDimensions()[1],
                  reference.GetDimensions()[0])
    extent = image.GetExtent()
    if extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]:
        return np.zeros((nz, ny, nx), dtype=bool)  # empty segment
    resampled = slicer.vtkOrientedImageData()
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            image, reference, resampled, False, False):
        raise LabelError(f"Segment '{segment.GetName()}' of {where} could not be resampled onto the cine grid.")
    out_extent = resampled.GetExtent()
    array = image_array(resampled, f"Segment '{segment.GetName()}' of {where}")
    mask = np.zeros((nz, ny, nx), dtype=bool)
    # place the resampled extent into the reference extent (they normally coincide)
    ref = reference.GetExtent()
    lo = [max(out_extent[2 * a], ref[2 * a]) for a in range(3)]
    hi = [min(out_extent[2 * a + 1], ref[2 * a + 1]) for a in range(3)]
    if any(h < l for l, h in zip(lo, hi)):
        return mask
    src = array[lo[2] - out_extent[4]:hi[2] - out_extent[4] + 1,
                lo[1] - out_extent[2]:hi[1] - out_extent[2] + 1,
                lo[0] - out_extent[0]:hi[0] - out_extent[0] + 1]
    mask[lo[2] - ref[4]:hi[2] - ref[4] + 1, lo[1] - ref[2]:hi[1] - ref[2] + 1,
         lo[0] - ref[0]:hi[0] - ref[0] + 1] = src == segment.GetLabelValue()
    return mask


def labels_from_segmentation(segmentation, matrix_ijk_to_ras: np.ndarray, shape_zyx: tuple[int, int, int],
                             where: str = "the segmentation") -> np.ndarray:
    """Label map ``[k, j, i]`` uint8 of the LV segments of a vtkSegmentation, on the given grid.

    Segments are found by ID, else by name; a missing segment counts as empty. Where the
    segments overlap, the blood pool wins.
    """
    reference = _reference_image(matrix_ijk_to_ras, shape_zyx)
    label_map = np.zeros(shape_zyx, dtype=np.uint8)
    for spec in SEGMENTS:  # myocardium first, so the blood pool overwrites overlaps
        segment_id = _find_segment_id(segmentation, spec)
        if segment_id is not None:
            label_map[_segment_mask(segmentation, segment_id, reference, where)] = spec.label_value
    return label_map


def labels_from_segmentation_sequence(segmentation_sequence_node, cine: Cine) -> np.ndarray:
    """Label map ``[T, Z, Y, X]`` uint8 from a segmentation sequence, on the cine's grid.

    Reads what the sequence holds now (user edits included); segments whose labelmap has
    another extent or grid are resampled (nearest neighbour) onto the cine grid.
    """
    name = segmentation_sequence_node.GetName()
    nodes = data_nodes(segmentation_sequence_node)
    if len(nodes) != cine.n_phases:
        raise LabelError(f"Segmentation sequence '{name}' has {len(nodes)} frames but the cine "
                         f"({cine.source}) has {cine.n_phases} phases; export labels for the same cine.")
    matrix = ijk_to_ras(cine.geometry)
    shape = cine.frames.shape[1:]
    out = np.zeros(cine.frames.shape, dtype=np.uint8)
    for t, node in enumerate(nodes):
        if node is None or not node.IsA("vtkMRMLSegmentationNode"):
            raise LabelError(f"Item {t} of sequence '{name}' is not a segmentation; pick the "
                             "segmentation sequence that LVMyoSeg created.")
        out[t] = labels_from_segmentation(node.GetSegmentation(), matrix, shape,
                                          where=f"'{name}' frame {t}")
    return out
