"""16-bit fixed-point storage of float32 weights, per channel: how a bundle's members keep their
kernels (:func:`LVMyoSegLib.model.bundle.stored_copy` for the ``.keras`` file,
:mod:`LVMyoSegLib.model.onnx_export` for the ``.onnx`` file). Compute stays float32."""

from __future__ import annotations

import numpy as np

# Smaller weight tensors (biases, BatchNorm, the stem kernel) stay float32: a few percent of the
# file, and the most sensitive (at float16 the 144-value stem kernel alone moved the bundled
# model's probabilities by 7e-3).
FIXED_POINT_MIN_SIZE = 1024
_INT16_MAX = 32767


def fixed_point16(array: np.ndarray, axis: int, power_of_two: bool = False
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """A float32 kernel as 16-bit fixed point per channel: ``(q, step)``, int16 ``q`` and a float32
    ``step`` per index of ``axis`` (broadcastable), with ``q * step`` the rounded kernel.

    Each channel's largest magnitude becomes 32767 steps; with ``power_of_two`` the step is the
    power of two at or above that, so ``q * step`` is exact in float32 (and compresses), and
    rounding again gives the same values. None (keep the array as it is) unless ``array`` is a
    finite float32 tensor of two or more dimensions and at least :data:`FIXED_POINT_MIN_SIZE` values.
    """
    array = np.asarray(array)
    if (array.dtype != np.float32 or array.ndim < 2 or array.size < FIXED_POINT_MIN_SIZE
            or not np.isfinite(array).all()):
        return None
    others = tuple(i for i in range(array.ndim) if i != axis % array.ndim)
    step = np.abs(array).max(axis=others, keepdims=True).astype(np.float64) / _INT16_MAX
    if power_of_two:
        step = np.exp2(np.ceil(np.log2(np.where(step > 0, step, 1.0))))
    step = step.astype(np.float32)
    step[step == 0] = 1  # an all-zero channel (or one too small for a float32 step)
    q = np.clip(np.round(array / step), -_INT16_MAX, _INT16_MAX).astype(np.int16)
    return q, step
