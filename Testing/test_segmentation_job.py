"""The module's background segmentation job (LVMyoSegLib.app.segmentation) on a real MRML scene
(slicer-core) and a real QProcess (PySide6's QtCore standing in for Slicer's qt)."""

from __future__ import annotations

import pytest

pytest.importorskip("slicer", reason="the MRML library is missing: install slicer-core")

from LVMyoSegLib import mrml  # noqa: E402
from LVMyoSegLib.app import results  # noqa: E402
from LVMyoSegLib.app.jobs import JobRunner  # noqa: E402
from LVMyoSegLib.app.segmentation import segmentation_job  # noqa: E402
from LVMyoSegLib.errors import InputError  # noqa: E402
from LVMyoSegLib.io.dataset import read_case  # noqa: E402
from LVMyoSegLib.resources import SAMPLE_DIR, bundled_model_dir  # noqa: E402

pytestmark = pytest.mark.mrml


@pytest.fixture
def sample(scene):
    case = read_case(SAMPLE_DIR, "SCD0000101")
    sequence, browser = mrml.sequence_from_cine(scene, case.cine, "sample cine")
    return case, sequence, browser


def test_bad_inputs_are_refused_before_a_process_starts(scene, sample, tmp_path):
    _, sequence, _ = sample
    with pytest.raises(InputError, match="No cine selected"):
        segmentation_job(scene, None, bundled_model_dir(), temp_root=tmp_path)
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        segmentation_job(scene, sequence, bundled_model_dir(), temp_root=tmp_path, threshold=1.0)
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "RV")
    points.AddControlPoint(1e4, 1e4, 1e4)
    with pytest.raises(InputError):
        segmentation_job(scene, sequence, bundled_model_dir(), temp_root=tmp_path, rv_insertion_node=points)
    with pytest.raises(InputError, match="Unknown device 'tpu'"):
        segmentation_job(scene, sequence, bundled_model_dir(), temp_root=tmp_path, device="tpu")
    with pytest.raises(InputError, match="--rotations 3: choose 1"):
        segmentation_job(scene, sequence, bundled_model_dir(), temp_root=tmp_path, rotations=3)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_cancel_adds_nothing_and_removes_the_work_folder(scene, sample, qt_core, tmp_path):
    _, sequence, _ = sample
    nodes_before = scene.GetNumberOfNodes()
    runner = JobRunner(qt_core)
    job = runner.start(segmentation_job(scene, sequence, bundled_model_dir(), temp_root=tmp_path, members=1))
    assert (job.work_dir / "cine.nrrd").is_file()
    assert job.args[job.args.index("--device") + 1] == "auto"  # ONNX Runtime picks the provider
    assert "--rotations" not in job.args  # the model's own views
    runner.cancel()
    job = runner.start(segmentation_job(scene, sequence, bundled_model_dir(), temp_root=tmp_path, rotations=2))
    assert job.args[job.args.index("--rotations") + 1] == "2"
    runner.cancel()
    assert job.finished and job.cancelled and job.result is None and job.error is None
    assert not job.work_dir.exists() and scene.GetNumberOfNodes() == nodes_before


@pytest.mark.slow
def test_a_run_puts_its_results_on_the_cines_grid_and_browser(scene, sample, qt_core, tmp_path):
    case, sequence, browser = sample
    shown, finished = [], []
    runner = JobRunner(qt_core)
    job = runner.start(segmentation_job(scene, sequence, bundled_model_dir(), temp_root=tmp_path, members=1,
                                        on_finished=finished.append, show=lambda n, t: shown.append((n, t))))
    assert runner.wait(job, qt_core.QCoreApplication.processEvents, 600)
    assert job.error is None, job.error
    nodes = job.result
    assert finished == [job] and shown[0][0] is nodes and nodes.browser is browser
    labels = mrml.labels_from_segmentation_sequence(nodes.segmentation, case.cine)
    assert labels.shape == case.cine.frames.shape and (labels == 1).any()
    assert results.result_threshold(nodes.segmentation) == 0.5
    assert shown[0][1].GetNumberOfRows() == case.cine.n_phases
    assert "EDV" in results.function_summary(nodes.segmentation)
    # the slices that count and the QC list come with the result; at ED the sample's atrium
    # (slice 11) does not count, its LV slices 1-9 do
    table = shown[0][1]
    ed = int(float(table.GetAttribute("LVMyoSeg.EDFrame")))
    counted = table.GetTable().GetColumnByName("counted_slices").GetValue(ed)
    slices = {z for part in counted.split(",") for z in range(int(part.split("-")[0]), int(part.split("-")[-1]) + 1)}
    assert 11 not in slices and set(range(1, 10)) <= slices, counted
    assert nodes.segmentation.GetNodeReference(mrml.REF_SLICES_TABLE).GetTable().GetNumberOfRows() > 0
    assert nodes.segmentation.GetNodeReference(mrml.REF_REVIEW_TABLE) is not None
    assert table.GetAttribute(mrml.ATTR_WITHHELD) == ""
    assert not job.work_dir.exists()
