"""Ensemble prediction on network-space arrays ``[Z, T, H, W, 1]`` -> ``[Z, T, H, W, C]``.

Members' sigmoid probabilities are averaged (paper: 5 members, threshold 0.5).
How it stays fast (numbers in ``benchmarks/README.md``):

- one compiled graph per member set: :class:`EnsemblePredictor` wraps the members in
  one Keras model whose call averages their outputs, and runs it through Keras'
  compiled predict function (a traced graph on TensorFlow), about twice as fast on
  CPU as calling the models eagerly;
- slices are batched with a fixed batch size (the last batch padded by repeating
  its last slice), so a study is traced once per frame count and crop size, not
  once per batch shape; no per-frame Python loop;
- devices and threads are TensorFlow's defaults: a GPU is used when present (with
  memory growth, so Slicer and the network can share it) and the CPU thread pools
  size themselves to the cores this process may use; nothing pins a device.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from .errors import CancelledError, InputError

# Read by TensorFlow when it creates a GPU device: allocate GPU memory as needed
# instead of all of it at once. A user's own setting wins.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]
SLICES_PER_BATCH = 1


def _mean_model(models: Sequence):
    """A Keras model whose output is the mean of ``models``' outputs (weights shared, not copied)."""
    import keras

    class EnsembleMean(keras.Model):
        def __init__(self, members: Sequence) -> None:
            super().__init__(name="ensemble_mean")
            self.members = list(members)

        def call(self, x, training=False):
            total = self.members[0](x, training=False)
            for member in self.members[1:]:
                total = total + member(x, training=False)
            return total / float(len(self.members))

    return EnsembleMean(models)


class EnsemblePredictor:
    """Runs an ensemble's members as one compiled graph; reuse it for many studies.

    The graph is traced on the first call for a given ``(slices_per_batch, T, H, W)``
    and reused after that (a new frame count or crop size traces once more).
    """

    def __init__(self, models: Sequence) -> None:
        models = list(models)
        if not models:
            raise InputError("No ensemble member to predict with.")
        self.members = models
        self._model = _mean_model(models)

    def predict(self, x: np.ndarray, *, slices_per_batch: int = SLICES_PER_BATCH,
                progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> np.ndarray:
        """Mean of the members' probabilities for ``x`` ``[Z, T, H, W, 1]``.

        ``progress(fraction, message)`` is called after each batch of slices (all
        members at once); ``cancel()`` is polled before each batch and raises
        :class:`CancelledError` when it returns True.
        """
        x = np.asarray(x)
        if x.ndim != 5 or x.shape[-1] != 1:
            raise InputError(f"Network input must be [slices, frames, H, W, 1], got {x.shape}.")
        if int(slices_per_batch) < 1:
            raise InputError(f"slices_per_batch must be >= 1, got {slices_per_batch}.")
        x = x.astype(np.float32, copy=False)
        z = x.shape[0]
        batch = min(int(slices_per_batch), z)
        mean: np.ndarray | None = None
        n = len(self.members)
        for start in range(0, z, batch):
            if cancel is not None and cancel():
                raise CancelledError("Segmentation cancelled by the user; nothing was written.")
            stop = min(start + batch, z)
            chunk = x[start:stop]
            if stop - start < batch:  # pad to the fixed batch: no retrace for the last batch
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - (stop - start), axis=0)])
            out = np.asarray(self._model.predict_on_batch(chunk), dtype=np.float32)[: stop - start]
            if mean is None:
                mean = np.empty((z,) + out.shape[1:], dtype=np.float32)
            mean[start:stop] = out
            if progress is not None:
                progress(stop / z, f"slices {start + 1}-{stop} of {z} ({n} member{'s' * (n > 1)})")
        assert mean is not None
        return mean


def predict_ensemble(models: Sequence | EnsemblePredictor, x: np.ndarray, *,
                     slices_per_batch: int = SLICES_PER_BATCH, progress: ProgressFn | None = None,
                     cancel: CancelFn | None = None) -> np.ndarray:
    """Mean of the members' probabilities for ``x`` ``[Z, T, H, W, 1]``.

    ``models`` is a list of Keras models, or an :class:`EnsemblePredictor` to reuse
    its compiled graph across calls. ``progress(fraction, message)`` is called after
    each batch of slices; ``cancel()`` is polled before each batch and raises
    :class:`CancelledError` when it returns True.
    """
    if not isinstance(models, EnsemblePredictor):
        if x.ndim != 5 or x.shape[-1] != 1:
            raise InputError(f"Network input must be [slices, frames, H, W, 1], got {x.shape}.")
        models = EnsemblePredictor(models)
    return models.predict(x, slices_per_batch=slices_per_batch, progress=progress, cancel=cancel)
