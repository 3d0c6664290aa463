"""LVMyoSegLib.mrml against the real MRML library of the slicer-core package.

Each test gets its own scene (the ``scene`` fixture of conftest.py) with the Sequences logic
attached, as 3D Slicer has it, so sequence browsers update their proxy nodes and save
proxy edits back into sequences exactly as in the application.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip(
    "slicer", reason="the MRML library is missing: install the slicer-core package (pip install '.[mrml]')")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package has no MRML classes (need slicer-core)", allow_module_level=True)

import pydicom  # noqa: E402
import vtk  # noqa: E402
from scipy import ndimage  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

from LVMyoSegLib import mrml  # noqa: E402
from LVMyoSegLib.analysis.cardiac_function import compute_cardiac_function  # noqa: E402
from LVMyoSegLib.cine import Cine, Geometry  # noqa: E402
from LVMyoSegLib.errors import GeometryError, InputError, LabelError  # noqa: E402
from LVMyoSegLib.io.sunnybrook import cardiac_phases  # noqa: E402
from LVMyoSegLib.labels import BLOOD_POOL, MYOCARDIUM  # noqa: E402
from LVMyoSegLib.mrml.geometry import to_vtk_matrix  # noqa: E402
from LVMyoSegLib.mrml.volumes import oriented_image  # noqa: E402

pytestmark = pytest.mark.mrml
BINARY = "Binary labelmap"


def _probabilities(label_map: np.ndarray) -> np.ndarray:
    """Smooth [T, Z, Y, X, 2] maps made from a label map (0.9 inside, blurred edges)."""
    out = np.zeros(label_map.shape + (2,), dtype=np.float32)
    for c, value in enumerate((MYOCARDIUM, BLOOD_POOL)):
        out[..., c] = ndimage.gaussian_filter((label_map == value).astype(np.float32) * 0.9,
                                              sigma=(0, 0, 1.0, 1.0))
    return out


def _matrix(node) -> np.ndarray:
    return mrml.volume_ijk_to_ras(node)


def _image_to_world(image) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def _view(image) -> np.ndarray:
    """Writable numpy view [k, j, i] of a vtkImageData's scalars."""
    nx, ny, nz = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(nz, ny, nx)


def _small_cine(t: int = 4, shape=(3, 20, 24), geometry: Geometry | None = None) -> Cine:
    rng = np.random.default_rng(7)
    geometry = geometry or Geometry((1.25, 1.5, 6.0), (-10.0, 20.0, 5.0),
                                    np.array([[0.0, 0.6, 0.8], [1.0, 0.0, 0.0], [0.0, 0.8, -0.6]]))
    return Cine(rng.normal(100, 20, (t,) + shape).astype(np.float32), geometry,
                np.arange(t) * 40.0 + 5.0, source="synthetic test cine")


# ---------------------------------------------------------------------------------------


def test_cine_round_trip_real_study_and_ras_from_dicom_headers(scene, study):
    dicom, _ = study
    cine = dicom.cine
    seq, browser = mrml.sequence_from_cine(scene, cine, "SCD0000101")
    assert seq.GetNumberOfDataNodes() == cine.n_phases == 20
    assert (seq.GetIndexName(), seq.GetIndexUnit()) == ("time", "ms")
    assert browser.GetMasterSequenceNode() is seq

    # IJK-to-RAS checked against the DICOM header of the first file, read independently
    ds = pydicom.dcmread(dicom.files[0][0], stop_before_pixels=True)
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    row_sp, col_sp = (float(v) for v in ds.PixelSpacing)
    to_ras = np.array([-1.0, -1.0, 1.0])
    m = _matrix(seq.GetNthDataNode(0))
    np.testing.assert_allclose(m[:3, 3], to_ras * np.array(ds.ImagePositionPatient, dtype=float), atol=1e-4)
    np.testing.assert_allclose(m[:3, 0], to_ras * iop[:3] * col_sp, atol=1e-5)
    np.testing.assert_allclose(m[:3, 1], to_ras * iop[3:] * row_sp, atol=1e-5)
    ds_z1 = pydicom.dcmread(dicom.files[0][1], stop_before_pixels=True)  # next slice position
    np.testing.assert_allclose(m[:3, 3] + m[:3, 2], to_ras * np.array(ds_z1.ImagePositionPatient, float),
                               atol=0.05)

    back = mrml.cine_from_sequence(seq)
    assert np.array_equal(back.frames, cine.frames)
    assert back.geometry.matches(cine.geometry, tol_mm=1e-4)
    np.testing.assert_allclose(back.trigger_times_ms, cine.trigger_times_ms, rtol=1e-5)
    # the proxy (what the views show) is the selected phase
    browser.SetSelectedItemNumber(7)
    assert np.array_equal(mrml.volume_array(browser.GetProxyNode(seq)), cine.frames[7])


