"""The Trainer's background jobs (LVMyoSegLib.app.training_jobs): what they refuse before a process
starts, and a leave-one-out job run to its end through the JobRunner (PySide6's QtCore for qt)."""

from __future__ import annotations

import json
import sys

import pytest

from LVMyoSegLib.app import retraining
from LVMyoSegLib.app.jobs import JobRunner
from LVMyoSegLib.app.training_jobs import dataset_cases, leave_one_out_job, trained_variant, training_job
from LVMyoSegLib.errors import InputError, ModelError


def test_dataset_listing_says_why_there_is_nothing_to_list(phantom_dataset, tmp_path):
    assert dataset_cases(phantom_dataset) == (["phantom0", "phantom1"], "")
    assert dataset_cases(None)[1].startswith("Pick a dataset folder")
    assert dataset_cases(tmp_path)[1] == f"{tmp_path} holds no dataset yet; add cases to start one."
    (tmp_path / "dataset.json").write_text("{not json")
    cases, problem = dataset_cases(tmp_path)
    assert cases == [] and problem


def test_jobs_refuse_what_would_fail_hours_later(phantom_dataset, tmp_path):
    registry_dir = tmp_path / "models"
    one = retraining.RetrainSettings(phantom_dataset, init=retraining.INIT_SCRATCH, variant="cnn", cases=("phantom0",))
    with pytest.raises(InputError, match="at least 2 selected case"):
        leave_one_out_job(one, tmp_path / "runs", registry_dir)
    (registry_dir / "taken").mkdir(parents=True)  # an existing version
    with pytest.raises(ModelError, match="already exists"):
        training_job(one, tmp_path / "runs", registry_dir, "taken")
    fine = retraining.RetrainSettings(phantom_dataset, init="bundled", members=9)
    with pytest.raises(InputError, match="fine-tuning cannot make 9"):
        trained_variant(fine, registry_dir)
    assert trained_variant(one, registry_dir) == "cnn"


@pytest.mark.slow
def test_a_leave_one_out_job_reports_progress_and_its_results(phantom_dataset, qt_core, tmp_path):
    settings = retraining.RetrainSettings(phantom_dataset, init=retraining.INIT_SCRATCH, variant="cnn", cnn_epochs=1,
                                          extra_args=("--width", "4", "--pixel-mm", "2.5", "--crop-size", "64"))
    progress, shown = [], []
    job = leave_one_out_job(settings, tmp_path / "runs", tmp_path / "models", on_progress=progress.append,
                            show=lambda results, name: shown.append(name) or ("table", "chart"))
    runner = JobRunner(qt_core, python=sys.executable)
    runner.start(job)
    assert runner.wait(job, qt_core.QCoreApplication.processEvents, 900)
    assert job.error is None, job.error
    assert progress and progress[-1].fraction == pytest.approx(1.0)
    assert job.result["shown"] == ("table", "chart") and shown == [f"LOO {phantom_dataset.name} from scratch"]
    assert job.result["summary"].startswith("Held-out DSC") and job.result["summary"].endswith("(2/2 folds)")
    written = json.loads((retraining.job_dir(tmp_path / "runs", "loo", settings) / "loo_results.json").read_text())
    assert written == job.result["results"] and len(written["folds"]) == 2
