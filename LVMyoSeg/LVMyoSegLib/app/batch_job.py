"""The background cohort job of LV Myocardium Segmentation: ``lvmyoseg batch`` over studies on disk.

The logic is the command line's (:mod:`LVMyoSegLib.segmentation.batch`); this module refuses what it can
before a process starts, builds the :class:`~LVMyoSegLib.app.jobs.Job`, reads the table back at
the end, and shows it in Slicer (``slicer`` passed in).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..progress import ProgressFn
from ..segmentation.cohort import TABLE_CSV
from . import install
from .jobs import Job


@dataclass(frozen=True)
class BatchResult:
    """The end of a batch: its table and the count of studies per status."""

    table: Path
    ok: int
    refused: int
    failed: int

    def text(self) -> str:
        return f"{self.ok} ok, {self.refused} refused, {self.failed} failed; table: {self.table}"


def read_result(output_dir: Path) -> BatchResult:
    """Count the rows of ``output_dir/cohort.csv`` by status."""
    table = Path(output_dir) / TABLE_CSV
    with open(table, newline="", encoding="utf-8") as fh:
        statuses = [row.get("status", "") for row in csv.DictReader(fh)]
    return BatchResult(table, *(sum(s.startswith(k) for s in statuses) for k in ("ok", "refused", "failed")))


def batch_job(inputs: str | Path, output_dir: str | Path, model_dir: Path, *, members: int = 0,
              rotations: int | None = None, on_progress: ProgressFn | None = None,
              on_finished: Callable[[Job], None] | None = None) -> Job:
    """A :class:`Job` that segments every study of ``inputs`` (a folder of studies or a CSV study
    list) into ``output_dir`` with the bundle ``model_dir`` (``members``: 0 for all; ``rotations``: test-time
    views, None for the model's own); ``job.result`` is a :class:`BatchResult`. Running it again into the
    same folder does only what is not done."""
    from ..model.rotations import check_rotations

    inputs = Path(inputs) if str(inputs or "").strip() else None
    if inputs is None or not inputs.exists():
        raise InputError(f"The studies {inputs or '(none given)'} were not found: pick a folder of studies "
                         "or a CSV study list.")
    if inputs.is_file() and inputs.suffix.lower() != ".csv":
        raise InputError(f"{inputs} is not a CSV study list; pick a .csv file with a `path` column, or a folder.")
    if not str(output_dir or "").strip():
        raise InputError("No output folder: pick the folder the batch writes into.")
    output_dir = Path(output_dir)
    if output_dir.resolve() == inputs.resolve():
        raise InputError(f"The output folder {output_dir} is the studies' folder; pick a separate output folder.")
    if rotations is not None:
        check_rotations(rotations)
    missing = install.missing(install.requirements("batch"))
    if missing:
        raise InputError(f"Python packages missing: {', '.join(missing)}. Call ensureRequirements() "
                         "(the Run button offers to install them).")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)  # the process's working folder
    except OSError as exc:
        raise InputError(f"Cannot create the output folder {output_dir}: {exc.strerror or exc}. "
                         "Pick a folder you can write to.") from None
    args = ["batch", str(inputs), "-o", str(output_dir), "--model", str(model_dir), "--progress-lines"]
    if members:
        args += ["--members", str(int(members))]
    if rotations is not None:
        args += ["--rotations", str(int(rotations))]

    def collect(job: Job) -> None:
        job.result = read_result(job.work_dir)

    return Job("batch", args, output_dir, what="batch", collect=collect, on_progress=on_progress,
               on_finished=on_finished)


def show_end(slicer, job: Job, progress_bar, status_label) -> None:
    """Show how ``job`` ended in the Batch section: the summary and the table, or the error."""
    if job.cancelled:
        status_label.text = "Cancelled; finished studies stay in the table. Run again for the rest."
    elif job.error:
        status_label.text = "Batch failed."
        slicer.util.errorDisplay("Batch failed:\n\n" + job.error.splitlines()[0], detailedText=job.error)
    else:
        progress_bar.value, status_label.text = 1000, job.result.text()
        show_table(slicer, job.work_dir)


def show_table(slicer, output_dir: Path):
    """Load ``output_dir/cohort.csv`` as a table node and show it in a table view; returns the node."""
    table = slicer.util.loadTable(str(Path(output_dir) / TABLE_CSV))
    layout_manager = slicer.app.layoutManager()
    if layout_manager is not None:
        layout_manager.setLayout(slicer.modules.tables.logic().GetLayoutWithTable(layout_manager.layout))
        selection = slicer.app.applicationLogic().GetSelectionNode()
        selection.SetActiveTableID(table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()
    return table
