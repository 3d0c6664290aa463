"""A result in a real MRML scene (slicer-core): which sequences are cines, threshold, function
tables, edited slices and the export to a training dataset (LVMyoSegLib.app.results / app.export)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer", reason="the MRML library is missing: install slicer-core")

from LVMyoSegLib import dataset, mrml, phantom  # noqa: E402
from LVMyoSegLib.app import export, results  # noqa: E402
from LVMyoSegLib.errors import InputError, LabelError  # noqa: E402

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


import slicer  # noqa: E402  (after the skip above)
