"""Cancel stops the whole process tree, as PythonSlicer (a launcher whose child does the work) needs.

A stand-in launcher starts the worker as a child process, the way CTKAppLauncher runs
``python-real``; the worker starts a child of its own. All of them are real processes.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from LVMyoSegLib.app.process_tree import descendants, kill_tree

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the test reads POSIX process states")

LAUNCHER = """\
import subprocess, sys
# like CTKAppLauncher: run the real interpreter as a child, forward nothing, wait for it
worker = subprocess.Popen([sys.executable, "-c", {worker!r}])
sys.exit(worker.wait())
"""
WORKER = """\
import os, subprocess, sys, time
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
with open({pids!r} + ".tmp", "w") as fh:
    fh.write(f"{{os.getpid()}} {{helper.pid}}")
os.replace({pids!r} + ".tmp", {pids!r})
print("worker running", flush=True)
time.sleep(120)
"""


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a parent that never reaps it does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if stat.is_file():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False
    return True


def launcher_python(tmp_path: Path) -> str:
    """An executable that behaves like PythonSlicer: it runs the worker below as its child."""
    pids = tmp_path / "pids"
    script = tmp_path / "launcher.py"
    script.write_text(LAUNCHER.format(worker=WORKER.format(pids=str(pids))))
    launcher = tmp_path / "PythonSlicer"
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
    launcher.chmod(0o755)
    return str(launcher)


def wait_for(condition, events, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        events()
        time.sleep(0.05)


def test_cancel_leaves_no_descendant_of_the_launcher_alive(cli_run, qt_core, tmp_path):
    run = cli_run(["segment", "whatever"], tmp_path, python=launcher_python(tmp_path))
    pids_file = tmp_path / "pids"
    wait_for(pids_file.is_file, run.events)
    worker, helper = map(int, pids_file.read_text().split())
    launcher = int(run.process.process.processId())
    tree = descendants(launcher)
    assert worker in tree and helper in tree and tree.index(worker) < tree.index(helper)
    assert all(alive(p) for p in (launcher, worker, helper))

    run.process.cancel()

    assert len(run.ends) == 1 and run.ends[0].cancelled
    wait_for(lambda: not any(alive(p) for p in (launcher, worker, helper)), run.events, 10.0)


def test_kill_tree_of_a_finished_process_does_nothing(tmp_path):
    import subprocess

    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    kill_tree(done.pid)  # no error for a process that is gone
    assert descendants(done.pid) == []
