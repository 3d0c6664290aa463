"""How the commands show progress: ``PROGRESS`` lines (``--progress-lines``, :mod:`LVMyoSegLib.progress`)
for the Slicer modules, or text on the terminal."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from ..progress import ProgressEvent, ProgressFn, progress_line, with_measured_eta


def add_progress_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--progress-lines", action="store_true",
                   help="print each progress event as a line 'PROGRESS {JSON}' (for the Slicer modules)")


def progress_printer(lines: bool) -> ProgressFn:
    """Every event: a ``PROGRESS`` line on standard output, or a text bar on the terminal."""

    def show(event: ProgressEvent) -> None:
        if lines:
            print(progress_line(event), flush=True)
            return
        bar = "#" * int(30 * event.fraction)
        print(f"\r[{bar:<30}] {100 * event.fraction:5.1f}% {event.message:<50}", end="", file=sys.stderr, flush=True)
        if event.fraction >= 1.0:
            print(file=sys.stderr)

    return show


def training_printer(lines: bool, clock: Callable[[], float] = time.monotonic) -> ProgressFn:
    """Every finished epoch, with the whole command's time left measured (from ``clock``): a
    ``PROGRESS`` line on standard output, or its message, loss, validation DSC and ETA on the terminal."""

    def text(event: ProgressEvent) -> None:
        val = f" val DSC {event.val_dsc:.3f}" if event.val_dsc is not None else ""
        eta = f" ETA {event.eta_s / 60:.1f} min" if event.eta_s is not None else ""
        print(f"{event.message} loss {event.loss:.4f}{val}{eta}", file=sys.stderr, flush=True)

    show = with_measured_eta(progress_printer(True) if lines else text, clock)

    def epochs_only(event: ProgressEvent) -> None:
        if event.kind == "epoch":
            show(event)

    return epochs_only