def test_results_on_input_grid_and_synchronised(scene, study):
    dicom, labels = study
    cine = dicom.cine
    cine_seq, browser = mrml.sequence_from_cine(scene, cine, "cine")
    probabilities = _probabilities(labels.label_map)
    res = mrml.add_results_to_scene(scene, cine_seq, probabilities, labels.label_map, threshold=0.5)

    assert res.browser is browser
    for seq in (res.segmentation, res.myocardium_probability, res.blood_pool_probability):
        assert browser.IsSynchronizedSequenceNodeID(seq.GetID(), False)
        assert [seq.GetNthIndexValue(i) for i in range(20)] == [cine_seq.GetNthIndexValue(i) for i in range(20)]
    assert browser.GetSaveChanges(res.segmentation) and not browser.GetSaveChanges(res.myocardium_probability)
    assert mrml.result_nodes(res.segmentation)[:3] == (cine_seq, res.myocardium_probability,
                                                       res.blood_pool_probability)

    for t in range(cine.n_phases):
        ijk = _matrix(cine_seq.GetNthDataNode(t))
        segmentation = res.segmentation.GetNthDataNode(t).GetSegmentation()
        assert segmentation.GetNumberOfSegments() == 2
        for spec in mrml.SEGMENTS:
            image = segmentation.GetSegment(spec.segment_id).GetRepresentation(BINARY)
            np.testing.assert_allclose(_image_to_world(image), ijk, atol=1e-9)
        reference = segmentation.GetConversionParameter(
            slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
        expected = slicer.vtkSegmentationConverter.SerializeImageGeometry(
            to_vtk_matrix(ijk), [0, 255, 0, 255, 0, cine.n_slices - 1])
        assert reference == expected
        for prob in (res.myocardium_probability, res.blood_pool_probability):
            np.testing.assert_allclose(_matrix(prob.GetNthDataNode(t)), ijk, atol=1e-9)

    assert np.array_equal(mrml.labels_from_segmentation_sequence(res.segmentation, cine), labels.label_map)

    ed, es = cardiac_phases(labels)
    for frame in (ed, es):  # scrubbing the browser shows matching frames everywhere
        browser.SetSelectedItemNumber(frame)
        assert np.array_equal(mrml.volume_array(browser.GetProxyNode(cine_seq)), cine.frames[frame])
        proxy_seg = browser.GetProxyNode(res.segmentation)
        shown = mrml.labels_from_segmentation(proxy_seg.GetSegmentation(), mrml.ijk_to_ras(cine.geometry),
                                              cine.frames.shape[1:])
        assert np.array_equal(shown, labels.label_map[frame])
        assert np.array_equal(mrml.volume_array(browser.GetProxyNode(res.myocardium_probability)),
                              probabilities[frame, ..., 0])
    assert labels.label_map[ed].any() and labels.label_map[es].any()


def test_segments_have_names_colours_and_slicer_terminology(scene):
    cine = _small_cine()
    seq, _ = mrml.sequence_from_cine(scene, cine, "c")
    lm = np.zeros(cine.frames.shape, np.uint8)
    lm[:, 1, 5:15, 5:15] = MYOCARDIUM
    lm[:, 1, 8:12, 8:12] = BLOOD_POOL
    res = mrml.add_results_to_scene(scene, seq, _probabilities(lm), lm)
    segmentation = res.segmentation.GetNthDataNode(2).GetSegmentation()
    assert segmentation.GetNumberOfLayers() == 1  # both segments share one labelmap (values 1, 2)
    logic = slicer.vtkSlicerTerminologiesModuleLogic
    codes = {"LV_myocardium": ("123037004", "74281007", "87878005"),
             "LV_blood_pool": ("85756007", "87612001", "87878005")}
    for spec in mrml.SEGMENTS:
        segment = segmentation.GetSegment(spec.segment_id)
        assert segment.GetName() == spec.name and segment.GetLabelValue() == spec.label_value
        np.testing.assert_allclose(segment.GetColor(), spec.color)
        tag = segment.GetTerminology()
        entry = slicer.vtkSlicerTerminologyEntry()
        assert logic.DeserializeTerminologyEntry(tag, entry)
        assert (entry.GetCategoryObject().GetCodeValue(), entry.GetTypeObject().GetCodeValue(),
                entry.GetRegionObject().GetCodeValue()) == codes[spec.segment_id]
        assert logic.SerializeTerminologyEntry(entry) == tag  # Slicer writes the same string


def test_user_edits_come_back_in_exported_labels(scene):
    cine = _small_cine()
    seq, browser = mrml.sequence_from_cine(scene, cine, "c")
    lm = np.zeros(cine.frames.shape, np.uint8)
    lm[:, 1, 5:15, 5:15] = MYOCARDIUM
    lm[:, 1, 8:12, 8:12] = BLOOD_POOL
    res = mrml.add_results_to_scene(scene, seq, _probabilities(lm), lm)

    # 1. voxels changed directly in a frame's binary labelmap (shared by both segments)
    segmentation = res.segmentation.GetNthDataNode(1).GetSegmentation()
    image = segmentation.GetSegment("LV_myocardium").GetRepresentation(BINARY)
    _view(image)[2, 0:3, 0:4] = MYOCARDIUM
    image.Modified()
    expected = lm.copy()
    expected[1, 2, 0:3, 0:4] = MYOCARDIUM

    # 2. the Segment Editor path: Slicer's Segment Editor logic paints a cropped patch into
    #    the proxy of frame 3 and erases part of the myocardium; the Sequences logic saves
    #    the edited proxy into the sequence ("save changes" is on for the segmentation)
    browser.SetSelectedItemNumber(3)
    proxy = browser.GetProxyNode(res.segmentation)
    editor = slicer.vtkSlicerSegmentEditorLogic()
    editor.SetMRMLScene(scene)
    editor_node = slicer.vtkMRMLSegmentEditorNode()
    scene.AddNode(editor_node)
    editor.SetSegmentEditorNode(editor_node)
    editor.SetSegmentationNode(proxy)
    editor.SetSourceVolumeNode(browser.GetProxyNode(seq))
    m = to_vtk_matrix(mrml.ijk_to_ras(cine.geometry))
    for extent, segment_id, mode in (((2, 6, 3, 9, 0, 0), "LV_blood_pool", editor.ModificationModeAdd),
                                     ((5, 14, 5, 6, 1, 1), "LV_myocardium", editor.ModificationModeRemove)):
        patch = slicer.vtkOrientedImageData()
        patch.SetExtent(*extent)
        patch.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        patch.GetPointData().GetScalars().Fill(1)
        patch.SetImageToWorldMatrix(m)
        editor.ModifySegmentByLabelmap(proxy, segment_id, patch, mode, False, True)
    expected[3, 0, 3:10, 2:7] = BLOOD_POOL
    expected[3, 1, 5:7, 5:15] = 0

    browser.SetSelectedItemNumber(0)  # moving on must not lose the edit
    assert np.array_equal(mrml.labels_from_segmentation_sequence(res.segmentation, cine), expected)


def test_labelmap_on_another_grid_is_resampled_onto_the_cine(scene):
    cine = _small_cine()
    seq, _ = mrml.sequence_from_cine(scene, cine, "c")
    lm = np.zeros(cine.frames.shape, np.uint8)
    res = mrml.add_results_to_scene(scene, seq, _probabilities(lm), lm)
    segmentation = res.segmentation.GetNthDataNode(0).GetSegmentation()
    # a segment drawn on a 2x finer in-plane grid with the same origin: fine voxel (2i, 2j)
    # sits on cine voxel (i, j); fine block [8..16] x [4..10] covers cine voxels [4..8] x [2..5]
    fine = np.zeros((cine.n_slices, 40, 48), np.uint8)
    fine[1, 4:11, 8:17] = 1
    fine_matrix = mrml.ijk_to_ras(cine.geometry) @ np.diag([0.5, 0.5, 1.0, 1.0])
    image = oriented_image(fine, fine_matrix)
    segmentation.RemoveSegment("LV_myocardium")
    segment = slicer.vtkSegment()
    segment.SetName("LV myocardium")
    segment.SetLabelValue(1)
    segment.AddRepresentation(BINARY, image)
    segmentation.AddSegment(segment, "renamed_id")  # found by name when the ID differs
    out = mrml.labels_from_segmentation_sequence(res.segmentation, cine)
    expected = np.zeros(cine.frames.shape, np.uint8)
    expected[0, 1, 2:6, 4:9] = MYOCARDIUM
    assert np.array_equal(out, expected)


def test_threshold_rederives_masks_without_network(scene):
    cine = _small_cine(t=3)
    seq, browser = mrml.sequence_from_cine(scene, cine, "c")
    t, z, y, x = cine.frames.shape
    myo = np.broadcast_to(np.linspace(0.0, 1.0, x, dtype=np.float32), (t, z, y, x))
    pool = np.broadcast_to(np.linspace(1.0, 0.0, y, dtype=np.float32)[:, None], (t, z, y, x)) * 0.8
    probabilities = np.stack([myo, pool], axis=-1).astype(np.float32)
    lm = np.zeros(cine.frames.shape, np.uint8)
    res = mrml.add_results_to_scene(scene, seq, probabilities, lm)
    # a colour the user chose survives re-thresholding
    res.segmentation.GetNthDataNode(0).GetSegmentation().GetSegment("LV_myocardium").SetColor(0.0, 1.0, 0.0)
    browser.SetSelectedItemNumber(1)
    for threshold in (0.3, 0.7):
        got = mrml.update_segmentations_from_probabilities(
            res.segmentation, res.myocardium_probability, threshold, res.blood_pool_probability)
        expected = np.zeros(cine.frames.shape, np.uint8)
        expected[(pool >= threshold) & (pool > myo)] = BLOOD_POOL
        expected[(myo >= threshold) & (myo >= pool)] = MYOCARDIUM
        assert 0 < np.count_nonzero(expected == MYOCARDIUM) < expected.size
        assert np.array_equal(got, expected)
        assert np.array_equal(mrml.labels_from_segmentation_sequence(res.segmentation, cine), expected)
        shown = mrml.labels_from_segmentation(browser.GetProxyNode(res.segmentation).GetSegmentation(),
                                              mrml.ijk_to_ras(cine.geometry), cine.frames.shape[1:])
        assert np.array_equal(shown, expected[1])  # the displayed frame follows
        assert res.segmentation.GetAttribute(mrml.ATTR_THRESHOLD) == f"{threshold:g}"
    read_back = mrml.probabilities_from_sequences(res.myocardium_probability, res.blood_pool_probability)
    assert np.array_equal(read_back, probabilities)
    kept = res.segmentation.GetNthDataNode(0).GetSegmentation().GetSegment("LV_myocardium").GetColor()
    assert tuple(kept) == (0.0, 1.0, 0.0)
    with pytest.raises(InputError, match="Threshold"):
        mrml.update_segmentations_from_probabilities(res.segmentation, res.myocardium_probability, 1.5)


def test_storage_nodes_round_trip(scene, study, tmp_path: Path):
    dicom, labels = study
    cine = dicom.cine
    ed, _ = cardiac_phases(labels)
    matrix = mrml.ijk_to_ras(cine.geometry)

    seg_node = mrml.segmentation_node_from_labels(labels.label_map[ed], matrix, "ED segmentation")
    scene.AddNode(seg_node)
    seg_path = tmp_path / "ed.seg.nrrd"
    writer = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    writer.SetFileName(str(seg_path))
    assert writer.WriteData(seg_node)
    read_seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "read back")
    reader = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    reader.SetFileName(str(seg_path))
    assert reader.ReadData(read_seg)
    segmentation = read_seg.GetSegmentation()
    back = mrml.labels_from_segmentation(segmentation, matrix, cine.frames.shape[1:])
    assert np.array_equal(back, labels.label_map[ed])
    for spec in mrml.SEGMENTS:
        segment = segmentation.GetSegment(spec.segment_id)
        assert segment.GetName() == spec.name
        assert segment.GetTerminology() == spec.terminology

    volume = mrml.new_volume_node(cine.frames[ed], matrix, "ED frame")
    scene.AddNode(volume)
    vol_path = tmp_path / "ed.nrrd"
    vwriter = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    vwriter.SetFileName(str(vol_path))
    assert vwriter.WriteData(volume)
    read_vol = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "read volume")
    vreader = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    vreader.SetFileName(str(vol_path))
    assert vreader.ReadData(read_vol)
    assert np.array_equal(mrml.volume_array(read_vol), cine.frames[ed])
    np.testing.assert_allclose(_matrix(read_vol), matrix, atol=1e-5)


