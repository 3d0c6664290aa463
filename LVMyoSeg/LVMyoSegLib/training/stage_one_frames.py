"""Stage 1's training frames over many patients, each patient's labelled frames counted once.

A patient with a whole cine contributes its cine's labelled frames (those of
:class:`~LVMyoSegLib.training.experiments.PreparedCase`, known-empty slices above the base
included); a patient without one contributes its ED/ES frames
(:mod:`LVMyoSegLib.training.edes`). The 5 Sunnybrook cine patients' ED/ES frames are the
same expert frames as their cines' labelled frames, so using both would count
them twice. Used by the cross-validation and by final training on every patient. A cross-validation
run's fold CNNs serve as stage 1 of the leave-one-out runs (:func:`fold_cnn_paths`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..files import read_json
from . import edes
from .patient_split import check_disjoint

if TYPE_CHECKING:
    from .experiments import PreparedCase


def stage_one_arrays(train_ids: Sequence[str], patients: dict[str, edes.Patient],
                     cines: dict[str, PreparedCase], preprocessing: dict[str, Any],
                     test_ids: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stage-1 training frames of ``train_ids`` as one-frame sequences ``(x, y, known, patient ids)``:
    a patient's cine's labelled frames where it has a cine, else its ED/ES frames."""
    check_disjoint(train_ids, test_ids, "cross-validation split")
    parts = []
    for pid in train_ids:
        if pid in cines:
            c = cines[pid]
            z, t = np.nonzero(c.known.any(axis=-1))
            parts.append((c.x[z, t][:, None], c.y[z, t][:, None], c.known[z, t][:, None], [pid] * len(z)))
        elif pid in patients:
            f = edes.patient_frames(patients[pid], preprocessing["pixel_mm"], preprocessing["crop_size"])
            parts.append((f.x, f.y, f.known, list(f.patients)))
        else:
            raise InputError(f"Patient {pid} has neither ED/ES frames nor a cine.")
    if not parts:
        raise InputError("No training patient is left for this fold.")
    x, y, known, ids = zip(*parts)
    return (np.concatenate(x), np.concatenate(y), np.concatenate(known),
            np.array([i for part in ids for i in part]))


def fold_cnn_paths(cv_dir: Path, patient: str, members: int = 1) -> list[Path]:
    """Where the cross-validation run ``cv_dir`` keeps the stage-1 models (members 0 ..
    ``members`` - 1) of the fold that holds ``patient`` out (they never saw that patient); the
    files exist once that fold has finished."""
    settings = read_json(Path(cv_dir) / "settings.json", "Give the folder `lvmyoseg cv -o` wrote (--stage-one).")
    trained = int(settings.get("members", 1))
    if members > trained:
        raise InputError(f"The cross-validation run {cv_dir} trains {trained} CNN(s) per fold; {members} "
                         f"members need as many. Run `lvmyoseg cv --members {members}` into a new folder, "
                         f"or use --members {trained}.")
    for k, fold in enumerate(settings["folds"]):
        if patient in fold:
            return [Path(cv_dir) / f"fold_{k}" / ("cnn" if m == 0 else f"cnn_{m}") / "model.keras"
                    for m in range(members)]
    raise InputError(f"Patient {patient} is in no fold of {cv_dir}.")
