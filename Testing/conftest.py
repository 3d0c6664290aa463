"""Shared pytest fixtures: where the real Sunnybrook data is, Qt for the process runner, quiet TensorFlow."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def sunnybrook_root() -> Path:
    """The real Sunnybrook subset (``$LVMYOSEG_SUNNYBROOK`` or ``shared/data/sunnybrook`` beside the
    repository, as the product finds it); every test that reads it takes this and skips without it."""
    from LVMyoSegLib.io.sunnybrook import default_root

    root = default_root()
    if not (root / "link.csv").is_file():
        pytest.skip(f"real Sunnybrook data not found at {root} (set LVMYOSEG_SUNNYBROOK)")
    return root


@pytest.fixture(scope="session")
def edes_root() -> Path:
    """The real Sunnybrook ED/ES frames of 36 patients (beside the cines); tests skip when absent."""
    from LVMyoSegLib.io.sunnybrook import default_root

    root = default_root().parent / "sunnybrook-edes"
    if not (root / "frames.csv").is_file():
        pytest.skip(f"the Sunnybrook ED/ES frames are not at {root}")
    return root


@pytest.fixture(scope="session")
def study(sunnybrook_root):
    """Real study SCD0000101 (12 slices x 20 phases) and its expert labels: ``(DicomCine, Labels)``.

    Shared by the whole session: tests must not modify it.
    """
    from LVMyoSegLib.io.sunnybrook import list_studies, load_study

    return load_study(list_studies(sunnybrook_root)[0])


def tree(folder: Path) -> dict[str, bytes | None]:
    """Everything under ``folder``: each path (relative) with its file's bytes (None for a folder), to
    compare before and after something that must leave the folder alone."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def copy_with_flipped_byte(bundle: Path, dest: Path, member: str) -> Path:
    """A copy of ``bundle`` at ``dest`` with one bit flipped in the middle of its file ``member``."""
    import shutil

    shutil.copytree(bundle, dest)
    data = bytearray((dest / member).read_bytes())
    data[len(data) // 2] ^= 0x01
    (dest / member).write_bytes(bytes(data))
    return dest


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A tiny untrained 2-member bundle (2 mm x 64 px grid): for tests of paths, not accuracy."""
    from LVMyoSegLib.labels import CHANNELS
    from LVMyoSegLib.model.bundle import write_bundle
    from LVMyoSegLib.model.networks import build_cnn, build_model

    path = tmp_path_factory.mktemp("models") / "tiny"
    models = [build_model("multi_level", build_cnn(width=4, seed=s, units=1), seed=s) for s in (0, 1)]
    write_bundle(path, models, model_id="tiny-untrained", variant="multi_level", channels=CHANNELS,
                 preprocessing={"pixel_mm": 2.0, "crop_size": 64})
    return path


@pytest.fixture(scope="session")
def phantom_dataset(tmp_path_factory) -> Path:
    """Two SYNTHETIC phantom cases with Sunnybrook-like sparse labels (a training dataset).

    Shared by the whole session: tests must not modify it.
    """
    from LVMyoSegLib.io import dataset, phantom

    path = tmp_path_factory.mktemp("phantom") / "dataset"
    for seed in range(2):
        cine, labels = phantom.make_synthetic_cine(n_phases=8, n_slices=4, size=128, seed=seed)
        dataset.add_case(path, f"phantom{seed}", cine, phantom.sparsify_like_sunnybrook(labels))
    return path


@pytest.fixture
def scene():
    """A real MRML scene (slicer-core) with the Sequences logic watching it, as in 3D Slicer
    (proxy nodes follow the browser); skips without slicer-core."""
    slicer = pytest.importorskip(
        "slicer", reason="the MRML library is missing: install the slicer-core package (pip install '.[mrml]')")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the installed 'slicer' package has no MRML classes (need slicer-core)")
    scene = slicer.vtkMRMLScene()
    logic = slicer.vtkSlicerSequencesLogic()
    logic.SetMRMLScene(scene)
    yield scene
    logic.SetMRMLScene(None)


@pytest.fixture(scope="session")
def qt_core():
    """PySide6's QtCore standing in for Slicer's PythonQt ``qt`` (QProcess, QProcessEnvironment),
    with a QCoreApplication for the whole session, as Slicer has its application."""
    from PySide6 import QtCore

    app = QtCore.QCoreApplication.instance() or QtCore.QCoreApplication([])
    yield QtCore
    app.processEvents()  # deliver what the last test left queued before the application goes


class CliRun:
    """One ``lvmyoseg`` command run through CliProcess in a real QProcess, with all it reported."""

    def __init__(self, qt_core, args: list[str], work_dir: Path, python: str = sys.executable) -> None:
        from LVMyoSegLib.app.process import CliProcess

        self.lines: list[str] = []
        self.log: list[str] = []
        self.ends: list = []
        self.process = CliProcess(qt_core, args, work_dir=work_dir, on_line=self.lines.append,
                                  on_log=self.log.append, on_end=self.ends.append, python=python)
        self.events = qt_core.QCoreApplication.processEvents
        self.process.start()

    def wait(self, timeout_s: float = 120.0):
        """The one end report (a ``ProcessEnd``), after waiting up to ``timeout_s``."""
        assert self.process.wait(self.events, timeout_s), f"the command did not end within {timeout_s} s"
        assert len(self.ends) == 1
        return self.ends[0]


@pytest.fixture
def cli_run(qt_core):
    """``cli_run(args, work_dir, python=...)`` starts a :class:`CliRun`."""
    return lambda args, work_dir, **kw: CliRun(qt_core, args, work_dir, **kw)