def test_volumes_table_real_labels(scene, study):
    dicom, labels = study
    cine = dicom.cine
    function = compute_cardiac_function(labels.label_map, cine.geometry, cine.trigger_times_ms)
    table = mrml.volumes_table(scene, function)
    t = table.GetTable()
    assert t.GetNumberOfRows() == cine.n_phases
    names = [t.GetColumnName(c) for c in range(t.GetNumberOfColumns())]
    assert names == ["frame", "time", "cavity_volume", "myocardium_volume", "myocardium_mass", "counted_slices"]
    assert table.GetColumnUnitLabel("cavity_volume") == "mL"
    ed, es = cardiac_phases(labels)
    voxel_ml = float(np.prod(cine.geometry.spacing)) / 1000.0  # orthogonal stack: step = spacing[2]
    for frame in (ed, es):
        cavity = t.GetColumnByName("cavity_volume").GetValue(frame)
        assert cavity == pytest.approx(np.count_nonzero(labels.label_map[frame] == BLOOD_POOL) * voxel_ml,
                                       rel=1e-9)
    myo_ed = np.count_nonzero(labels.label_map[ed] == MYOCARDIUM) * voxel_ml
    assert t.GetColumnByName("myocardium_volume").GetValue(ed) == pytest.approx(myo_ed, rel=1e-9)
    edv, esv = float(table.GetAttribute("LVMyoSeg.EDV_mL")), float(table.GetAttribute("LVMyoSeg.ESV_mL"))
    assert edv > esv > 0
    assert float(table.GetAttribute("LVMyoSeg.EF_percent")) == pytest.approx(100 * (edv - esv) / edv, rel=1e-4)
    unlabelled = next(f for f in range(cine.n_phases) if f not in (ed, es))
    assert np.isnan(t.GetColumnByName("cavity_volume").GetValue(unlabelled))
    assert t.GetColumnByName("counted_slices").GetValue(ed) == "1-9"  # the expert's slices
    assert table.GetAttribute(mrml.ATTR_WITHHELD) == ""


