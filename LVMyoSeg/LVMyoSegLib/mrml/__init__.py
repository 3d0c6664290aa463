"""Cine and segmentation results <-> MRML nodes (volume sequences, segmentations, tables).

The only module of LVMyoSegLib that imports MRML classes. It uses ``import slicer`` for
the MRML classes and ``vtk`` for images and matrices, never Qt or ``slicer.util``, so it
runs inside 3D Slicer and with the ``slicer-core`` package alike (build the scene with
``slicer.vtkMRMLScene()`` there).

Conventions:
- MRML volumes carry an IJK-to-RAS matrix; :class:`~LVMyoSegLib.cine.Geometry` is LPS
  (ITK / DICOM): ``IJKToRAS = diag(-1, -1, 1, 1) @ Geometry.index_to_lps()``.
- A frame's vtkImageData stores voxels i-fastest, i.e. it is the numpy array ``[k, j, i]``.
- A cine is a vtkMRMLSequenceNode whose data nodes are vtkMRMLScalarVolumeNode (what the
  DICOM module and the Sequences module give for a cine); the n-th item is phase n.
- Results are sequences with the cine's index (name, unit, values), added to the cine's
  vtkMRMLSequenceBrowserNode, so that scrubbing phases shows matching frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..cine import Cine, Geometry
from ..errors import GeometryError, InputError, LabelError
from ..labels import BLOOD_POOL, MYOCARDIUM

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
GEOMETRY_TOLERANCE_MM = 1e-3

# Node reference roles and attributes set on a result segmentation sequence.
REF_CINE = "lvmyosegCine"
REF_MYOCARDIUM_PROBABILITY = "lvmyosegMyocardiumProbability"
REF_BLOOD_POOL_PROBABILITY = "lvmyosegBloodPoolProbability"
REF_VOLUMES_TABLE = "lvmyosegVolumesTable"
REF_THICKNESS_TABLE = "lvmyosegThicknessTable"
REF_RV_INSERTION = "lvmyosegRvInsertion"
REF_SLICES_TABLE = "lvmyosegSlicesTable"
REF_REVIEW_TABLE = "lvmyosegReviewTable"
ATTR_ROLE = "LVMyoSeg.Role"
ATTR_THRESHOLD = "LVMyoSeg.Threshold"
ATTR_THICKNESS_REFERENCE = "LVMyoSeg.ThicknessReference"  # "aha" or "relative"
ATTR_WITHHELD = "LVMyoSeg.FunctionWithheld"  # why the function values are withheld ("" if not)

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


@dataclass(frozen=True)
class ResultNodes:
    """Nodes created by :func:`add_results_to_scene` (all synchronised by ``browser``)."""

    browser: "slicer.vtkMRMLSequenceBrowserNode"
    myocardium_probability: "slicer.vtkMRMLSequenceNode"
    blood_pool_probability: "slicer.vtkMRMLSequenceNode"
    segmentation: "slicer.vtkMRMLSequenceNode"


# ---------------------------------------------------------------------------------------
# Geometry and arrays


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


def _to_vtk_matrix(matrix: np.ndarray) -> vtk.vtkMatrix4x4:
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


def _image_array(image, what: str) -> np.ndarray:
    """Copy of a single-component vtkImageData as numpy ``[k, j, i]``."""
    scalars = image.GetPointData().GetScalars() if image is not None else None
    if scalars is None:
        raise InputError(f"{what} holds no image data; load the image again.")
    if scalars.GetNumberOfComponents() != 1:
        raise InputError(f"{what} has {scalars.GetNumberOfComponents()} components per voxel; LVMyoSeg "
                         "needs a grey-level (single-component) cine.")
    nx, ny, nz = image.GetDimensions()
    return numpy_support.vtk_to_numpy(scalars).reshape(nz, ny, nx).copy()


def _image_data(array: np.ndarray, image=None):
    """vtkImageData (or the given subclass instance) holding ``array`` ``[k, j, i]``."""
    array = np.ascontiguousarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = image if image is not None else vtk.vtkImageData()
    nz, ny, nx = array.shape
    image.SetDimensions(nx, ny, nz)
    vtk_array = numpy_support.numpy_to_vtk(array.ravel(), deep=True,
                                           array_type=numpy_support.get_vtk_array_type(array.dtype))
    image.GetPointData().SetScalars(vtk_array)
    return image


def volume_array(volume_node) -> np.ndarray:
    """Voxels of a scalar volume node as numpy ``[k, j, i]`` (a copy)."""
    return _image_array(volume_node.GetImageData(), f"Volume node '{volume_node.GetName()}'")


def new_volume_node(array: np.ndarray, matrix_ijk_to_ras: np.ndarray, name: str = ""):
    """A vtkMRMLScalarVolumeNode (not in any scene) holding ``array`` ``[k, j, i]``."""
    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetName(name)
    node.SetIJKToRASMatrix(_to_vtk_matrix(matrix_ijk_to_ras))
    node.SetAndObserveImageData(_image_data(array))
    return node


def _add_node(scene, class_name: str, name: str):
    """Add a new node of ``class_name`` named ``name`` (made unique) to ``scene``."""
    name = scene.GenerateUniqueName(name)
    node = scene.AddNewNodeByClass(class_name, name) if scene.IsNodeClassRegistered(class_name) else None
    if node is None:  # e.g. vtkMRMLSequenceBrowserNode in a scene without the Sequences logic
        node = getattr(slicer, class_name)()
        node.SetName(name)
        scene.AddNode(node)
    return node


# ---------------------------------------------------------------------------------------
# Cine <-> volume sequence


def _data_nodes(sequence_node) -> list:
    return [sequence_node.GetNthDataNode(i) for i in range(sequence_node.GetNumberOfDataNodes())]


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
    nodes = _data_nodes(sequence_node)
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
    sequence = _add_node(scene, "vtkMRMLSequenceNode", name)
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
        browser = _add_node(scene, "vtkMRMLSequenceBrowserNode", f"{name} browser")
        browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    return sequence, browser


def find_browser_node(scene, sequence_node):
    """First sequence browser that plays ``sequence_node`` (as master or synchronised), or None."""
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode")):
        browser = scene.GetNthNodeByClass(i, "vtkMRMLSequenceBrowserNode")
        if browser.IsSynchronizedSequenceNodeID(sequence_node.GetID(), True):
            return browser
    return None


# ---------------------------------------------------------------------------------------
# Segmentations


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


def _oriented_image(array: np.ndarray, matrix_ijk_to_ras: np.ndarray):
    image = _image_data(array, slicer.vtkOrientedImageData())
    image.SetImageToWorldMatrix(_to_vtk_matrix(matrix_ijk_to_ras))
    return image


def _reference_image(matrix_ijk_to_ras: np.ndarray, shape_zyx: tuple[int, int, int]):
    return _oriented_image(np.zeros(shape_zyx, dtype=np.uint8), matrix_ijk_to_ras)


def _check_label_values(label_frame: np.ndarray, where: str) -> None:
    values = set(np.unique(label_frame).tolist())
    if not values <= {0, MYOCARDIUM, BLOOD_POOL}:
        raise LabelError(f"Label map for {where} holds values {sorted(values)}; only 0, "
                         f"{MYOCARDIUM} (LV myocardium) and {BLOOD_POOL} (LV blood pool) are allowed.")


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
    image = _oriented_image(label_frame.astype(np.uint8, copy=False), matrix_ijk_to_ras)
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
    array = _image_array(resampled, f"Segment '{segment.GetName()}' of {where}")
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
    segments overlap, the blood pool wins (as in :func:`LVMyoSegLib.labels.labels_from_masks`).
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
    nodes = _data_nodes(segmentation_sequence_node)
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


# ---------------------------------------------------------------------------------------
# Results


def _copy_index(source, target) -> None:
    target.SetIndexName(source.GetIndexName())
    target.SetIndexUnit(source.GetIndexUnit())
    target.SetIndexType(source.GetIndexType())


def _check_result_shapes(cine_sequence_node, probabilities: np.ndarray, label_map: np.ndarray) -> list:
    frames = _data_nodes(cine_sequence_node)
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
    _check_label_values(label_map, f"cine '{cine_sequence_node.GetName()}'")
    base = name or cine_sequence_node.GetName()
    myo_seq = _add_node(scene, "vtkMRMLSequenceNode", f"{base} myocardium probability")
    pool_seq = _add_node(scene, "vtkMRMLSequenceNode", f"{base} blood pool probability")
    seg_seq = _add_node(scene, "vtkMRMLSequenceNode", f"{base} LV segmentation")
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
        browser = _add_node(scene, "vtkMRMLSequenceBrowserNode", f"{base} browser")
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
    myo = np.stack([volume_array(n) for n in _data_nodes(myocardium_probability_node)])
    if blood_pool_probability_node is None:
        pool = np.zeros_like(myo)
    else:
        pool = np.stack([volume_array(n) for n in _data_nodes(blood_pool_probability_node)])
        if pool.shape != myo.shape:
            raise GeometryError(f"Probability sequences '{myocardium_probability_node.GetName()}' "
                                f"{myo.shape} and '{blood_pool_probability_node.GetName()}' {pool.shape} "
                                "differ in shape; they come from different runs.")
    return np.stack([myo, pool], axis=-1).astype(np.float32, copy=False)


def update_segmentations_from_probabilities(segmentation_sequence_node, myocardium_probability_node,
                                            threshold: float,
                                            blood_pool_probability_node=None) -> np.ndarray:
    """Re-derive every frame's segments from the probability sequences at ``threshold``.

    No network runs. The rule is :func:`LVMyoSegLib.segmentation.pipeline.labels_from_probabilities`.
    Replaces the LV segments of every frame (manual edits of them included). Returns the new
    label map ``[T, Z, Y, X]``.
    """
    from ..segmentation.pipeline import labels_from_probabilities

    seg_nodes = _data_nodes(segmentation_sequence_node)
    myo_nodes = _data_nodes(myocardium_probability_node)
    pool_nodes = _data_nodes(blood_pool_probability_node) if blood_pool_probability_node else None
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


# ---------------------------------------------------------------------------------------
# Volumes table


def volumes_table(scene, label_map: np.ndarray, geometry: Geometry, *,
                  trigger_times_ms: Sequence[float] | None = None, name: str = "LV volumes",
                  table_node=None, function=None):
    """vtkMRMLTableNode with one row per frame: time, LV cavity and myocardium volumes (mL).

    Volumes, EDV/ESV/SV/EF and LV mass come from
    :func:`LVMyoSegLib.analysis.cardiac_function.compute_cardiac_function` (pass its result as
    ``function`` when already computed); the global values are stored as table attributes
    ``LVMyoSeg.<name>``. Pass ``table_node`` to refill an existing table (threshold change).
    """
    from ..analysis.cardiac_function import MYOCARDIAL_DENSITY_G_PER_ML, compute_cardiac_function

    label_map = np.asarray(label_map)
    if function is None:
        function = compute_cardiac_function(label_map, geometry, trigger_times_ms)
    n = label_map.shape[0]
    times = (np.arange(n, dtype=np.float64) if trigger_times_ms is None
             else np.asarray(trigger_times_ms, dtype=np.float64))
    if times.shape != (n,):
        raise LabelError(f"{times.shape[0]} trigger times for {n} frames.")
    table = table_node if table_node is not None else _add_node(scene, "vtkMRMLTableNode", name)
    myocardium = np.asarray(function.myocardium_volume_ml, dtype=np.float64)
    columns = [
        ("frame", np.arange(n, dtype=np.float64), "", "Frame number (0-based)"),
        ("time", times, "ms", "Trigger time"),
        ("cavity_volume", function.blood_volume_ml, "mL",
         "LV cavity (blood pool, papillary muscles included) volume"),
        ("myocardium_volume", myocardium, "mL", "LV myocardium volume"),
        ("myocardium_mass", myocardium * MYOCARDIAL_DENSITY_G_PER_ML, "g",
         f"LV myocardium mass (volume x {MYOCARDIAL_DENSITY_G_PER_ML} g/mL)"),
    ]
    if function.slices is not None:
        columns.append(("counted_slices", [function.slices.counted_text(t) for t in range(n)], "",
                        "Slices counted in the volumes of this frame (base, atrium and outflow tract "
                        "excluded; reasons in the slices table)"))
    was_modifying = table.StartModify()
    table.RemoveAllColumns()
    for column_name, values, unit, description in columns:
        if isinstance(values, list) and values and isinstance(values[0], str):
            array = vtk.vtkStringArray()
            for v in values:
                array.InsertNextValue(v)
        else:
            array = vtk.vtkDoubleArray()
            for v in np.asarray(values, dtype=np.float64):
                array.InsertNextValue(float(v))
        array.SetName(column_name)
        table.AddColumn(array)
        table.SetColumnUnitLabel(column_name, unit)
        table.SetColumnDescription(column_name, description)
    table.SetAttribute(ATTR_ROLE, "volumes")
    for key, value in (("EDV_mL", function.edv_ml), ("ESV_mL", function.esv_ml), ("SV_mL", function.sv_ml),
                       ("EF_percent", function.ef_percent), ("LVMass_g", function.lv_mass_g),
                       ("EDFrame", function.ed_frame), ("ESFrame", function.es_frame)):
        table.SetAttribute(f"LVMyoSeg.{key}", f"{value:.6g}")
    table.SetAttribute(ATTR_WITHHELD, function.withheld or "")
    table.EndModify(was_modifying)
    return table


def slices_table(scene, function, qc: dict | None = None, *, name: str = "LV slices", table_node=None):
    """vtkMRMLTableNode with one row per frame and slice holding LV labels: whether it counts
    in the volumes (``counted``, 1/0: edit it and recompute to include or exclude a slice),
    the rule's own decision (``rule_counted``), the reason, the myocardial coverage of the
    blood pool, the slice's cavity and myocardium volumes and its QC score."""
    d = function.slices
    scores = {} if qc is None else {(r["frame"], r["slice"]): r["score"] for r in qc["slices"]}
    lv = (function.slice_blood_ml + function.slice_myocardium_ml) > 0
    rows = [(t, z) for t in range(lv.shape[0]) for z in range(lv.shape[1]) if lv[t, z] or d.by_user[t, z]]
    rule = d.counted ^ d.by_user  # what the rules alone decided
    columns = {
        "frame": [t for t, _ in rows],
        "slice": [z for _, z in rows],
        "counted": [int(d.counted[t, z]) for t, z in rows],
        "rule_counted": [int(rule[t, z]) for t, z in rows],
        "reason": [d.reasons[t][z] for t, z in rows],
        "coverage": [100.0 * d.coverage[t, z] for t, z in rows],
        "cavity_volume": [function.slice_blood_ml[t, z] for t, z in rows],
        "myocardium_volume": [function.slice_myocardium_ml[t, z] for t, z in rows],
        "qc_score": [scores.get((t, z), 0.0) for t, z in rows],
    }
    table = table_from_columns(scene, columns, name=name, table_node=table_node,
                               units={"coverage": "%", "cavity_volume": "mL", "myocardium_volume": "mL"})
    table.SetAttribute(ATTR_ROLE, "slices")
    return table


