"""Background jobs (LVMyoSegLib.app.jobs) in real QProcesses, PySide6's QtCore standing in for Slicer's qt."""

from __future__ import annotations

import gc
import sys
import weakref
from pathlib import Path

import pytest

from LVMyoSegLib.app.jobs import Job, JobRunner
from LVMyoSegLib.errors import InputError, ModelError
from LVMyoSegLib.progress import ProgressEvent
from LVMyoSegLib.resources import sample_case_dir


def fake_python(tmp_path: Path, body: str) -> str:
    """An executable standing in for PythonSlicer that runs the shell ``body``."""
    path = tmp_path / "PythonSlicer"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


class Recorder:
    """What a module's widget would receive."""

    def __init__(self) -> None:
        self.progress, self.logs, self.finished = [], [], []


def job(tmp_path, recorder: Recorder, **kw) -> Job:
    return Job("test", ["inspect"], tmp_path, what="test", on_progress=recorder.progress.append, on_log=recorder.logs.append,
               on_finished=recorder.finished.append, **kw)


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-in interpreter is a shell script")
def test_progress_and_log_lines_reach_their_callbacks_and_the_job_ends_once(qt_core, tmp_path):
    runner = JobRunner(qt_core, python=fake_python(tmp_path, """echo 'PROGRESS {"fraction": 0.5, "message": "half way"}'; echo hello"""))
    rec = Recorder()
    collected = []
    j = runner.start(job(tmp_path, rec, collect=lambda j: collected.append(j.kind)))
    assert runner.is_running()
    assert runner.wait(j, qt_core.QCoreApplication.processEvents, 30)
    assert rec.progress == [ProgressEvent(0.5, "half way")] and rec.logs == ["hello"] and j.log == ["hello"]
    assert collected == ["test"] and rec.finished == [j]
    assert j.error is None and not j.cancelled and not runner.is_running()


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-in interpreter is a shell script")
@pytest.mark.parametrize("exc, first_line", [
    (KeyError("myocardium"), "Reading the results of the test run failed: KeyError: 'myocardium'"),
    (ModelError("model.onnx is damaged"), "model.onnx is damaged"),
])
def test_any_exception_while_collecting_ends_the_job_with_its_message(qt_core, tmp_path, exc, first_line):
    runner = JobRunner(qt_core, python=fake_python(tmp_path, "exit 0"))
    rec = Recorder()
    cleaned = []

    def collect(_job):
        raise exc

    j = runner.start(job(tmp_path, rec, collect=collect, cleanup=lambda j: cleaned.append(j)))
    assert runner.wait(j, qt_core.QCoreApplication.processEvents, 30)
    assert j.finished and rec.finished == [j] and cleaned == [j]
    assert j.error.splitlines()[0] == first_line
    assert not runner.is_running()
    runner.start(job(tmp_path, Recorder()))  # the runner is free for the next job
    runner.cancel()


def test_a_second_job_is_refused_while_one_runs_and_cancel_ends_it(qt_core, tmp_path):
    runner = JobRunner(qt_core)  # this interpreter: a real `lvmyoseg segment` that Cancel stops
    rec = Recorder()
    j = runner.start(Job("segment", ["segment", str(sample_case_dir() / "cine.nrrd"), "-o", str(tmp_path / "o")],
                         tmp_path, what="segmentation", on_finished=rec.finished.append,
                         cleanup=lambda j: rec.logs.append("cleaned")))
    with pytest.raises(InputError, match="already running"):
        runner.start(job(tmp_path, Recorder()))
    runner.cancel()
    assert j.finished and j.cancelled and j.error is None
    assert rec.finished == [j] and rec.logs == ["cleaned"] and not runner.is_running()


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-in interpreter is a shell script")
def test_a_finished_job_keeps_nothing_alive(qt_core, tmp_path):
    """The Qt bindings hold every connected callable; a finished job must not stay reachable through them."""

    class Cine:  # stands for the cine copy and the scene nodes a job's callbacks reach
        pass

    runner = JobRunner(qt_core, python=fake_python(tmp_path, """echo 'PROGRESS {"fraction": 1, "message": "done"}'"""))
    cine = Cine()
    probe = weakref.ref(cine)
    j = runner.start(Job("test", ["x"], tmp_path, inputs={"cine": cine},
                         on_progress=lambda p, c=cine: None, collect=lambda j: j.inputs["cine"]))
    process = weakref.ref(j.process)
    del cine
    assert runner.wait(j, qt_core.QCoreApplication.processEvents, 30)
    qt_core.QCoreApplication.sendPostedEvents(None, qt_core.QEvent.DeferredDelete)  # deleteLater
    gc.collect()
    assert j.process is None and j.on_progress is None and j.inputs == {}
    assert probe() is None, "the job's inputs are still reachable after it finished"
    assert process() is None, "the CliProcess is still reachable after the job finished"
