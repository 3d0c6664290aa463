"""Ensemble prediction on network-space arrays ``[Z, T, H, W, 1]`` -> ``[Z, T, H, W, C]``.

Members' sigmoid probabilities are averaged (paper: 5 members, threshold 0.5).
Slices are batched; there is no per-frame Python loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .errors import CancelledError, InputError

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]


def predict_ensemble(models: Sequence, x: np.ndarray, *, slices_per_batch: int = 4,
                     progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> np.ndarray:
    """Mean of the members' probabilities for ``x`` ``[Z, T, H, W, 1]``.

    ``progress(fraction, message)`` is called after each batch of slices of each
    member; ``cancel()`` is polled before each batch and raises
    :class:`CancelledError` when it returns True.
    """
    if x.ndim != 5 or x.shape[-1] != 1:
        raise InputError(f"Network input must be [slices, frames, H, W, 1], got {x.shape}.")
    if not models:
        raise InputError("No ensemble member to predict with.")
    z = x.shape[0]
    batches = [(s, min(s + slices_per_batch, z)) for s in range(0, z, slices_per_batch)]
    total = len(models) * len(batches)
    mean: np.ndarray | None = None
    done = 0
    for m, model in enumerate(models):
        for start, stop in batches:
            if cancel is not None and cancel():
                raise CancelledError("Segmentation cancelled by the user; nothing was written.")
            out = np.asarray(model(x[start:stop], training=False), dtype=np.float32)
            if mean is None:
                mean = np.zeros((z,) + out.shape[1:], dtype=np.float32)
            mean[start:stop] += out / len(models)
            done += 1
            if progress is not None:
                progress(done / total, f"member {m + 1}/{len(models)}, slices {start + 1}-{stop} of {z}")
    assert mean is not None
    return mean
