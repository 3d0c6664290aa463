"""CliProcess: the command line in a real QProcess (PySide6's QtCore standing in for Slicer's qt)."""

from __future__ import annotations

import json
import sys

import pytest

from LVMyoSegLib.app.process import ProcessEnd, failure_message
from LVMyoSegLib.resources import sample_case_dir

CINE = sample_case_dir() / "cine.nrrd"


def test_lines_of_a_real_command_arrive_whole_and_it_ends_once(cli_run, tmp_path):
    run = cli_run(["inspect", str(CINE), "--json"], tmp_path)
    end = run.wait()
    assert end == ProcessEnd(0) and end.ok
    info = json.loads("\n".join(run.lines))  # every line arrived, in order, without line ends
    assert (info["T"], info["Z"], info["shape_tzyx"][2:]) == (20, 12, [160, 160])
    assert failure_message(end, run.log, "inspect", sys.executable) is None
    run.process.cancel()  # after the end: nothing happens
    assert len(run.ends) == 1


def test_the_command_lines_own_error_becomes_the_message(cli_run, tmp_path):
    run = cli_run(["inspect", str(tmp_path / "no-such-cine.nii.gz")], tmp_path)
    end = run.wait()
    assert end.exit_code == 2 and not end.ok
    message = failure_message(end, run.log, "inspect", sys.executable)
    assert message.splitlines()[0] == f"{tmp_path / 'no-such-cine.nii.gz'} does not exist; check the path."
    assert "Last output:" in message and "lvmyoseg: error:" in message


def test_a_missing_interpreter_is_reported_not_raised(cli_run, tmp_path):
    missing = str(tmp_path / "PythonSlicer")
    run = cli_run(["--version"], tmp_path, python=missing)
    end = run.wait(10)
    assert end.failed_to_start and end.exit_code is None
    assert failure_message(end, run.log, "segmentation", missing).startswith(f"Could not start {missing}")


def test_cancel_kills_the_process_and_reports_cancelled_once(cli_run, qt_core, tmp_path):
    run = cli_run(["segment", str(CINE), "-o", str(tmp_path / "out")], tmp_path)
    run.process.cancel()
    assert run.process.ended and len(run.ends) == 1
    end = run.ends[0]
    assert end.cancelled and not end.ok and end.exit_code is None
    assert failure_message(end, run.log, "segmentation", sys.executable) is None
    assert run.process.process.state() == qt_core.QProcess.NotRunning
    assert not (tmp_path / "out" / "report.json").exists()


def test_exit_code_3_is_a_segmentation_with_function_withheld_not_a_failure():
    assert ProcessEnd(3).ok and not ProcessEnd(2).ok and not ProcessEnd(3, cancelled=True).ok
    assert failure_message(ProcessEnd(3), [], "segmentation", "py") is None


@pytest.mark.parametrize("end, expected", [
    (ProcessEnd(4), "The training process stopped with exit code 4."),
    (ProcessEnd(None), "The training process crashed."),
])
def test_failures_without_an_error_line_say_how_the_process_ended(end, expected):
    message = failure_message(end, ["Traceback (most recent call last):", "MemoryError"], "training", "py")
    assert message.splitlines()[0] == expected and message.endswith("MemoryError")
