"""LV Myocardium Trainer: improve the LV myocardium model with corrected cases (3D Slicer module).

Thin by design: the Widget reads the GUI, the Logic starts the background jobs
(``PythonSlicer -m LVMyoSegLib.cli loo|train ... --progress-lines``, built by
:mod:`LVMyoSegLib.app.training_jobs` and run by :mod:`LVMyoSegLib.app.jobs`). A Cancel keeps
the finished epochs (the same job started again resumes); model versions live in the registry
(:mod:`LVMyoSegLib.model.registry`) in the user's local data folder (:mod:`LVMyoSegLib.app.data_dirs`);
the bundled model is never changed. TensorFlow is installed on the first training only.
"""

from pathlib import Path
from typing import Annotated, List, Optional

import qt
import slicer
from slicer import vtkMRMLSequenceNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from LVMyoSegLib.app import texts
from LVMyoSegLib.app.compat import unsupported_reason
from LVMyoSegLib.app.devtools import run_selftest_file
from LVMyoSegLib.app.module_widget import ModuleWidgetBase

# Slicer 5.8 (Python 3.9) loads this file, shows UNSUPPORTED and imports nothing else of the Lib.
UNSUPPORTED = unsupported_reason((slicer.app.majorVersion, slicer.app.minorVersion))
if UNSUPPORTED is None:
    from LVMyoSegLib.app import install, retraining
    from LVMyoSegLib.app.data_dirs import slicer_data_dirs
    from LVMyoSegLib.app.display import show_loo_results
    from LVMyoSegLib.app.export import add_scene_case
    from LVMyoSegLib.app.jobs import Job, JobRunner
    from LVMyoSegLib.app.training_jobs import dataset_cases, leave_one_out_job, training_job
    from LVMyoSegLib.errors import InputError, LVMyoSegError
    from LVMyoSegLib.io.dataset import list_cases
    from LVMyoSegLib.model import registry
    from LVMyoSegLib.model.variants import VARIANTS
    from LVMyoSegLib.progress import ProgressEvent
VARIANT_CHOICES = list(reversed(VARIANTS)) if UNSUPPORTED is None else ["multi_level"]  # the paper's best first


class LVMyoSegTrainer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LV Myocardium Trainer"
        self.parent.categories = ["Cardiac"]
        self.parent.dependencies = ["LVMyoSeg", "Sequences", "Plots", "Tables"]
        self.parent.contributors = texts.CONTRIBUTORS
        self.parent.helpText = (f"<b>{UNSUPPORTED}</b><br><br>" if UNSUPPORTED else "") + texts.TRAINER_HELP
        self.parent.acknowledgementText = texts.TRAINER_ACKNOWLEDGEMENT

    def runTest(self, msec=100, **kwargs):
        """Reload and Test: the self-tests are in Testing/Python/LVMyoSegTrainerSelfTest.py (ctest runs them too)."""
        run_selftest_file(Path(self.parent.path).parent / "Testing" / "Python" / "LVMyoSegTrainerSelfTest.py",
                          "LVMyoSegTrainerSelfTest", msec, **kwargs)


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
    initModel: str = "bundled"
    variant: Annotated[str, Choice(VARIANT_CHOICES)] = "multi_level"
    members: Annotated[int, WithinRange(1, 20)] = 1
    cnnEpochs: Annotated[int, WithinRange(1, 5000)] = 60
    rnnEpochs: Annotated[int, WithinRange(1, 5000)] = 20
    excludedCases: str = ""
    newModelId: str = ""
    resultsTable: vtkMRMLTableNode


