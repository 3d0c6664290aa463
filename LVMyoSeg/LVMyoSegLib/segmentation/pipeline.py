"""Cine -> probabilities and label map on the input grid, with stage timings.

The network runs in ONNX Runtime (:mod:`LVMyoSegLib.model.onnx_runtime`); nothing here
imports TensorFlow or Keras.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cine import Cine
from ..io.cine_checks import check_short_axis_cine
from ..labels import labels_from_probabilities
from ..model.bundle import Manifest
from ..model.onnx_runtime import OnnxEnsemble, load_onnx_ensemble
from ..model.rotations import check_rotations
from ..model.trust import bundle_trust
from ..preprocessing import preprocess
from ..preprocessing.localisation import localise
from ..progress import CancelFn, ProgressEvent, ProgressFn


@dataclass(frozen=True)
class SegmentationResult:
    """Network output mapped back onto the cine's voxel grid.

    ``probabilities`` is float32 ``[T, Z, Y, X, 2]`` (myocardium, blood pool);
    ``label_map`` is uint8 ``[T, Z, Y, X]`` (0 background, 1 myocardium, 2 blood pool).
    """

    probabilities: np.ndarray
    label_map: np.ndarray
    transform: "preprocess.CropTransform"
    model_id: str
    members: int
    threshold: float
    timings_s: dict[str, float] = field(default_factory=dict)
    device: str = "CPU"
    execution_provider: str = "CPUExecutionProvider"
    trust: dict = field(default_factory=dict)  # trust.Trust.to_dict() of the bundle
    rotations: int = 1  # quarter-turned views averaged (:mod:`LVMyoSegLib.model.rotations`)


def segment_cine(cine: Cine, bundle_dir: Path, *, members: int | None = None, threshold: float = 0.5,
                 progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                 loaded: tuple[Manifest, OnnxEnsemble] | None = None,
                 device: str = "auto", rotations: int | None = None) -> SegmentationResult:
    """Segment every frame of ``cine`` with the first ``members`` (all when None) of the ensemble in ``bundle_dir``.

    ``rotations``: quarter-turned views to average (:mod:`LVMyoSegLib.model.rotations`); None: the
    bundle's own (``inference.rotations``, the setting it was evaluated with).

    ``device`` picks the ONNX Runtime execution provider (:data:`LVMyoSegLib.model.onnx_runtime.DEVICES`).
    ``loaded`` lets a caller that segments many studies pass ``load_onnx_ensemble(bundle_dir)`` once.
    Inputs that are not a short-axis cine are refused first
    (:func:`~LVMyoSegLib.io.cine_checks.check_short_axis_cine`).
    """
    check_short_axis_cine(cine)
    if rotations is not None:
        check_rotations(rotations)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if loaded is None:
        manifest, ensemble = load_onnx_ensemble(bundle_dir, members, device)
    else:
        manifest, ensemble = loaded[0], loaded[1] if members is None else loaded[1].first(members)
    trust = bundle_trust(bundle_dir).to_dict()
    timings["load_model"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    transform = localise(cine, **manifest.preprocessing)
    x = preprocess.to_network(cine, transform)
    timings["preprocess"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    def on_device(event: ProgressEvent) -> None:
        progress(dataclasses.replace(event, message=f"{event.message} on {ensemble.device}"))

    views = manifest.rotations if rotations is None else rotations
    net = ensemble.predict(x, rotations=views, progress=None if progress is None else on_device, cancel=cancel)
    timings["network"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    probabilities = preprocess.to_input(net, transform)
    label_map = labels_from_probabilities(probabilities, threshold)
    timings["inverse_mapping"] = time.perf_counter() - t0
    return SegmentationResult(probabilities, label_map, transform, manifest.model_id, len(ensemble),
                              threshold, timings, ensemble.device, ensemble.provider, trust, views)