def test_slices_table_user_choice_recomputes_and_review_list_jumps(scene, study):
    """The slices table shows each frame-slice's decision and reason; setting ``counted`` to 0
    and recomputing excludes that slice from the volumes; a review-list entry moves the
    browser to its phase and the slice views onto its slice."""
    from LVMyoSegLib.analysis.function_report import assess

    dicom, labels = study
    cine = dicom.cine
    ed, _ = cardiac_phases(labels)
    report = assess(labels.label_map, cine.geometry, cine.trigger_times_ms,
                    probabilities=_probabilities(labels.label_map))
    table = mrml.slices_table(scene, report.function, report.qc)
    t = table.GetTable()
    assert t.GetNumberOfRows() == int(report.function.slices.counted.sum())  # only LV-bearing rows
    row = next(i for i in range(t.GetNumberOfRows())
               if t.GetValue(i, 0).ToInt() == ed and t.GetValue(i, 1).ToInt() == 5)
    assert t.GetColumnByName("reason").GetValue(row).startswith("LV: myocardium surrounds")
    assert mrml.slice_choices(table) == {}
    t.GetColumnByName("counted").SetValue(row, 0)  # the user unticks slice 5 at ED
    choices = mrml.slice_choices(table)
    assert choices == {(ed, 5): False}
    again = assess(labels.label_map, cine.geometry, cine.trigger_times_ms, include=choices)
    assert again.function.edv_ml == pytest.approx(
        report.function.edv_ml - report.function.slice_blood_ml[ed, 5], rel=1e-9)
    mrml.slices_table(scene, again.function, again.qc, table_node=table)
    assert mrml.slice_choices(table) == {(ed, 5): False}  # the choice survives the refill
    assert t.GetColumnByName("reason").GetValue(row).startswith("excluded by the user")

    review = mrml.review_table(scene, report.qc)
    assert review.GetTable().GetNumberOfRows() == len(report.qc["review_first"])
    _, browser = mrml.sequence_from_cine(scene, cine, "cine")
    red = slicer.vtkMRMLSliceNode()
    red.SetLayoutName("Red")
    red.SetOrientationToAxial()
    scene.AddNode(red)
    ras = mrml.slice_centre_ras(cine.geometry, 7, cine.frames.shape[2:])
    mrml.jump_to_frame_and_slice(scene, browser, 3, ras)
    assert browser.GetSelectedItemNumber() == 3
    m = red.GetSliceToRAS()
    assert [m.GetElement(i, 3) for i in range(3)] == pytest.approx(list(ras), abs=1e-6)
    with pytest.raises(InputError, match="outside"):
        mrml.jump_to_frame_and_slice(scene, browser, 99, ras)


