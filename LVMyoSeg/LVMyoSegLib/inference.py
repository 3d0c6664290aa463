"""Ensemble prediction on network-space arrays ``[Z, T, H, W, 1]`` -> ``[Z, T, H, W, C]``.

Members' sigmoid probabilities are averaged (paper: 5 members, threshold 0.5).
How it stays fast (numbers in ``benchmarks/README.md``):

- one compiled graph per member set: :class:`EnsemblePredictor` wraps the members in
  one Keras model whose call averages their outputs, and runs it through Keras'
  compiled predict function (a traced graph on TensorFlow); with the folding below
  1.2-1.9x as fast on CPU as calling the models eagerly (1.9x for the 5-member
  multi-level ensemble on a real study), and 1.5 GB peak memory instead of 6.6 GB;
- BatchNormalization folded into the convolution before it (:func:`fold_batchnorm`,
  inference only: ``w' = w * s``, ``b' = beta - mean * s``, ``s = gamma / sqrt(var + eps)``),
  which removes two passes over every feature map per convolution (about 10% faster);
- slices go through in fixed-size batches (the last one padded by repeating its last
  slice), so a study is traced once per frame count and crop size; no per-frame
  Python loop. The default, 1 slice (all its frames) per call, was as fast as 2 or 4
  in the benchmark, uses the least memory and gives the finest progress and cancel;
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


def compute_device() -> str:
    """"GPU" when TensorFlow sees one (it then runs the network there), else "CPU"."""
    import tensorflow as tf

    return "GPU" if tf.config.list_physical_devices("GPU") else "CPU"


def _fold_pairs(model) -> dict[str, tuple]:
    """``{conv name: (conv, bn)}`` for every bias-free Conv2D followed by its BatchNormalization.

    The pairs follow the naming of :mod:`LVMyoSegLib.networks` (``X_conv`` -> ``X_bn``,
    ``X_proj`` -> ``X_proj_bn``, where the BN is the convolution's only consumer).
    """
    import keras

    layers: dict[str, object] = {}

    def walk(m) -> None:
        for layer in m.layers:
            layers[layer.name] = layer
            if isinstance(layer, keras.Model):
                walk(layer)

    walk(model)
    pairs = {}
    for name, bn in layers.items():
        if not (isinstance(bn, keras.layers.BatchNormalization) and name.endswith("_bn")
                and bn.axis in (-1, 3)):
            continue
        conv = layers.get(name[:-3] + "_conv") or layers.get(name[:-3])
        if type(conv) is keras.layers.Conv2D and not conv.use_bias:
            pairs[conv.name] = (conv, bn)
    return pairs


def fold_batchnorm(model):
    """An inference copy of ``model`` with each BatchNormalization folded into its convolution.

    Outputs equal ``model(x, training=False)`` up to float rounding. Layers other
    than the folded pairs are shared with ``model`` (not copied); ``model`` is not
    modified. A model without such pairs comes back as it is.
    """
    import keras

    pairs = _fold_pairs(model)
    if not pairs:
        return model
    bn_ids = {id(bn) for _, bn in pairs.values()}
    folded: dict[str, object] = {}

    def fused(conv, bn):
        gamma = np.asarray(bn.gamma, np.float64) if bn.scale else 1.0
        beta = np.asarray(bn.beta, np.float64) if bn.center else 0.0
        s = gamma / np.sqrt(np.asarray(bn.moving_variance, np.float64) + bn.epsilon)
        kernel = np.asarray(conv.kernel, np.float64) * s
        bias = beta - np.asarray(bn.moving_mean, np.float64) * s
        config = {**conv.get_config(), "use_bias": True, "name": f"{conv.name}_folded",
                  "bias_initializer": "zeros"}
        layer = keras.layers.Conv2D.from_config(config)
        layer.build((None, None, None, kernel.shape[2]))
        layer.set_weights([kernel.astype(np.float32), np.broadcast_to(bias, kernel.shape[-1:])
                           .astype(np.float32)])
        return layer

    def call(layer, *args, **kwargs):
        if id(layer) in bn_ids:
            return args[0]
        if layer.name in pairs and layer is pairs[layer.name][0]:
            if layer.name not in folded:
                folded[layer.name] = fused(*pairs[layer.name])
            return folded[layer.name](*args)
        return layer(*args, **kwargs)

    return keras.models.clone_model(model, clone_function=lambda layer: layer,
                                    call_function=call, recursive=True)


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


def _checked_input(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 5 or x.shape[-1] != 1:
        raise InputError(f"Network input must be [slices, frames, H, W, 1], got {x.shape}.")
    return x


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
        self._model = _mean_model([fold_batchnorm(m) for m in models])

    def predict(self, x: np.ndarray, *, slices_per_batch: int = SLICES_PER_BATCH,
                progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> np.ndarray:
        """Mean of the members' probabilities for ``x`` ``[Z, T, H, W, 1]``.

        ``progress(fraction, message)`` is called after each batch of slices (all
        members at once); ``cancel()`` is polled before each batch and raises
        :class:`CancelledError` when it returns True.
        """
        x = _checked_input(x)
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
        x = _checked_input(x)  # before the members are folded and traced
        models = EnsemblePredictor(models)
    return models.predict(x, slices_per_batch=slices_per_batch, progress=progress, cancel=cancel)
