"""Keras model (one of :mod:`LVMyoSegLib.model.networks`' variants) -> ONNX model, built from its weights.

The ONNX graph is written op by op with the ``onnx`` package's helper API from the
layers' weights, following the architecture of :mod:`LVMyoSegLib.model.networks` (its
layer names); no TensorFlow graph is converted. (tf2onnx cannot convert the
ConvLSTM's while loop.) The graph has the Keras model's interface: input ``cine``
``[B, T, H, W, 1]`` float32 -> output ``probabilities`` ``[B, T, H, W, 2]``, for any
B, T and H, W multiples of 4. Inside it works channels-first on ``B*T`` frames:

- every BatchNormalization is folded into its convolution (the numbers of
  :func:`LVMyoSegLib.model.ensemble.folded_conv`);
- the projection shortcut is ``AveragePool`` (1x1 window, stride 2) + 1x1 ``Conv``;
- each :class:`~LVMyoSegLib.model.networks.PeepholeConvLSTM2D` becomes one batched ``Conv``
  for ``W_x * X_t + b`` over all frames, then ``circular_passes`` warm-up ``Scan``
  loops over the frames (they only carry the state (H, C), from zero) and a last
  ``Scan`` that returns every H_t: the circular connection and the peepholes of
  eqs. (1)-(5), exactly as in Keras.

Weight storage (``weights``): ``"int16"`` (the default, what bundles hold) keeps every
kernel of at least :data:`~LVMyoSegLib.model.weight_storage.FIXED_POINT_MIN_SIZE` values as 16-bit
fixed point per output channel (:func:`~LVMyoSegLib.model.weight_storage.fixed_point16`): an int16
initializer, ``Cast`` to float32 and ``Mul`` by a float32 step per channel, about half the
file (the step is each row's largest magnitude / 32767, applied after BatchNorm folding).
Every op still computes in float32 and the interface stays float32; ONNX Runtime folds the
casts into float32 weights when it loads the model. ``"float32"`` stores every weight as it is.

Only training needs this module (it needs Keras and ``onnx``); segmentation runs the
result with ONNX Runtime (:mod:`LVMyoSegLib.model.onnx_runtime`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ModelError
from .weight_storage import fixed_point16

OPSET = 17  # ONNX Runtime >= 1.14 runs it
IR_VERSION = 8
INPUT_NAME = "cine"
OUTPUT_NAME = "probabilities"
_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "linear": None}
WEIGHT_FORMATS = ("int16", "float32")  # how to_onnx can store the float32 weights


class _Graph:
    """Nodes, initializers and fresh names of one ONNX graph under construction."""

    def __init__(self, prefix: str = "", fixed_point: bool = False) -> None:
        self.nodes: list = []
        self.initializers: list = []
        self._prefix = prefix
        self._count = 0
        self._fixed_point = fixed_point  # store kernels as int16 + a step per output channel

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{self._prefix}{hint}_{self._count}"

    def const(self, hint: str, array) -> str:
        """The name of a float32 value ``array``: an initializer, or with fixed-point storage (and a
        kernel :func:`fixed_point16` takes, its output channels on axis 0) ``Cast(q) * step``."""
        from onnx import TensorProto, numpy_helper

        name, array = self.name(hint), np.asarray(array)
        fixed = fixed_point16(array, axis=0) if self._fixed_point else None
        if fixed is None:
            self.initializers.append(numpy_helper.from_array(array, name))
            return name
        q, step = fixed
        self.initializers += [numpy_helper.from_array(q, f"{name}_q"),
                              numpy_helper.from_array(step, f"{name}_step")]
        self.op("Mul", [self.op("Cast", [f"{name}_q"], to=TensorProto.FLOAT), f"{name}_step"], [name])
        return name

    def op(self, op_type: str, inputs: list[str], outputs: int | list[str] = 1, **attrs):
        from onnx import helper

        names = [self.name(op_type.lower()) for _ in range(outputs)] if isinstance(outputs, int) else outputs
        self.nodes.append(helper.make_node(op_type, inputs, names, **attrs))
        return names[0] if len(names) == 1 else names


def _layer(model, name: str):
    try:
        return model.get_layer(name)
    except ValueError:
        raise ModelError(f"Model {model.name!r} has no layer {name!r}; it was not built by "
                         "LVMyoSegLib.model.networks and cannot be exported to ONNX.") from None


def _has_layer(model, name: str) -> bool:
    return any(layer.name == name for layer in model.layers)


def _oihw(kernel: np.ndarray) -> np.ndarray:
    """Keras ``[kh, kw, in, out]`` -> ONNX ``[out, in, kh, kw]`` (Conv); for a transposed
    convolution Keras' ``[kh, kw, out, in]`` becomes ONNX's ``[in, out, kh, kw]``."""
    return np.ascontiguousarray(np.transpose(np.asarray(kernel, np.float32), (3, 2, 0, 1)))


def _conv(g: _Graph, x: str, conv, bn=None, relu: bool = False) -> str:
    """A Keras Conv2D (optionally with its BatchNormalization folded in, then ReLU)."""
    from .ensemble import folded_conv

    if bn is not None:
        kernel, bias = folded_conv(conv, bn)
    else:
        kernel = np.asarray(conv.kernel, np.float32)
        bias = np.asarray(conv.bias, np.float32) if conv.use_bias else None
    inputs = [x, g.const(f"{conv.name}_W", _oihw(kernel))]
    if bias is not None:
        inputs.append(g.const(f"{conv.name}_B", np.asarray(bias, np.float32)))
    pad = {"same": "SAME_UPPER", "valid": "VALID"}[conv.padding]
    y = g.op("Conv", inputs, strides=list(conv.strides), auto_pad=pad,
             kernel_shape=list(conv.kernel_size))
    return g.op("Relu", [y]) if relu else y


def _conv_transpose(g: _Graph, x: str, layer) -> str:
    """A Keras Conv2DTranspose with 'same' padding (output = stride x input) and its activation."""
    if layer.padding != "same":
        raise ModelError(f"Layer {layer.name!r} has padding {layer.padding!r}; the ONNX export supports "
                         "the 'same' transposed convolutions of LVMyoSegLib.model.networks only.")
    k, s = list(layer.kernel_size), list(layer.strides)
    pads = [(kk - ss) // 2 for kk, ss in zip(k, s)]
    pads += [(kk - ss) - p for kk, ss, p in zip(k, s, pads)]
    inputs = [x, g.const(f"{layer.name}_W", _oihw(layer.kernel))]
    if layer.use_bias:
        inputs.append(g.const(f"{layer.name}_B", np.asarray(layer.bias, np.float32)))
    y = g.op("ConvTranspose", inputs, strides=s, kernel_shape=k, pads=pads)
    activation = layer.get_config()["activation"]
    if activation not in _ACTIVATIONS:
        raise ModelError(f"Layer {layer.name!r} has activation {activation!r}, which the ONNX export "
                         "does not know.")
    op = _ACTIVATIONS[activation]
    return g.op(op, [y]) if op else y


def _cnn_features(g: _Graph, x: str, cnn) -> tuple[str, str]:
    """The ResNet-56 of ``cnn`` (a CNN or the feature model) on frames ``x`` ``[N, 1, H, W]``:
    its stage-2 (1/2) and stage-3 (1/4) outputs."""
    layer = lambda name: _layer(cnn, name)  # noqa: E731
    x = _conv(g, x, layer("stem_conv"), layer("stem_bn"), relu=True)
    units = sum(1 for item in cnn.layers if item.name.startswith("s1u") and item.name.endswith("_a_conv"))
    half = None
    for stage in (1, 2, 3):
        for unit in range(1, units + 1):
            name = f"s{stage}u{unit}"
            shortcut = x
            if _has_layer(cnn, f"{name}_proj"):
                if _has_layer(cnn, f"{name}_subsample"):
                    pool = layer(f"{name}_subsample")
                    if pool.padding != "valid":
                        raise ModelError(f"Layer {pool.name!r} must use 'valid' padding for the ONNX export.")
                    shortcut = g.op("AveragePool", [shortcut], kernel_shape=list(pool.pool_size),
                                    strides=list(pool.strides))
                shortcut = _conv(g, shortcut, layer(f"{name}_proj"), layer(f"{name}_proj_bn"))
            y = _conv(g, x, layer(f"{name}_a_conv"), layer(f"{name}_a_bn"), relu=True)
            y = _conv(g, y, layer(f"{name}_b_conv"), layer(f"{name}_b_bn"))
            x = g.op("Relu", [g.op("Add", [y, shortcut])])
        if stage == 2:
            half = x
    return half, x


def _decoder(g: _Graph, quarter: str, half: str, up_layer, out_layer) -> str:
    up = _conv_transpose(g, quarter, up_layer)
    return _conv_transpose(g, g.op("Concat", [up, half], axis=1), out_layer)


def _scan_body(g: _Graph, lstm, refs: dict[str, str], with_outputs: bool):
    """The graph of one ConvLSTM step (eqs. (1)-(5)): ``(H, C, Wx*X_t + b) -> (H, C[, H])``."""
    from onnx import TensorProto, helper

    body = _Graph(prefix=g.name("step") + "_")
    h_prev, c_prev, zx_t = body.name("h_prev"), body.name("c_prev"), body.name("zx_t")
    k = lstm.kernel_size
    z = body.op("Add", [zx_t, body.op("Conv", [h_prev, refs["kernel_h"]], auto_pad="SAME_UPPER",
                                      kernel_shape=[k, k])])
    zi, zf, zc, zo = body.op("Split", [z, refs["split"]], outputs=4, axis=1)
    i = body.op("Sigmoid", [body.op("Add", [zi, body.op("Mul", [refs["peephole_i"], c_prev])])])
    fg = body.op("Sigmoid", [body.op("Add", [zf, body.op("Mul", [refs["peephole_f"], c_prev])])])
    c = body.op("Add", [body.op("Mul", [fg, c_prev]), body.op("Mul", [i, body.op("Tanh", [zc])])])
    o = body.op("Sigmoid", [body.op("Add", [zo, body.op("Mul", [refs["peephole_o"], c])])])
    h = body.op("Mul", [o, body.op("Tanh", [c])])
    outputs = [h, c] + ([body.op("Identity", [h])] if with_outputs else [])

    def info(name: str):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)

    return helper.make_graph(body.nodes, body.name("convlstm_step"), [info(h_prev), info(c_prev), info(zx_t)],
                             [info(name) for name in outputs])


def _convlstm(g: _Graph, x: str, frames_shape: str, lstm) -> str:
    """A PeepholeConvLSTM2D on ``x`` ``[B*T, c, h, w]`` (``frames_shape`` = ``[B, T]``) -> ``[B*T, f, h, w]``."""
    f, k = lstm.filters, lstm.kernel_size
    zx = g.op("Conv", [x, g.const(f"{lstm.name}_Wx", _oihw(lstm.kernel_x)),
                       g.const(f"{lstm.name}_b", np.asarray(lstm.bias, np.float32))],
              auto_pad="SAME_UPPER", kernel_shape=[k, k])
    zx_shape = g.op("Shape", [zx])
    hw = g.op("Slice", [zx_shape, g.const("i2", np.array([2])), g.const("i4", np.array([4]))])
    zx = g.op("Reshape", [zx, g.op("Concat", [frames_shape, g.const("c4f", np.array([4 * f])), hw],
                                   axis=0)])                            # [B, T, 4f, h, w]
    batch = g.op("Slice", [frames_shape, g.const("i0", np.array([0])), g.const("i1", np.array([1]))])
    zero = g.op("ConstantOfShape", [g.op("Concat", [batch, g.const("cf", np.array([f])), hw], axis=0)],
                value=_float_tensor(0.0))                              # [B, f, h, w]
    refs = {"kernel_h": g.const(f"{lstm.name}_Wh", _oihw(lstm.kernel_h)),
            "split": g.const("split", np.array([f] * 4, np.int64))}
    for gate in ("i", "f", "o"):
        refs[f"peephole_{gate}"] = g.const(f"{lstm.name}_w_c{gate}", np.asarray(
            getattr(lstm, f"peephole_{gate}"), np.float32).reshape(1, f, 1, 1))
    h, c = zero, zero
    for _ in range(lstm.circular_passes):  # warm-up passes: the circular connection
        h, c = g.op("Scan", [h, c, zx], outputs=2, body=_scan_body(g, lstm, refs, False),
                    num_scan_inputs=1, scan_input_axes=[1])
    hs = g.op("Scan", [h, c, zx], outputs=3, body=_scan_body(g, lstm, refs, True),
              num_scan_inputs=1, scan_input_axes=[1], scan_output_axes=[1])[2]  # [B, T, f, h, w]
    return g.op("Reshape", [hs, g.op("Concat", [g.const("flat", np.array([-1, f])), hw], axis=0)])


def _float_tensor(value: float):
    from onnx import TensorProto, helper

    return helper.make_tensor("value", TensorProto.FLOAT, [1], [value])


def to_onnx(model, weights: str = "int16"):
    """The ONNX model (``onnx.ModelProto``) of a Keras model built by :mod:`LVMyoSegLib.model.networks`,
    its kernels stored as ``weights`` (one of :data:`WEIGHT_FORMATS`; computed in float32 either way)."""
    import onnx
    from onnx import TensorProto, helper

    from .networks import model_parts, model_variant

    if weights not in WEIGHT_FORMATS:
        raise ModelError(f"Unknown ONNX weight storage {weights!r}; choose one of {', '.join(WEIGHT_FORMATS)}.")
    variant = model_variant(model)
    g = _Graph(fixed_point=weights == "int16")
    cine_shape = g.op("Shape", [INPUT_NAME])
    frames_shape = g.op("Slice", [cine_shape, g.const("i0", np.array([0])), g.const("i2", np.array([2]))])
    x = g.op("Reshape", [INPUT_NAME, g.const("frames", np.array([-1, 1, 0, 0]))])  # [B*T, 1, H, W]
    if variant == "cnn":
        half, quarter = _cnn_features(g, x, model)
        y = _decoder(g, quarter, half, _layer(model, "dec_up"), _layer(model, "dec_out"))
        channels = _layer(model, "dec_out").filters
    else:
        features, head = model_parts(model)
        half, quarter = _cnn_features(g, x, features)
        quarter = _convlstm(g, quarter, frames_shape, _layer(head, "convlstm_quarter"))
        if variant == "multi_level":
            half = _convlstm(g, half, frames_shape, _layer(head, "convlstm_half"))
        y = _decoder(g, quarter, half, _layer(head, "rnn_dec_up"), _layer(head, "rnn_dec_out"))
        channels = _layer(head, "rnn_dec_out").filters
    y = g.op("Transpose", [y], perm=[0, 2, 3, 1])                     # [B*T, H, W, 2]
    hw = g.op("Slice", [cine_shape, g.const("i2", np.array([2])), g.const("i4", np.array([4]))])
    g.op("Reshape", [y, g.op("Concat", [frames_shape, hw, g.const("ch", np.array([channels]))], axis=0)],
         outputs=[OUTPUT_NAME])
    graph = helper.make_graph(
        g.nodes, f"lvmyoseg_{variant}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["slices", "frames", "height", "width", 1])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT,
                                       ["slices", "frames", "height", "width", channels])],
        initializer=g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="LVMyoSeg", ir_version=IR_VERSION)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def write_onnx(model, path: Path) -> None:
    """Write the ONNX model of ``model`` to ``path`` (int16 kernels, :func:`to_onnx`)."""
    Path(path).write_bytes(to_onnx(model).SerializeToString())
