"""LV Myocardium Trainer: improve the LV myocardium model with corrected cases (3D Slicer module).

Module, Widget (thin: reads the GUI, calls the Logic), Logic (usable without the Widget)
and Test. Training runs in a background process (``PythonSlicer -m LVMyoSegLib.cli loo|train
... --progress-lines``) that reports progress, survives a Cancel (finished epochs are kept;
the same job started again resumes) and never blocks the GUI. What to run and how to read
its output is in :mod:`LVMyoSegLib.retraining`; model versions live in the registry
(:mod:`LVMyoSegLib.registry`), a folder beside Slicer's user settings; the bundled model is
never changed.
"""

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
from slicer import vtkMRMLSequenceNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from LVMyoSegLib import mrml, registry, retraining
from LVMyoSegLib.cli_process import CliProcess, ProcessEnd, failure_message
from LVMyoSegLib.errors import InputError, LVMyoSegError, ModelError
from LVMyoSegLib.resources import SAMPLE_DIR

CHART_COLORS = ((0.55, 0.55, 0.55), (0.85, 0.2, 0.2), (0.2, 0.45, 0.85), (0.2, 0.65, 0.3))


#
# LVMyoSegTrainer
#


class LVMyoSegTrainer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LV Myocardium Trainer"
        self.parent.categories = ["Cardiac"]
        self.parent.dependencies = ["LVMyoSeg", "Sequences", "Plots", "Tables"]
        self.parent.contributors = ["LVMyoSeg developers"]
        self.parent.helpText = """
Improves the LV myocardium segmentation model with cases you corrected, for example studies of
a kind the bundled model has not seen (porcine infarct hearts, another scanner).<br><br>
(1) Segment a cine with <b>LV Myocardium Segmentation</b>; (2) correct it with the Segment Editor;
(3) here, pick a dataset folder and <b>Add to dataset</b> (or <b>Add cases from folder</b>);
(4) <b>Run leave-one-out</b>: for each case the model is fine-tuned on the other cases and scored
on it, before and after (DSC, HD, APD of the myocardium, in a table and a plot);
(5) <b>Train and register</b>: train on all selected cases; the new model version appears in the
model list of LV Myocardium Segmentation.<br><br>
Training runs in a background process and can take hours on a CPU. Cancel keeps the finished
epochs: starting the same job again resumes it. The bundled model is never overwritten.
"""
        self.parent.acknowledgementText = """
Sample data: Sunnybrook Cardiac Data (CC0). Radau P, Lu Y, Connelly K, Paul G, Dick AJ,
Wright GA. "Evaluation Framework for Algorithms Segmenting Short Axis Cardiac MRI." The MIDAS
Journal - Cardiac MR Left Ventricle Segmentation Challenge,
<a href="http://hdl.handle.net/10380/3070">http://hdl.handle.net/10380/3070</a>.
The module structure follows the 3D Slicer scripted module template and KitwareMedical's
SlicerNNUnet extension.
"""


#
# LVMyoSegTrainerParameterNode
#


@parameterNodeWrapper
class LVMyoSegTrainerParameterNode:
    """
    datasetDir - the training dataset folder.
    cineSequence, segmentationSequence - a scene case to add.
    initModel - "bundled", "scratch", a registered model id or a bundle folder.
    variant, members, cnnEpochs, rnnEpochs - training settings.
    excludedCases - case ids left out of training (comma-separated); their files stay.
    newModelId - id of the next registered version (empty: automatic).
    resultsTable - the last leave-one-out table.
    """

    datasetDir: Path
    cineSequence: vtkMRMLSequenceNode
    segmentationSequence: vtkMRMLSequenceNode
    initModel: str = registry.BUNDLED_ID
    variant: Annotated[str, Choice(list(retraining.VARIANTS))] = "multi_level"
    members: Annotated[int, WithinRange(1, 20)] = 1
    cnnEpochs: Annotated[int, WithinRange(1, 5000)] = 60
    rnnEpochs: Annotated[int, WithinRange(1, 5000)] = 20
    excludedCases: str = ""
    newModelId: str = ""
    resultsTable: vtkMRMLTableNode


#
# LVMyoSegTrainerWidget
#


class LVMyoSegTrainerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Reads the GUI and calls :class:`LVMyoSegTrainerLogic`; holds no computation."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._updatingCases = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LVMyoSegTrainer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.ui.logTextEdit.setMaximumBlockCount(5000)
        self.logic = LVMyoSegTrainerLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.datasetPathLineEdit.connect("currentPathChanged(QString)", self.onDatasetChanged)
        self.ui.casesListWidget.connect("itemChanged(QListWidgetItem*)", self.onCaseItemChanged)
        self.ui.addFolderButton.connect("clicked(bool)", self.onAddFolder)
        self.ui.removeCaseButton.connect("clicked(bool)", self.onRemoveFromSelection)
        self.ui.addSceneCaseButton.connect("clicked(bool)", self.onAddSceneCase)
        self.ui.startFromComboBox.connect("currentIndexChanged(int)", self.onStartFromChanged)
        self.ui.looButton.connect("clicked(bool)", self.onLeaveOneOut)
        self.ui.trainButton.connect("clicked(bool)", self.onTrain)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self.logic:
            self.logic.cancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        self._refreshStartFrom()
        self._refreshCases()

    def setParameterNode(self, inputParameterNode: Optional[LVMyoSegTrainerParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._updateButtons()

    def _datasetDir(self) -> Optional[Path]:
        p = self._parameterNode
        return Path(p.datasetDir) if p and str(p.datasetDir) not in ("", ".") else None

    def _updateButtons(self, caller=None, event=None) -> None:
        running = self.logic.isRunning()
        p = self._parameterNode
        selected = len(self._selectedCases())
        hasDataset = self._datasetDir() is not None
        self.ui.looButton.enabled = hasDataset and selected >= 2 and not running
        self.ui.looButton.toolTip = ("Leave-one-out over the checked cases" if selected >= 2
                                     else "Check at least 2 cases of a dataset")
        self.ui.trainButton.enabled = hasDataset and selected >= 1 and not running
        self.ui.cancelButton.enabled = running
        self.ui.addSceneCaseButton.enabled = bool(p and p.segmentationSequence) and hasDataset and not running
        self.ui.addFolderButton.enabled = not running
        self.ui.variantComboBox.enabled = bool(p) and p.initModel == retraining.INIT_SCRATCH

    # -- cases

    def _refreshCases(self, folder: Optional[Path] = None) -> None:
        """List the cases of ``folder`` (default: the parameter node's dataset folder)."""
        self._updatingCases = True
        try:
            self.ui.casesListWidget.clear()
            if folder is None:
                folder = self._datasetDir()
            elif str(folder) in ("", "."):
                folder = None
            if folder is None:
                self.ui.datasetStatusLabel.text = "Pick a dataset folder (a new, empty folder starts a dataset)."
                return
            if not (folder / "dataset.json").is_file():
                self.ui.datasetStatusLabel.text = f"{folder} holds no dataset yet; add cases to start one."
                return
            try:
                cases = self.logic.listCases(folder)
            except LVMyoSegError as exc:
                self.ui.datasetStatusLabel.text = str(exc)
                return
            excluded = self.logic.parseCaseList(self._parameterNode.excludedCases)
            for caseId in cases:
                item = qt.QListWidgetItem(caseId)
                item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
                item.setCheckState(qt.Qt.Unchecked if caseId in excluded else qt.Qt.Checked)
                self.ui.casesListWidget.addItem(item)
            self.ui.datasetStatusLabel.text = f"{len(cases)} case(s), {len(self._selectedCases())} selected for training."
        finally:
            self._updatingCases = False
            self._updateButtons()

    def _selectedCases(self) -> List[str]:
        w = self.ui.casesListWidget
        return [w.item(i).text() for i in range(w.count) if w.item(i).checkState() == qt.Qt.Checked]

    def _storeExcluded(self) -> None:
        w = self.ui.casesListWidget
        excluded = [w.item(i).text() for i in range(w.count) if w.item(i).checkState() != qt.Qt.Checked]
        self._parameterNode.excludedCases = ",".join(excluded)

    def onDatasetChanged(self, path: str) -> None:
        # the path comes from the signal: the parameter node may not be updated yet
        if self._parameterNode:
            self._refreshCases(Path(path) if path else Path(""))

    def onCaseItemChanged(self, item) -> None:
        if self._updatingCases or not self._parameterNode:
            return
        self._storeExcluded()
        self.ui.datasetStatusLabel.text = f"{self.ui.casesListWidget.count} case(s), " \
                                          f"{len(self._selectedCases())} selected for training."
        self._updateButtons()

    def onRemoveFromSelection(self) -> None:
        for item in self.ui.casesListWidget.selectedItems():
            item.setCheckState(qt.Qt.Unchecked)

    def onAddFolder(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(),
                                                     "LVMyoSeg dataset folder to add cases from")
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay("Could not add the cases.", waitCursor=True):
            dataset = self._datasetDir()
            if dataset is None:
                self.logic.listCases(Path(folder))  # refuses a folder that is not a dataset
                self._parameterNode.datasetDir = Path(folder)
                return
            report = self.logic.importCases(Path(folder), dataset)
            self._refreshCases()
            text = f"Added {len(report.added)} case(s)."
            if report.skipped:
                text += " Left out: " + "; ".join(f"{c}: {why}" for c, why in report.skipped)
            self.ui.datasetStatusLabel.text = text

    def onAddSceneCase(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not add the segmentation to the dataset.", waitCursor=True):
            caseDir = self.logic.addSceneCase(self._datasetDir(), p.segmentationSequence, p.cineSequence,
                                              allReviewed=self.ui.allReviewedCheckBox.checked)
            self._refreshCases()
            self.ui.datasetStatusLabel.text = f"Added case {caseDir.name} ({caseDir})."

    # -- settings

    def _refreshStartFrom(self) -> None:
        combo = self.ui.startFromComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for entry in self.logic.models():
            combo.addItem(entry.label(), entry.model_id)
        combo.addItem("scratch (train a new network)", retraining.INIT_SCRATCH)
        current = self._parameterNode.initModel if self._parameterNode else registry.BUNDLED_ID
        index = combo.findData(current)
        if index < 0 and self._parameterNode:
            index = 0
            self._parameterNode.initModel = combo.itemData(0)
        combo.setCurrentIndex(max(index, 0))
        combo.blockSignals(wasBlocked)

    def onStartFromChanged(self, index: int) -> None:
        if self._parameterNode and index >= 0:
            self._parameterNode.initModel = self.ui.startFromComboBox.itemData(index)

    def _settings(self) -> "retraining.RetrainSettings":
        p = self._parameterNode
        return retraining.RetrainSettings(dataset_dir=self._datasetDir(), init=p.initModel, variant=p.variant,
                                          members=p.members, cnn_epochs=p.cnnEpochs, rnn_epochs=p.rnnEpochs,
                                          cases=tuple(self._selectedCases()))

    # -- jobs

    def _start(self, kind: str) -> None:
        with slicer.util.tryWithErrorDisplay("Could not start training.", waitCursor=True):
            if not self.logic.ensureRequirements(askUser=True):
                self.ui.statusLabel.text = "The Python packages LVMyoSeg needs are not installed."
                return
            self.ui.progressBar.value = 0
            self.ui.logTextEdit.clear()
            self.ui.statusLabel.text = "Starting (reading and preparing the cases)..."
            settings = self._settings()
            if kind == "loo":
                self.logic.startLeaveOneOut(settings, onProgress=self.onProgress, onLog=self.onLog,
                                            onFinished=self.onFinished)
            else:
                self.logic.startTraining(settings, modelId=self._parameterNode.newModelId.strip() or None,
                                         onProgress=self.onProgress, onLog=self.onLog, onFinished=self.onFinished)
        self._updateButtons()

    def onLeaveOneOut(self) -> None:
        self._start("loo")

    def onTrain(self) -> None:
        self._start("train")

    def onCancel(self) -> None:
        self.logic.cancel()
        self._updateButtons()

    def onProgress(self, progress: "retraining.Progress") -> None:
        self.ui.progressBar.value = int(round(1000 * max(0.0, min(1.0, progress.fraction))))
        eta = retraining.format_eta(progress.eta_s)
        self.ui.statusLabel.text = progress.message + (f" - {eta}" if eta else "")

    def onLog(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)

    def onFinished(self, job: "TrainingJob") -> None:
        if job.cancelled:
            self.ui.statusLabel.text = ("Cancelled. Finished epochs are kept in "
                                        f"{job.outDir}; start the same job again to resume.")
        elif job.error:
            self.ui.statusLabel.text = "Training failed."
            slicer.util.errorDisplay("Training failed:\n\n" + job.error.splitlines()[0], detailedText=job.error)
        else:
            self.ui.progressBar.value = 1000
            if job.kind == "loo":
                self._parameterNode.resultsTable = job.resultsTable
                self.ui.resultsLabel.text = job.summary
                self.ui.statusLabel.text = f"Leave-one-out done in {job.elapsedSeconds / 60:.1f} min."
            else:
                self._refreshStartFrom()
                self.ui.statusLabel.text = (f"Registered model version '{job.entry.model_id}' in "
                                            f"{job.elapsedSeconds / 60:.1f} min. Select it in LV Myocardium "
                                            "Segmentation.")
        self._updateButtons()


#
# LVMyoSegTrainerLogic
#


@dataclass
class TrainingJob:
    """One background ``lvmyoseg loo`` or ``lvmyoseg train`` run."""

    kind: str
    settings: object
    outDir: Path
    args: List[str]
    tracker: object
    modelId: Optional[str] = None
    onProgress: Optional[Callable] = None
    onLog: Optional[Callable[[str], None]] = None
    onFinished: Optional[Callable[["TrainingJob"], None]] = None
    process: object = None
    startTime: float = field(default_factory=time.time)
    elapsedSeconds: float = 0.0
    log: List[str] = field(default_factory=list)
    cancelled: bool = False
    finished: bool = False
    error: Optional[str] = None
    resultsTable: object = None
    chart: object = None
    summary: str = ""
    entry: object = None


class LVMyoSegTrainerLogic(ScriptedLoadableModuleLogic):
    """Training cases, leave-one-out and training jobs, model versions; usable without the Widget.

    Example (Python console)::

        logic = slicer.util.getModuleLogic("LVMyoSegTrainer")
        from LVMyoSegLib.retraining import RetrainSettings
        job = logic.startLeaveOneOut(RetrainSettings("/data/mydataset", init="bundled", cnn_epochs=20))
        logic.waitFor(job)
    """

    def __init__(self, registryDir: Optional[Path] = None, runsDir: Optional[Path] = None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.registryDir = Path(registryDir) if registryDir else registry.slicer_registry_dir(
            slicer.app.slicerUserSettingsFilePath)
        self.runsDir = Path(runsDir) if runsDir else self.registryDir.parent / "runs"
        self._job: Optional[TrainingJob] = None

    def getParameterNode(self) -> LVMyoSegTrainerParameterNode:
        return LVMyoSegTrainerParameterNode(super().getParameterNode())

    # -- cases and models

    @staticmethod
    def listCases(datasetDir: Path) -> List[str]:
        from LVMyoSegLib.dataset import list_cases

        return list_cases(Path(datasetDir))

    @staticmethod
    def parseCaseList(text: str) -> List[str]:
        return [c.strip() for c in (text or "").split(",") if c.strip()]

    @staticmethod
    def importCases(sourceDir: Path, datasetDir: Path) -> "retraining.ImportReport":
        """Copy the cases of another dataset folder into ``datasetDir`` (never overwriting)."""
        return retraining.import_cases(Path(sourceDir), Path(datasetDir))

    def addSceneCase(self, datasetDir: Path, segmentationSequence, cineSequence=None,
                     caseId: Optional[str] = None, allReviewed: bool = False) -> Path:
        """Add a scene segmentation sequence (and its cine) as a new case; returns the case folder.

        A result of LV Myocardium Segmentation goes through its "Export for training" (edited
        slices, or all with ``allReviewed``); any other segmentation sequence needs
        ``cineSequence`` and contributes the slices where it holds LV labels.
        """
        from LVMyoSegLib.dataset import add_case

        if datasetDir is None:
            raise InputError("Pick a dataset folder first.")
        if segmentationSequence is None:
            raise InputError("Select the segmentation sequence to add.")
        resultCine = mrml.result_nodes(segmentationSequence)[0]
        if resultCine is not None:
            from LVMyoSeg import LVMyoSegLogic

            return LVMyoSegLogic().exportForTraining(segmentationSequence, Path(datasetDir), caseId=caseId,
                                                     includeUnedited=allReviewed)
        if cineSequence is None:
            raise InputError(f"'{segmentationSequence.GetName()}' was not made by LV Myocardium Segmentation; "
                             "select the cine it belongs to.")
        cine, labels = retraining.scene_labels(cineSequence, segmentationSequence)
        caseId = caseId or retraining.unique_case_id(Path(datasetDir), cineSequence.GetName())
        return add_case(Path(datasetDir), caseId, cine, labels, source=f"3D Slicer: {cineSequence.GetName()} + "
                        f"{segmentationSequence.GetName()}", edited_frames=np.argwhere(labels.known[:, :, 0]).tolist())

    def models(self) -> list:
        """Usable model versions: the bundled model (if installed) and the registered ones."""
        return [e for e in registry.list_models(self.registryDir) if not e.problem]

    def trainedVariant(self, settings) -> str:
        """The network a job trains: the start model's variant when fine-tuning."""
        if not settings.fine_tuning:
            return settings.variant
        from LVMyoSegLib.bundle import read_manifest

        manifest = read_manifest(registry.resolve(settings.init, self.registryDir))
        if settings.members > len(manifest.members):
            raise InputError(f"The start model '{settings.init}' has {len(manifest.members)} member(s); "
                             f"fine-tuning cannot make {settings.members}. Lower the ensemble members.")
        return manifest.variant

    # -- Python dependencies (shared with LV Myocardium Segmentation)

    @staticmethod
    def ensureRequirements(askUser: bool = True) -> bool:
        from LVMyoSeg import LVMyoSegLogic

        return LVMyoSegLogic().ensureRequirements(askUser=askUser)

    # -- background jobs

    def isRunning(self) -> bool:
        return self._job is not None and not self._job.finished

    def _checkCanStart(self, settings, minCases: int) -> List[str]:
        if self.isRunning():
            raise InputError("A training job is already running; wait for it or press Cancel.")
        cases = list(settings.cases) or self.listCases(settings.dataset_dir)
        if len(cases) < minCases:
            raise InputError(f"This needs at least {minCases} selected case(s); {len(cases)} selected in "
                             f"{settings.dataset_dir}.")
        return cases

    def startLeaveOneOut(self, settings, onProgress=None, onLog=None, onFinished=None) -> TrainingJob:
        """Start ``lvmyoseg loo``; the results table and chart are added when it succeeds."""
        cases = self._checkCanStart(settings, 2)
        plan = retraining.progress_plan(settings, folds=len(cases), variant=self.trainedVariant(settings))
        outDir = retraining.job_dir(self.runsDir, "loo", settings)
        args = retraining.loo_args(settings, outDir, self.registryDir)
        job = TrainingJob("loo", settings, outDir, args, retraining.ProgressTracker(plan),
                          onProgress=onProgress, onLog=onLog, onFinished=onFinished)
        self._startProcess(job)
        return job

    def startTraining(self, settings, modelId: Optional[str] = None, onProgress=None, onLog=None,
                      onFinished=None) -> TrainingJob:
        """Start ``lvmyoseg train --register``; the new version is in the registry when it succeeds.

        The metrics of a finished leave-one-out run with the same settings go into the manifest.
        """
        self._checkCanStart(settings, 1)
        plan = retraining.progress_plan(settings, folds=1, variant=self.trainedVariant(settings))
        modelId = modelId or retraining.default_model_id(settings.dataset_dir, time.strftime("%Y%m%d-%H%M%S"))
        registry.new_model_dir(self.registryDir, modelId)  # refuses a bad or existing id now, not after hours
        looResults = retraining.job_dir(self.runsDir, "loo", settings) / "loo_results.json"
        useLoo = None
        if looResults.is_file():
            results = retraining.read_loo_results(looResults)
            if results.get("folds_done") == results.get("folds_total"):
                useLoo = looResults
        outDir = retraining.job_dir(self.runsDir, "train", settings)
        args = retraining.train_args(settings, outDir, self.registryDir, modelId, loo_results=useLoo)
        job = TrainingJob("train", settings, outDir, args, retraining.ProgressTracker(plan), modelId=modelId,
                          onProgress=onProgress, onLog=onLog, onFinished=onFinished)
        self._startProcess(job)
        return job

    def _startProcess(self, job: TrainingJob) -> None:
        job.outDir.parent.mkdir(parents=True, exist_ok=True)
        job.process = CliProcess(qt, job.args, work_dir=job.outDir.parent,
                                 on_line=lambda line: self._handleLine(job, line),
                                 on_log=lambda line: self._log(job, line),
                                 on_end=lambda end: self._onProcessEnd(job, end))
        self._job = job
        job.process.start()

    def _log(self, job: TrainingJob, line: str) -> None:
        job.log.append(line)
        if job.onLog:
            job.onLog(line)

    def _handleLine(self, job: TrainingJob, line: str) -> None:
        try:
            progress = job.tracker.update(line, time.time())
        except LVMyoSegError as exc:  # a progress line this job did not plan for: keep it in the log
            progress = None
            self._log(job, f"(progress not understood: {exc})")
        if progress is None:
            if line.strip():
                self._log(job, line)
        elif job.onProgress:
            job.onProgress(progress)

    def _onProcessEnd(self, job: TrainingJob, end: ProcessEnd) -> None:
        job.error = failure_message(end, job.log, "training", job.process.python)
        if end.ok:
            try:
                self._collect(job)
            except LVMyoSegError as exc:
                job.error = str(exc)
        self._finish(job)

    def _collect(self, job: TrainingJob) -> None:
        if job.kind == "loo":
            results = retraining.read_loo_results(job.outDir / "loo_results.json")
            job.summary = retraining.loo_summary(results)
            job.resultsTable, job.chart = self.showLooResults(
                results, name=f"LOO {Path(job.settings.dataset_dir).name} from {job.settings.init}")
        else:
            entry = next((e for e in registry.list_models(self.registryDir, include_bundled=False)
                          if e.model_id == job.modelId and not e.problem), None)
            if entry is None:
                raise ModelError(f"Training finished but model version '{job.modelId}' is not in the registry "
                                 f"{self.registryDir}; see the log.")
            job.entry = entry

    def _finish(self, job: TrainingJob) -> None:
        job.finished = True
        job.elapsedSeconds = time.time() - job.startTime
        if self._job is job:
            self._job = None
        if job.onFinished:
            job.onFinished(job)

    def cancel(self) -> None:
        """Stop the running job (if any). Its finished epochs stay in its run folder (resume)."""
        job = self._job
        if job is None or job.finished:
            return
        job.cancelled = True
        job.process.cancel()  # reports the end once, which finishes the job

    def waitFor(self, job: TrainingJob, timeoutSeconds: float = 24 * 3600.0) -> TrainingJob:
        """Wait for ``job`` keeping the GUI alive; raise its error, if any."""
        if not job.process.wait(slicer.app.processEvents, timeoutSeconds):
            self.cancel()
            raise LVMyoSegError(f"Training did not finish within {timeoutSeconds:.0f} s; it was cancelled.")
        if job.error:
            raise LVMyoSegError(job.error)
        return job

    # -- results

    @staticmethod
    def showLooResults(results: dict, name: str = "LOO results"):
        """Add the per-case table (before vs after) and a DSC bar chart to the scene; show them."""
        columns, units = retraining.loo_table_columns(results)
        table = mrml.table_from_columns(slicer.mrmlScene, columns, name=name, units=units)
        dscColumns = [c for c in columns if c.startswith("DSC ")]
        chart = mrml.bar_chart(slicer.mrmlScene, table, dscColumns, label_column="case", name=f"{name} chart",
                               title="Held-out myocardium DSC", y_title="DSC", colors=CHART_COLORS)
        if slicer.app.layoutManager() is not None:
            slicer.modules.plots.logic().ShowChartInLayout(chart)
            slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
            slicer.app.applicationLogic().PropagateTableSelection()
        return table, chart


#
# LVMyoSegTrainerTest
#


class LVMyoSegTrainerTest(ScriptedLoadableModuleTest):
    """Cases, a tiny leave-one-out and train-and-register through the background process, and Cancel.

    Uses a temporary registry and run folder, the bundled Sunnybrook sample case and a SYNTHETIC
    phantom case; networks are tiny (a few epochs) so the test takes minutes, not hours.
    """

    TINY = ("--width", "4", "--pixel-mm", "2.5", "--crop-size", "64")

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()
        self.workDir = Path(tempfile.mkdtemp(prefix="LVMyoSegTrainerTest-", dir=slicer.app.temporaryPath))

    def tearDown(self) -> None:
        shutil.rmtree(self.workDir, ignore_errors=True)

    def runTest(self) -> None:
        for test in (self.test_cases_from_folder_and_scene, self.test_leave_one_out_and_register,
                     self.test_cancel_keeps_scene):
            self.setUp()
            try:
                test()
            finally:
                self.tearDown()

    def _dataset(self) -> Path:
        from LVMyoSegLib.dataset import add_case
        from LVMyoSegLib.phantom import make_synthetic_cine, sparsify_like_sunnybrook

        dataset = self.workDir / "dataset"
        report = LVMyoSegTrainerLogic.importCases(SAMPLE_DIR, dataset)
        self.assertEqual(report.added, ("SCD0000101",))
        cine, labels = make_synthetic_cine(n_phases=20, n_slices=4, size=128, seed=3)  # T as the sample
        add_case(dataset, "synthetic-phantom", cine, sparsify_like_sunnybrook(labels))
        return dataset

    def test_cases_from_folder_and_scene(self) -> None:
        self.delayDisplay("Adding cases from a folder and from the scene")
        from LVMyoSegLib.dataset import read_case

        logic = LVMyoSegTrainerLogic(self.workDir / "models")
        dataset = self._dataset()
        again = logic.importCases(SAMPLE_DIR, dataset)  # never overwrites
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
        caseDir = logic.addSceneCase(dataset, segSequence, cineSequence)
        added = read_case(dataset, caseDir.name)
        self.assertTrue(np.array_equal(added.labels.label_map, drawn))
        self.assertTrue(np.array_equal(added.labels.known[:, :, 0], myoKnown & drawn.any(axis=(2, 3))))
        self.assertEqual(len(logic.listCases(dataset)), 3)
        self.delayDisplay("Test passed")

    def test_leave_one_out_and_register(self) -> None:
        self.delayDisplay("Tiny leave-one-out and train-and-register in a background process")
        logic = LVMyoSegTrainerLogic(self.workDir / "models", self.workDir / "runs")
        self.assertTrue(logic.ensureRequirements(askUser=False))
        dataset = self._dataset()
        settings = retraining.RetrainSettings(dataset, init=retraining.INIT_SCRATCH, variant="cnn", members=1,
                                              cnn_epochs=2, rnn_epochs=1, extra_args=self.TINY)
        fractions = []
        job = logic.startLeaveOneOut(settings, onProgress=lambda p: fractions.append(p.fraction))
        logic.waitFor(job, timeoutSeconds=1800)
        self.assertAlmostEqual(fractions[-1], 1.0)
        table = job.resultsTable
        self.assertEqual(table.GetNumberOfRows(), 3)  # two folds and the mean
        self.assertEqual(table.GetCellText(0, 0), "SCD0000101")
        self.assertIsNotNone(table.GetTable().GetColumnByName("DSC cnn"))
        self.assertEqual(job.chart.GetNumberOfPlotSeriesNodes(), 1)

        job = logic.startTraining(settings, modelId="tiny-test")
        logic.waitFor(job, timeoutSeconds=1800)
        self.assertEqual(job.entry.model_id, "tiny-test")
        self.assertIn("tiny-test", [e.model_id for e in logic.models()])
        with self.assertRaises(LVMyoSegError):  # versions are never overwritten
            logic.startTraining(settings, modelId="tiny-test")
        self.delayDisplay("Test passed")

    def test_cancel_keeps_scene(self) -> None:
        self.delayDisplay("Cancelling a running leave-one-out")
        logic = LVMyoSegTrainerLogic(self.workDir / "models", self.workDir / "runs")
        settings = retraining.RetrainSettings(self._dataset(), init=retraining.INIT_SCRATCH, variant="cnn",
                                              cnn_epochs=50, extra_args=self.TINY)
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        job = logic.startLeaveOneOut(settings)
        logic.cancel()
        self.assertTrue(job.finished and job.cancelled)
        self.assertFalse(logic.isRunning())
        self.assertIsNone(job.resultsTable)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)
        self.delayDisplay("Test passed")
