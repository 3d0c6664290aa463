"""Standalone reproducer of the native crash in TensorFlow's oneDNN 1x1 strided weight gradient.

Needs only TensorFlow (no LVMyoSeg). Each case runs ``Conv2DBackpropFilter`` (the weight
gradient of a convolution) many times in a fresh child process, so a crash is reported as
a crash instead of ending this script. See ``docs/ONEDNN_CRASH.md`` for what it shows.

    python tools/onednn_crash_repro.py              # the default table of cases
    python tools/onednn_crash_repro.py --runs 5     # more runs per case
    ONEDNN_MAX_CPU_ISA=AVX2 python tools/onednn_crash_repro.py   # as on an AVX2-only CPU

Each case is ``op batch size in_ch out_ch kernel stride``; ``op`` is ``filter`` (weight
gradient), ``input`` (input gradient) or ``forward``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = r"""
import sys
import numpy as np
import tensorflow as tf
op, b, hw, cin, cout, k, s, steps = sys.argv[1], *map(int, sys.argv[2:9])
rng = np.random.default_rng(0)
x = tf.constant(rng.normal(size=(b, hw, hw, cin)).astype("float32"))
w = tf.constant(rng.normal(size=(k, k, cin, cout)).astype("float32"))
pad = "VALID" if k == 1 else "SAME"
dy = tf.constant(rng.normal(size=tf.nn.conv2d(x, w, s, pad).shape).astype("float32"))
for _ in range(steps):
    if op == "filter":
        tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=w.shape, out_backprop=dy,
                                        strides=[1, s, s, 1], padding=pad)
    elif op == "input":
        tf.raw_ops.Conv2DBackpropInput(input_sizes=x.shape, filter=w, out_backprop=dy,
                                       strides=[1, s, s, 1], padding=pad)
    else:
        tf.nn.conv2d(x, w, s, pad)
"""

CASES = [
    # the crashing pattern: 1x1 kernel, stride 2, input channels not a multiple of the vector width
    ("filter", 4, 64, 4, 8, 1, 2), ("filter", 4, 64, 8, 16, 1, 2), ("filter", 4, 96, 12, 24, 1, 2),
    # the same shapes, other ops or strides: no crash
    ("forward", 4, 64, 8, 16, 1, 2), ("input", 4, 64, 8, 16, 1, 2), ("filter", 4, 64, 8, 16, 1, 1),
    ("filter", 4, 64, 8, 16, 3, 2),
    # the product's own projection shapes at width 16 (input channels 16 and 32): no crash
    ("filter", 16, 96, 16, 32, 1, 2), ("filter", 16, 48, 32, 64, 1, 2),
]


def implementation(case: tuple) -> str:
    """The oneDNN implementation that runs the case's op (from ONEDNN_VERBOSE), or '?'."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", CHILD, *map(str, case), "1"], env=env,
                         capture_output=True, text=True, timeout=600).stdout
    want = {"filter": "backward_weights", "input": "backward_data", "forward": "forward"}[case[0]]
    for line in out.splitlines():
        parts = line.split(",")
        if len(parts) > 8 and parts[3] == "exec" and parts[5] == "convolution" and parts[7].startswith(want):
            weights = next((f for f in parts[8].split() if f.startswith("wei:")), "wei:?:?")
            return f"{parts[6]}, weights {'padded' if weights.split(':')[2].endswith('p') else 'not padded'}"
    return "? (the child crashed before its log was written)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="child processes per case (default 3)")
    parser.add_argument("--steps", type=int, default=200, help="op calls per child (default 200)")
    args = parser.parse_args()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "the CPU's best")
    print(f"oneDNN ISA: {isa}; {args.runs} runs x {args.steps} calls per case")
    print(f"{'op':8} {'batch':>5} {'size':>4} {'in':>3} {'out':>3} {'k':>2} {'s':>2}  crashed  implementation")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for case in CASES:
        crashed = sum(subprocess.run([sys.executable, "-c", CHILD, *map(str, case), str(args.steps)], env=env,
                                     capture_output=True, timeout=600).returncode != 0
                      for _ in range(args.runs))
        print(f"{case[0]:8} {case[1]:>5} {case[2]:>4} {case[3]:>3} {case[4]:>3} {case[5]:>2} {case[6]:>2}"
              f"  {crashed}/{args.runs}      {implementation(case)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
