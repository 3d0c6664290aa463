"""Where the extension's shipped resources live (bundled model, sample study)."""

from __future__ import annotations

from pathlib import Path

RESOURCES_DIR = Path(__file__).resolve().parents[1] / "Resources"
MODELS_DIR = RESOURCES_DIR / "Models"
SAMPLE_DIR = RESOURCES_DIR / "Sample"
BUNDLED_MODEL_NAME = "sunnybrook-multilevel"


def bundled_model_dir() -> Path:
    """Folder of the bundled (read-only) ensemble."""
    return MODELS_DIR / BUNDLED_MODEL_NAME


def sample_case_dir() -> Path:
    """Folder of the bundled sample study (a Sunnybrook CC0 cine with its expert labels)."""
    return SAMPLE_DIR / "cases" / "SCD0000101"
