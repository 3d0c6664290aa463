"""The networks' work: multiply-accumulates (MACs) of the convolutions of one cardiac cycle of one
slice, counted from the architecture of :mod:`LVMyoSegLib.model.networks` (benchmark.py's efficiencies)."""

from __future__ import annotations

from LVMyoSegLib.model.networks import DECONV_KERNEL, UNITS_PER_STAGE
from LVMyoSegLib.model.variants import check_variant


def decoder_macs(h: int, w: int, width: int = 16) -> int:
    """MACs of one decoder per frame (two 4x4 transposed convolutions)."""
    d2 = DECONV_KERNEL ** 2
    return (h // 4) * (w // 4) * d2 * (4 * width) * (2 * width) + (h // 2) * (w // 2) * d2 * (4 * width) * 2


def multiply_accumulates(variant: str, T: int, H: int, W: int, width: int = 16,
                         circular_passes: int = 1, units: int = UNITS_PER_STAGE) -> int:
    """Multiply-accumulates of one cardiac cycle of one slice (convolutions only).

    Counts every convolution / transposed convolution (k*k*C_in*C_out per output
    pixel, resp. per input pixel for a transposed one). BatchNorm, activations,
    additions and the ConvLSTM's element-wise gate products are not counted.
    The ConvLSTM's W_h convolution runs ``T * (1 + circular_passes)`` times, its
    W_x convolution T times.
    """
    check_variant(variant)
    if H % 4 or W % 4:
        raise ValueError(f"H, W = {H}, {W} must be multiples of 4.")
    w = width
    p1, p2, p4 = H * W, (H // 2) * (W // 2), (H // 4) * (W // 4)
    k2 = 9
    cnn = p1 * k2 * 1 * w                                   # stem
    cnn += units * 2 * p1 * k2 * w * w             # stage 1
    for pix, cin, cout in ((p2, w, 2 * w), (p4, 2 * w, 4 * w)):  # stages 2, 3
        cnn += pix * k2 * cin * cout + pix * cin * cout      # first conv (stride 2) + 1x1 projection
        cnn += pix * k2 * cout * cout                         # second conv of unit 1
        cnn += (units - 1) * 2 * pix * k2 * cout * cout
    total = T * (cnn + decoder_macs(H, W, w))

    def lstm(pix: int, cin: int, f: int) -> int:
        return T * pix * k2 * cin * 4 * f + T * (1 + circular_passes) * pix * k2 * f * 4 * f

    if variant in ("one_level", "multi_level"):
        total += lstm(p4, 4 * w, 4 * w)
    if variant == "multi_level":
        total += lstm(p2, 2 * w, 2 * w)
    return int(total)


def head_macs(variant: str, t: int, h: int, w: int) -> int:
    """MACs of an RNN variant's head (ConvLSTMs + decoder) over one cycle of one slice."""
    backbone = multiply_accumulates("cnn", t, h, w) - t * decoder_macs(h, w)
    return multiply_accumulates(variant, t, h, w) - backbone
