"""LV Myocardium Segmentation: the 3D Slicer scripted module (Module, Widget, Logic, Test).

The Widget only reads the GUI and calls the Logic. The Logic works without the Widget
(Python console, scripts, the self-test). The network runs in a background process
(``PythonSlicer -m LVMyoSegLib.cli segment ... --progress-lines``) so the GUI stays
responsive and Cancel can stop it; everything that computes lives in LVMyoSegLib, and
LVMyoSegLib.mrml alone turns arrays into MRML nodes.
"""

import importlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, List, Optional

import numpy as np
import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLSequenceNode
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from LVMyoSegLib import mrml, registry
from LVMyoSegLib.cli_process import CliProcess, ProcessEnd, failure_message, parse_progress_line
from LVMyoSegLib.errors import InputError, LabelError, LVMyoSegError, ModelError
from LVMyoSegLib.resources import SAMPLE_DIR, bundled_model_dir, sample_case_dir

MODULE_DIR = Path(__file__).resolve().parent
REQUIREMENTS_FILE = MODULE_DIR / "Resources" / "requirements.txt"
SAMPLE_DATASET_DIR = SAMPLE_DIR  # the bundled sample is a one-case LVMyoSeg training dataset
SAMPLE_CASE_ID = "SCD0000101"
SAMPLE_CINE = sample_case_dir() / "cine.nrrd"
# Slicer ships its own builds of these; installing LVMyoSeg's requirements never replaces them.
PROTECTED_PACKAGES = ("numpy", "SimpleITK")
# A requirement is also met by these distributions (e.g. a GPU TensorFlow instead of the CPU one).
REQUIREMENT_ALTERNATIVES = {"tensorflow-cpu": ("tensorflow",)}
OUTPUT_FILES = {"myocardium": "probabilities_myocardium.nii.gz",
                "blood_pool": "probabilities_blood_pool.nii.gz",
                "labels": "labels.nii.gz"}


#
# LVMyoSeg
#


class LVMyoSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LV Myocardium Segmentation"
        self.parent.categories = ["Cardiac"]
        self.parent.dependencies = ["Sequences", "Segmentations"]
        self.parent.contributors = ["LVMyoSeg developers"]
        self.parent.helpText = """
Segments the left-ventricle myocardium (and the LV blood pool) on every frame of a short-axis
cine MRI with an ensemble of CNN + multi-level ConvLSTM networks: a fully convolutional
ResNet-56 extracts features of each frame, convolutional LSTMs at two resolutions carry them
along the cardiac cycle (with a circular connection, since the cycle is periodic), and the
probabilities of the ensemble members are averaged and thresholded.<br><br>
Select the cine (a volume sequence, e.g. loaded with the DICOM module) and press <b>Apply</b>.
The result is a probability-map sequence and a segmentation sequence ("LV myocardium",
"LV blood pool") synchronised with the cine's sequence browser, a table of the LV cavity and
myocardium volumes per frame, and EDV, ESV, SV, EF and LV mass. The <b>Threshold</b> slider
re-derives the masks from the probabilities without running the network again. Correct
mistakes with the Segment Editor, then <b>Export for training</b> to improve the model with the
LV Myocardium Trainer module.<br><br>
The network runs in a separate Python process; on first use the module offers to install the
Python packages it needs (TensorFlow, scikit-image, ...) into Slicer. Slicer's NumPy and
SimpleITK are never replaced.
"""
        self.parent.acknowledgementText = """
The method follows "multi-level convolutional LSTM" LV myocardium segmentation of cine MRI
(CNN + ConvLSTM ensemble). The bundled model and sample use the Sunnybrook Cardiac Data
(CC0): Radau P, Lu Y, Connelly K, Paul G, Dick AJ, Wright GA. "Evaluation Framework for
Algorithms Segmenting Short Axis Cardiac MRI." The MIDAS Journal - Cardiac MR Left Ventricle
Segmentation Challenge, <a href="http://hdl.handle.net/10380/3070">http://hdl.handle.net/10380/3070</a>.
The module structure follows the 3D Slicer scripted module template and KitwareMedical's
SlicerNNUnet extension.
"""


#
# LVMyoSegParameterNode
#


@parameterNodeWrapper
class LVMyoSegParameterNode:
    """
    inputSequence - the cine: a volume sequence, one 3D stack per phase.
    modelPath - model bundle folder (default: the bundled model).
    members - ensemble members to use (0 = all).
    threshold - probability threshold of the masks.
    segmentationSequence - the result being shown / thresholded / exported.
    rvInsertion - point list whose first point is the anterior RV insertion point (AHA sectors).
    """

    inputSequence: vtkMRMLSequenceNode
    modelPath: Path
    members: Annotated[int, WithinRange(0, 20)] = 0
    threshold: Annotated[float, WithinRange(0.05, 0.95)] = 0.5
    segmentationSequence: vtkMRMLSequenceNode
    rvInsertion: vtkMRMLMarkupsFiducialNode


#
# LVMyoSegWidget
#


class LVMyoSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Reads the GUI and calls :class:`LVMyoSegLogic`; holds no computation."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LVMyoSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        # only segmentation sequences made by this module
        self.ui.segmentationSelector.addAttribute("vtkMRMLSequenceNode", mrml.ATTR_ROLE, "segmentation")

        self.logic = LVMyoSegLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.recomputeButton.connect("clicked(bool)", self.onRecomputeButton)
        self.ui.thresholdSliderWidget.connect("valueChanged(double)", self.onThresholdChanged)
        self.ui.segmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onSegmentationChanged)

        # model versions: the bundled model and every version registered by LV Myocardium Trainer
        self.modelVersionComboBox = qt.QComboBox()
        self.modelVersionComboBox.toolTip = ("The bundled model and the model versions registered with the LV "
                                             "Myocardium Trainer module; or choose a model folder below.")
        self.ui.inputsCollapsibleButton.layout().insertRow(1, "Model version:", self.modelVersionComboBox)
        self.modelVersionComboBox.connect("currentIndexChanged(int)", self.onModelVersionChanged)
        self.setupBatch()

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.logic.cancel()
        self.logic.cancelBatch()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.logic.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if str(self._parameterNode.modelPath) in ("", "."):
            self._parameterNode.modelPath = bundled_model_dir()
        if not self._parameterNode.inputSequence:
            cine = self.logic.firstCineSequence()
            if cine:
                self._parameterNode.inputSequence = cine
        self.refreshModelVersions()

    def refreshModelVersions(self) -> None:
        """List the bundled model and every registered version (read from the registry folder)."""
        combo = self.modelVersionComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for entry in registry.list_models(registry.slicer_registry_dir(slicer.app.slicerUserSettingsFilePath)):
            if not entry.problem:
                combo.addItem(entry.label(), str(Path(entry.path).resolve()))
        combo.addItem("other model folder (below)", "")
        combo.blockSignals(wasBlocked)
        self._syncModelVersion()

    def _syncModelVersion(self) -> None:
        """Select the version whose folder is the current model path (else "other model folder")."""
        combo = self.modelVersionComboBox
        current = Path(str(self._parameterNode.modelPath)).resolve() if self._parameterNode else None
        index = combo.count - 1
        for i in range(combo.count - 1):  # item data are resolved folders (refreshModelVersions)
            if current is not None and Path(combo.itemData(i)) == current:
                index = i
                break
        wasBlocked = combo.blockSignals(True)
        combo.setCurrentIndex(index)
        combo.blockSignals(wasBlocked)

    def onModelVersionChanged(self, index: int) -> None:
        path = self.modelVersionComboBox.itemData(index)
        if path and self._parameterNode:
            self._parameterNode.modelPath = Path(path)

    def setParameterNode(self, inputParameterNode: Optional[LVMyoSegParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._updateButtons()

    def _updateButtons(self, caller=None, event=None) -> None:
        running = self.logic.isRunning()
        p = self._parameterNode
        self.ui.applyButton.enabled = bool(p and p.inputSequence) and not running
        self.ui.applyButton.toolTip = ("Segment every frame of the cine" if p and p.inputSequence
                                       else "Select a cine (volume sequence) first")
        self.ui.cancelButton.enabled = running
        hasResult = bool(p and p.segmentationSequence) and not running
        self._syncModelVersion()
        self.ui.exportButton.enabled = hasResult
        self.ui.recomputeButton.enabled = hasResult
        self.ui.thresholdSliderWidget.enabled = hasResult

    # -- segmentation

    def onApplyButton(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not start the segmentation.", waitCursor=True):
            if not self.logic.ensureRequirements(askUser=True):
                self.ui.statusLabel.text = "The Python packages LVMyoSeg needs are not installed."
                return
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = "Starting..."
            self.logic.startSegmentation(p.inputSequence, p.modelPath, p.members, p.threshold,
                                         onProgress=self.onProgress, onFinished=self.onFinished,
                                         rvInsertionNode=p.rvInsertion)
        self._updateButtons()

    def onCancelButton(self) -> None:
        self.logic.cancel()
        self._updateButtons()

    def onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(1000 * max(0.0, min(1.0, fraction))))
        self.ui.statusLabel.text = message

    def onFinished(self, job: "SegmentationJob") -> None:
        self._updateButtons()
        if job.cancelled:
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = "Cancelled; nothing was added to the scene."
        elif job.error:
            self.ui.statusLabel.text = "Segmentation failed."
            slicer.util.errorDisplay("Segmentation failed:\n\n" + job.error.splitlines()[0],
                                     detailedText=job.error)
        else:
            self.ui.progressBar.value = 1000
            self.ui.statusLabel.text = f"Done in {job.elapsedSeconds:.0f} s."
            self._parameterNode.segmentationSequence = job.result.segmentation
        self._updateButtons()

    # -- batch: a cohort of studies on disk, through `lvmyoseg batch`

    def setupBatch(self) -> None:
        self.ui.batchRunButton.connect("clicked(bool)", self.onBatchRunButton)
        self.ui.batchCancelButton.connect("clicked(bool)", self.onBatchCancelButton)
        self._updateBatchButtons()

    def _updateBatchButtons(self) -> None:
        running = self.logic.isBatchRunning()
        self.ui.batchRunButton.enabled = not running
        self.ui.batchCancelButton.enabled = running

    def onBatchRunButton(self) -> None:
        p = self._parameterNode
        inputs = self.ui.batchCsvPathLineEdit.currentPath or self.ui.batchFolderPathLineEdit.currentPath
        with slicer.util.tryWithErrorDisplay("Could not start the batch.", waitCursor=True):
            if not self.logic.ensureRequirements(askUser=True):
                self.ui.batchStatusLabel.text = "The Python packages LVMyoSeg needs are not installed."
                return
            self.ui.batchProgressBar.value = 0
            self.ui.batchStatusLabel.text = "Starting..."
            self.logic.startBatch(inputs, self.ui.batchOutputPathLineEdit.currentPath, p.modelPath if p else None,
                                  p.members if p else 0, onProgress=self.onBatchProgress,
                                  onFinished=self.onBatchFinished)
        self._updateBatchButtons()

    def onBatchCancelButton(self) -> None:
        self.logic.cancelBatch()
        self._updateBatchButtons()

    def onBatchProgress(self, fraction: float, message: str) -> None:
        self.ui.batchProgressBar.value = int(round(1000 * max(0.0, min(1.0, fraction))))
        self.ui.batchStatusLabel.text = message

    def onBatchFinished(self, job: "BatchJob") -> None:
        self._updateBatchButtons()
        if job.cancelled:
            self.ui.batchStatusLabel.text = ("Cancelled; finished studies are kept in the table. "
                                             "Run again to do the rest.")
        elif job.error:
            self.ui.batchStatusLabel.text = "Batch failed."
            slicer.util.errorDisplay("Batch failed:\n\n" + job.error.splitlines()[0], detailedText=job.error)
        else:
            self.ui.batchProgressBar.value = 1000
            self.ui.batchStatusLabel.text = job.summary or f"Done in {job.elapsedSeconds:.0f} s."
            self.logic.showCohortTable(job.outputDir)

    # -- results

    def onSegmentationChanged(self, node) -> None:
        if node is None:
            self.ui.functionLabel.text = ""
            return
        threshold = node.GetAttribute(mrml.ATTR_THRESHOLD)
        if threshold and self._parameterNode:
            self._parameterNode.threshold = float(threshold)
        self.ui.functionLabel.text = self.logic.functionSummary(node)
        self._updateButtons()

    def onThresholdChanged(self, value: float) -> None:
        segmentation = self._parameterNode.segmentationSequence if self._parameterNode else None
        if segmentation is None or self.logic.isRunning():
            return
        current = segmentation.GetAttribute(mrml.ATTR_THRESHOLD)
        if current is not None and abs(float(current) - value) < 1e-6:
            return  # GUI refresh, not a user change
        with slicer.util.tryWithErrorDisplay("Could not apply the threshold.", waitCursor=True):
            edited = int(self.logic.editedSlices(segmentation).sum())
            if edited and not slicer.util.confirmOkCancelDisplay(
                    f"You edited the LV segments on {edited} slice(s). A new threshold re-derives every frame "
                    "from the probabilities and replaces those edits. Continue?"):
                if current is not None:
                    self._parameterNode.threshold = float(current)
                return
            self.logic.applyThreshold(segmentation, value)
            self.ui.functionLabel.text = self.logic.functionSummary(segmentation)

    def onRecomputeButton(self) -> None:
        segmentation = self._parameterNode.segmentationSequence
        with slicer.util.tryWithErrorDisplay("Could not recompute the cardiac function.", waitCursor=True):
            self.logic.setRvInsertion(segmentation, self._parameterNode.rvInsertion)
            self.logic.updateVolumesTable(segmentation)
            self.ui.functionLabel.text = self.logic.functionSummary(segmentation)

    def onExportButton(self) -> None:
        segmentation = self._parameterNode.segmentationSequence
        folder = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), "Training dataset folder (new or existing)")
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay("Export for training failed.", waitCursor=True):
            includeAll = False
            if not self.logic.editedSlices(segmentation).any():
                if not slicer.util.confirmOkCancelDisplay(
                        "You have not edited any slice of this segmentation. Export every frame as "
                        "reviewed and correct?"):
                    return
                includeAll = True
            caseDir = self.logic.exportForTraining(segmentation, Path(folder), includeUnedited=includeAll)
            self.ui.statusLabel.text = f"Exported case to {caseDir}"


