"""Keras serialisation of the custom layers of LVMyoSegLib.model.networks: each registered layer
comes back from its config (``from_config`` and Keras' registered-object serialisation) with the
same settings, and with the same weights gives the same outputs."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from LVMyoSegLib.model.networks import FoldTime, PeepholeConvLSTM2D, UnfoldTime  # noqa: E402

X = np.random.default_rng(0).standard_normal((2, 3, 4, 4, 2)).astype(np.float32)  # [B, T, H, W, C]


def _fold_time():
    return FoldTime(name="fold"), (X,)


def _unfold_time():
    return UnfoldTime(name="unfold"), ((X.reshape(6, 4, 4, 2), X),)


def _convlstm():
    return PeepholeConvLSTM2D(3, kernel_size=3, circular_passes=2, seed=7, name="lstm"), (X,)


LAYERS = {"FoldTime": _fold_time, "UnfoldTime": _unfold_time, "PeepholeConvLSTM2D": _convlstm}


def _same_weights(source, target, args) -> None:
    """Give ``source`` random weights (the peepholes start at zero: every weight should matter) and
    ``target``, built on ``args``, the same."""
    target(*args)
    rng = np.random.default_rng(1)
    for w in source.weights:
        w.assign(rng.normal(0, 0.5, w.shape).astype(np.float32))
    target.set_weights(source.get_weights())


def _check_same(layer, copy, args) -> None:
    """``copy`` is ``layer`` again: same class and config and, with the same weights, the same outputs."""
    assert type(copy) is type(layer)
    assert copy.get_config() == layer.get_config()
    _same_weights(layer, copy, args)
    np.testing.assert_array_equal(np.asarray(copy(*args)), np.asarray(layer(*args)))


@pytest.mark.parametrize("kind", LAYERS)
def test_layer_is_registered_under_the_package_name(kind):
    layer, _ = LAYERS[kind]()
    assert keras.saving.get_registered_name(type(layer)) == f"LVMyoSeg>{kind}"
    assert keras.saving.get_registered_object(f"LVMyoSeg>{kind}") is type(layer)


@pytest.mark.parametrize("kind", LAYERS)
def test_from_config_round_trip(kind):
    layer, args = LAYERS[kind]()
    layer(*args)
    _check_same(layer, type(layer).from_config(layer.get_config()), args)


@pytest.mark.parametrize("kind", LAYERS)
def test_serialize_deserialize_round_trip(kind):
    layer, args = LAYERS[kind]()
    layer(*args)
    config = keras.saving.serialize_keras_object(layer)
    assert config["registered_name"] == f"LVMyoSeg>{kind}"
    _check_same(layer, keras.saving.deserialize_keras_object(config), args)


def test_convlstm_config_keeps_its_settings():
    layer, _ = _convlstm()
    config = layer.get_config()
    assert {k: config[k] for k in ("filters", "kernel_size", "circular_passes", "seed")} == {
        "filters": 3, "kernel_size": 3, "circular_passes": 2, "seed": 7}
    copy = PeepholeConvLSTM2D.from_config(config)
    assert (copy.filters, copy.kernel_size, copy.circular_passes, copy.seed) == (3, 3, 2, 7)
