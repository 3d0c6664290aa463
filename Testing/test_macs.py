"""benchmarks/macs.py: the multiply-accumulates the benchmark's efficiencies divide by match the
convolutions of the built networks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from LVMyoSegLib.model import networks  # noqa: E402
from LVMyoSegLib.model.networks import PeepholeConvLSTM2D  # noqa: E402
from LVMyoSegLib.model.variants import VARIANTS  # noqa: E402

_SPEC = importlib.util.spec_from_file_location("macs", Path(__file__).resolve().parents[1] / "benchmarks" / "macs.py")
macs = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(macs)


def _layer_macs(model, t: int) -> int:
    """MACs of one cycle counted from the built layers' kernels and output shapes."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += _layer_macs(layer, t)
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            _, h, w, _ = layer.input.shape
            total += t * h * w * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, _ = layer.output.shape
            total += t * h * w * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, PeepholeConvLSTM2D):
            _, _, h, w, _ = layer.input.shape
            total += t * h * w * int(np.prod(layer.kernel_x.shape))
            total += t * (1 + layer.circular_passes) * h * w * int(np.prod(layer.kernel_h.shape))
    return total


@pytest.mark.parametrize("variant", VARIANTS)
def test_multiply_accumulates_match_the_layers(variant):
    cnn = networks.build_cnn(crop_size=32, width=4, seed=0, units=2)
    model = networks.build_model(variant, cnn)
    expected = _layer_macs(model, 7)
    assert macs.multiply_accumulates(variant, 7, 32, 32, width=4, units=2) == expected
    full = macs.multiply_accumulates("multi_level", 25, 128, 128)
    assert full > macs.multiply_accumulates("one_level", 25, 128, 128) > \
        macs.multiply_accumulates("cnn", 25, 128, 128)
