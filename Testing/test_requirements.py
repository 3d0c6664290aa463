"""One list of requirement strings (LVMyoSegLib.requirements) that pyproject.toml mirrors; the
Keras pin holds the versions that read the bundled model."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from LVMyoSegLib import requirements

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _normal(lines) -> set[str]:
    return {str(Requirement(line)) for line in lines}


def test_pyproject_mirrors_the_requirements_module() -> None:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    assert _normal(project["dependencies"]) == _normal(requirements.SEGMENT + requirements.BATCH)
    assert _normal(project["optional-dependencies"]["train"]) == _normal(requirements.TRAIN)


def test_segmentation_needs_no_tensorflow_and_training_no_cpu_only_build() -> None:
    segment = {Requirement(r).name for r in requirements.SEGMENT}
    train = {Requirement(r).name for r in requirements.TRAIN}
    assert "onnxruntime" in segment and not segment & {"tensorflow", "tensorflow-cpu", "keras", "h5py"}
    assert {"tensorflow", "keras", "onnx"} <= train and "tensorflow-cpu" not in train
    for requirement in requirements.SEGMENT_GPU.values():
        assert Requirement(requirement).specifier == Requirement(requirements.ONNXRUNTIME).specifier


def _keras_pin():
    return next(Requirement(r) for r in requirements.TRAIN if Requirement(r).name == "keras").specifier


def test_keras_pin_excludes_the_versions_that_cannot_read_the_bundle() -> None:
    # Keras 3.12.0, 3.14.0 and 3.14.1 were tried on the bundled member: each fails to deserialise it.
    pin = _keras_pin()
    assert "3.15.0" in pin and "3.15.1" in pin
    assert not any(v in pin for v in ("3.10.0", "3.12.0", "3.14.0", "3.14.1"))


@pytest.mark.slow
def test_installed_keras_meets_the_pin_and_reads_and_writes_the_bundle(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    from LVMyoSegLib.model.bundle import load_members, write_bundle
    from LVMyoSegLib.resources import bundled_model_dir

    assert keras.__version__ in _keras_pin()
    manifest, (model,) = load_members(bundled_model_dir(), 1)
    write_bundle(tmp_path / "again", [model], model_id="again", variant=manifest.variant,
                 channels=manifest.channels, preprocessing=manifest.preprocessing)
    assert load_members(tmp_path / "again")[1][0].count_params() == model.count_params()
