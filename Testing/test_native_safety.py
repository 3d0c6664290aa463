"""Training never reaches oneDNN's crashing strided 1x1 weight-gradient kernel (docs/ONEDNN_CRASH.md).

The crash is heap corruption in a native kernel, so the training test runs in a child
process: a crash there is a failed test, not the end of the test run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from LVMyoSegLib.model import networks
from LVMyoSegLib.model.variants import VARIANTS


def _layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)


@pytest.mark.parametrize("width", [4, 8, 12, 16])
def test_no_model_has_a_strided_1x1_convolution(width: int) -> None:
    cnn = networks.build_cnn(32, width=width, units=1)
    for variant in VARIANTS:
        model = networks.build_model(variant, networks.cnn_from_model(cnn))
        strided_1x1 = [layer.name for layer in _layers(model) if isinstance(layer, keras.layers.Conv2D)
                       and tuple(layer.kernel_size) == (1, 1) and tuple(layer.strides) != (1, 1)]
        assert strided_1x1 == [], f"{variant} at width {width}: {strided_1x1}"
        assert any(layer.name.endswith("_subsample") for layer in _layers(model))


def test_subsampled_projection_equals_a_strided_1x1_convolution() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 16, 16, 8)).astype("float32")
    kernel = rng.normal(size=(1, 1, 8, 16)).astype("float32")
    strided = keras.layers.Conv2D(16, 1, strides=2, use_bias=False)
    strided.build(x.shape)
    strided.set_weights([kernel])
    projection = keras.layers.Conv2D(16, 1, use_bias=False)
    projection.build((None, 8, 8, 8))
    projection.set_weights([kernel])
    subsampled = projection(keras.layers.AveragePooling2D(pool_size=1, strides=2)(x))
    np.testing.assert_allclose(np.asarray(subsampled), np.asarray(strided(x)), rtol=1e-5, atol=1e-5)


CHILD = textwrap.dedent("""
    import numpy as np
    from LVMyoSegLib.model import networks
    from LVMyoSegLib.training import loop as training
    rng = np.random.default_rng(0)
    for width in (4, 8, 12):
        model = networks.build_cnn(64, width=width, units=1)
        training._compile(model, 1e-3, training.TrainConfig())
        x = rng.normal(size=(4, 1, 64, 64, 1)).astype("float32")
        y = (rng.random((4, 1, 64, 64, 2)) > 0.5).astype("float32")
        for _ in range(40):
            model.train_on_batch(x, y)
    print("trained")
""")


@pytest.mark.slow
def test_training_at_small_widths_does_not_crash_natively() -> None:
    # Before the fix this crashed on AVX-512 CPUs (widths 4, 8, 12) and on AVX2 CPUs (width 4).
    done = subprocess.run([sys.executable, "-X", "faulthandler", "-c", CHILD], capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0 and "trained" in done.stdout, done.stderr[-3000:]