def test_rv_insertion_markup_gives_aha_thickness_table(scene, study):
    """A point list placed in Slicer (RAS) becomes the LPS RV insertion point; the thickness table
    then carries AHA segment numbers, equal to what compute_cardiac_function gives."""
    from LVMyoSegLib.analysis.cardiac_function import compute_cardiac_function

    dicom, labels = study
    g = dicom.cine.geometry
    ed, _ = cardiac_phases(labels)
    z = int(np.flatnonzero((labels.label_map[ed] == MYOCARDIUM).any(axis=(1, 2)))[4])
    rows, cols = np.nonzero(labels.label_map[ed, z] == MYOCARDIUM)
    pixel = np.array([cols.mean() - 25.0, rows.mean(), z, 1.0])  # (i, j, k): 25 columns off the LV centre
    lps = (g.index_to_lps() @ pixel)[:3]
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "RV insertion")
    node.AddControlPoint(-lps[0], -lps[1], lps[2], "RV")
    assert np.allclose(mrml.rv_insertion_lps(node), lps) and mrml.rv_insertion_lps(None) is None

    function = compute_cardiac_function(labels, g, dicom.cine.trigger_times_ms, rv_insertion=mrml.rv_insertion_lps(node))
    table = mrml.thickness_table(scene, function)
    assert table.GetAttribute("LVMyoSeg.ThicknessReference") == "aha"
    t = table.GetTable()
    sectors = [(s.frame, sec) for s in function.thickness for sec in s.sectors]
    assert t.GetNumberOfRows() == len(sectors) > 0
    segments = {int(t.GetColumnByName("segment").GetValue(r)) for r in range(t.GetNumberOfRows())}
    assert segments <= set(range(1, 17)) and len(segments) >= 12
    for r, (frame, sec) in enumerate(sectors):
        assert t.GetColumnByName("thickness_mean").GetValue(r) == pytest.approx(sec.mean_mm, nan_ok=True)
        assert t.GetColumnByName("phase").GetValue(r) == ("ED" if frame == ed else "ES")
    assert table.GetColumnUnitLabel("thickness_mean") == "mm"

    relative = mrml.thickness_table(scene, compute_cardiac_function(labels, g), table_node=table)
    assert relative is table and table.GetAttribute("LVMyoSeg.ThicknessReference") == "relative"
    assert t.GetColumnByName("segment").GetValue(0) == "relative"

    node.SetNthControlPointPosition(0, -lps[0] + 400.0, -lps[1], lps[2])  # beyond the field of view
    with pytest.raises(InputError, match="outside the image.*negate"):
        compute_cardiac_function(labels, g, rv_insertion=mrml.rv_insertion_lps(node))
    node.RemoveAllControlPoints()
    with pytest.raises(InputError, match="has no point"):
        mrml.rv_insertion_lps(node)


