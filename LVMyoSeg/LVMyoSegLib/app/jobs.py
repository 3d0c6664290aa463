"""Background jobs: one command-line run in a ``QProcess``, with its state and callbacks.

Both Slicer modules run their long work through :class:`JobRunner` (segmentation; leave-one-out
and training). A job ends exactly once, however the run ends: the process exits, fails to start,
is cancelled, or collecting its results raises (any exception, not only LVMyoSegError). At the
end the runner closes the process and drops every callback, so nothing of a finished job stays
reachable from Qt. A standard-output line that is a progress event
(:func:`LVMyoSegLib.progress.read_progress_line`) goes to ``on_progress``; any other goes to the log.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional

from ..errors import InputError, LVMyoSegError
from ..progress import ProgressFn, read_progress_line
from .process import CliProcess, ProcessEnd, failure_message


@dataclass(eq=False)
class Job:
    """One background run of ``lvmyoseg <args>``.

    ``on_progress`` gets the command's progress events. ``collect(job)`` runs after a successful
    exit and may fill ``result``; ``cleanup(job)`` runs at every end (e.g. removes a temporary folder).
    ``inputs`` holds what ``collect`` needs (scene nodes, settings) and is dropped at the end.
    """

    kind: str
    args: list[str]
    work_dir: Path
    what: str = "background"
    collect: Optional[Callable[["Job"], None]] = None
    cleanup: Optional[Callable[["Job"], None]] = None
    on_progress: Optional[ProgressFn] = None
    on_log: Optional[Callable[[str], None]] = None
    on_finished: Optional[Callable[["Job"], None]] = None
    inputs: dict = field(default_factory=dict)
    result: Any = None
    log: list[str] = field(default_factory=list)
    python: str = ""
    process: Optional[CliProcess] = None
    start_time: float = field(default_factory=time.time)
    elapsed_s: float = 0.0
    cancelled: bool = False
    finished: bool = False
    error: Optional[str] = None

    def _release(self) -> None:
        """Drop the process and every callable and input: a finished job is plain data."""
        if self.process is not None:
            self.process.close()
        self.process = None
        self.collect = self.cleanup = None
        self.on_progress = self.on_log = self.on_finished = None
        self.inputs = {}


class JobRunner:
    """Runs one job at a time (``qt``: the Qt module that provides ``QProcess``)."""

    def __init__(self, qt: ModuleType, python: Optional[str] = None) -> None:
        self.qt = qt
        self.python = python
        self.job: Optional[Job] = None

    def is_running(self) -> bool:
        return self.job is not None and not self.job.finished

    def start(self, job: Job) -> Job:
        """Start ``job``'s process (returns at once); refuses while another job runs."""
        if self.is_running():
            raise InputError(f"A {self.job.what} job is already running; wait for it or press Cancel.")
        job.process = CliProcess(self.qt, job.args, work_dir=job.work_dir, python=self.python,
                                 on_line=lambda line: self._line(job, line),
                                 on_log=lambda line: self._log(job, line),
                                 on_end=lambda end: self._end(job, end))
        job.python = job.process.python
        self.job = job
        try:
            job.process.start()
        except BaseException:
            self.job = None
            job._release()
            raise
        return job

    def cancel(self) -> None:
        """Stop the running job (if any) and everything its process started; the job ends cancelled."""
        job = self.job
        if job is None or job.finished:
            return
        job.cancelled = True
        job.process.cancel()  # reports the end once, which finishes the job

    def wait(self, job: Job, process_events: Callable[[], None], timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for ``job`` to finish, calling ``process_events``; whether it did."""
        deadline = time.monotonic() + timeout_s
        while not job.finished and time.monotonic() < deadline:
            if job.process is not None:
                job.process.wait(process_events, min(0.5, max(0.0, deadline - time.monotonic())))
            else:
                process_events()
        return job.finished

    # -- process callbacks

    def _log(self, job: Job, line: str) -> None:
        job.log.append(line)
        if job.on_log:
            job.on_log(line)

    def _line(self, job: Job, line: str) -> None:
        event = read_progress_line(line)
        if event is None:
            if line.strip():
                self._log(job, line)
        elif job.on_progress:
            job.on_progress(event)

    def _end(self, job: Job, end: ProcessEnd) -> None:
        try:
            job.error = failure_message(end, job.log, job.what, job.python)
            if end.ok and job.collect is not None:
                job.collect(job)
        except LVMyoSegError as exc:
            job.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - the job must end and say why, whatever went wrong
            logging.exception(f"LVMyoSeg: reading the results of the {job.what} run failed")
            job.error = (f"Reading the results of the {job.what} run failed: {type(exc).__name__}: {exc}\n\n"
                         + traceback.format_exc())
        finally:
            self._finish(job)

    def _finish(self, job: Job) -> None:
        job.finished = True
        job.elapsed_s = time.time() - job.start_time
        on_finished = job.on_finished
        try:
            if job.cleanup is not None:
                job.cleanup(job)
        except Exception:  # noqa: BLE001 - a failed cleanup must not keep the job running
            logging.exception(f"LVMyoSeg: cleaning up after the {job.what} run failed")
        finally:
            if self.job is job:
                self.job = None
            job._release()
        if on_finished is not None:
            try:
                on_finished(job)
            except Exception:  # noqa: BLE001 - the job has ended; a failing display must not undo that
                logging.exception(f"LVMyoSeg: showing the end of the {job.what} run failed")
