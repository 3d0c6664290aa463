"""The masked segmentation loss: labels are sparse, so unknown (frame, channel) pairs count for nothing.

Targets travel packed (:func:`pack_targets`): one array where :data:`UNKNOWN` marks a frame and
channel without a label. The loss is registered with Keras, so a trained member's saved
training configuration loads (``compile=False``) without the training code.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

UNKNOWN = -1.0


def pack_targets(targets: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Targets ``[N, T, H, W, C]`` with every unknown (frame, channel) set to :data:`UNKNOWN`."""
    packed = np.array(targets, dtype=np.float32, copy=True)
    mask = np.asarray(known, bool)[:, :, None, None, :]
    return np.where(mask, packed, np.float32(UNKNOWN)).astype(np.float32)


def boundary_band(targets):
    """1 on the pixels of ``targets [B, T, H, W, C]`` (in {0, 1}) within one pixel of a contour, else 0.

    The morphological gradient over a 3x3 window: the pixels on both sides of each edge.
    """
    shape = ops.shape(targets)
    flat = ops.reshape(targets, (-1, shape[2], shape[3], shape[4]))
    grown = ops.max_pool(flat, pool_size=3, strides=1, padding="same")
    shrunk = -ops.max_pool(-flat, pool_size=3, strides=1, padding="same")
    return ops.reshape(grown - shrunk, shape)


def masked_loss(targets, probs, weight, dice_weight: float = 0.0, boundary_weight: float = 0.0,
                eps: float = 1e-6):
    """Mean BCE over labelled pixels (+ ``dice_weight`` x mean soft-Dice loss over labelled frames).

    ``targets``, ``probs``: ``[B, T, H, W, C]``; ``weight``: ``[B, T, C]`` (1 = labelled,
    0 = unknown). Unknown (frame, channel) pairs contribute exactly zero loss and
    zero gradient, whatever their targets hold. ``boundary_weight`` > 0 weighs a pixel's
    BCE by 1 + ``boundary_weight`` within one pixel of a label's contour
    (:func:`boundary_band`), where a thin wall's overlap is won or lost.
    """
    weight = ops.cast(weight, "float32")
    w = weight[:, :, None, None, :]
    t = ops.where(w > 0, ops.cast(targets, "float32"), 0.0)
    p = ops.clip(ops.cast(probs, "float32"), eps, 1.0 - eps)
    bce = -(t * ops.log(p) + (1.0 - t) * ops.log(1.0 - p))
    if boundary_weight:
        bce = bce * (1.0 + boundary_weight * boundary_band(t))
    pixels = ops.cast(ops.shape(p)[2] * ops.shape(p)[3], "float32")
    labelled = ops.sum(weight)
    loss = ops.sum(bce * w) / ops.maximum(labelled * pixels, 1.0)
    if dice_weight:
        inter = ops.sum(p * t, axis=(2, 3))
        denom = ops.sum(p, axis=(2, 3)) + ops.sum(t, axis=(2, 3))
        dice = (2.0 * inter + 1.0) / (denom + 1.0)
        loss = loss + dice_weight * ops.sum((1.0 - dice) * weight) / ops.maximum(labelled, 1.0)
    return loss


@keras.saving.register_keras_serializable(package="LVMyoSeg")
class MaskedSegmentationLoss(keras.losses.Loss):
    """:func:`masked_loss` on packed targets (see :func:`pack_targets`): negative = unknown."""

    def __init__(self, dice_weight: float = 0.0, boundary_weight: float = 0.0,
                 name: str = "masked_segmentation_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.dice_weight = float(dice_weight)
        self.boundary_weight = float(boundary_weight)

    def call(self, y_true, y_pred):
        weight = ops.cast(y_true[:, :, 0, 0, :] >= 0, "float32")
        return masked_loss(y_true, y_pred, weight, self.dice_weight, self.boundary_weight)

    def get_config(self) -> dict:
        return {**super().get_config(), "dice_weight": self.dice_weight, "boundary_weight": self.boundary_weight}
