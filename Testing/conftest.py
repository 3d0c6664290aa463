"""Shared pytest fixtures: where the real Sunnybrook data is, Qt for the process runner, quiet TensorFlow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SUNNYBROOK = Path(os.environ.get("LVMYOSEG_SUNNYBROOK", REPO.parent / "shared" / "data" / "sunnybrook"))


@pytest.fixture(scope="session")
def sunnybrook_root() -> Path:
    """The real Sunnybrook subset; tests that need it skip when it is absent."""
    if not (SUNNYBROOK / "link.csv").is_file():
        pytest.skip(f"real Sunnybrook data not found at {SUNNYBROOK} (set LVMYOSEG_SUNNYBROOK)")
    return SUNNYBROOK


@pytest.fixture(scope="session")
def qt_core():
    """PySide6's QtCore standing in for Slicer's PythonQt ``qt`` (QProcess, QProcessEnvironment),
    with a QCoreApplication for the whole session, as Slicer has its application."""
    from PySide6 import QtCore

    app = QtCore.QCoreApplication.instance() or QtCore.QCoreApplication([])
    yield QtCore
    del app
