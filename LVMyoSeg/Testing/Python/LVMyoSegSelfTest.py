"""Self-tests of LV Myocardium Segmentation, run inside 3D Slicer.

ctest runs the ``test_*`` methods (alphabetically, each after ``setUp``); Reload and Test runs
:meth:`LVMyoSegSelfTest.runTest`. Every test sets itself up, so any order works, and each skips
with its reason when the Python packages are missing and the package index cannot be reached.
"""

import unittest

import numpy as np
import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from LVMyoSeg import UNSUPPORTED, LVMyoSegLogic
from LVMyoSegLib import mrml
from LVMyoSegLib.app import install, results
from LVMyoSegLib.model import registry
from LVMyoSegLib.resources import SAMPLE_DIR, bundled_model_dir, sample_case_dir

SAMPLE_CASE_ID = "SCD0000101"


class LVMyoSegSelfTest(ScriptedLoadableModuleTest):
    """Whole path on the bundled sample study: cine -> background process -> MRML results."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()
        if UNSUPPORTED:
            self.skipTest(UNSUPPORTED)

    def runTest(self) -> None:
        for test in (self.test_cancel_leaves_scene_unchanged, self.test_segment_sample):
            self.setUp()
            try:
                test()
            except unittest.SkipTest as skip:
                self.delayDisplay(f"Skipped {test.__name__}: {skip}")

    def _requirePackages(self, logic, purpose: str = "segment") -> None:
        missing = install.missing(install.requirements(purpose))
        if missing and not install.pypi_reachable():
            self.skipTest(f"Python packages {', '.join(missing)} are missing and pypi.org cannot be reached")
        self.assertTrue(logic.ensureRequirements(askUser=False, purpose=purpose))

    def _loadSample(self):
        from LVMyoSegLib.io.dataset import read_case

        self.assertTrue((sample_case_dir() / "cine.nrrd").is_file(), f"Bundled sample missing: {sample_case_dir()}")
        case = read_case(SAMPLE_DIR, SAMPLE_CASE_ID)
        sequence, browser = mrml.sequence_from_cine(slicer.mrmlScene, case.cine, "LVMyoSeg sample cine")
        return case, sequence, browser

    def test_segment_sample(self) -> None:
        self.delayDisplay("Segmenting the bundled sample study")
        logic = LVMyoSegLogic()
        self._requirePackages(logic)
        case, sequence, browser = self._loadSample()
        self.assertTrue((bundled_model_dir() / "manifest.json").is_file(), f"No bundled model at {bundled_model_dir()}")
        nodes = logic.segmentBlocking(sequence, registry.BUNDLED_ID, members=1, threshold=0.5)

        self.assertIs(nodes.browser, browser)
        for t in range(case.cine.n_phases):  # every frame on the input grid
            inputMatrix = mrml.volume_ijk_to_ras(sequence.GetNthDataNode(t))
            segmentation = nodes.segmentation.GetNthDataNode(t).GetSegmentation()
            image = segmentation.GetSegment(mrml.MYOCARDIUM_SEGMENT.segment_id).GetRepresentation(
                slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName())
            m = vtk.vtkMatrix4x4()
            image.GetImageToWorldMatrix(m)
            worldMatrix = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
            self.assertTrue(np.allclose(worldMatrix, inputMatrix, atol=1e-6), f"frame {t} off the input grid")

        labels = mrml.labels_from_segmentation_sequence(nodes.segmentation, case.cine)
        self.assertTrue((labels == 1).any(), "no myocardium found on the sample")
        known = case.labels.known[:, :, 0]
        expert = case.labels.label_map[known] == 1
        auto = labels[known] == 1
        dice = 2.0 * np.count_nonzero(expert & auto) / max(1, np.count_nonzero(expert) + np.count_nonzero(auto))
        self.delayDisplay(f"Myocardium DSC vs expert on the labelled slices: {dice:.3f}")
        self.assertGreater(dice, 0.5)

        table = mrml.result_nodes(nodes.segmentation)[3]
        self.assertEqual(table.GetNumberOfRows(), case.cine.n_phases)
        thickness = nodes.segmentation.GetNodeReference(mrml.REF_THICKNESS_TABLE)
        self.assertEqual(thickness.GetAttribute("LVMyoSeg.ThicknessReference"), "relative")

        # an RV insertion point (a point list in RAS) turns the sectors into AHA segments on Recompute
        ras = mrml.ijk_to_ras(case.cine.geometry) @ np.array([60.0, 70.0, 5.0, 1.0])
        points = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "RV insertion")
        points.AddControlPoint(*ras[:3])
        results.set_rv_insertion(nodes.segmentation, points)
        logic.updateVolumesTable(nodes.segmentation)
        self.assertEqual(thickness.GetAttribute("LVMyoSeg.ThicknessReference"), "aha")
        self.assertIn("AHA segments", results.function_summary(nodes.segmentation))

        # slices that count: the sample's outflow tract / atrium (slices 10, 11) is left out at ED; the
        # user unticks slice 5 at ED in the slices table and Recompute lowers EDV (by at most its cavity)
        ed = int(float(table.GetAttribute("LVMyoSeg.EDFrame")))
        self.assertNotIn("10", table.GetTable().GetColumnByName("counted_slices").GetValue(ed))
        edv = float(table.GetAttribute("LVMyoSeg.EDV_mL"))
        t = nodes.segmentation.GetNodeReference(mrml.REF_SLICES_TABLE).GetTable()
        row = next(i for i in range(t.GetNumberOfRows())
                   if t.GetValue(i, 0).ToInt() == ed and t.GetValue(i, 1).ToInt() == 5)
        cavity = t.GetColumnByName("cavity_volume").GetValue(row)
        t.GetColumnByName("counted").SetValue(row, 0)
        logic.updateVolumesTable(nodes.segmentation)
        newEdv = float(table.GetAttribute("LVMyoSeg.EDV_mL"))  # ED may move to a neighbouring frame
        self.assertTrue(edv - cavity - 0.01 <= newEdv < edv, f"EDV {edv} -> {newEdv}, slice cavity {cavity}")
        # the QC review list: its first entry moves the browser to that phase
        items = logic.reviewItems(nodes.segmentation)
        if items:
            logic.jumpTo(nodes.segmentation, items[0].frame, items[0].slice)
            self.assertEqual(browser.GetSelectedItemNumber(), items[0].frame)

        before = int((labels == 1).sum())
        after = int((logic.applyThreshold(nodes.segmentation, 0.8) == 1).sum())
        self.assertLessEqual(after, before)
        self.delayDisplay("Test passed")

    def test_cancel_leaves_scene_unchanged(self) -> None:
        self.delayDisplay("Cancelling a running segmentation")
        logic = LVMyoSegLogic()
        self._requirePackages(logic)
        _, sequence, _ = self._loadSample()
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        job = logic.startSegmentation(sequence, registry.BUNDLED_ID, members=1)
        logic.cancel()
        self.assertTrue(job.finished and job.cancelled)
        self.assertFalse(logic.isRunning())
        self.assertIsNone(job.result)
        self.assertIsNone(job.process)  # released: nothing of the run stays reachable from Qt
        self.assertFalse(job.work_dir.exists())
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)
        self.delayDisplay("Test passed")
