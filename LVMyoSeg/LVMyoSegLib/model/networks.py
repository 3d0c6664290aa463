"""The paper's networks: ResNet-56 CNN, peephole ConvLSTM with circular connection, three variants.

Every model maps ``[batch, T, H, W, 1]`` float32 (batch = slices, T = frames of one
cardiac cycle, any T; H, W multiples of 4) to sigmoid probabilities
``[batch, T, H, W, 2]``, channel 0 = LV myocardium, channel 1 = LV blood pool
(:data:`LVMyoSegLib.labels.CHANNELS`).

- ``"cnn"``: the fully convolutional ResNet-56 alone, frame by frame (T is folded
  into the batch by :class:`FoldTime`; no per-frame Python loop). Stem conv, three
  stages of 9 residual units (conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU), widths
  ``w, 2w, 4w`` (16/32/64 by default), stride 2 at the start of stages 2 and 3 with
  a 1x1 projection shortcut. The projection subsamples first (a 1x1 pooling with
  stride 2) and then convolves with stride 1: the same function as a strided 1x1
  convolution, but it keeps training off oneDNN's strided 1x1 weight-gradient kernel,
  which corrupts the heap when the input channels are not a multiple of the CPU's
  vector width (8 with AVX2, 16 with AVX-512; ``docs/ONEDNN_CRASH.md``). Decoder: the 1/4 features are deconvolved x2
  (Conv2DTranspose 4x4), concatenated with the 1/2 features and deconvolved x2
  again to 2 sigmoid channels.
- ``"one_level"``: frozen CNN features; a ConvLSTM on the 1/4 features only; the
  same decoder (its 1/2 input is the CNN's 1/2 features, unchanged).
- ``"multi_level"``: frozen CNN features; one ConvLSTM per level (1/2 and 1/4);
  the 1/4 LSTM output deconvolved x2, concatenated with the 1/2 LSTM output,
  deconvolved x2 again, sigmoid (paper Fig. 1a).

The RNN variants are built as ``Input -> "cnn_features" (frozen) -> "rnn_head"``
so training can run the head alone on precomputed features.
"""

from __future__ import annotations

import os

# Read by TensorFlow when it creates a GPU device (at the first operation, after these
# imports): allocate GPU memory as needed instead of all of it at once, so training can
# share the GPU with Slicer. A user's own setting wins.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")

import keras  # noqa: E402
from keras import ops

from .variants import check_variant

UNITS_PER_STAGE = 9
DECONV_KERNEL = 4
_PACKAGE = "LVMyoSeg"


class _Seeds:
    """Hands out distinct initializer seeds derived from one base seed (no global state)."""

    def __init__(self, seed: int) -> None:
        self._next = int(seed) * 100_003

    def he(self) -> keras.initializers.Initializer:
        self._next += 1
        return keras.initializers.HeNormal(seed=self._next)

    def glorot(self) -> keras.initializers.Initializer:
        self._next += 1
        return keras.initializers.GlorotUniform(seed=self._next)

    def int(self) -> int:
        self._next += 1
        return self._next


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FoldTime(keras.layers.Layer):
    """``[B, T, H, W, C] -> [B*T, H, W, C]`` (frames become batch items)."""

    def call(self, x):
        s = ops.shape(x)
        return ops.reshape(x, (-1, s[2], s[3], s[4]))

    def compute_output_shape(self, input_shape):
        b, t = input_shape[0], input_shape[1]
        bt = None if b is None or t is None else b * t
        return (bt,) + tuple(input_shape[2:])


