"""LV Myocardium Segmentation: the 3D Slicer scripted module (Module, Widget, Logic, Test).

Thin by design: the Widget reads the GUI and reacts to the parameter node; the Logic starts the background
segmentation (``PythonSlicer -m LVMyoSegLib.cli segment ... --progress-lines``, run by :mod:`LVMyoSegLib.app.jobs`)
and delegates to the Lib. Everything else lives in LVMyoSegLib: ``app.results`` (a result in the scene),
``app.export`` (dataset cases), ``app.install`` (Python packages), ``app.batch_job`` (the Batch section: ``lvmyoseg
batch`` over studies on disk), ``app.result_selection`` (what a threshold or result change does), ``app.review``
(the QC "review first" list and its jumps), ``mrml`` (arrays <-> MRML nodes).
"""

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import qt
import slicer
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLSequenceNode
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
    from LVMyoSegLib import mrml
    from LVMyoSegLib.app import batch_job, install, results, review
    from LVMyoSegLib.app.data_dirs import slicer_data_dirs
    from LVMyoSegLib.app.display import show_segmentation
    from LVMyoSegLib.app.export import export_result
    from LVMyoSegLib.app.jobs import Job, JobRunner
    from LVMyoSegLib.app.result_selection import Action, ResultState, react
    from LVMyoSegLib.app.segmentation import chosen_rotations, segmentation_job
    from LVMyoSegLib.errors import InputError, LVMyoSegError
    from LVMyoSegLib.model import registry


class LVMyoSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LV Myocardium Segmentation"
        self.parent.categories = ["Cardiac"]
        self.parent.dependencies = ["Sequences", "Segmentations"]
        self.parent.contributors = texts.CONTRIBUTORS
        self.parent.helpText = (f"<b>{UNSUPPORTED}</b><br><br>" if UNSUPPORTED else "") + texts.SEGMENTATION_HELP
        self.parent.acknowledgementText = texts.SEGMENTATION_ACKNOWLEDGEMENT

    def runTest(self, msec=100, **kwargs):
        """Reload and Test: the self-tests are in Testing/Python/LVMyoSegSelfTest.py (ctest runs them too)."""
        run_selftest_file(Path(self.parent.path).parent / "Testing" / "Python" / "LVMyoSegSelfTest.py",
                          "LVMyoSegSelfTest", msec, **kwargs)


@parameterNodeWrapper
class LVMyoSegParameterNode:
    """
    inputSequence - the cine: a volume sequence, one 3D stack per phase.
    model - "bundled", a registered model id, or a model bundle folder (an id survives upgrades).
    members, views - ensemble members (0 = all) and test-time views ("model's": the bundle's own) to use.
    threshold - probability threshold of the masks.
    segmentationSequence - the result being shown / thresholded / exported.
    rvInsertion - point list whose first point is the anterior RV insertion point (AHA sectors).
    """

    inputSequence: vtkMRMLSequenceNode
    model: str = "bundled"
    members: Annotated[int, WithinRange(0, 20)] = 0
    views: Annotated[str, Choice(["model's", "1", "2", "4"])] = "model's"
    threshold: Annotated[float, WithinRange(0.05, 0.95)] = 0.5
    segmentationSequence: vtkMRMLSequenceNode
    rvInsertion: vtkMRMLMarkupsFiducialNode


