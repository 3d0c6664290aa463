"""Progress across the process boundary: the command line's ``--progress-lines`` and their reader."""

from __future__ import annotations

import math

PROGRESS_PREFIX = "PROGRESS "  # the command line's --progress-lines: PROGRESS <fraction> <message>


def progress_line(fraction: float, message: str) -> str:
    """The ``PROGRESS <fraction> <message>`` line the command line prints with --progress-lines."""
    return f"{PROGRESS_PREFIX}{fraction:.4f} {message}"


def parse_progress_line(line: str) -> tuple[float, str] | None:
    """``(fraction, message)`` of a ``PROGRESS <fraction> <message>`` line, else None."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    parts = line[len(PROGRESS_PREFIX):].strip().split(" ", 1)
    try:
        fraction = float(parts[0])
    except ValueError:
        return None
    if not math.isfinite(fraction):
        return None
    return fraction, (parts[1] if len(parts) > 1 else "")
