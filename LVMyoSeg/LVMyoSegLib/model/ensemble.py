"""Keras ensemble prediction on network-space arrays ``[Z, T, H, W, 1]`` -> ``[Z, T, H, W, C]``.

Used by training and evaluation (the Keras members being trained); segmentation runs
the bundles' ONNX members instead (:mod:`LVMyoSegLib.model.onnx_runtime`). Members' sigmoid probabilities are averaged (paper: 5 members, threshold 0.5).
How it stays fast (numbers in ``benchmarks/README.md``):

- one compiled graph for the whole ensemble: :class:`EnsemblePredictor` builds one
  (folded, below) network and runs it through Keras' compiled predict function (a
  traced graph on TensorFlow), swapping each member's weights in; with the folding
  1.2-1.9x as fast on CPU as calling the models eagerly, and 1.5 GB peak memory
  instead of 6.6 GB for the 5-member multi-level ensemble on a real study;
- members share one architecture (:class:`Ensemble`), so a bundle's members after the
  first are read as weight arrays, not rebuilt as Keras models
  (:func:`LVMyoSegLib.model.bundle.load_ensemble`: 0.2 s per member instead of 1.3 s);
- BatchNormalization folded into the convolution before it (:class:`FoldedModel`,
  inference only: ``w' = w * s``, ``b' = beta - mean * s``, ``s = gamma / sqrt(var + eps)``),
  which removes two passes over every feature map per convolution (about 10% faster);
- slices go through in fixed-size batches (the last one padded by repeating its last
  slice), so a study is traced once per frame count and crop size; no per-frame
  Python loop. The default, 1 slice (all its frames) per call, was as fast as 2 or 4
  in the benchmark, uses the least memory and gives the finest progress and cancel;
- devices and threads are TensorFlow's defaults: a GPU is used when present (with
  memory growth, set in :mod:`LVMyoSegLib.model.networks`) and the CPU thread pools
  size themselves to the cores this process may use; nothing pins a device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import CancelledError, InputError
from ..progress import CancelFn, ProgressEvent, ProgressFn
from .rotations import rotation_average

SLICES_PER_BATCH = 1


def _fold_pairs(model) -> dict[str, tuple]:
    """``{conv name: (conv, bn)}`` for every bias-free Conv2D followed by its BatchNormalization.

    The pairs follow the naming of :mod:`LVMyoSegLib.model.networks` (``X_conv`` -> ``X_bn``,
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


class FoldedModel:
    """An inference copy of a Keras model with each BatchNormalization folded into its convolution.

    ``model`` gives ``source(x, training=False)`` up to float rounding. Layers other
    than the folded pairs are shared with ``source`` (not copied), and ``source`` is
    not modified; after the source's weights change, :meth:`refresh` recomputes the
    folded convolutions. A source without such pairs is used as it is.
    """

    def __init__(self, source) -> None:
        import keras

        self._pairs = _fold_pairs(source)
        self._folded: dict[str, object] = {}
        if not self._pairs:
            self.model = source
            return
        bn_ids = {id(bn) for _, bn in self._pairs.values()}
        pairs, folded = self._pairs, self._folded

        def call(layer, *args, **kwargs):
            if id(layer) in bn_ids:
                return args[0]
            if layer.name in pairs and layer is pairs[layer.name][0]:
                if layer.name not in folded:
                    config = {**layer.get_config(), "use_bias": True, "name": f"{layer.name}_folded",
                              "bias_initializer": "zeros"}
                    fused = keras.layers.Conv2D.from_config(config)
                    fused.build((None, None, None, layer.kernel.shape[2]))
                    folded[layer.name] = fused
                return folded[layer.name](*args)
            return layer(*args, **kwargs)

        self.model = keras.models.clone_model(source, clone_function=lambda layer: layer,
                                              call_function=call, recursive=True)
        self.refresh()

    def refresh(self) -> None:
        """Recompute every folded convolution from the source's current weights."""
        for name, fused in self._folded.items():
            fused.set_weights(list(folded_conv(*self._pairs[name])))


def folded_conv(conv, bn) -> tuple[np.ndarray, np.ndarray]:
    """``(kernel, bias)`` float32 of a bias-free Conv2D followed by its BatchNormalization
    (inference mode), as one convolution."""
    gamma = np.asarray(bn.gamma, np.float64) if bn.scale else 1.0
    beta = np.asarray(bn.beta, np.float64) if bn.center else 0.0
    s = gamma / np.sqrt(np.asarray(bn.moving_variance, np.float64) + bn.epsilon)
    kernel = np.asarray(conv.kernel, np.float64) * s
    bias = beta - np.asarray(bn.moving_mean, np.float64) * s
    return kernel.astype(np.float32), np.broadcast_to(bias, kernel.shape[-1:]).astype(np.float32)


def architecture(saved: dict) -> object:
    """What must agree between ensemble members: the model part (class and config) of a
    serialised Keras model (a ``.keras`` file's ``config.json``), without random seeds or
    the training settings nested models carry (``compile_config``: optimizer names are
    numbered per process)."""
    def bare(config: object) -> object:
        if isinstance(config, dict):
            return {k: bare(v) for k, v in config.items() if k not in ("seed", "compile_config")}
        if isinstance(config, list):
            return [bare(v) for v in config]
        return config

    return bare({k: saved.get(k) for k in ("class_name", "config")})


@dataclass(frozen=True, eq=False)
class Ensemble:
    """Ensemble members that share one architecture: one Keras ``model`` holding the
    first member's weights, and every member's weights in ``model.weights`` order.

    Only one network is built however many members there are; the predictor swaps
    the weights in (:func:`LVMyoSegLib.model.bundle.load_ensemble` reads them from the
    member files without rebuilding each member as a Keras model).
    """

    model: object
    weights: tuple[tuple[np.ndarray, ...], ...]

    def __post_init__(self) -> None:
        if not self.weights:
            raise InputError("No ensemble member to predict with.")
        n = len(self.model.weights)
        if any(len(w) != n for w in self.weights):
            raise InputError(f"Every ensemble member needs the {n} weight arrays of model {self.model.name}.")

    @classmethod
    def of_models(cls, models: Sequence) -> "Ensemble":
        """The ensemble of Keras models of one architecture (e.g. from one trainer)."""
        import keras

        models = list(models)
        if not models:
            raise InputError("No ensemble member to predict with.")
        first = architecture(keras.saving.serialize_keras_object(models[0]))
        for i, m in enumerate(models[1:], start=1):
            if architecture(keras.saving.serialize_keras_object(m)) != first:
                raise InputError(f"Ensemble member {i} ({m.name}) does not have the architecture of "
                                 f"member 0 ({models[0].name}); an ensemble's members must be built alike.")
        return cls(models[0], tuple(tuple(np.asarray(w) for w in m.get_weights()) for m in models))

    def first(self, n: int) -> "Ensemble":
        """The ensemble of the first ``n`` members."""
        if not 1 <= n <= len(self.weights):
            raise InputError(f"The ensemble has {len(self.weights)} members; asked for {n}.")
        return self if n == len(self.weights) else Ensemble(self.model, self.weights[:n])

    def __len__(self) -> int:
        return len(self.weights)


def _checked_input(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 5 or x.shape[-1] != 1 or min(x.shape[:2]) < 1:
        raise InputError(f"Network input must be [slices, frames, H, W, 1] with at least one slice "
                         f"and frame, got {x.shape}.")
    return x


class EnsemblePredictor:
    """Runs an ensemble through one compiled, BatchNorm-folded graph; reuse it for many studies.

    Members run one after another through the same graph (their weights are
    swapped in), each over all slices; the graph is traced on the first call for a
    given ``(slices_per_batch, T, H, W)`` and reused after that. The ensemble's
    model holds the first member's weights again when a prediction returns.
    """

    def __init__(self, members: Sequence | Ensemble) -> None:
        self.ensemble = members if isinstance(members, Ensemble) else Ensemble.of_models(members)
        self._folded = FoldedModel(self.ensemble.model)

    def _use_member(self, k: int) -> None:
        self.ensemble.model.set_weights(self.ensemble.weights[k])
        self._folded.refresh()

    def predict(self, x: np.ndarray, *, slices_per_batch: int = SLICES_PER_BATCH, rotations: int = 1,
                progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> np.ndarray:
        """Mean of the members' probabilities for ``x`` ``[Z, T, H, W, 1]``, over ``rotations``
        quarter-turned views (:mod:`LVMyoSegLib.model.rotations`).

        ``progress`` gets an event after each batch of slices of each
        member; ``cancel()`` is polled before each batch and raises
        :class:`CancelledError` when it returns True.
        """
        x = _checked_input(x)
        if int(slices_per_batch) < 1:
            raise InputError(f"slices_per_batch must be >= 1, got {slices_per_batch}.")
        x = x.astype(np.float32, copy=False)
        return rotation_average(lambda view, events: self._predict(view, int(slices_per_batch), events, cancel),
                                x, rotations, progress)

    def _predict(self, x: np.ndarray, slices_per_batch: int, progress: ProgressFn | None,
                 cancel: CancelFn | None) -> np.ndarray:
        z = x.shape[0]
        batch = min(slices_per_batch, z)
        n = len(self.ensemble)
        total = np.zeros(0, np.float32)  # shaped by the first batch
        try:
            for k in range(n):
                if k:
                    self._use_member(k)
                for start in range(0, z, batch):
                    if cancel is not None and cancel():
                        raise CancelledError("Segmentation cancelled by the user; nothing was written.")
                    stop = min(start + batch, z)
                    chunk = x[start:stop]
                    if stop - start < batch:  # pad to the fixed batch: no retrace for the last batch
                        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - (stop - start), axis=0)])
                    out = np.asarray(self._folded.model.predict_on_batch(chunk), dtype=np.float32)
                    if not total.size:
                        total = np.zeros((z,) + out.shape[1:], dtype=np.float32)
                    total[start:stop] += out[: stop - start]
                    if progress is not None:
                        member = f"member {k + 1} of {n}, " if n > 1 else ""
                        progress(ProgressEvent((k * z + stop) / (n * z), f"{member}slices {start + 1}-{stop} of {z}",
                                               kind="slices", member=k, members=n))
        finally:
            if n > 1:
                self._use_member(0)
        return total / np.float32(n)


def predict_ensemble(models: Sequence | Ensemble | EnsemblePredictor, x: np.ndarray, *,
                     slices_per_batch: int = SLICES_PER_BATCH, rotations: int = 1,
                     progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> np.ndarray:
    """Mean of the members' probabilities for ``x`` ``[Z, T, H, W, 1]`` (over ``rotations`` views).

    ``models`` is a list of Keras models built alike, an :class:`Ensemble`, or an
    :class:`EnsemblePredictor` to reuse its compiled graph across calls.
    ``progress`` gets an event after each batch of slices of each
    member; ``cancel()`` is polled before each batch and raises
    :class:`CancelledError` when it returns True.
    """
    if not isinstance(models, EnsemblePredictor):
        x = _checked_input(x)  # before the members are folded and traced
        models = EnsemblePredictor(models)
    return models.predict(x, slices_per_batch=slices_per_batch, rotations=rotations, progress=progress,
                          cancel=cancel)
