"""Slicer version guard and the modules' data folders (LVMyoSegLib.app.compat, app.data_dirs)."""

from __future__ import annotations

import ast
from pathlib import Path

from LVMyoSegLib.app import compat
from LVMyoSegLib.app.data_dirs import data_dirs, local_data_root
from LVMyoSegLib.model.registry import ENV_REGISTRY


def test_slicer_5_8_with_python_3_9_is_refused_with_what_is_needed():
    message = compat.unsupported_reason((5, 8), (3, 9))
    assert message.startswith("LVMyoSeg needs 3D Slicer 5.10 or later (Python 3.10 or later); "
                              "this is 3D Slicer 5.8 with Python 3.9.")
    assert compat.unsupported_reason((5, 10), (3, 12)) is None
    assert compat.unsupported_reason((6, 0), (3, 13)) is None
    assert "Python 3.9" in compat.unsupported_reason((5, 10), (3, 9))


def test_the_guard_and_the_package_roots_parse_as_python_3_9():
    """Slicer 5.8 (Python 3.9) must be able to import the guard to show its message."""
    lib = Path(compat.__file__).resolve().parents[1]
    for path in (lib / "__init__.py", lib / "app" / "__init__.py", Path(compat.__file__)):
        ast.parse(path.read_text(), feature_version=(3, 9))


def test_data_folders_move_an_earlier_versions_folder_once(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_REGISTRY, raising=False)
    legacy = tmp_path / "settings" / "LVMyoSeg"
    (legacy / "models" / "v1").mkdir(parents=True)
    (legacy / "models" / "v1" / "manifest.json").write_text("{}")
    root = tmp_path / "local" / "LVMyoSeg"
    dirs = data_dirs(root, legacy)
    assert dirs.registry == root / "models" and dirs.runs == root / "runs"
    assert (root / "models" / "v1" / "manifest.json").read_text() == "{}" and not legacy.exists()
    legacy.mkdir()  # a later folder there is left alone: the new one exists
    data_dirs(root, legacy)
    assert legacy.is_dir() and (root / "models" / "v1").is_dir()
    monkeypatch.setenv(ENV_REGISTRY, str(tmp_path / "elsewhere"))
    assert data_dirs(root).registry == tmp_path / "elsewhere"


def test_the_data_root_is_the_applications_local_data_folder(qt_core):
    root = local_data_root(qt_core)
    assert root.name == "LVMyoSeg"
    assert str(root.parent) == qt_core.QStandardPaths.writableLocation(qt_core.QStandardPaths.AppLocalDataLocation)