def test_bad_inputs_raise_clear_errors(scene):
    cine = _small_cine()
    seq, _ = mrml.sequence_from_cine(scene, cine, "c")
    lm = np.zeros(cine.frames.shape, np.uint8)
    with pytest.raises(GeometryError, match="another cine"):
        mrml.add_results_to_scene(scene, seq, _probabilities(lm)[:, :2], lm[:, :2])
    bad = lm.copy()
    bad[0, 0, 0, 0] = 3
    with pytest.raises(LabelError, match="only 0"):
        mrml.add_results_to_scene(scene, seq, _probabilities(lm), bad)
    # a phase on another grid
    other = mrml.new_volume_node(cine.frames[0], mrml.ijk_to_ras(cine.geometry) @ np.diag([2, 1, 1, 1]), "x")
    seq.SetDataNodeAtValue(other, seq.GetNthIndexValue(2))
    with pytest.raises(GeometryError, match="one voxel grid"):
        mrml.cine_from_sequence(seq)
    # a sequence of segmentations is not a cine
    seg_seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "segs")
    for i in range(2):
        seg_seq.SetDataNodeAtValue(mrml.segmentation_node_from_labels(lm[0], np.eye(4)), str(i))
    with pytest.raises(InputError, match="not a scalar volume"):
        mrml.cine_from_sequence(seg_seq)
    empty = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "empty")
    with pytest.raises(InputError, match="empty"):
        mrml.cine_from_sequence(empty)
    # labels for a cine with another number of phases
    with pytest.raises(LabelError, match="phases"):
        mrml.labels_from_segmentation_sequence(seg_seq, cine)


