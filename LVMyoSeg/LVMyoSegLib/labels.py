"""The label map contract and the `Labels` value (sparse per-frame labels of a cine).

The label map uses one integer per voxel: 0 background, 1 LV myocardium,
2 LV blood pool (cavity, papillary muscles included); :func:`checked_label_map` refuses
anything else and :func:`labels_from_probabilities` makes one from network output.
`Labels` are expert or user-corrected labels, sparse in time:
Sunnybrook experts drew myocardium only at end-diastole and the cavity at
end-diastole and end-systole. ``known[t, z, c]`` records, per frame, slice and
channel (``c`` in :data:`CHANNELS`), whether that channel was labelled there.
Unknown channels carry no information, whatever the label map says.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cine import Cine
from .errors import InputError, LabelError

BACKGROUND = 0
MYOCARDIUM = 1
BLOOD_POOL = 2
CHANNELS: tuple[str, ...] = ("myocardium", "blood_pool")
CHANNEL_LABEL_VALUES: tuple[int, ...] = (MYOCARDIUM, BLOOD_POOL)


def checked_label_map(array: np.ndarray, what: str) -> np.ndarray:
    """``array`` as a uint8 label map; :class:`LabelError` unless each value is 0, 1 or 2.

    ``what`` names the array in the message, e.g. ``"Label map (expert)"`` or a file path.
    """
    array = np.asarray(array)
    values = np.unique(array)
    if not set(values.tolist()) <= {BACKGROUND, MYOCARDIUM, BLOOD_POOL}:  # NaN is in no set
        shown = f"{values[:10].tolist()}{' ...' if values.size > 10 else ''}"
        raise LabelError(f"{what} holds label values {shown}; only 0 (background), 1 (LV myocardium) "
                         "and 2 (LV blood pool) are allowed. Relabel it with these values.")
    return array.astype(np.uint8, copy=False)


def labels_from_probabilities(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Label map from ``[..., 2]`` probabilities: a voxel is myocardium when its myocardium
    probability reaches ``threshold`` and is at least its blood-pool probability; blood pool
    when the blood-pool probability reaches ``threshold`` and exceeds the myocardium one."""
    if not 0.0 < threshold < 1.0:
        raise InputError(f"Threshold {threshold} must lie strictly between 0 and 1.")
    myo, pool = probabilities[..., 0], probabilities[..., 1]
    label_map = np.zeros(myo.shape, dtype=np.uint8)
    label_map[(pool >= threshold) & (pool > myo)] = BLOOD_POOL
    label_map[(myo >= threshold) & (myo >= pool)] = MYOCARDIUM
    return label_map


@dataclass(frozen=True)
class Labels:
    """Label map ``[T, Z, Y, X]`` (uint8) and per-channel record ``known[T, Z, 2]`` (bool)."""

    label_map: np.ndarray
    known: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        lm = np.asarray(self.label_map)
        known = np.asarray(self.known, dtype=bool)
        where = f" ({self.source})" if self.source else ""
        if lm.ndim != 4:
            raise LabelError(f"Label map{where} must be [T, Z, Y, X], got shape {lm.shape}.")
        if known.shape != lm.shape[:2] + (len(CHANNELS),):
            raise LabelError(f"Labelled-frame record{where} has shape {known.shape}; expected "
                             f"{lm.shape[:2] + (len(CHANNELS),)}.")
        object.__setattr__(self, "label_map", checked_label_map(lm, f"Label map{where}"))
        object.__setattr__(self, "known", known)

    def channel(self, name: str) -> np.ndarray:
        """Binary mask ``[T, Z, Y, X]`` of one channel ("myocardium" or "blood_pool")."""
        return self.label_map == CHANNEL_LABEL_VALUES[CHANNELS.index(name)]

    def targets(self) -> np.ndarray:
        """Float32 ``[T, Z, Y, X, 2]`` one-hot targets, channel order :data:`CHANNELS`."""
        return np.stack([self.channel(c) for c in CHANNELS], axis=-1).astype(np.float32)

    def labelled_frames(self, name: str = "myocardium") -> list[tuple[int, int]]:
        """(t, z) pairs where channel ``name`` is labelled."""
        t, z = np.nonzero(self.known[:, :, CHANNELS.index(name)])
        return list(zip(t.tolist(), z.tolist()))

    def check_fits(self, cine: Cine) -> None:
        """Raise :class:`LabelError` unless the labels lie on the cine's voxel grid."""
        if self.label_map.shape != cine.frames.shape:
            raise LabelError(f"Labels{' (' + self.source + ')' if self.source else ''} have shape "
                             f"{self.label_map.shape} but the cine ({cine.source}) has "
                             f"{cine.frames.shape}; export labels on the cine's own grid.")
        if not self.known.any():
            raise LabelError(f"Labels ({self.source}) mark no frame as labelled; nothing to learn from.")