def slice_choices(table) -> dict[tuple[int, int], bool]:
    """The user's slice choices ``{(frame, slice): counted}`` from a :func:`slices_table`: the
    rows whose ``counted`` differs from the rule's decision."""
    vtable = table.GetTable()
    cols = {c: vtable.GetColumnByName(c) for c in ("frame", "slice", "counted", "rule_counted")}
    missing = [c for c, a in cols.items() if a is None]
    if missing:
        raise InputError(f"Table '{table.GetName()}' has no column(s) {missing}; it is not an LV slices "
                         "table. Recompute the cardiac function to rebuild it.")
    out = {}
    for i in range(vtable.GetNumberOfRows()):
        values = {c: a.GetVariantValue(i).ToDouble() for c, a in cols.items()}
        counted = values["counted"] >= 0.5
        if counted != (values["rule_counted"] >= 0.5):
            out[(int(values["frame"]), int(values["slice"]))] = counted
    return out


def review_table(scene, qc: dict, *, name: str = "LV review first", table_node=None):
    """vtkMRMLTableNode of QC's "review these frames first" list: rank, frame, slice, score, why."""
    rows = qc["review_first"] if qc else []
    columns = {"rank": [i + 1 for i in range(len(rows))], "frame": [r["frame"] for r in rows],
               "slice": [r["slice"] for r in rows], "score": [r["score"] for r in rows],
               "why": [r["why"] for r in rows]}
    table = table_from_columns(scene, columns, name=name, table_node=table_node)
    table.SetAttribute(ATTR_ROLE, "review")
    return table