@keras.saving.register_keras_serializable(package=_PACKAGE)
class UnfoldTime(keras.layers.Layer):
    """``([B*T, H, W, C], reference [B, T, ...]) -> [B, T, H, W, C]``."""

    def call(self, inputs):
        y, ref = inputs
        r, s = ops.shape(ref), ops.shape(y)
        return ops.reshape(y, (r[0], r[1], s[1], s[2], s[3]))

    def compute_output_shape(self, input_shapes):
        y, ref = input_shapes
        return (ref[0], ref[1]) + tuple(y[1:])


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PeepholeConvLSTM2D(keras.layers.Layer):
    """ConvLSTM of the paper, eqs. (1)-(5), over the T frames of one cardiac cycle.

    ``[B, T, h, w, c] -> [B, T, h, w, filters]`` (the hidden states H_t)::

        i_t = sigmoid(W_xi * X_t + W_hi * H_{t-1} + w_ci o C_{t-1} + b_i)   (1)
        f_t = sigmoid(W_xf * X_t + W_hf * H_{t-1} + w_cf o C_{t-1} + b_f)   (2)
        C_t = f_t o C_{t-1} + i_t o tanh(W_xc * X_t + W_hc * H_{t-1} + b_c)  (3)
        o_t = sigmoid(W_xo * X_t + W_ho * H_{t-1} + w_co o C_t + b_o)       (4)
        H_t = o_t o tanh(C_t)                                                (5)

    ``*`` is a 3x3 'same' convolution, ``o`` the element-wise product. Peepholes
    ``w_ci, w_cf, w_co`` are per-channel vectors ``[filters]`` broadcast over the
    pixels (so any H, W works); they start at zero and are trained. The forget
    bias starts at 1.

    Circular connection: with ``circular_passes = k > 0`` the layer first runs k
    warm-up passes over the cycle, starting from zero state; the (H, C) after
    the last frame of a pass becomes the initial state of the next pass, and the
    final warm-up state is the initial state of the pass whose outputs are
    returned. So frame 0 sees the state of frame T-1 (the cycle is periodic).
    Gradients flow through the warm-up passes. ``circular_passes = 0`` starts
    from zero state (a plain ConvLSTM). W_x * X_t is computed once for all
    frames (one batched convolution) and reused by every pass.
    """

    def __init__(self, filters: int, kernel_size: int = 3, circular_passes: int = 1,
                 seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.circular_passes = int(circular_passes)
        self.seed = seed

    def build(self, input_shape) -> None:
        c, k, f = int(input_shape[-1]), self.kernel_size, self.filters
        s0 = None if self.seed is None else int(self.seed)
        self.kernel_x = self.add_weight(name="kernel_x", shape=(k, k, c, 4 * f),
                                        initializer=keras.initializers.GlorotUniform(seed=s0))
        self.kernel_h = self.add_weight(name="kernel_h", shape=(k, k, f, 4 * f),
                                        initializer=keras.initializers.GlorotUniform(
                                            seed=None if s0 is None else s0 + 1))
        self.bias = self.add_weight(name="bias", shape=(4 * f,), initializer=_lstm_bias_init(f))
        self.peephole_i = self.add_weight(name="peephole_i", shape=(f,), initializer="zeros")
        self.peephole_f = self.add_weight(name="peephole_f", shape=(f,), initializer="zeros")
        self.peephole_o = self.add_weight(name="peephole_o", shape=(f,), initializer="zeros")

    def call(self, x):
        s = ops.shape(x)
        b, t, hh, ww = s[0], s[1], s[2], s[3]
        zx = ops.conv(ops.reshape(x, (-1, hh, ww, s[4])), self.kernel_x, strides=1,
                      padding="same") + self.bias
        zx = ops.transpose(ops.reshape(zx, (b, t, hh, ww, 4 * self.filters)), (1, 0, 2, 3, 4))
        # variables are read once, outside the time loop
        k_h = ops.copy(self.kernel_h)
        w_ci, w_cf, w_co = (ops.copy(w) for w in
                            (self.peephole_i, self.peephole_f, self.peephole_o))

        def step(carry, zx_t):
            h_prev, c_prev = carry
            z = zx_t + ops.conv(h_prev, k_h, strides=1, padding="same")
            zi, zf, zc, zo = ops.split(z, 4, axis=-1)
            i = ops.sigmoid(zi + w_ci * c_prev)              # (1)
            f = ops.sigmoid(zf + w_cf * c_prev)              # (2)
            c = f * c_prev + i * ops.tanh(zc)                # (3)
            o = ops.sigmoid(zo + w_co * c)                   # (4)
            h = o * ops.tanh(c)                              # (5)
            return (h, c), (h, c)

        zero = ops.zeros_like(zx[0, :, :, :, : self.filters])
        state = (zero, zero)
        for _ in range(self.circular_passes):  # warm-up passes: circular connection
            state, _ = ops.scan(step, state, zx)
        _, (hs, _) = ops.scan(step, state, zx)
        return ops.transpose(hs, (1, 0, 2, 3, 4))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size,
                      circular_passes=self.circular_passes, seed=self.seed)
        return config


def _lstm_bias_init(filters: int):
    """Bias ``[4f]`` in gate order (i, f, c, o): zeros, forget gate ones."""
    return keras.initializers.Constant([0.0] * filters + [1.0] * filters + [0.0] * (2 * filters))