class LVMyoSegWidget(ModuleWidgetBase, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Reads the GUI, reacts to the parameter node and calls :class:`LVMyoSegLogic`."""

    unsupported = UNSUPPORTED

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self._shown = None  # ResultState the widget last reacted to
        self._reviewItems = []  # the shown result's review.ReviewItem list, one per row of reviewList

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        if not self.loadPanel(slicer, qt, self.resourcePath("UI/LVMyoSeg.ui")):
            return
        # only segmentation sequences made by this module; only cines as input (refreshed as nodes come and go)
        self.ui.segmentationSelector.addAttribute("vtkMRMLSequenceNode", mrml.ATTR_ROLE, "segmentation")
        self.logic = LVMyoSegLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self._scheduleInputFilter)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeRemovedEvent, self._scheduleInputFilter)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.logic.cancel)  # the job's end updates the buttons
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.recomputeButton.connect("clicked(bool)", self.onRecomputeButton)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelFolderChanged)
        self.ui.modelVersionComboBox.connect("currentIndexChanged(int)", self.onModelVersionChanged)
        self.ui.reviewList.connect("itemClicked(QListWidgetItem*)", self.onReviewItemClicked)
        self.ui.batchRunButton.connect("clicked(bool)", self.onBatchRunButton)
        self.ui.batchCancelButton.connect("clicked(bool)", self.logic.batchRunner.cancel)
        # threshold and result selection: no widget slots; onParameterNodeModified reacts to the node
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self.logic:
            self.logic.batchRunner.cancel()
        ModuleWidgetBase.cleanup(self)

    def onSceneStartClose(self, caller, event) -> None:
        self.logic.cancel()
        ModuleWidgetBase.onSceneStartClose(self, caller, event)

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputSequence:
            cine = results.first_cine_sequence(slicer.mrmlScene)
            if cine:
                self._parameterNode.inputSequence = cine
        self._applyInputFilter()
        self.refreshModelVersions()

    def parameterNodeSet(self) -> None:
        self._shown = self._state()  # a newly set node is shown as it is, nothing re-thresholded
        self._showResult()

    def _scheduleInputFilter(self, caller=None, event=None) -> None:
        qt.QTimer.singleShot(0, self._applyInputFilter)  # after a loader has filled its new sequences

    def _applyInputFilter(self) -> None:
        if slicer.mrmlScene is not None and hasattr(self, "ui"):
            self.ui.inputSelector.sortFilterProxyModel().hiddenNodeIDs = results.sequences_that_are_not_cines(
                slicer.mrmlScene)

    # -- model versions

    def refreshModelVersions(self) -> None:
        """List the bundled model and every registered version (item data: the model id)."""
        combo = self.ui.modelVersionComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for entry in self.logic.models():
            combo.addItem(entry.label(), entry.model_id)
        combo.addItem("other model folder (below)", "")
        combo.blockSignals(wasBlocked)
        self._syncModelVersion()

    def _syncModelVersion(self) -> None:
        combo = self.ui.modelVersionComboBox
        model = self._parameterNode.model if self._parameterNode else registry.BUNDLED_ID
        index = combo.findData(model)
        wasBlocked = combo.blockSignals(True)
        combo.setCurrentIndex(index if index >= 0 and model else combo.count - 1)
        combo.blockSignals(wasBlocked)
        folder = "" if index >= 0 else model
        if self.ui.modelPathLineEdit.currentPath != folder:
            wasBlocked = self.ui.modelPathLineEdit.blockSignals(True)
            self.ui.modelPathLineEdit.currentPath = folder
            self.ui.modelPathLineEdit.blockSignals(wasBlocked)

    def onModelVersionChanged(self, index: int) -> None:
        modelId = self.ui.modelVersionComboBox.itemData(index)
        if modelId and self._parameterNode:
            self._parameterNode.model = modelId

    def onModelFolderChanged(self, path: str) -> None:
        if path and self._parameterNode:
            self._parameterNode.model = path

    # -- parameter node reactions

    def _state(self):
        p = self._parameterNode
        return ResultState(p.segmentationSequence.GetID() if p and p.segmentationSequence else None,
                           p.threshold if p else 0.5)

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        previous, current = self._shown, self._state()
        self._shown = current
        p = self._parameterNode
        if current != previous and not self.logic.isRunning():
            segmentation = p.segmentationSequence
            action = react(previous, current, results.result_threshold(segmentation))
            if action is Action.SHOW_RESULT_THRESHOLD:
                p.threshold = results.result_threshold(segmentation)  # re-enters with nothing to do
            elif action is Action.RETHRESHOLD:
                self._rethreshold(segmentation, current.threshold)
            if current.result_id != previous.result_id:
                self._showResult()
        self._syncModelVersion()
        self._updateButtons()

    def _rethreshold(self, segmentation, threshold: float) -> None:
        """Re-derive ``segmentation`` at ``threshold``; a user's edits only with their consent."""
        stored = results.result_threshold(segmentation)
        with slicer.util.tryWithErrorDisplay("Could not apply the threshold.", waitCursor=True):
            if not self.logic.ensureRequirements(askUser=True):
                self._parameterNode.threshold = stored
                return
            edited = int(results.edited_slices(segmentation).sum())
            if edited and (slicer.app.testingEnabled() or not slicer.util.confirmOkCancelDisplay(
                    f"You edited the LV segments on {edited} slice(s). A new threshold re-derives every frame "
                    "from the probabilities and replaces those edits. Continue?")):
                self._parameterNode.threshold = stored  # declined (never silently in testing mode)
                return
            self.logic.applyThreshold(segmentation, threshold)
        self._showResult()

    def _showResult(self) -> None:
        """Show the selected result's function summary and QC review list (after a change of
        result, threshold or Recompute)."""
        segmentation = self._parameterNode.segmentationSequence if self._parameterNode else None
        self.ui.functionLabel.text = results.function_summary(segmentation) if segmentation else ""
        self._reviewItems = self.logic.reviewItems(segmentation) if segmentation else []
        self.ui.reviewList.clear()
        for item in self._reviewItems:
            self.ui.reviewList.addItem(item.text)

    def _updateButtons(self, caller=None, event=None) -> None:
        busy = self.logic.isRunning() or self.logic.installer.busy
        p = self._parameterNode
        self.ui.applyButton.enabled = bool(p and p.inputSequence) and not busy
        self.ui.applyButton.toolTip = ("Segment every frame of the cine" if p and p.inputSequence
                                       else "Select a cine (volume sequence) first")
        self.ui.cancelButton.enabled = self.logic.isRunning()
        hasResult = bool(p and p.segmentationSequence) and not busy
        for button in (self.ui.exportButton, self.ui.recomputeButton, self.ui.thresholdSliderWidget):
            button.enabled = hasResult
        self.ui.batchRunButton.enabled = not self.logic.batchRunner.is_running() and not self.logic.installer.busy
        self.ui.batchCancelButton.enabled = self.logic.batchRunner.is_running()

    # -- actions

    def onApplyButton(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not start the segmentation.", waitCursor=True):
            if not self.logic.ensureRequirements(askUser=True):
                self.ui.statusLabel.text = "The Python packages LVMyoSeg needs are not installed."
                return
            self.ui.progressBar.value, self.ui.statusLabel.text = 0, "Starting..."
            self.logic.startSegmentation(p.inputSequence, p.model, p.members, p.threshold, onFinished=self.onFinished,
                                         rvInsertionNode=p.rvInsertion, rotations=chosen_rotations(p.views),
                                         onProgress=lambda e: self._showProgress(self.ui.progressBar,
                                                                                 self.ui.statusLabel, e))
        self._updateButtons()

    @staticmethod
    def _showProgress(bar, label, event) -> None:  # event: LVMyoSegLib.progress.ProgressEvent
        bar.value, label.text = int(round(1000 * max(0.0, min(1.0, event.fraction)))), event.message

    def onFinished(self, job: "Job") -> None:
        if job.cancelled:
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = "Cancelled; nothing was added to the scene."
        elif job.error:
            self.ui.statusLabel.text = "Segmentation failed."
            slicer.util.errorDisplay("Segmentation failed:\n\n" + job.error.splitlines()[0], detailedText=job.error)
        else:
            self.ui.progressBar.value = 1000
            self.ui.statusLabel.text = f"Done in {job.elapsed_s:.0f} s."
            if self._parameterNode is not None:
                self._parameterNode.segmentationSequence = job.result.segmentation
        self._updateButtons()

    def onRecomputeButton(self) -> None:
        segmentation = self._parameterNode.segmentationSequence
        with slicer.util.tryWithErrorDisplay("Could not recompute the cardiac function.", waitCursor=True):
            if not self.logic.ensureRequirements(askUser=True):
                return
            results.set_rv_insertion(segmentation, self._parameterNode.rvInsertion)
            self.logic.updateVolumesTable(segmentation)
            self._showResult()

    def onReviewItemClicked(self, listItem) -> None:
        item = self._reviewItems[self.ui.reviewList.row(listItem)]
        with slicer.util.tryWithErrorDisplay("Could not show that frame.", waitCursor=True):
            self.logic.jumpTo(self._parameterNode.segmentationSequence, item.frame, item.slice)

    def onBatchRunButton(self) -> None:
        p, ui = self._parameterNode, self.ui
        with slicer.util.tryWithErrorDisplay("Could not start the batch.", waitCursor=True):
            if self.logic.ensureRequirements(askUser=True, purpose="batch"):
                ui.batchProgressBar.value, ui.batchStatusLabel.text = 0, "Starting..."
                self.logic.batchRunner.start(batch_job.batch_job(
                    ui.batchCsvPathLineEdit.currentPath or ui.batchFolderPathLineEdit.currentPath,
                    ui.batchOutputPathLineEdit.currentPath, registry.resolve(p.model, self.logic.dataDirs.registry),
                    members=p.members, rotations=chosen_rotations(p.views), on_finished=self.onBatchFinished,
                    on_progress=lambda e: self._showProgress(ui.batchProgressBar, ui.batchStatusLabel, e)))
        self._updateButtons()

    def onBatchFinished(self, job: "Job") -> None:
        batch_job.show_end(slicer, job, self.ui.batchProgressBar, self.ui.batchStatusLabel)
        self._updateButtons()

    def onExportButton(self) -> None:
        segmentation = self._parameterNode.segmentationSequence
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Training dataset folder (new or existing)")
        with slicer.util.tryWithErrorDisplay("Export for training failed.", waitCursor=True):
            if not folder or not self.logic.ensureRequirements(askUser=True):
                return
            includeAll = not results.edited_slices(segmentation).any()
            if includeAll and not slicer.util.confirmOkCancelDisplay(
                    "You have not edited any slice of this segmentation. Export every frame as reviewed and correct?"):
                return
            caseDir = self.logic.exportForTraining(segmentation, Path(folder), includeUnedited=includeAll)
            self.ui.statusLabel.text = f"Exported case to {caseDir}"


class LVMyoSegLogic(ScriptedLoadableModuleLogic):
    """Starts segmentations and forwards result work to the Lib; usable without the Widget.

    Example (Python console)::

        logic = slicer.util.getModuleLogic("LVMyoSeg")
        logic.ensureRequirements()
        nodes = logic.segmentBlocking(slicer.util.getNode("cine*"))
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.runner = JobRunner(qt)
        self.batchRunner = JobRunner(qt)  # `lvmyoseg batch` jobs (app.batch_job), beside the segmentation
        self.installer = install.Installer(lambda reqs, constraints: install.install_in_slicer(slicer, reqs, constraints))
        self.dataDirs = slicer_data_dirs(slicer, qt)

    def getParameterNode(self) -> LVMyoSegParameterNode:
        return LVMyoSegParameterNode(super().getParameterNode())

    def models(self) -> list:
        """Usable model versions: the bundled model (if installed) and the registered ones."""
        return [e for e in registry.list_models(self.dataDirs.registry) if not e.problem]

    def ensureRequirements(self, askUser: bool = True, purpose: str = "segment") -> bool:
        """Install what ``purpose`` ("segment", "train", "batch") needs, after asking the user; False when they decline."""
        return self.installer.ensure(purpose, confirm=(lambda m: install.ask_in_slicer(slicer, m)) if askUser else None)

    # -- segmentation in a background process

    def isRunning(self) -> bool:
        return self.runner.is_running()

    def startSegmentation(self, sequenceNode, model: Optional[str] = None, members: int = 0, threshold: float = 0.5,
                          onProgress=None, onFinished=None, rvInsertionNode=None, rotations=None) -> "Job":
        """Start segmenting the cine ``sequenceNode`` with ``model`` (an id or a bundle folder; None: the bundled
        model) and ``rotations`` test-time views (None: the model's own); ``onFinished(job)`` is called at the end.
        Results (``job.result``) join the scene only if it succeeds; ``rvInsertionNode`` gives AHA numbers."""
        if self.isRunning():
            raise InputError("A segmentation is already running; wait for it or press Cancel.")
        modelDir = registry.resolve(model, self.dataDirs.registry)
        return self.runner.start(segmentation_job(
            slicer.mrmlScene, sequenceNode, modelDir, temp_root=Path(slicer.app.temporaryPath), members=members,
            threshold=threshold, rv_insertion_node=rvInsertionNode, rotations=rotations, on_progress=onProgress,
            on_finished=onFinished, show=lambda nodes, table: show_segmentation(slicer, nodes, table)))

    def cancel(self) -> None:
        """Stop the running segmentation (and every process it started); nothing is added to the scene."""
        self.runner.cancel()

    def segmentBlocking(self, sequenceNode, model=None, members: int = 0, threshold: float = 0.5,
                        timeoutSeconds: float = 3600.0, rotations: Optional[int] = None):
        """Segment and wait (keeping the GUI alive); returns the result nodes or raises."""
        job = self.startSegmentation(sequenceNode, model, members, threshold, rotations=rotations)
        if not self.runner.wait(job, slicer.app.processEvents, timeoutSeconds):
            self.cancel()
            raise LVMyoSegError(f"Segmentation did not finish within {timeoutSeconds:.0f} s; it was cancelled.")
        if job.error:
            raise LVMyoSegError(job.error)
        return job.result

    # -- results (the work is in LVMyoSegLib.app.results and .export; use those for the rest)

    @staticmethod
    def updateVolumesTable(segmentationSequence, labels: Optional[np.ndarray] = None):
        return results.update_function_tables(slicer.mrmlScene, segmentationSequence, labels)

    @staticmethod
    def reviewItems(segmentationSequence) -> list:
        """The result's QC "review these frames first" entries (``review.ReviewItem``), worst first."""
        return review.review_items(segmentationSequence)

    @staticmethod
    def jumpTo(segmentationSequence, frame: int, sliceIndex: int) -> None:
        """Show phase ``frame`` in the result's sequence browser and slice ``sliceIndex`` in the slice views."""
        review.jump_to(slicer.mrmlScene, segmentationSequence, frame, sliceIndex)

    @staticmethod
    def applyThreshold(segmentationSequence, threshold: float) -> np.ndarray:
        return results.apply_threshold(slicer.mrmlScene, segmentationSequence, threshold)

    @staticmethod
    def exportForTraining(segmentationSequence, datasetDir: Path, caseId: Optional[str] = None,
                          includeUnedited: bool = False, notes: str = "") -> Path:
        return export_result(segmentationSequence, Path(datasetDir), caseId, includeUnedited, notes)
