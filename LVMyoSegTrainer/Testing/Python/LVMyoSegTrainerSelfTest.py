"""Self-tests of LV Myocardium Trainer, run inside 3D Slicer.

ctest runs the ``test_*`` methods (alphabetically, each after ``setUp``); Reload and Test runs
:meth:`LVMyoSegTrainerSelfTest.runTest`. Every test sets itself up, so any order works; tests
that train skip with their reason when TensorFlow is missing and the package index cannot be
reached (installing it is part of the test otherwise).
"""

import shutil
import tempfile
import unittest
from pathlib import Path

import numpy as np
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from LVMyoSegLib import mrml
from LVMyoSegLib.app import install, retraining
from LVMyoSegLib.app.export import add_scene_case
from LVMyoSegLib.errors import LVMyoSegError
from LVMyoSegLib.io.dataset import list_cases
from LVMyoSegLib.resources import SAMPLE_DIR
from LVMyoSegTrainer import UNSUPPORTED, LVMyoSegTrainerLogic


class LVMyoSegTrainerSelfTest(ScriptedLoadableModuleTest):
    """Cases, a tiny leave-one-out and train-and-register through the background process, and Cancel.

    Uses a temporary registry and run folder, the bundled Sunnybrook sample case and a SYNTHETIC
    phantom case; networks are tiny (a few epochs) so the test takes minutes, not hours.
    """

    TINY = ("--width", "4", "--pixel-mm", "2.5", "--crop-size", "64")

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()
        if UNSUPPORTED:
            self.skipTest(UNSUPPORTED)
        self.workDir = Path(tempfile.mkdtemp(prefix="LVMyoSegTrainerTest-", dir=slicer.app.temporaryPath))

    def tearDown(self) -> None:
        shutil.rmtree(self.workDir, ignore_errors=True)

    def runTest(self) -> None:
        for test in (self.test_cases_from_folder_and_scene, self.test_leave_one_out_and_register,
                     self.test_cancel_keeps_scene):
            self.setUp()
            try:
                test()
            except unittest.SkipTest as skip:
                self.delayDisplay(f"Skipped {test.__name__}: {skip}")
            finally:
                self.tearDown()

    def _requirePackages(self, logic) -> None:
        missing = install.missing(install.requirements("train"))
        if missing and not install.pypi_reachable():
            self.skipTest(f"Python packages {', '.join(missing)} are missing and pypi.org cannot be reached")
        self.assertTrue(logic.ensureRequirements(askUser=False))

    def _dataset(self) -> Path:
        from LVMyoSegLib.io.dataset import add_case
        from LVMyoSegLib.io.phantom import make_synthetic_cine, sparsify_like_sunnybrook

        dataset = self.workDir / "dataset"
        report = retraining.import_cases(SAMPLE_DIR, dataset)
        self.assertEqual(report.added, ("SCD0000101",))
        cine, labels = make_synthetic_cine(n_phases=20, n_slices=4, size=128, seed=3)  # T as the sample
        add_case(dataset, "synthetic-phantom", cine, sparsify_like_sunnybrook(labels))
        return dataset

    def test_cases_from_folder_and_scene(self) -> None:
        self.delayDisplay("Adding cases from a folder and from the scene")
        from LVMyoSegLib.io.dataset import read_case

        logic = LVMyoSegTrainerLogic(self.workDir / "models")
        dataset = self._dataset()
        again = retraining.import_cases(SAMPLE_DIR, dataset)  # never overwrites
        self.assertEqual(again.added, ())
        self.assertEqual(len(again.skipped), 1)

        case = read_case(SAMPLE_DIR, "SCD0000101")
        cineSequence, _ = mrml.sequence_from_cine(slicer.mrmlScene, case.cine, "sample cine")
        segSequence = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceNode", "drawn segmentation")
        matrix = mrml.ijk_to_ras(case.cine.geometry)
        myoKnown = case.labels.known[:, :, 0]  # the user "drew" the expert's end-diastolic slices
        drawn = np.where(myoKnown[:, :, None, None], case.labels.label_map, 0).astype(np.uint8)
        for t in range(case.cine.n_phases):
            node = mrml.segmentation_node_from_labels(drawn[t], matrix, name=f"frame {t}")
            segSequence.SetDataNodeAtValue(node, str(t))
        caseDir = add_scene_case(dataset, segSequence, cineSequence)
        added = read_case(dataset, caseDir.name)
        self.assertTrue(np.array_equal(added.labels.label_map, drawn))
        self.assertTrue(np.array_equal(added.labels.known[:, :, 0], myoKnown & drawn.any(axis=(2, 3))))
        self.assertEqual(len(list_cases(dataset)), 3)
        self.delayDisplay("Test passed")

    def test_leave_one_out_and_register(self) -> None:
        self.delayDisplay("Tiny leave-one-out and train-and-register in a background process")
        logic = LVMyoSegTrainerLogic(self.workDir / "models", self.workDir / "runs")
        self._requirePackages(logic)
        dataset = self._dataset()
        settings = retraining.RetrainSettings(dataset, init=retraining.INIT_SCRATCH, variant="cnn", members=1,
                                              cnn_epochs=2, rnn_epochs=1, extra_args=self.TINY)
        fractions = []
        job = logic.startLeaveOneOut(settings, onProgress=lambda p: fractions.append(p.fraction))
        logic.waitFor(job, timeoutSeconds=1800)
        self.assertAlmostEqual(fractions[-1], 1.0)
        table, chart = job.result["shown"]
        self.assertEqual(table.GetNumberOfRows(), 3)  # two folds and the mean
        self.assertEqual(table.GetCellText(0, 0), "SCD0000101")
        self.assertIsNotNone(table.GetTable().GetColumnByName("DSC cnn"))
        self.assertEqual(chart.GetNumberOfPlotSeriesNodes(), 1)

        job = logic.startTraining(settings, modelId="tiny-test")
        logic.waitFor(job, timeoutSeconds=1800)
        self.assertEqual(job.result.model_id, "tiny-test")
        self.assertIn("tiny-test", [e.model_id for e in logic.models()])
        with self.assertRaises(LVMyoSegError):  # versions are never overwritten
            logic.startTraining(settings, modelId="tiny-test")
        self.delayDisplay("Test passed")

    def test_cancel_keeps_scene(self) -> None:
        self.delayDisplay("Cancelling a running leave-one-out")
        logic = LVMyoSegTrainerLogic(self.workDir / "models", self.workDir / "runs")
        self._requirePackages(logic)
        settings = retraining.RetrainSettings(self._dataset(), init=retraining.INIT_SCRATCH, variant="cnn",
                                              cnn_epochs=50, extra_args=self.TINY)
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        job = logic.startLeaveOneOut(settings)
        logic.cancel()
        self.assertTrue(job.finished and job.cancelled)
        self.assertFalse(logic.isRunning())
        self.assertIsNone(job.result)
        self.assertIsNone(job.process)  # released: nothing of the run stays reachable from Qt
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)
        self.delayDisplay("Test passed")
