"""LV Myocardium Trainer: improve the LV myocardium model with corrected cases (3D Slicer module).

Skeleton: it lists the cases of a training dataset (made with LV Myocardium Segmentation's
"Export for training") and shows the planned workflow. Retraining comes in a later version.
"""

from pathlib import Path
from typing import List

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

from LVMyoSegLib.dataset import list_cases
from LVMyoSegLib.errors import LVMyoSegError
from LVMyoSegLib.resources import SAMPLE_DIR


class LVMyoSegTrainer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LV Myocardium Trainer"
        self.parent.categories = ["Cardiac"]
        self.parent.dependencies = ["LVMyoSeg"]
        self.parent.contributors = ["LVMyoSeg developers"]
        self.parent.helpText = """
Improves the LV myocardium segmentation model with cases you corrected.<br><br>
Planned workflow: (1) segment a cine with <b>LV Myocardium Segmentation</b>, (2) correct it with
the Segment Editor, (3) <b>Export for training</b> into a dataset folder, (4) here: pick the
dataset, run leave-one-out retraining (fine-tuning the current model by default), compare the
per-case DSC / HD / APD before and after, and register the new model version. The bundled model
is never overwritten.<br><br>
This version lists the cases of a dataset; retraining is not available yet.
"""
        self.parent.acknowledgementText = """
Sample data: Sunnybrook Cardiac Data (CC0). Radau P, Lu Y, Connelly K, Paul G, Dick AJ,
Wright GA. "Evaluation Framework for Algorithms Segmenting Short Axis Cardiac MRI." The MIDAS
Journal - Cardiac MR Left Ventricle Segmentation Challenge,
<a href="http://hdl.handle.net/10380/3070">http://hdl.handle.net/10380/3070</a>.
"""


class LVMyoSegTrainerWidget(ScriptedLoadableModuleWidget):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.logic = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LVMyoSegTrainer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LVMyoSegTrainerLogic()
        self.ui.datasetPathLineEdit.connect("currentPathChanged(QString)", self.onDatasetChanged)

    def onDatasetChanged(self, path: str) -> None:
        self.ui.casesListWidget.clear()
        if not path:
            self.ui.datasetStatusLabel.text = ""
            return
        try:
            cases = self.logic.listCases(Path(path))
        except LVMyoSegError as exc:
            self.ui.datasetStatusLabel.text = str(exc)
            return
        for case_id in cases:
            self.ui.casesListWidget.addItem(case_id)
        self.ui.datasetStatusLabel.text = f"{len(cases)} case(s)."


class LVMyoSegTrainerLogic(ScriptedLoadableModuleLogic):
    """Training-dataset access; usable without the Widget."""

    @staticmethod
    def listCases(datasetDir: Path) -> List[str]:
        return list_cases(Path(datasetDir))


class LVMyoSegTrainerTest(ScriptedLoadableModuleTest):
    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_lists_sample_dataset()

    def test_lists_sample_dataset(self) -> None:
        self.assertIn("SCD0000101", LVMyoSegTrainerLogic.listCases(SAMPLE_DIR))
        with self.assertRaises(LVMyoSegError):
            LVMyoSegTrainerLogic.listCases(Path(slicer.app.temporaryPath) / "no-such-dataset")
        self.delayDisplay("Test passed")