class LVMyoSegTrainerWidget(ModuleWidgetBase, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Reads the GUI and calls :class:`LVMyoSegTrainerLogic`; holds no computation."""

    unsupported = UNSUPPORTED

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self._updatingCases = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        if not self.loadPanel(slicer, qt, self.resourcePath("UI/LVMyoSegTrainer.ui")):
            return
        self.ui.logTextEdit.setMaximumBlockCount(5000)
        self.logic = LVMyoSegTrainerLogic()

        self.ui.datasetPathLineEdit.connect("currentPathChanged(QString)", self.onDatasetChanged)
        self.ui.casesListWidget.connect("itemChanged(QListWidgetItem*)", self.onCaseItemChanged)
        self.ui.addFolderButton.connect("clicked(bool)", self.onAddFolder)
        self.ui.removeCaseButton.connect("clicked(bool)", self.onRemoveFromSelection)
        self.ui.addSceneCaseButton.connect("clicked(bool)", self.onAddSceneCase)
        self.ui.startFromComboBox.connect("currentIndexChanged(int)", self.onStartFromChanged)
        self.ui.looButton.connect("clicked(bool)", lambda _: self._start("loo"))
        self.ui.trainButton.connect("clicked(bool)", lambda _: self._start("train"))
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)

        self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        self._refreshStartFrom()
        self._refreshCases()

    def _datasetDir(self) -> Optional[Path]:
        p = self._parameterNode
        return Path(p.datasetDir) if p and str(p.datasetDir) not in ("", ".") else None

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        self._updateButtons()

    def _updateButtons(self) -> None:
        running = self.logic.isRunning() or self.logic.installer.busy
        p = self._parameterNode
        selected = len(self._selectedCases())
        hasDataset = self._datasetDir() is not None
        self.ui.looButton.enabled = hasDataset and selected >= 2 and not running
        self.ui.looButton.toolTip = ("Leave-one-out over the checked cases" if selected >= 2
                                     else "Check at least 2 cases of a dataset")
        self.ui.trainButton.enabled = hasDataset and selected >= 1 and not running
        self.ui.cancelButton.enabled = self.logic.isRunning()
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
            cases, problem = dataset_cases(folder if folder is None or str(folder) not in ("", ".") else None)
            if problem:
                self.ui.datasetStatusLabel.text = problem
                return
            excluded = {c.strip() for c in self._parameterNode.excludedCases.split(",") if c.strip()}
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
                list_cases(Path(folder))  # refuses a folder that is not a dataset
                self._parameterNode.datasetDir = Path(folder)
                return
            report = retraining.import_cases(Path(folder), dataset)
            self._refreshCases()
            text = f"Added {len(report.added)} case(s)."
            if report.skipped:
                text += " Left out: " + "; ".join(f"{c}: {why}" for c, why in report.skipped)
            self.ui.datasetStatusLabel.text = text

    def onAddSceneCase(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not add the segmentation to the dataset.", waitCursor=True):
            caseDir = add_scene_case(self._datasetDir(), p.segmentationSequence, p.cineSequence,
                                     all_reviewed=self.ui.allReviewedCheckBox.checked)
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
            if not self.logic.ensureRequirements(askUser=True):  # TensorFlow comes with the first training
                self.ui.statusLabel.text = "The Python packages training needs are not installed."
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

    def onCancel(self) -> None:
        self.logic.cancel()
        self._updateButtons()

    def onProgress(self, event: "ProgressEvent") -> None:
        self.ui.progressBar.value = int(round(1000 * max(0.0, min(1.0, event.fraction))))
        eta = retraining.format_eta(event.eta_s)
        self.ui.statusLabel.text = event.message + (f" - {eta}" if eta else "")

    def onLog(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)

    def onFinished(self, job: "Job") -> None:
        if job.cancelled:
            self.ui.statusLabel.text = ("Cancelled. Finished epochs are kept in "
                                        f"{job.work_dir}; start the same job again to resume.")
        elif job.error:
            self.ui.statusLabel.text = "Training failed."
            slicer.util.errorDisplay("Training failed:\n\n" + job.error.splitlines()[0], detailedText=job.error)
        else:
            self.ui.progressBar.value = 1000
            if job.kind == "loo":
                if self._parameterNode is not None:  # None while a scene closes
                    self._parameterNode.resultsTable = job.result["shown"][0]
                self.ui.resultsLabel.text = job.result["summary"]
                self.ui.statusLabel.text = f"Leave-one-out done in {job.elapsed_s / 60:.1f} min."
            else:
                self._refreshStartFrom()
                self.ui.statusLabel.text = (f"Registered model version '{job.result.model_id}' in "
                                            f"{job.elapsed_s / 60:.1f} min. Select it in LV Myocardium "
                                            "Segmentation.")
        self._updateButtons()


class LVMyoSegTrainerLogic(ScriptedLoadableModuleLogic):
    """Training cases, leave-one-out and training jobs, model versions; usable without the Widget.

    Example (Python console)::

        logic = slicer.util.getModuleLogic("LVMyoSegTrainer")
        from LVMyoSegLib.app.retraining import RetrainSettings
        job = logic.startLeaveOneOut(RetrainSettings("/data/mydataset", init="bundled", cnn_epochs=20))
        logic.waitFor(job)
    """

    def __init__(self, registryDir: Optional[Path] = None, runsDir: Optional[Path] = None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        dirs = slicer_data_dirs(slicer, qt) if registryDir is None or runsDir is None else None
        self.registryDir = Path(registryDir) if registryDir else dirs.registry
        self.runsDir = Path(runsDir) if runsDir else dirs.runs
        self.runner = JobRunner(qt)
        self.installer = install.Installer(lambda reqs, constraints: install.install_in_slicer(slicer, reqs, constraints))

    def getParameterNode(self) -> LVMyoSegTrainerParameterNode:
        return LVMyoSegTrainerParameterNode(super().getParameterNode())

    def ensureRequirements(self, askUser: bool = True) -> bool:
        """Install what training needs (TensorFlow, Keras and the segmentation packages), after asking."""
        return self.installer.ensure("train", confirm=(lambda m: install.ask_in_slicer(slicer, m)) if askUser else None)

    # -- cases (the work is in LVMyoSegLib: dataset.list_cases, retraining.import_cases, app.export)

    def models(self) -> list:
        """Usable model versions: the bundled model (if installed) and the registered ones."""
        return [e for e in registry.list_models(self.registryDir) if not e.problem]

    # -- background jobs

    def isRunning(self) -> bool:
        return self.runner.is_running()

    def _checkIdle(self) -> None:
        if self.isRunning():
            raise InputError("A training job is already running; wait for it or press Cancel.")

    def startLeaveOneOut(self, settings, onProgress=None, onLog=None, onFinished=None) -> "Job":
        """Start ``lvmyoseg loo``; the results table and chart are added when it succeeds
        (``job.result``: results, summary, and ``shown`` = (table, chart))."""
        self._checkIdle()
        return self.runner.start(leave_one_out_job(
            settings, self.runsDir, self.registryDir, show=lambda results, name: show_loo_results(slicer, results, name),
            on_progress=onProgress, on_log=onLog, on_finished=onFinished))

    def startTraining(self, settings, modelId: Optional[str] = None, onProgress=None, onLog=None,
                      onFinished=None) -> "Job":
        """Start ``lvmyoseg train --register``; ``job.result`` is the new registry entry when it succeeds."""
        self._checkIdle()
        return self.runner.start(training_job(settings, self.runsDir, self.registryDir, modelId,
                                              on_progress=onProgress, on_log=onLog, on_finished=onFinished))

    def cancel(self) -> None:
        """Stop the running job and every process it started. Its finished epochs stay in its run folder."""
        self.runner.cancel()

    def waitFor(self, job: "Job", timeoutSeconds: float = 24 * 3600.0) -> "Job":
        """Wait for ``job`` keeping the GUI alive; raise its error, if any."""
        if not self.runner.wait(job, slicer.app.processEvents, timeoutSeconds):
            self.cancel()
            raise LVMyoSegError(f"Training did not finish within {timeoutSeconds:.0f} s; it was cancelled.")
        if job.error:
            raise LVMyoSegError(job.error)
        return job