def _conv_bn(x, filters: int, stride: int, seeds: _Seeds, name: str, relu: bool = True):
    x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                            kernel_initializer=seeds.he(), name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _residual_unit(x, filters: int, stride: int, seeds: _Seeds, name: str, out_name: str):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        if stride != 1:  # subsample, then a stride-1 1x1 convolution: see module docstring
            shortcut = keras.layers.AveragePooling2D(pool_size=1, strides=stride,
                                                     name=f"{name}_subsample")(shortcut)
        shortcut = keras.layers.Conv2D(filters, 1, use_bias=False,
                                       kernel_initializer=seeds.he(), name=f"{name}_proj")(shortcut)
        shortcut = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_proj_bn")(shortcut)
    y = _conv_bn(x, filters, stride, seeds, f"{name}_a")
    y = _conv_bn(y, filters, 1, seeds, f"{name}_b", relu=False)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=out_name)(y)


def _decoder(quarter, half, width: int, seeds: _Seeds, prefix: str):
    """1/4 features -> deconv x2 -> concat 1/2 features -> deconv x2 -> 2 sigmoid channels."""
    up = keras.layers.Conv2DTranspose(2 * width, DECONV_KERNEL, strides=2, padding="same",
                                      activation="relu", kernel_initializer=seeds.he(),
                                      name=f"{prefix}dec_up")(quarter)
    cat = keras.layers.Concatenate(name=f"{prefix}dec_concat")([up, half])
    return keras.layers.Conv2DTranspose(2, DECONV_KERNEL, strides=2, padding="same",
                                        activation="sigmoid", kernel_initializer=seeds.glorot(),
                                        name=f"{prefix}dec_out")(cat)


def _stage_out_name(stage: int) -> str:
    return f"stage{stage}_out"


def build_cnn(crop_size: int | None = None, width: int = 16, seed: int = 0,
              units: int = UNITS_PER_STAGE) -> keras.Model:
    """Fully convolutional ResNet-56 segmenter (the paper's "CNN"), applied per frame.

    ``crop_size`` fixes H = W (a multiple of 4) or leaves them free (None).
    ``units`` residual units per stage: 9 is ResNet-56 (the product); fewer only
    for fast unit tests. Initial weights are a deterministic function of ``seed``.
    """
    if crop_size is not None and (crop_size <= 0 or crop_size % 4):
        raise ValueError(f"crop_size {crop_size} must be a positive multiple of 4.")
    if units < 1 or width < 1:
        raise ValueError(f"units ({units}) and width ({width}) must be >= 1.")
    seeds = _Seeds(seed)
    inp = keras.Input(shape=(None, crop_size, crop_size, 1), name="cine")
    x = FoldTime(name="fold_time")(inp)
    x = _conv_bn(x, width, 1, seeds, "stem")
    for stage, (mult, stride) in enumerate(((1, 1), (2, 2), (4, 2)), start=1):
        for unit in range(1, units + 1):
            name = f"s{stage}u{unit}"
            out_name = _stage_out_name(stage) if unit == units else f"{name}_out"
            x = _residual_unit(x, mult * width, stride if unit == 1 else 1, seeds, name, out_name)
        if stage == 2:
            half = x
    out = _decoder(x, half, width, seeds, prefix="")
    out = UnfoldTime(name="unfold_time")([out, inp])
    model = keras.Model(inp, out, name="cnn")
    return model


def cnn_width(cnn: keras.Model) -> int:
    """The base width ``w`` of a model made by :func:`build_cnn` (stem channels)."""
    return int(cnn.get_layer("stem_conv").filters)


def cnn_feature_model(cnn: keras.Model) -> keras.Model:
    """Model ``[B, T, H, W, 1] -> [f_half [B, T, H/2, W/2, 2w], f_quarter [B, T, H/4, W/4, 4w]]``.

    Shares the CNN's layers (and weights); its outputs are the last residual units
    of stages 2 and 3, i.e. the features the paper feeds to the RNN.
    """
    inp = cnn.inputs[0]
    half = UnfoldTime(name="unfold_half")([cnn.get_layer(_stage_out_name(2)).output, inp])
    quarter = UnfoldTime(name="unfold_quarter")([cnn.get_layer(_stage_out_name(3)).output, inp])
    return keras.Model(inp, [half, quarter], name="cnn_features")


