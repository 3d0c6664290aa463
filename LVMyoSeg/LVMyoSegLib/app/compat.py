"""Which 3D Slicer runs the extension: 5.10 or later, whose Python is 3.10 or later.

Slicer 5.8 bundles Python 3.9, where the packages LVMyoSeg needs stop at versions that cannot
read its model. The modules check this first and say so, instead of failing later. This file
must stay importable on Python 3.9 (no newer syntax, no imports from the rest of the package).
"""

import sys
from typing import Optional, Tuple

MIN_SLICER = (5, 10)
MIN_PYTHON = (3, 10)


def unsupported_reason(slicer_version: Tuple[int, int],
                       python_version: Tuple[int, int] = tuple(sys.version_info[:2])) -> Optional[str]:
    """None when this Slicer and Python are supported; else one message saying what is needed."""
    problems = []
    if tuple(slicer_version) < MIN_SLICER:
        problems.append(f"3D Slicer {slicer_version[0]}.{slicer_version[1]}")
    if tuple(python_version) < MIN_PYTHON:
        problems.append(f"Python {python_version[0]}.{python_version[1]}")
    if not problems:
        return None
    return (f"LVMyoSeg needs 3D Slicer {MIN_SLICER[0]}.{MIN_SLICER[1]} or later (Python "
            f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or later); this is {' with '.join(problems)}. "
            "Install a current 3D Slicer from https://download.slicer.org and add the extension there.")


def show_unsupported(qt, layout, message: str) -> None:
    """Fill a module panel's ``layout`` with ``message`` alone (the module does nothing else)."""
    label = qt.QLabel(message)
    label.wordWrap = True
    layout.addWidget(label)
    layout.addStretch(1)