def slice_centre_ras(geometry: Geometry, slice_index: int, shape_yx: tuple[int, int]) -> np.ndarray:
    """RAS position (mm) of the centre of slice ``slice_index`` of an image on ``geometry``."""
    rows, cols = shape_yx
    ijk = np.array([(cols - 1) / 2.0, (rows - 1) / 2.0, float(slice_index), 1.0])
    return (ijk_to_ras(geometry) @ ijk)[:3]


def jump_to_frame_and_slice(scene, browser, frame: int, ras: Sequence[float]) -> None:
    """Show phase ``frame`` in ``browser`` and move every slice view to ``ras`` (centred)."""
    n = browser.GetNumberOfItems()
    if not 0 <= frame < n:
        raise InputError(f"Frame {frame} is outside the {n} phases of browser '{browser.GetName()}'.")
    browser.SetSelectedItemNumber(int(frame))
    r, a, s = (float(v) for v in ras)
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, r, a, s, slicer.vtkMRMLSliceNode.CenteredJumpSlice)


def thickness_table(scene, function, *, name: str = "LV wall thickness", table_node=None):
    """vtkMRMLTableNode of wall thickness at ED and ES: one row per slice and sector.

    ``function`` is a :class:`~LVMyoSegLib.analysis.cardiac_function.CardiacFunction`. The "segment"
    column holds AHA segment numbers when it was computed with an RV insertion point, else
    "relative" (sectors counted from the image +column direction); the table attribute
    ``LVMyoSeg.ThicknessReference`` says which.
    """
    phase = {function.ed_frame: "ED", function.es_frame: "ES"}
    rows = [(s, sec) for s in function.thickness for sec in s.sectors]
    columns = {
        "phase": [phase[s.frame] for s, _ in rows],  # thickness is measured at ED and ES only
        "frame": [s.frame for s, _ in rows],
        "slice": [s.slice for s, _ in rows],
        "level": [s.level or "" for s, _ in rows],
        "sector": [sec.sector for _, sec in rows],
        "segment": [str(sec.aha_segment) if sec.aha_segment is not None else "relative" for _, sec in rows],
        "thickness_mean": [sec.mean_mm for _, sec in rows],
        "thickness_min": [sec.min_mm for _, sec in rows],
        "thickness_max": [sec.max_mm for _, sec in rows],
    }
    table = table_from_columns(scene, columns, name=name, table_node=table_node,
                               units={k: "mm" for k in ("thickness_mean", "thickness_min", "thickness_max")})
    table.SetAttribute(ATTR_ROLE, "thickness")
    table.SetAttribute(ATTR_THICKNESS_REFERENCE, function.thickness_reference)
    return table