def build_rnn_head(variant: str, width: int, crop_size: int | None = None, seed: int = 0,
                   circular_passes: int = 1) -> keras.Model:
    """RNN block + decoder: ``[f_half, f_quarter] -> [B, T, H, W, 2]``."""
    check_variant(variant)
    if variant == "cnn":
        raise ValueError("The 'cnn' variant has no RNN head.")
    seeds = _Seeds(seed + 7919)
    h2 = None if crop_size is None else crop_size // 2
    h4 = None if crop_size is None else crop_size // 4
    f_half = keras.Input(shape=(None, h2, h2, 2 * width), name="f_half")
    f_quarter = keras.Input(shape=(None, h4, h4, 4 * width), name="f_quarter")
    quarter = PeepholeConvLSTM2D(4 * width, circular_passes=circular_passes, seed=seeds.int(),
                                 name="convlstm_quarter")(f_quarter)
    half = f_half
    if variant == "multi_level":
        half = PeepholeConvLSTM2D(2 * width, circular_passes=circular_passes, seed=seeds.int(),
                                  name="convlstm_half")(f_half)
    q = FoldTime(name="fold_quarter")(quarter)
    hf = FoldTime(name="fold_half")(half)
    out = _decoder(q, hf, width, seeds, prefix="rnn_")
    out = UnfoldTime(name="unfold_time")([out, f_half])
    return keras.Model([f_half, f_quarter], out, name="rnn_head")


def build_model(variant: str, cnn: keras.Model, *, seed: int = 0, circular_passes: int = 1,
                init_decoder_from_cnn: bool = True) -> keras.Model:
    """One of :data:`~LVMyoSegLib.model.variants.VARIANTS` on top of ``cnn`` (a model made by :func:`build_cnn`).

    ``"cnn"`` returns ``cnn`` itself. The RNN variants embed the CNN feature
    extractor frozen (``trainable=False``, BatchNorm in inference mode) and a new
    trainable head. The feature layers are shared with ``cnn``, which is frozen
    too: pass ``cnn_from_model(cnn)`` to keep an independent, trainable CNN.
    With ``init_decoder_from_cnn`` the head's decoder starts from the CNN
    decoder's weights (same shapes), a warm start for stage 2.
    """
    check_variant(variant)
    if variant == "cnn":
        return cnn
    width = cnn_width(cnn)
    spatial = cnn.inputs[0].shape[2]
    features = cnn_feature_model(cnn)
    features.trainable = False
    head = build_rnn_head(variant, width, crop_size=spatial, seed=seed,
                          circular_passes=circular_passes)
    if init_decoder_from_cnn:
        for name in ("dec_up", "dec_out"):
            head.get_layer(f"rnn_{name}").set_weights(cnn.get_layer(name).get_weights())
    inp = keras.Input(shape=cnn.inputs[0].shape[1:], name="cine")
    out = head(features(inp))
    return keras.Model(inp, out, name=variant)


def _model_width_units(model: keras.Model) -> tuple[int, int]:
    """(width, units per stage) of a CNN or RNN-variant model built here."""
    source = model if model.name == "cnn" else model_parts(model)[0]
    width = int(source.get_layer("stem_conv").filters)
    units = sum(1 for layer in source.layers
                if layer.name.startswith("s1u") and layer.name.endswith("_a_conv"))
    return width, units


def cnn_from_model(model: keras.Model, seed: int = 0) -> keras.Model:
    """A new, independent CNN carrying the weights of ``model`` (a CNN or an RNN variant).

    The new CNN has free H, W (crop size None) and is trainable. From an RNN variant the feature layers are copied and the decoder is taken
    from the RNN head's decoder (same shapes); fine-tuning stage 1 adapts it.
    """
    width, units = _model_width_units(model)
    cnn = build_cnn(width=width, seed=seed, units=units)
    if model.name == "cnn":
        cnn.set_weights(model.get_weights())
        return cnn
    features, head = model_parts(model)
    for layer in cnn.layers:
        if not layer.weights:
            continue
        if layer.name in ("dec_up", "dec_out"):
            layer.set_weights(head.get_layer(f"rnn_{layer.name}").get_weights())
        else:
            layer.set_weights(features.get_layer(layer.name).get_weights())
    return cnn


def model_parts(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """``(cnn_features, rnn_head)`` sub-models of an RNN variant built by :func:`build_model`."""
    try:
        return model.get_layer("cnn_features"), model.get_layer("rnn_head")
    except ValueError:
        raise ValueError(f"Model {model.name!r} is not an RNN variant (no cnn_features/rnn_head).") from None


def model_variant(model: keras.Model) -> str:
    """The variant name of a model built here (its Keras name)."""
    check_variant(model.name)
    return model.name
