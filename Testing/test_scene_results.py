"""A result in a real MRML scene (slicer-core): which sequences are cines, threshold, function
tables (slices that count, the QC review list and its jump), edited slices and the export to a
training dataset (LVMyoSegLib.app.results / app.review / app.export)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer", reason="the MRML library is missing: install slicer-core")

from LVMyoSegLib import mrml  # noqa: E402
from LVMyoSegLib.app import export, results, review  # noqa: E402
from LVMyoSegLib.errors import InputError, LabelError  # noqa: E402
from LVMyoSegLib.io import dataset, phantom

pytestmark = pytest.mark.mrml


def _result(scene, threshold: float = 0.5):
    cine, labels = phantom.make_synthetic_cine(n_phases=6, n_slices=3, size=64, seed=2)
    probabilities = np.stack([(labels.label_map == 1) * 0.9, (labels.label_map == 2) * 0.97], -1).astype(np.float32)
    probabilities[..., 0] += 0.05 * np.random.default_rng(0).random(labels.label_map.shape)
    cine_seq, _ = mrml.sequence_from_cine(scene, cine, "cine")
    res = mrml.add_results_to_scene(scene, cine_seq, probabilities, labels.label_map, threshold=threshold)
    return cine, cine_seq, res


def test_only_volume_cines_are_offered_as_input(scene):
    cine, cine_seq, res = _result(scene)
    labelmaps = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "label maps")
    for t in range(2):
        node = slicer.vtkMRMLLabelMapVolumeNode()
        node.SetAndObserveImageData(mrml.new_volume_node(np.zeros((2, 3, 4), np.uint8), np.eye(4)).GetImageData())
        labelmaps.SetDataNodeAtValue(node, str(t))
    single = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "one frame")
    single.SetDataNodeAtValue(mrml.new_volume_node(np.zeros((2, 3, 4), np.float32), np.eye(4)), "0")

    hidden = set(results.sequences_that_are_not_cines(scene))
    assert cine_seq.GetID() not in hidden
    assert {labelmaps.GetID(), single.GetID(), res.segmentation.GetID(), res.myocardium_probability.GetID(),
            res.blood_pool_probability.GetID()} <= hidden
    assert results.first_cine_sequence(scene) is cine_seq


def test_threshold_tables_edits_and_export(scene, tmp_path):
    cine, cine_seq, res = _result(scene, threshold=0.5)
    seg = res.segmentation
    assert results.result_threshold(seg) == 0.5 and results.result_threshold(cine_seq) is None
    results.update_function_tables(scene, seg)
    assert "EDV" in results.function_summary(seg)
    assert not results.edited_slices(seg).any()
    with pytest.raises(LabelError, match="No slice of"):
        export.export_result(seg, tmp_path / "ds")

    before = int((mrml.labels_from_segmentation_sequence(seg, cine) == 1).sum())
    labels = results.apply_threshold(scene, seg, 0.92)  # cuts the myocardium where its noise is low
    assert results.result_threshold(seg) == pytest.approx(0.92)
    assert 0 < int((labels == 1).sum()) < before
    assert not results.edited_slices(seg).any()  # re-derived, not edited

    # the user paints myocardium on frame 1, on a slice through the cavity
    edited = mrml.labels_from_segmentation_sequence(seg, cine)
    z = int(np.argmax((edited[1] == 2).any(axis=(1, 2))))
    edited[1, z, 2:6, 2:6] = 1  # far from the heart
    matrix = mrml.ijk_to_ras(cine.geometry)
    mrml.fill_segmentation(seg.GetNthDataNode(1).GetSegmentation(), edited[1], matrix)
    assert (edited[1, z] == 2).any()
    mask = results.edited_slices(seg)
    assert mask[1, z] and mask.sum() == 1
    case_dir = export.export_result(seg, tmp_path / "ds")
    case = dataset.read_case(tmp_path / "ds", case_dir.name)
    assert case.labels.known[:, :, 0].sum() == 1 and case.labels.known[1, z, 0]
    assert export.add_scene_case(tmp_path / "ds", seg).name != case_dir.name  # a second case, never overwritten
    with pytest.raises(InputError, match="was not made by LV Myocardium Segmentation"):
        results.apply_threshold(scene, cine_seq, 0.5)


def test_unticked_slice_lowers_edv_and_review_item_jumps(scene, study):
    """On the real study SCD0000101, its two expert-labelled phases (ED and ES) with smooth
    probabilities made from the expert's labels: the user sets ``counted`` to 0 for one ED
    slice in the slices table; Recompute takes its cavity out of EDV, and the choice survives a
    recompute and a new threshold. Each review item names a frame and slice; the jump moves the
    browser to that phase and the slice views onto that slice of the cine."""
    from scipy import ndimage

    from LVMyoSegLib.cine import Cine
    from LVMyoSegLib.io.sunnybrook import cardiac_phases

    dicom, expert = study
    phases = sorted(cardiac_phases(expert))  # the two labelled frames only: 10x less to put in the scene
    cine = Cine(dicom.cine.frames[phases], dicom.cine.geometry, dicom.cine.trigger_times_ms[phases], "SCD0000101")
    label_map = expert.label_map[phases]
    probabilities = np.zeros(label_map.shape + (2,), np.float32)
    for c, value in enumerate((1, 2)):  # myocardium, blood pool: 0.9 inside, blurred edges
        probabilities[..., c] = ndimage.gaussian_filter((label_map == value) * np.float32(0.9),
                                                        sigma=(0, 0, 1.0, 1.0))
    cine_seq, browser = mrml.sequence_from_cine(scene, cine, "cine")
    res = mrml.add_results_to_scene(scene, cine_seq, probabilities, label_map, browser, threshold=0.5)
    seg = res.segmentation
    table, function = results.update_function_tables(scene, seg)
    ed, edv = function.ed_frame, function.edv_ml
    assert float(table.GetAttribute("LVMyoSeg.EDV_mL")) == pytest.approx(edv, rel=1e-5)
    assert "Slices counted per frame and why: table 'cine LV segmentation slices'" in results.function_summary(seg)

    slices = seg.GetNodeReference(mrml.REF_SLICES_TABLE)
    t = slices.GetTable()
    row = next(i for i in range(t.GetNumberOfRows())
               if t.GetValue(i, 0).ToInt() == ed and t.GetValue(i, 1).ToInt() == 5)
    assert t.GetColumnByName("counted").GetValue(row) == 1
    cavity = t.GetColumnByName("cavity_volume").GetValue(row)
    assert cavity > 1.0
    t.GetColumnByName("counted").SetValue(row, 0)  # the user unticks slice 5 at ED ...
    table, again = results.update_function_tables(scene, seg)  # ... and presses Recompute
    assert again.ed_frame == ed  # the other frame is ES
    assert again.edv_ml == pytest.approx(edv - cavity, rel=1e-6)
    assert float(table.GetAttribute("LVMyoSeg.EDV_mL")) == pytest.approx(edv - cavity, rel=1e-5)
    assert "5" not in table.GetTable().GetColumnByName("counted_slices").GetValue(ed).split(",")
    assert seg.GetNodeReference(mrml.REF_SLICES_TABLE) is slices  # refilled, not replaced
    assert t.GetColumnByName("reason").GetValue(row).startswith("excluded by the user")
    assert mrml.slice_choices(slices) == {(ed, 5): False}
    results.apply_threshold(scene, seg, 0.4)  # a new threshold keeps the user's choice
    assert mrml.slice_choices(slices) == {(ed, 5): False}

    items = review.review_items(seg)
    review_table = seg.GetNodeReference(mrml.REF_REVIEW_TABLE)
    assert len(items) == review_table.GetTable().GetNumberOfRows() > 0
    first = items[0]
    assert first.text.startswith(f"frame {first.frame}, slice {first.slice}: score ")
    red = slicer.vtkMRMLSliceNode()  # slicer-core has no layout: one slice view, as Slicer's Red
    red.SetLayoutName("Red")
    red.SetOrientationToAxial()
    scene.AddNode(red)
    target = next(i for i in items if i.frame != browser.GetSelectedItemNumber())
    review.jump_to(scene, seg, target.frame, target.slice)
    assert browser.GetSelectedItemNumber() == target.frame
    m = red.GetSliceToRAS()
    assert [m.GetElement(i, 3) for i in range(3)] == pytest.approx(
        list(mrml.slice_centre_ras(cine.geometry, target.slice, cine.frames.shape[2:])), abs=1e-6)
    with pytest.raises(InputError, match="outside the 12 slices"):
        review.jump_to(scene, seg, target.frame, 12)
    with pytest.raises(InputError, match="was not made by LV Myocardium Segmentation"):
        review.jump_to(scene, cine_seq, 0, 0)


def test_a_result_without_myocardium_has_no_function(scene):
    """Nothing to measure: Recompute refuses with the reason and writes no tables; a result
    before its first computation has no review items."""
    cine, _ = phantom.make_synthetic_cine(n_phases=4, n_slices=2, size=32, seed=1)
    cine_seq, _ = mrml.sequence_from_cine(scene, cine, "cine")
    empty = np.zeros(cine.frames.shape, np.uint8)
    res = mrml.add_results_to_scene(scene, cine_seq, np.zeros(cine.frames.shape + (2,), np.float32), empty,
                                    threshold=0.5)
    assert review.review_items(res.segmentation) == []
    with pytest.raises(LabelError, match="No cardiac function for 'cine LV segmentation'"):
        results.update_function_tables(scene, res.segmentation)
    assert res.segmentation.GetNodeReference(mrml.REF_SLICES_TABLE) is None
    assert results.function_summary(res.segmentation) == ""


import slicer  # noqa: E402  (after the skip above)