# ---------------------------------------------------------------------------------------
# Generic result tables and bar charts (LV Myocardium Trainer)


def table_from_columns(scene, columns: dict, *, name: str = "LVMyoSeg table", units: dict | None = None,
                       table_node=None):
    """vtkMRMLTableNode holding ``columns`` (name -> equal-length values; str values -> a text column).

    Pass ``table_node`` to refill an existing table.
    """
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise InputError(f"Table '{name}' columns have different lengths {sorted(lengths)}.")
    table = table_node if table_node is not None else _add_node(scene, "vtkMRMLTableNode", name)
    was_modifying = table.StartModify()
    table.RemoveAllColumns()
    for column_name, values in columns.items():
        if any(isinstance(v, str) for v in values):
            array = vtk.vtkStringArray()
            for v in values:
                array.InsertNextValue(str(v))
        else:
            array = vtk.vtkDoubleArray()
            for v in values:
                array.InsertNextValue(float(v))
        array.SetName(column_name)
        table.AddColumn(array)
        if units and units.get(column_name):
            table.SetColumnUnitLabel(column_name, units[column_name])
    table.EndModify(was_modifying)
    return table


def bar_chart(scene, table, y_columns: Sequence[str], *, label_column: str, name: str, title: str,
              y_title: str, colors: Sequence[tuple[float, float, float]] | None = None):
    """vtkMRMLPlotChartNode with one bar series per column of ``table`` (x = row, labels from ``label_column``)."""
    chart = _add_node(scene, "vtkMRMLPlotChartNode", name)
    for i, column in enumerate(y_columns):
        if table.GetTable().GetColumnByName(column) is None:
            raise InputError(f"Table '{table.GetName()}' has no column '{column}' to plot.")
        series = _add_node(scene, "vtkMRMLPlotSeriesNode", f"{name} {column}")
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeBar)
        series.SetYColumnName(column)
        series.SetLabelColumnName(label_column)
        if colors:
            series.SetColor(*colors[i % len(colors)])
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    chart.SetTitle(title)
    chart.SetXAxisTitle(label_column)
    chart.SetYAxisTitle(y_title)
    return chart
