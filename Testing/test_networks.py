"""Tests of LVMyoSegLib.model.networks: shapes, ConvLSTM equations, circular connection, saving."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from LVMyoSegLib.model import networks  # noqa: E402
from LVMyoSegLib.model.networks import PeepholeConvLSTM2D  # noqa: E402
from LVMyoSegLib.model.variants import VARIANTS  # noqa: E402


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def small_cnn():
    return networks.build_cnn(width=4, seed=3, units=2)


@pytest.fixture(scope="module")
def small_models(small_cnn):
    return {v: networks.build_model(v, small_cnn, seed=5) for v in VARIANTS}


def test_real_size_models_map_cycles_to_two_probability_channels():
    cnn = networks.build_cnn(width=16, seed=0)  # the product's ResNet-56
    assert len([l for l in cnn.layers if isinstance(l, keras.layers.Conv2D)
                and l.kernel_size == (3, 3)]) == 1 + 3 * 9 * 2
    models = {v: networks.build_model(v, cnn) for v in VARIANTS}
    for variant, model in models.items():
        for t in (20, 25):
            spec = model.compute_output_spec(keras.KerasTensor((2, t, 128, 128, 1)))
            assert tuple(spec.shape) == (2, t, 128, 128, 2), variant
    y = np.asarray(models["multi_level"].predict_on_batch(_x((1, 3, 128, 128, 1))))
    assert y.shape == (1, 3, 128, 128, 2) and y.dtype == np.float32
    assert np.all((y >= 0) & (y <= 1))


@pytest.mark.parametrize("t", [20, 25])
def test_all_variants_run_on_20_and_25_frames(small_models, t):
    x = _x((2, t, 32, 32, 1))
    for variant, model in small_models.items():
        y = np.asarray(model.predict_on_batch(x))
        assert y.shape == (2, t, 32, 32, 2), variant
        assert np.all((y > 0) & (y < 1)), variant


def test_feature_model_gives_half_and_quarter_resolution(small_cnn):
    half, quarter = networks.cnn_feature_model(small_cnn)(_x((2, 3, 48, 40, 1)))
    assert tuple(half.shape) == (2, 3, 24, 20, 8) and tuple(quarter.shape) == (2, 3, 12, 10, 16)


def test_cnn_is_applied_frame_by_frame(small_cnn):
    x = _x((2, 4, 32, 32, 1))
    whole = np.asarray(small_cnn(x))
    alone = np.asarray(small_cnn(x[:, 2:3]))
    np.testing.assert_allclose(whole[:, 2:3], alone, atol=1e-5)


def _conv_same(x, k):
    """Reference 'same' cross-correlation: x [B, H, W, Ci], k [kh, kw, Ci, Co]."""
    kh, kw = k.shape[:2]
    p = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = np.zeros(x.shape[:3] + (k.shape[3],))
    for dy in range(kh):
        for dx in range(kw):
            out += p[:, dy:dy + x.shape[1], dx:dx + x.shape[2]] @ k[dy, dx]
    return out


def _reference_convlstm(x, kx, kh, b, wci, wcf, wco, passes):
    """Eqs. (1)-(5) of the paper in numpy; warm-up passes for the circular connection."""
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    f = kh.shape[2]
    h = np.zeros(x.shape[:1] + x.shape[2:4] + (f,))
    c = np.zeros_like(h)
    outs = []
    for p in range(passes + 1):
        outs = []
        for t in range(x.shape[1]):
            z = _conv_same(x[:, t], kx) + _conv_same(h, kh) + b
            zi, zf, zc, zo = np.split(z, 4, axis=-1)
            i = sig(zi + wci * c)
            fg = sig(zf + wcf * c)
            c = fg * c + i * np.tanh(zc)
            o = sig(zo + wco * c)
            h = o * np.tanh(c)
            outs.append(h)
    return np.stack(outs, axis=1)


@pytest.mark.parametrize("passes", [0, 1, 2])
def test_convlstm_follows_equations_1_to_5(passes):
    layer = PeepholeConvLSTM2D(3, circular_passes=passes, seed=1)
    x = _x((2, 5, 6, 7, 2), seed=4)
    layer.build(x.shape)
    rng = np.random.default_rng(9)
    for w in (layer.bias, layer.peephole_i, layer.peephole_f, layer.peephole_o):
        w.assign(rng.normal(0, 0.5, w.shape).astype(np.float32))
    ref = _reference_convlstm(x, *(np.asarray(w, np.float64) for w in (
        layer.kernel_x, layer.kernel_h, layer.bias, layer.peephole_i, layer.peephole_f,
        layer.peephole_o)), passes=passes)
    np.testing.assert_allclose(np.asarray(layer(x)), ref, atol=2e-5)


def test_peephole_weights_exist_and_change_the_output():
    layer = PeepholeConvLSTM2D(4, seed=2)
    x = _x((1, 6, 8, 8, 3))
    base = np.asarray(layer(x))
    names = {w.path.split("/")[-1]: tuple(w.shape) for w in layer.weights}
    assert names["peephole_i"] == names["peephole_f"] == names["peephole_o"] == (4,)
    assert all(w.trainable for w in layer.weights)
    for name in ("peephole_i", "peephole_f", "peephole_o"):
        w = getattr(layer, name)
        w.assign(np.full(4, 0.8, np.float32))
        assert np.abs(np.asarray(layer(x)) - base).max() > 1e-4, name
        w.assign(np.zeros(4, np.float32))
    np.testing.assert_allclose(np.asarray(layer(x)), base, atol=1e-6)


def test_circular_connection_makes_frame_0_depend_on_last_frame(small_cnn, small_models):
    x = _x((1, 6, 32, 32, 1))
    x2 = x.copy()
    x2[:, -1] += 2.0 * _x((1, 32, 32, 1), seed=8)
    for variant, model in small_models.items():
        d0 = np.abs(np.asarray(model(x))[:, 0] - np.asarray(model(x2))[:, 0]).max()
        if variant == "cnn":
            assert d0 == 0.0
        else:
            assert d0 > 1e-6, variant
    no_circle = networks.build_model("multi_level", small_cnn, circular_passes=0)
    d0 = np.abs(np.asarray(no_circle(x))[:, 0] - np.asarray(no_circle(x2))[:, 0]).max()
    assert d0 == 0.0


def test_rnn_variants_freeze_the_cnn_and_start_from_its_decoder(small_cnn, small_models):
    cnn_vars = {id(v) for v in small_cnn.weights}
    for variant in ("one_level", "multi_level"):
        model = small_models[variant]
        assert model.trainable_weights
        assert not cnn_vars & {id(v) for v in model.trainable_weights}
        lstm = [l for l in networks.model_parts(model)[1].layers if isinstance(l, PeepholeConvLSTM2D)]
        assert len(lstm) == (2 if variant == "multi_level" else 1)
        head = networks.model_parts(model)[1]
        for a, b in zip(head.get_layer("rnn_dec_out").get_weights(),
                        small_cnn.get_layer("dec_out").get_weights()):
            np.testing.assert_array_equal(a, b)


def test_save_and_load_in_safe_mode_gives_identical_predictions(small_models, tmp_path):
    x = _x((2, 5, 32, 32, 1))
    for variant, model in small_models.items():
        path = tmp_path / f"{variant}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
        np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
        assert len(loaded.trainable_weights) == len(model.trainable_weights)
        assert loaded.name == variant


def test_seed_makes_initial_weights_reproducible():
    a, b, c = (networks.build_cnn(width=4, units=1, seed=s) for s in (1, 1, 2))
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert any(not np.array_equal(wa, wc) for wa, wc in zip(a.get_weights(), c.get_weights()))


def test_bad_arguments_are_refused(small_cnn):
    with pytest.raises(ValueError, match="variant"):
        networks.build_model("three_level", small_cnn)
    with pytest.raises(ValueError, match="multiple of 4"):
        networks.build_cnn(crop_size=30)
