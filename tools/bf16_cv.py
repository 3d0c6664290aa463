"""Held-out accuracy of bfloat16 mixed-precision training (issue 14, item 5): `lvmyoseg cv`
run under Keras' ``mixed_bfloat16`` policy (bfloat16 compute, float32 weights), so its folds
compare with a float32 run of the same settings. Training and the fold's scoring both run
under the policy. Worth running only on a CPU with avx512_bf16; elsewhere bfloat16 is emulated.

Usage: python tools/bf16_cv.py CV-ARGS...   (the arguments of `lvmyoseg cv`, e.g.
       ../shared/data/sunnybrook-edes --cines runs/sunnybrook_dataset -o runs/cv36_bf16
       --cnn-epochs 40 --rotations 1 --fold 1 --fold 5)
"""

from __future__ import annotations

import sys

import keras

from LVMyoSegLib.cli.main import main

if __name__ == "__main__":
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    sys.exit(main(["cv", *sys.argv[1:]]))