#
# LVMyoSegLogic
#


@dataclass
class SegmentationJob:
    """One background segmentation run."""

    sequenceNode: object
    browserNode: object
    cine: object
    workDir: Path
    modelDir: Path
    threshold: float
    onProgress: Optional[Callable[[float, str], None]] = None
    onFinished: Optional[Callable[["SegmentationJob"], None]] = None
    rvInsertionNode: object = None
    process: object = None
    startTime: float = field(default_factory=time.time)
    elapsedSeconds: float = 0.0
    log: List[str] = field(default_factory=list)
    cancelled: bool = False
    finished: bool = False
    error: Optional[str] = None
    result: Optional[mrml.ResultNodes] = None


@dataclass
class BatchJob:
    """One background ``lvmyoseg batch`` run over a cohort on disk."""

    outputDir: Path
    onProgress: Optional[Callable[[float, str], None]] = None
    onFinished: Optional[Callable[["BatchJob"], None]] = None
    process: object = None
    startTime: float = field(default_factory=time.time)
    elapsedSeconds: float = 0.0
    log: List[str] = field(default_factory=list)
    cancelled: bool = False
    finished: bool = False
    error: Optional[str] = None
    summary: str = ""


class LVMyoSegLogic(ScriptedLoadableModuleLogic):
    """Runs the segmentation and manages its results; usable without the Widget.

    Example (Python console)::

        logic = slicer.util.getModuleLogic("LVMyoSeg")
        logic.ensureRequirements()
        results = logic.segmentBlocking(slicer.util.getNode("cine*"))
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._job: Optional[SegmentationJob] = None
        self._batchJob: Optional[BatchJob] = None

    def getParameterNode(self) -> LVMyoSegParameterNode:
        return LVMyoSegParameterNode(super().getParameterNode())

    @staticmethod
    def firstCineSequence():
        """First sequence of scalar volumes in the scene (a likely cine), or None."""
        for i in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSequenceNode")):
            node = slicer.mrmlScene.GetNthNodeByClass(i, "vtkMRMLSequenceNode")
            first = node.GetNthDataNode(0) if node.GetNumberOfDataNodes() > 1 else None
            if first is not None and first.IsA("vtkMRMLScalarVolumeNode") and not node.GetAttribute(mrml.ATTR_ROLE):
                return node
        return None

    # -- Python dependencies

    @staticmethod
    def requirementLines(requirementsFile: Path = REQUIREMENTS_FILE) -> List[str]:
        lines = []
        for line in Path(requirementsFile).read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                lines.append(line)
        return lines

    @classmethod
    def missingRequirements(cls, requirementsFile: Path = REQUIREMENTS_FILE) -> List[str]:
        """Requirements (``name<specifier>``) of this platform that are not installed in a fitting version."""
        from importlib.metadata import PackageNotFoundError, version

        from packaging.requirements import Requirement

        missing = []
        for line in cls.requirementLines(requirementsFile):
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate():
                continue
            if req.name.lower() in {p.lower() for p in PROTECTED_PACKAGES}:
                continue
            satisfied = False
            for name in (req.name,) + REQUIREMENT_ALTERNATIVES.get(req.name.lower(), ()):
                try:
                    installed = version(name)
                except PackageNotFoundError:
                    continue
                if req.specifier.contains(installed, prereleases=True):
                    satisfied = True
                    break
            if not satisfied:
                extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
                missing.append(f"{req.name}{extras}{req.specifier}")
        return missing

    def ensureRequirements(self, askUser: bool = True) -> bool:
        """Install missing requirements (after asking the user); False when the user declines.

        Installation runs with a pip constraints file that pins Slicer's own NumPy and
        SimpleITK to their installed versions, so they are never replaced.
        """
        from importlib.metadata import PackageNotFoundError, version
        from subprocess import CalledProcessError

        missing = self.missingRequirements()
        if not missing:
            return True
        if askUser and not slicer.util.confirmOkCancelDisplay(
                "LV Myocardium Segmentation needs Python packages that are not installed in 3D Slicer:\n\n"
                + "\n".join(missing)
                + "\n\nInstall them now? TensorFlow is a large download; this can take several minutes. "
                  "Slicer's own NumPy and SimpleITK are kept.",
                "LVMyoSeg: install Python packages"):
            return False
        pins = []
        for name in PROTECTED_PACKAGES:
            try:
                pins.append(f"{name}=={version(name)}")
            except PackageNotFoundError:
                pass
        fd, constraints = tempfile.mkstemp(prefix="LVMyoSeg-constraints-", suffix=".txt")
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(pins) + "\n")
        try:
            logging.info(f"LVMyoSeg: installing {missing} with constraints {pins}")
            slicer.util.pip_install(["-c", constraints] + missing)
        except CalledProcessError as exc:
            raise InputError(f"pip could not install {', '.join(missing)} while keeping {', '.join(pins)} "
                             f"(exit code {exc.returncode}); see the Python console for pip's message. "
                             "A newer 3D Slicer may be needed.") from None
        finally:
            os.remove(constraints)
        importlib.invalidate_caches()
        still = self.missingRequirements()
        if still:
            raise InputError(f"After installation {', '.join(still)} are still missing or of the wrong version; "
                             "see the Python console, or restart 3D Slicer and try again.")
        return True

    # -- segmentation in a background process

    def isRunning(self) -> bool:
        return self._job is not None and not self._job.finished

    def startSegmentation(self, sequenceNode, modelDir: Optional[Path] = None, members: int = 0,
                          threshold: float = 0.5, onProgress=None, onFinished=None,
                          rvInsertionNode=None) -> SegmentationJob:
        """Start segmenting the cine ``sequenceNode``; ``onFinished(job)`` is called at the end.

        Results (``job.result``) are added to the scene only when the run succeeds; the point
        list ``rvInsertionNode`` (optional) gives the wall-thickness sectors AHA numbers.
        """
        from LVMyoSegLib.cardiac_function import rv_insertion_pixel
        from LVMyoSegLib.volume_files import write_4d

        if self.isRunning():
            raise InputError("A segmentation is already running; wait for it or press Cancel.")
        if sequenceNode is None:
            raise InputError("No cine selected; select the cine's volume sequence.")
        if not 0.0 < threshold < 1.0:
            raise InputError(f"Threshold {threshold} must lie strictly between 0 and 1.")
        modelDir = Path(modelDir) if modelDir and str(modelDir) not in ("", ".") else bundled_model_dir()
        if not (modelDir / "manifest.json").is_file():
            raise ModelError(f"{modelDir} is not a model bundle (no manifest.json). Select the model folder, "
                             "or reinstall the extension to restore the bundled model.")
        missing = self.missingRequirements()
        if missing:
            raise InputError(f"Python packages missing: {', '.join(missing)}. Call ensureRequirements() "
                             "(the Apply button offers to install them).")
        cine = mrml.cine_from_sequence(sequenceNode)  # validates the cine before anything runs
        browser = mrml.find_browser_node(slicer.mrmlScene, sequenceNode)
        rvInsertion = mrml.rv_insertion_lps(rvInsertionNode)  # refused now: an empty list, a point off the image
        if rvInsertion is not None:
            rv_insertion_pixel(rvInsertion, cine.geometry, cine.frames.shape[2:])
        workDir = Path(tempfile.mkdtemp(prefix="LVMyoSeg-", dir=slicer.app.temporaryPath))
        job = SegmentationJob(sequenceNode, browser, cine, workDir, modelDir, threshold, onProgress, onFinished,
                              rvInsertionNode)
        try:
            inputPath = workDir / "cine.nrrd"
            write_4d(inputPath, cine.frames, cine.geometry, cine.trigger_times_ms, kind="image")
            args = ["segment", str(inputPath), "-o", str(workDir / "output"),
                    "--model", str(modelDir), "--threshold", f"{threshold:g}", "--format", "nifti",
                    "--no-overlay", "--progress-lines"]
            if members:
                args += ["--members", str(int(members))]
            job.process = CliProcess(qt, args, work_dir=workDir, on_line=lambda line: self._handleLine(job, line),
                                     on_log=job.log.append, on_end=lambda end: self._onProcessEnd(job, end))
            job.process.start()
        except BaseException:
            shutil.rmtree(workDir, ignore_errors=True)
            raise
        self._job = job
        return job

    def _handleLine(self, job: SegmentationJob, line: str) -> None:
        progress = parse_progress_line(line)
        if progress is None:
            if line.strip():
                job.log.append(line)
                logging.info(f"LVMyoSeg: {line}")
        elif job.onProgress:
            job.onProgress(*progress)

    def _onProcessEnd(self, job: SegmentationJob, end: ProcessEnd) -> None:
        job.error = failure_message(end, job.log, "segmentation", job.process.python)
        if end.ok:
            try:
                job.result = self.loadResults(job)
            except LVMyoSegError as exc:
                job.error = str(exc)
        self._finish(job)

    def _finish(self, job: SegmentationJob) -> None:
        job.finished = True
        job.elapsedSeconds = time.time() - job.startTime
        shutil.rmtree(job.workDir, ignore_errors=True)
        if self._job is job:
            self._job = None
        if job.onFinished:
            job.onFinished(job)

    def cancel(self) -> None:
        """Stop the running segmentation (if any); nothing is added to the scene."""
        job = self._job
        if job is None or job.finished:
            return
        job.cancelled = True
        job.process.cancel()  # reports the end once, which finishes the job

    def segmentBlocking(self, sequenceNode, modelDir: Optional[Path] = None, members: int = 0,
                        threshold: float = 0.5, timeoutSeconds: float = 3600.0) -> mrml.ResultNodes:
        """Segment and wait (keeping the GUI alive); returns the result nodes or raises."""
        job = self.startSegmentation(sequenceNode, modelDir, members, threshold)
        if not job.process.wait(slicer.app.processEvents, timeoutSeconds):
            self.cancel()
            raise LVMyoSegError(f"Segmentation did not finish within {timeoutSeconds:.0f} s; it was cancelled.")
        if job.error:
            raise LVMyoSegError(job.error)
        return job.result

    # -- cohort batch in a background process (`lvmyoseg batch`; the logic is the command line's)

    def isBatchRunning(self) -> bool:
        return self._batchJob is not None and not self._batchJob.finished

    def startBatch(self, inputs, outputDir, modelDir: Optional[Path] = None, members: int = 0,
                   onProgress=None, onFinished=None) -> BatchJob:
        """Segment every study of ``inputs`` (a folder of studies or a CSV study list) into
        ``outputDir``; ``onFinished(job)`` is called at the end. Resumes an earlier run into the
        same folder."""
        if self.isBatchRunning():
            raise InputError("A batch is already running; wait for it or press Cancel.")
        if not inputs or not Path(inputs).exists():
            raise InputError(f"Studies {inputs or '(none)'} not found: pick a folder of studies or a CSV "
                             "study list.")
        if not outputDir or str(outputDir) in ("", "."):
            raise InputError("No output folder: pick the folder the batch writes into.")
        modelDir = Path(modelDir) if modelDir and str(modelDir) not in ("", ".") else bundled_model_dir()
        outputDir = Path(outputDir)
        outputDir.mkdir(parents=True, exist_ok=True)
        args = ["batch", str(Path(inputs)), "-o", str(outputDir), "--model", str(modelDir), "--progress-lines"]
        if members:
            args += ["--members", str(int(members))]
        job = BatchJob(outputDir, onProgress, onFinished)
        job.process = CliProcess(qt, args, work_dir=outputDir, on_line=lambda line: self._handleBatchLine(job, line),
                                 on_log=job.log.append, on_end=lambda end: self._onBatchEnd(job, end))
        job.process.start()
        self._batchJob = job
        return job

    def _handleBatchLine(self, job: BatchJob, line: str) -> None:
        progress = parse_progress_line(line)
        if progress is None:
            if line.strip():
                job.log.append(line)
                job.summary = line  # the command's last line is its summary
                logging.info(f"LVMyoSeg batch: {line}")
        elif job.onProgress:
            job.onProgress(*progress)

    def _onBatchEnd(self, job: BatchJob, end: ProcessEnd) -> None:
        job.error = failure_message(end, job.log, "batch", job.process.python)
        job.finished = True
        job.elapsedSeconds = time.time() - job.startTime
        if self._batchJob is job:
            self._batchJob = None
        if job.onFinished:
            job.onFinished(job)

    def cancelBatch(self) -> None:
        """Stop the running batch (if any); studies already finished stay in the table."""
        job = self._batchJob
        if job is None or job.finished:
            return
        job.cancelled = True
        job.process.cancel()

    @staticmethod
    def showCohortTable(outputDir: Path):
        """Load ``outputDir/cohort.csv`` as a table node and show it in a table view; returns the node."""
        table = slicer.util.loadTable(str(Path(outputDir) / "cohort.csv"))
        layoutManager = slicer.app.layoutManager()
        if layoutManager is not None:
            layoutManager.setLayout(slicer.modules.tables.logic().GetLayoutWithTable(layoutManager.layout))
            slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
            slicer.app.applicationLogic().PropagateTableSelection()
        return table

    def loadResults(self, job: SegmentationJob) -> mrml.ResultNodes:
        """Read the process outputs and add them to the scene, synchronised with the cine."""
        from LVMyoSegLib.errors import GeometryError
        from LVMyoSegLib.volume_files import read_volume_4d

        outDir = job.workDir / "output"
        volumes = {}
        for key, name in OUTPUT_FILES.items():
            path = outDir / name
            if not path.is_file():
                raise ModelError(f"The segmentation process wrote no {name} into {outDir}; see the log.")
            volume = read_volume_4d(path)
            if volume.array.shape != job.cine.frames.shape or not volume.geometry.matches(job.cine.geometry):
                raise GeometryError(f"{name} ({volume.array.shape}) is not on the cine's grid "
                                    f"({job.cine.frames.shape}); the result cannot be shown on this cine.")
            volumes[key] = volume.array
        probabilities = np.stack([volumes["myocardium"], volumes["blood_pool"]], axis=-1).astype(np.float32)
        labels = volumes["labels"].astype(np.uint8)
        results = mrml.add_results_to_scene(slicer.mrmlScene, job.sequenceNode, probabilities, labels,
                                            job.browserNode, threshold=job.threshold)
        self.setRvInsertion(results.segmentation, job.rvInsertionNode)
        table, _ = self.updateVolumesTable(results.segmentation, labels)
        self.showResults(results, table)
        return results

    # -- results

    @staticmethod
    def _resultNodes(segmentationSequence):
        cineSequence, myoSequence, poolSequence, table = mrml.result_nodes(segmentationSequence)
        if cineSequence is None or myoSequence is None:
            raise InputError(f"'{segmentationSequence.GetName()}' was not made by LV Myocardium Segmentation "
                             "(it has no cine or probability maps attached); select one of its results.")
        return cineSequence, myoSequence, poolSequence, table

    @staticmethod
    def setRvInsertion(segmentationSequence, markupsNode) -> None:
        """Record (or clear, with None) the RV insertion point list used for a result's wall thickness."""
        segmentationSequence.SetNodeReferenceID(mrml.REF_RV_INSERTION, markupsNode.GetID() if markupsNode else None)

    def updateVolumesTable(self, segmentationSequence, labels: Optional[np.ndarray] = None):
        """(Re)compute a result's cardiac function: the per-frame volumes table and the wall
        thickness table (AHA segments when the result has an RV insertion point); returns the
        volumes table and the function."""
        from LVMyoSegLib.cardiac_function import compute_cardiac_function

        cineSequence, _, _, table = self._resultNodes(segmentationSequence)
        cine = mrml.cine_from_sequence(cineSequence)
        if labels is None:
            labels = mrml.labels_from_segmentation_sequence(segmentationSequence, cine)
        rvInsertion = mrml.rv_insertion_lps(segmentationSequence.GetNodeReference(mrml.REF_RV_INSERTION))
        function = compute_cardiac_function(labels, cine.geometry, cine.trigger_times_ms, rv_insertion=rvInsertion)
        table = mrml.volumes_table(slicer.mrmlScene, labels, cine.geometry, trigger_times_ms=cine.trigger_times_ms,
                                   name=f"{segmentationSequence.GetName()} volumes", table_node=table,
                                   function=function)
        segmentationSequence.SetNodeReferenceID(mrml.REF_VOLUMES_TABLE, table.GetID())
        thickness = mrml.thickness_table(slicer.mrmlScene, function,
                                         name=f"{segmentationSequence.GetName()} wall thickness",
                                         table_node=segmentationSequence.GetNodeReference(mrml.REF_THICKNESS_TABLE))
        segmentationSequence.SetNodeReferenceID(mrml.REF_THICKNESS_TABLE, thickness.GetID())
        return table, function

    @staticmethod
    def functionSummary(segmentationSequence) -> str:
        """One-paragraph EDV/ESV/SV/EF/LV mass text from a result's volumes table."""
        table = mrml.result_nodes(segmentationSequence)[3]
        if table is None or table.GetAttribute("LVMyoSeg.EDV_mL") is None:
            return ""
        a = lambda key: float(table.GetAttribute(f"LVMyoSeg.{key}"))  # noqa: E731
        text = (f"EDV {a('EDV_mL'):.1f} mL (frame {int(a('EDFrame'))}), ESV {a('ESV_mL'):.1f} mL "
                f"(frame {int(a('ESFrame'))}), SV {a('SV_mL'):.1f} mL, EF {a('EF_percent'):.1f} %, "
                f"LV mass {a('LVMass_g'):.1f} g. Per-frame volumes: table '{table.GetName()}'.")
        thickness = segmentationSequence.GetNodeReference(mrml.REF_THICKNESS_TABLE)
        if thickness is not None:
            layout = ("AHA segments" if thickness.GetAttribute(mrml.ATTR_THICKNESS_REFERENCE) == "aha"
                      else "sectors relative to the image (no RV insertion point)")
            text += f" Wall thickness by {layout}: table '{thickness.GetName()}'."
        return text

    def applyThreshold(self, segmentationSequence, threshold: float) -> np.ndarray:
        """Re-derive every frame's segments from the stored probabilities (no network run)."""
        _, myoSequence, poolSequence, _ = self._resultNodes(segmentationSequence)
        labels = mrml.update_segmentations_from_probabilities(segmentationSequence, myoSequence, threshold,
                                                              poolSequence)
        self.updateVolumesTable(segmentationSequence, labels)
        return labels

    def editedSlices(self, segmentationSequence) -> np.ndarray:
        """Bool ``[T, Z]``: slices whose LV labels differ from what the probabilities give at the
        result's threshold, i.e. the slices the user edited."""
        from LVMyoSegLib.pipeline import labels_from_probabilities

        cineSequence, myoSequence, poolSequence, _ = self._resultNodes(segmentationSequence)
        cine = mrml.cine_from_sequence(cineSequence)
        labels = mrml.labels_from_segmentation_sequence(segmentationSequence, cine)
        threshold = float(segmentationSequence.GetAttribute(mrml.ATTR_THRESHOLD) or 0.5)
        derived = labels_from_probabilities(mrml.probabilities_from_sequences(myoSequence, poolSequence), threshold)
        return (labels != derived).any(axis=(2, 3))

    def exportForTraining(self, segmentationSequence, datasetDir: Path, caseId: Optional[str] = None,
                          includeUnedited: bool = False, notes: str = "") -> Path:
        """Add the cine and its current segmentation as a case of an LVMyoSeg training dataset.

        Slices the user edited are marked as labelled (both channels); with ``includeUnedited``
        every slice is (the user reviewed them all). Returns the case folder.
        """
        from LVMyoSegLib.dataset import add_case
        from LVMyoSegLib.labels import CHANNELS, Labels
        from LVMyoSegLib.retraining import unique_case_id

        cineSequence, _, _, _ = self._resultNodes(segmentationSequence)
        cine = mrml.cine_from_sequence(cineSequence)
        labels = mrml.labels_from_segmentation_sequence(segmentationSequence, cine)
        edited = self.editedSlices(segmentationSequence)
        known2d = np.ones_like(edited) if includeUnedited else edited
        if not known2d.any():
            raise LabelError(f"No slice of '{segmentationSequence.GetName()}' was edited. Correct the "
                             "segmentation with the Segment Editor first, or export all frames as reviewed.")
        known = np.repeat(known2d[:, :, None], len(CHANNELS), axis=2)
        datasetDir = Path(datasetDir)
        caseId = caseId or unique_case_id(datasetDir, cineSequence.GetName())
        return add_case(datasetDir, caseId, cine, Labels(labels, known, source=cineSequence.GetName()),
                        source=f"3D Slicer: {cineSequence.GetName()}",
                        edited_frames=np.argwhere(edited).tolist(), notes=notes)

    @staticmethod
    def showResults(results: mrml.ResultNodes, table=None) -> None:
        """Show the cine with the segmentation outlines, and the cavity volume curve."""
        sequencesLogic = slicer.modules.sequences.logic()
        sequencesLogic.UpdateProxyNodesFromSequences(results.browser)
        cineProxy = results.browser.GetProxyNode(results.browser.GetMasterSequenceNode())
        segProxy = results.browser.GetProxyNode(results.segmentation)
        if segProxy is not None:
            segProxy.CreateDefaultDisplayNodes()
        for sequence in (results.myocardium_probability, results.blood_pool_probability):
            proxy = results.browser.GetProxyNode(sequence)
            if proxy is None:
                continue
            proxy.CreateDefaultDisplayNodes()
            display = proxy.GetDisplayNode()
            display.SetAutoWindowLevel(False)
            display.SetWindowLevelMinMax(0.0, 1.0)
            if slicer.mrmlScene.GetNodeByID("vtkMRMLColorTableNodeFileColdToHotRainbow.txt"):
                display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeFileColdToHotRainbow.txt")
        if cineProxy is not None:
            slicer.util.setSliceViewerLayers(background=cineProxy, fit=True)
        toolbar = getattr(slicer.modules.sequences, "setToolBarActiveBrowserNode", None)
        if toolbar:
            toolbar(results.browser)
        if table is not None and slicer.app.layoutManager() is not None:
            series = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{table.GetName()} cavity")
            series.SetAndObserveTableNodeID(table.GetID())
            series.SetXColumnName("time")
            series.SetYColumnName("cavity_volume")
            series.SetPlotType(series.PlotTypeScatter)
            series.SetColor(*mrml.BLOOD_POOL_SEGMENT.color)
            chart = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{table.GetName()} chart")
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
            chart.SetTitle("LV cavity volume")
            chart.SetXAxisTitle("time (ms)")
            chart.SetYAxisTitle("volume (mL)")
            slicer.modules.plots.logic().ShowChartInLayout(chart)


