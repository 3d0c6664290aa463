"""Stage-1 training speed of the options around the oneDNN crash (docs/ONEDNN_CRASH.md) and of bfloat16.

Stage-1 training steps (``train_on_batch`` on 16 frames of 96x96, masked loss + Adam, as
``fit_cnn`` runs them) of the product CNN (width 16, ResNet-56), measured in one run:

- ``subsampled``: the product, projection shortcut = 1x1 pooling with stride 2, then a
  stride-1 1x1 convolution (the guard);
- ``strided``: the earlier architecture, a 1x1 convolution with stride 2 (safe at width 16,
  whose channels are multiples of 16, but it is the kernel that crashes at other widths);
- ``onednn_off``: the product with ``TF_ENABLE_ONEDNN_OPTS=0`` (the last-resort option);
- ``bf16``: the product under Keras' ``mixed_bfloat16`` policy (bfloat16 compute, float32
  weights), which AVX512_BF16 CPUs could speed up.

Each variant runs in its own child process (TensorFlow reads its settings at import), and
rounds alternate between the variants, so load from other processes hits them alike.

    PYTHONPATH=LVMyoSeg .venv/bin/python benchmarks/training_step.py [--steps 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
from machine import cpu_kind

STEP = r"""
import json, sys, time
import numpy as np
import keras
from LVMyoSegLib.model import losses, networks
from LVMyoSegLib.training import loop as training
if sys.argv[1] == "bf16":
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
if sys.argv[1] == "strided":  # the earlier projection: a 1x1 convolution with stride 2
    def unit(x, filters, stride, seeds, name, out_name):
        shortcut = x
        if stride != 1 or x.shape[-1] != filters:
            shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                           kernel_initializer=seeds.he(), name=f"{name}_proj")(x)
            shortcut = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_proj_bn")(shortcut)
        y = networks._conv_bn(x, filters, stride, seeds, f"{name}_a")
        y = networks._conv_bn(y, filters, 1, seeds, f"{name}_b", relu=False)
        y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
        return keras.layers.ReLU(name=out_name)(y)
    networks._residual_unit = unit
model = networks.build_cnn(96, width=16)
training._compile(model, 1e-3, training.TrainConfig())
rng = np.random.default_rng(0)
x = rng.normal(size=(16, 1, 96, 96, 1)).astype("float32")
y = losses.pack_targets((rng.random((16, 1, 96, 96, 2)) > 0.5).astype("float32"), np.ones((16, 1, 2), bool))
for _ in range(2):
    model.train_on_batch(x, y)
steps = int(sys.argv[2])
t = time.perf_counter()
for _ in range(steps):
    model.train_on_batch(x, y)
print(json.dumps({"frames_per_s": 16 * steps / (time.perf_counter() - t)}))
"""


def rate(kind: str, steps: int, onednn: bool = True) -> float:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if not onednn:
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    out = subprocess.run([sys.executable, "-c", STEP, kind, str(steps)], env=env, capture_output=True,
                         text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["frames_per_s"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    kind = cpu_kind()
    results: dict[str, list[float]] = {"subsampled": [], "strided": [], "onednn_off": [], "bf16": []}
    t0 = time.perf_counter()
    for _ in range(args.rounds):
        results["subsampled"].append(rate("subsampled", args.steps))
        results["strided"].append(rate("strided", args.steps))
        results["onednn_off"].append(rate("subsampled", args.steps, onednn=False))
        results["bf16"].append(rate("bf16", args.steps))
    med = {k: float(np.median(v)) for k, v in results.items()}
    print(f"CPU: {kind}; {args.rounds} rounds x {args.steps} steps "
          f"({time.perf_counter() - t0:.0f} s)")
    print("| stage-1 training | frames/s (median) | relative to the product |")
    print("|---|---|---|")
    for k, label in (("subsampled", "product: subsample + 1x1 (the guard)"),
                     ("strided", "earlier: strided 1x1"), ("onednn_off", "product, oneDNN off"),
                     ("bf16", "product, mixed_bfloat16")):
        print(f"| {label} | {med[k]:.1f} | {med[k] / med['subsampled']:.2f} |")
    print(json.dumps({"cpu": kind, "frames_per_s": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
