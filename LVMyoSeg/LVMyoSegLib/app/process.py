"""The ``lvmyoseg`` command line run as a background Qt process (how the Slicer modules use it).

Both Slicer modules run their long work (segmentation, leave-one-out, training) as
``PythonSlicer -m LVMyoSegLib.cli ...`` in a ``QProcess``, so Slicer's GUI never blocks and a
Cancel kills the process with everything it started (``PythonSlicer`` is a launcher whose
child does the work: :mod:`LVMyoSegLib.app.process_tree`). :class:`CliProcess` is that one way of running it: standard output
split into lines, standard error kept as log lines, and exactly one end report, whether the
process exits, fails to start or is cancelled. The Qt module is passed in (Slicer's PythonQt
``qt``; the tests pass PySide6's ``QtCore``), so the rest of LVMyoSegLib stays free of Qt.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence

from ..errors import EXIT_FUNCTION_WITHHELD
from .process_tree import kill_tree

LIB_PARENT = Path(__file__).resolve().parents[2]  # the folder holding LVMyoSegLib
ERROR_MARK = "lvmyoseg: error:"


def slicer_python() -> str:
    """Slicer's Python interpreter (``PythonSlicer``) when there is one, else this interpreter."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    candidate = Path(sys.executable).parent / ("PythonSlicer.exe" if os.name == "nt" else "PythonSlicer")
    return str(candidate) if candidate.is_file() else sys.executable


@dataclass(frozen=True)
class ProcessEnd:
    """How a run ended: ``exit_code`` is None when the process crashed, never started or was killed."""

    exit_code: int | None
    cancelled: bool = False
    failed_to_start: bool = False

    @property
    def ok(self) -> bool:
        """The run did its work: exit code 0, or 3 (outputs written, cardiac function withheld)."""
        return self.exit_code in (0, EXIT_FUNCTION_WITHHELD) and not self.cancelled


def failure_message(end: ProcessEnd, log: Sequence[str], what: str, python: str) -> str | None:
    """The message to show for a run that failed (None when it succeeded or was cancelled).

    ``what`` names the work ("segmentation"); the command line's own ``lvmyoseg: error: ...``
    message is used when it printed one, followed by the last lines of output.
    """
    if end.ok or end.cancelled:
        return None
    if end.failed_to_start:
        return (f"Could not start {python} (the Python interpreter of 3D Slicer). "
                "Check that the Slicer installation is complete.")
    message = next((line.split(ERROR_MARK, 1)[1].strip() for line in reversed(log) if ERROR_MARK in line), None)
    if message is None:
        message = (f"The {what} process stopped with exit code {end.exit_code}." if end.exit_code is not None
                   else f"The {what} process crashed.")
    return message + "\n\nLast output:\n" + "\n".join(log[-30:])


def _ignore(*_args) -> None:
    """The callback of a closed run."""


class CliProcess:
    """``python -m LVMyoSegLib.cli <args>`` in a ``QProcess``; calls back per line and once at the end."""

    def __init__(self, qt: ModuleType, args: Sequence[str], *, work_dir: Path,
                 on_line: Callable[[str], None], on_log: Callable[[str], None],
                 on_end: Callable[[ProcessEnd], None], python: str | None = None) -> None:
        self.qt = qt
        self.args = ["-m", "LVMyoSegLib.cli", *args]
        self.work_dir = Path(work_dir)
        self.python = python or slicer_python()
        self._on_line, self._on_log, self._on_end = on_line, on_log, on_end
        self._buffer = ""
        self._cancelled = False
        self.ended = False
        self.process = None
        self._slots: list[tuple[object, Callable]] = []  # (signal, slot) pairs, disconnected by close()

    def start(self) -> None:
        """Start the process (returns at once)."""
        qt = self.qt
        process = self.process = qt.QProcess()
        process.setProcessChannelMode(qt.QProcess.SeparateChannels)
        env = qt.QProcessEnvironment.systemEnvironment()
        python_path = [str(LIB_PARENT)] + ([env.value("PYTHONPATH")] if env.contains("PYTHONPATH") else [])
        env.insert("PYTHONPATH", os.pathsep.join(python_path))
        env.insert("PYTHONUNBUFFERED", "1")
        env.insert("TF_CPP_MIN_LOG_LEVEL", "2")
        process.setProcessEnvironment(env)
        process.setWorkingDirectory(str(self.work_dir))
        # exit code and error are read from the process: the signals' signatures differ between Qt versions
        self._slots = [(process.readyReadStandardOutput, lambda *_: self._read_stdout()),
                       (process.readyReadStandardError, lambda *_: self._read_stderr()),
                       (process.finished, lambda *_: self._finished()),
                       (process.errorOccurred, lambda *_: self._error())]
        for signal, slot in self._slots:
            signal.connect(slot)
        logging.info(f"LVMyoSeg: {self.python} {' '.join(self.args)}")
        process.start(self.python, self.args)

    def cancel(self, wait_ms: int = 5000) -> None:
        """Kill the process and every process it started; the end report says ``cancelled``.
        Nothing happens after the end."""
        if self.ended:
            return
        self._cancelled = True
        if self.process is not None and self.process.state() != self.qt.QProcess.NotRunning:
            pid = int(self.process.processId())
            if pid > 0:
                kill_tree(pid)
            else:
                self.process.kill()
            self.process.waitForFinished(wait_ms)
        if not self.ended:
            self._end(ProcessEnd(None, cancelled=True))

    def close(self) -> None:
        """After the end: disconnect the process's signals, drop the callbacks and let Qt delete
        the ``QProcess``. The Qt bindings keep every connected callable alive, so a run that is
        not closed keeps its callbacks (and all they reach) for the rest of the session."""
        for signal, slot in self._slots:
            try:
                signal.disconnect(slot)
            except (RuntimeError, TypeError, ValueError):  # already gone with its object
                pass
        self._slots = []
        self._on_line = self._on_log = self._on_end = _ignore
        if self.process is not None:
            self.process.deleteLater()
            self.process = None

    def wait(self, process_events: Callable[[], None], timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the end, calling ``process_events`` (keeps a GUI alive).

        Returns whether the process ended.
        """
        deadline = time.monotonic() + timeout_s
        while not self.ended and time.monotonic() < deadline:
            if self.process is not None:
                self.process.waitForFinished(100)
            process_events()
        return self.ended

    def _read_stdout(self) -> None:
        self._buffer += bytes(self.process.readAllStandardOutput().data()).decode("utf-8", "replace")
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._on_line(line.rstrip("\r"))

    def _read_stderr(self) -> None:
        text = bytes(self.process.readAllStandardError().data()).decode("utf-8", "replace")
        for line in text.splitlines():
            if line.strip():
                self._on_log(line)

    def _error(self) -> None:
        if self.process.error() == self.qt.QProcess.FailedToStart and not self.ended:
            self._end(ProcessEnd(None, failed_to_start=True))

    def _finished(self) -> None:
        if self.ended:
            return
        self._read_stdout()
        self._read_stderr()
        if self._buffer:
            line, self._buffer = self._buffer, ""
            self._on_line(line.rstrip("\r"))
        crashed = self.process.exitStatus() != self.qt.QProcess.NormalExit
        self._end(ProcessEnd(None if crashed or self._cancelled else self.process.exitCode(),
                             cancelled=self._cancelled))

    def _end(self, end: ProcessEnd) -> None:
        self.ended = True
        self._on_end(end)
