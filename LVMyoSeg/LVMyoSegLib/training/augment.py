"""Data augmentation for short-axis cine MRI (numpy/scipy, CPU, deterministic).

One random transform is drawn per sequence and applied identically to all its
frames (the heart's motion over the cycle is left intact) and to images and
targets alike:

- geometry: rotation (any in-plane angle up to ``rotation_deg``), isotropic
  scaling, small translation and a smooth elastic deformation, combined into
  one sampling grid; images are interpolated linearly (edge values extend),
  targets linearly then re-thresholded at 0.5;
- resolution (opt-in, ``blur_sigma_px`` > 0): a Gaussian blur of a random width up to
  ``blur_sigma_px`` on the warped images, as a scanner of coarser in-plane resolution
  gives once resampled to the network grid; drawn last, so without it every other
  draw is as before;
- intensity: gamma, a smooth multiplicative bias field (coil shading, static
  over the cycle), then the sequence is brought back to its original mean and
  standard deviation (so the network input keeps the preprocessing's scale),
  then Gaussian noise (a fresh draw per frame, as in real acquisitions).

No flips: a mirrored short-axis image puts the right ventricle on the wrong
side of the LV, an anatomy the network never meets after preprocessing.
Targets whose value is negative (the "unknown" marker of
:func:`LVMyoSegLib.training.loop.pack_targets`) must not be passed in; augment first,
pack afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transform; ``strength`` scales all of them (0 = identity)."""

    strength: float = 1.0
    rotation_deg: float = 180.0
    scale: float = 0.15
    translate_fraction: float = 0.06
    elastic_px: float = 2.0
    elastic_sigma_fraction: float = 0.12
    gamma: float = 0.3
    bias_field: float = 0.25
    noise_std: float = 0.05
    blur_sigma_px: float = 0.0


@dataclass(frozen=True)
class SequenceTransform:
    """The parameters drawn for one sequence (recorded for tests and debugging)."""

    angle_rad: float
    scale: float
    shift: tuple[float, float]
    displacement: np.ndarray  # [2, H, W] elastic displacement in pixels
    gamma: float
    bias: np.ndarray          # [H, W] multiplicative field
    noise_std: float
    blur_sigma_px: float = 0.0


def draw_transform(rng: np.random.Generator, shape: tuple[int, int],
                   config: AugmentConfig = AugmentConfig()) -> SequenceTransform:
    """Draw one random transform for frames of ``shape`` (H, W)."""
    s = float(config.strength)
    h, w = shape
    angle = np.deg2rad(rng.uniform(-1, 1) * config.rotation_deg * min(s, 1.0))
    scale = float(np.exp(rng.uniform(-1, 1) * np.log1p(config.scale * s)))
    shift = tuple(float(v) for v in rng.uniform(-1, 1, 2) * config.translate_fraction * s * np.array([h, w]))
    sigma = max(config.elastic_sigma_fraction * min(h, w), 1.0)
    disp = np.stack([ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma, mode="wrap")
                     for _ in range(2)])
    peak = np.abs(disp).max()
    disp = disp / peak * config.elastic_px * s if peak > 0 else disp * 0
    gamma = float(np.exp(rng.uniform(-1, 1) * config.gamma * s))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy, xx = yy / max(h - 1, 1) - 0.5, xx / max(w - 1, 1) - 0.5
    c = rng.uniform(-1, 1, 5)
    log_bias = c[0] * xx + c[1] * yy + c[2] * xx * yy + c[3] * (xx ** 2 - 1 / 12) + c[4] * (yy ** 2 - 1 / 12)
    bias = np.exp(log_bias * config.bias_field * s)
    noise = float(rng.uniform(0, 1) * config.noise_std * s)
    blur = float(rng.uniform(0, 1) * config.blur_sigma_px * s) if config.blur_sigma_px > 0 else 0.0
    return SequenceTransform(float(angle), scale, shift, disp, gamma, bias, noise, blur)


def sampling_grid(transform: SequenceTransform, shape: tuple[int, int]) -> np.ndarray:
    """Source coordinates ``[2, H, W]`` (row, column) for every output pixel."""
    h, w = shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy, xx = yy - cy - transform.shift[0], xx - cx - transform.shift[1]
    cos, sin = np.cos(transform.angle_rad), np.sin(transform.angle_rad)
    src_y = (cos * yy - sin * xx) / transform.scale + cy
    src_x = (sin * yy + cos * xx) / transform.scale + cx
    return np.stack([src_y, src_x]) + transform.displacement


def apply_transform(images: np.ndarray, targets: np.ndarray, transform: SequenceTransform,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``transform`` to one sequence: images ``[T, H, W]``, targets ``[T, H, W, C]`` in [0, 1]."""
    t, h, w = images.shape
    grid = sampling_grid(transform, (h, w))
    out_img = np.empty((t, h, w), np.float32)
    out_tgt = np.empty(targets.shape, np.float32)
    for f in range(t):
        out_img[f] = ndimage.map_coordinates(images[f], grid, order=1, mode="nearest")
        if transform.blur_sigma_px > 0:
            out_img[f] = ndimage.gaussian_filter(out_img[f], transform.blur_sigma_px, mode="nearest")
        for c in range(targets.shape[-1]):
            warped = ndimage.map_coordinates(targets[f, ..., c].astype(np.float32), grid, order=1,
                                             mode="constant", cval=0.0)
            out_tgt[f, ..., c] = warped >= 0.5
    mean, std = float(images.mean()), float(images.std())
    lo, hi = float(out_img.min()), float(out_img.max())
    if hi > lo:
        unit = (out_img - lo) / (hi - lo)
        out_img = (unit ** transform.gamma) * transform.bias[None]
        new_std = float(out_img.std())
        out_img = (out_img - out_img.mean()) / (new_std if new_std > 0 else 1.0) * std + mean
    if transform.noise_std > 0:
        out_img = out_img + rng.standard_normal(out_img.shape) * transform.noise_std * (std if std > 0 else 1.0)
    return out_img.astype(np.float32), out_tgt


def augment_batch(images: np.ndarray, targets: np.ndarray, rng: np.random.Generator,
                  config: AugmentConfig = AugmentConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Augment ``images [N, T, H, W, 1]`` and ``targets [N, T, H, W, C]``; one transform per sequence."""
    if images.ndim != 5 or images.shape[-1] != 1 or targets.shape[:4] != images.shape[:4]:
        raise ValueError(f"Expected images [N, T, H, W, 1] and targets [N, T, H, W, C] of the same "
                         f"N, T, H, W; got {images.shape} and {targets.shape}.")
    out_img = np.empty(images.shape, np.float32)
    out_tgt = np.empty(targets.shape, np.float32)
    for n in range(images.shape[0]):
        transform = draw_transform(rng, images.shape[2:4], config)
        out_img[n, ..., 0], out_tgt[n] = apply_transform(images[n, ..., 0], targets[n], transform, rng)
    return out_img, out_tgt
