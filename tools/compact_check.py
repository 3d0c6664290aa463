"""How far a bundle's compact storage (16-bit kernels, :mod:`LVMyoSegLib.model.weight_storage`)
moves its predictions: the float32 members of the training run that wrote it against the bundle's
Keras and ONNX members, on the bundled sample study (every slice and frame, 1 view).

Usage: python tools/compact_check.py RUN_DIR BUNDLE [--variant multi_level]

``RUN_DIR`` is the ``--run-dir`` of ``lvmyoseg train`` (its ``member_i/rnn_<variant>/model.keras``,
or ``member_i/cnn/model.keras`` for the CNN variant, are the float32 members).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from LVMyoSegLib.io.volume_files import read_4d
from LVMyoSegLib.model.bundle import load_keras_file, load_members
from LVMyoSegLib.model.ensemble import predict_ensemble
from LVMyoSegLib.model.onnx_runtime import load_onnx_ensemble
from LVMyoSegLib.preprocessing import preprocess
from LVMyoSegLib.preprocessing.localisation import localise
from LVMyoSegLib.resources import sample_case_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--variant", default="multi_level")
    args = parser.parse_args()
    manifest, stored = load_members(args.bundle)
    stage = "cnn" if args.variant == "cnn" else f"rnn_{args.variant}"
    originals = [load_keras_file(args.run_dir / f"member_{i}" / stage / "model.keras")
                 for i in range(len(stored))]
    cine = read_4d(sample_case_dir() / "cine.nrrd")
    x = preprocess.to_network(cine, localise(cine, **manifest.preprocessing))
    _, onnx = load_onnx_ensemble(args.bundle, device="cpu")
    want = [predict_ensemble([m], x) for m in originals]  # each member once; an ensemble is their mean
    got = [predict_ensemble([m], x) for m in stored]
    for i, (w, g) in enumerate(zip(want, got)):
        print(f"member {i}: max |keras compact - float32| {np.abs(g - w).max():.2e}")
    mean = np.mean(want, axis=0)
    keras_moved = np.abs(np.mean(got, axis=0) - mean).max()
    print(f"ensemble of {len(stored)}: max |keras compact - float32| {keras_moved:.2e}, "
          f"max |onnx compact - float32| {np.abs(onnx.predict(x) - mean).max():.2e} "
          f"({x.shape[0]} slices x {x.shape[1]} frames)")


if __name__ == "__main__":
    main()
