"""Shared pytest fixtures: where the real Sunnybrook data is, and quiet TensorFlow."""

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