#
# LVMyoSegTest
#


class LVMyoSegTest(ScriptedLoadableModuleTest):
    """Whole path on the bundled sample study: cine -> background process -> MRML results."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_segment_sample()
        self.setUp()
        self.test_cancel_leaves_scene_unchanged()

    def _loadSample(self):
        from LVMyoSegLib.dataset import read_case

        self.assertTrue(SAMPLE_CINE.is_file(), f"Bundled sample missing: {SAMPLE_CINE}")
        case = read_case(SAMPLE_DATASET_DIR, SAMPLE_CASE_ID)
        sequence, browser = mrml.sequence_from_cine(slicer.mrmlScene, case.cine, "LVMyoSeg sample cine")
        return case, sequence, browser

    def test_segment_sample(self) -> None:
        self.delayDisplay("Segmenting the bundled sample study")
        case, sequence, browser = self._loadSample()
        logic = LVMyoSegLogic()
        self.assertTrue(logic.ensureRequirements(askUser=False))
        self.assertTrue((bundled_model_dir() / "manifest.json").is_file(),
                        f"No bundled model at {bundled_model_dir()}")
        results = logic.segmentBlocking(sequence, bundled_model_dir(), members=1, threshold=0.5)

        self.assertIs(results.browser, browser)
        for t in range(case.cine.n_phases):  # every frame on the input grid
            inputMatrix = mrml.volume_ijk_to_ras(sequence.GetNthDataNode(t))
            segmentation = results.segmentation.GetNthDataNode(t).GetSegmentation()
            image = segmentation.GetSegment(mrml.MYOCARDIUM_SEGMENT.segment_id).GetRepresentation(
                slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName())
            m = vtk.vtkMatrix4x4()
            image.GetImageToWorldMatrix(m)
            worldMatrix = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
            self.assertTrue(np.allclose(worldMatrix, inputMatrix, atol=1e-6), f"frame {t} off the input grid")

        labels = mrml.labels_from_segmentation_sequence(results.segmentation, case.cine)
        self.assertTrue((labels == 1).any(), "no myocardium found on the sample")
        known = case.labels.known[:, :, 0]
        expert = case.labels.label_map[known] == 1
        auto = labels[known] == 1
        dice = 2.0 * np.count_nonzero(expert & auto) / max(1, np.count_nonzero(expert) + np.count_nonzero(auto))
        self.delayDisplay(f"Myocardium DSC vs expert on the labelled slices: {dice:.3f}")
        self.assertGreater(dice, 0.5)

        table = mrml.result_nodes(results.segmentation)[3]
        self.assertIsNotNone(table)
        self.assertEqual(table.GetNumberOfRows(), case.cine.n_phases)
        thickness = results.segmentation.GetNodeReference(mrml.REF_THICKNESS_TABLE)
        self.assertEqual(thickness.GetAttribute("LVMyoSeg.ThicknessReference"), "relative")

        # an RV insertion point (a point list in RAS) turns the sectors into AHA segments on Recompute
        ras = mrml.ijk_to_ras(case.cine.geometry) @ np.array([60.0, 70.0, 5.0, 1.0])
        points = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "RV insertion")
        points.AddControlPoint(*ras[:3])
        logic.setRvInsertion(results.segmentation, points)
        logic.updateVolumesTable(results.segmentation)
        self.assertEqual(thickness.GetAttribute("LVMyoSeg.ThicknessReference"), "aha")
        self.assertIn("AHA segments", logic.functionSummary(results.segmentation))

        before = int((labels == 1).sum())
        after = int((logic.applyThreshold(results.segmentation, 0.8) == 1).sum())
        self.assertLessEqual(after, before)
        self.delayDisplay("Test passed")

    def test_cancel_leaves_scene_unchanged(self) -> None:
        self.delayDisplay("Cancelling a running segmentation")
        _, sequence, _ = self._loadSample()
        logic = LVMyoSegLogic()
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        job = logic.startSegmentation(sequence, bundled_model_dir(), members=1)
        logic.cancel()
        self.assertTrue(job.finished and job.cancelled)
        self.assertFalse(logic.isRunning())
        self.assertIsNone(job.result)
        self.assertFalse(job.workDir.exists())
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)
        self.delayDisplay("Test passed")
