"""Where the Slicer modules keep the model registry and training runs: a per-user data folder.

Not beside ``Slicer.ini``: on Windows that is the roaming profile, copied at every logon, and
training runs hold gigabytes. Qt's ``AppLocalDataLocation`` is the machine-local data folder
(Windows ``%LOCALAPPDATA%``, macOS ``~/Library/Application Support``, Linux
``~/.local/share``) of the running application. ``$LVMYOSEG_REGISTRY`` still overrides the
registry, as on the command line.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..model.registry import ENV_REGISTRY


@dataclass(frozen=True)
class DataDirs:
    """The module's per-user folders."""

    root: Path

    @property
    def registry(self) -> Path:
        env = os.environ.get(ENV_REGISTRY)
        return Path(env).expanduser() if env else self.root / "models"

    @property
    def runs(self) -> Path:
        return self.root / "runs"


def local_data_root(qt: ModuleType) -> Path:
    """``<AppLocalDataLocation>/LVMyoSeg`` of the running Qt application."""
    location = qt.QStandardPaths.writableLocation(qt.QStandardPaths.AppLocalDataLocation)
    return Path(location) / "LVMyoSeg"


def data_dirs(root: Path, legacy_root: Path | None = None) -> DataDirs:
    """The folders under ``root``; a ``legacy_root`` of an earlier version (``LVMyoSeg`` beside the
    user settings file) is moved there once, when ``root`` does not exist yet and both are on one
    file system (a rename, nothing copied); otherwise it is left where it is and logged."""
    root = Path(root)
    if legacy_root is not None and Path(legacy_root).is_dir() and not root.exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(legacy_root, root)
            logging.info(f"LVMyoSeg: moved the model registry and training runs from {legacy_root} to {root}")
        except OSError as exc:
            logging.warning(f"LVMyoSeg: could not move {legacy_root} to {root} ({exc}); the model versions "
                            f"there are not listed. Move the folder by hand.")
    return DataDirs(root)


def slicer_data_dirs(slicer, qt: ModuleType) -> DataDirs:
    """The data folders inside 3D Slicer (moves those of earlier versions out of the settings folder)."""
    legacy = Path(slicer.app.slicerUserSettingsFilePath).parent / "LVMyoSeg"
    return data_dirs(local_data_root(qt), legacy)