# ---------------------------------------------------------------------------------------
# The Slicer module's static contracts (LVMyoSeg.py itself only runs inside 3D Slicer)

MODULE_DIR = Path(__file__).resolve().parents[1] / "LVMyoSeg"


def test_ui_widgets_and_parameter_bindings_match_the_module():
    import ast
    import re
    import xml.etree.ElementTree as ET

    ui = ET.parse(MODULE_DIR / "Resources" / "UI" / "LVMyoSeg.ui").getroot()
    widgets = {w.get("name") for w in ui.iter("widget")}
    bound = {w.get("name"): w.find("property[@name='SlicerParameterName']/string").text
             for w in ui.iter("widget") if w.find("property[@name='SlicerParameterName']") is not None}
    source = (MODULE_DIR / "LVMyoSeg.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    node_class = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "LVMyoSegParameterNode")
    fields = {s.target.id for s in node_class.body if isinstance(s, ast.AnnAssign)}
    # every parameter has a widget and vice versa, except the model: an id or a folder that the
    # version list and the folder field write (an id survives an upgrade; a path would not)
    assert set(bound.values()) | {"model"} == fields and "model" not in bound.values()
    assert "self._parameterNode.model = modelId" in source and "self._parameterNode.model = path" in source
    used = set(re.findall(r"\bui\.(\w+)", source))  # self.ui.X and a local ui.X
    assert used <= widgets, f"widgets used in LVMyoSeg.py but missing from the .ui: {used - widgets}"
    # the test-time views offered: each one a rotations value segment and batch accept (None: the model's own)
    from LVMyoSegLib.app.segmentation import chosen_rotations
    from LVMyoSegLib.model.rotations import ROTATIONS

    views = next(s for s in node_class.body if isinstance(s, ast.AnnAssign) and s.target.id == "views")
    choices = ast.literal_eval(next(n for n in ast.walk(views.annotation)
                                    if isinstance(n, ast.Call) and n.func.id == "Choice").args[0])
    assert [chosen_rotations(c) for c in choices] == [None, *ROTATIONS]


def test_requirements_file_is_pyproject_minus_slicer_own_packages():
    import tomllib

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((MODULE_DIR.parent / "pyproject.toml").read_text(encoding="utf-8"))
    expected = {str(Requirement(r)) for r in pyproject["project"]["dependencies"]
                if Requirement(r).name not in ("numpy", "SimpleITK")}
    lines = [ln.split("#", 1)[0].strip() for ln in
             (MODULE_DIR / "Resources" / "requirements.txt").read_text(encoding="utf-8").splitlines()]
    assert {str(Requirement(ln)) for ln in lines if ln} == expected
