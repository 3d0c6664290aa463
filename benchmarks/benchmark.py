"""LVMyoSeg benchmark: this machine's convolution limit, the networks' work, inference and
training throughput, and the end-to-end ``segment`` path on a real Sunnybrook study.

    PYTHONPATH=LVMyoSeg .venv/bin/python benchmarks/benchmark.py [--quick] [--json OUT]

Every efficiency is ``model multiply-accumulates / (time x limit)``, where the limit is the
throughput of a plain 3x3 convolution (32 -> 32 channels on 96x96 maps, ``keras.ops.conv``)
measured in the same run, right before and right after each timed sample (paired), so a
load that changes during the run affects both sides of each ratio alike.
See ``benchmarks/README.md`` for the definitions (naive path, training MACs, memory check).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
try:  # PYTHONPATH may point at another copy of the package (e.g. to time an older version)
    import LVMyoSegLib  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO / "LVMyoSeg"))

import keras  # noqa: E402
from macs import head_macs, multiply_accumulates  # noqa: E402

from LVMyoSegLib.io.sunnybrook import default_root  # noqa: E402
from LVMyoSegLib.labels import CHANNELS  # noqa: E402
from LVMyoSegLib.model import networks  # noqa: E402
from LVMyoSegLib.model.variants import VARIANTS  # noqa: E402

PRODUCT_PREPROCESSING = {"pixel_mm": 4 / 3, "crop_size": 96}   # the bundled model's settings
DEFAULT_STUDY = "SCD0000101"
FRAMES = 20                                                      # Sunnybrook phases per cycle
TRAINING_MAC_FACTOR = 3   # forward + gradient w.r.t. inputs + gradient w.r.t. weights


# ------------------------------------------------------------------ measuring

class ConvLimit:
    """The machine's 'limit': MAC/s of one plain 3x3 convolution, ``keras.ops.conv``, warm."""

    def __init__(self, channels: int = 32, size: int = 96, batch: int = 8, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.shape = (batch, size, size, channels)
        self.x = keras.ops.convert_to_tensor(rng.standard_normal(self.shape, dtype=np.float32))
        self.k = keras.ops.convert_to_tensor(
            rng.standard_normal((3, 3, channels, channels), dtype=np.float32) * 0.1)
        self.macs = batch * size * size * 9 * channels * channels
        self.device = str(keras.ops.conv(self.x, self.k, padding="same").device)
        for _ in range(3):
            self._once()

    def _once(self) -> None:
        np.asarray(keras.ops.conv(self.x, self.k, padding="same"))

    def rate(self, calls: int = 6) -> float:
        """MAC per wall-clock second over ``calls`` convolutions."""
        return self.rates(calls)[0]

    def rates(self, calls: int = 6) -> tuple[float, float]:
        """(MAC per wall-clock second, MAC per CPU second of this process)."""
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(calls):
            self._once()
        return (self.macs * calls / (time.perf_counter() - t0),
                self.macs * calls / max(time.process_time() - c0, 1e-9))


@dataclass
class Measured:
    """Repeated runs, each paired with the limit measured just before and after it.

    ``efficiency`` (the headline): median over runs of ``macs / (wall s x limit MAC/s)``.
    ``cpu_efficiency``: the same with this process's CPU seconds on both sides; it is
    less sensitive to other processes taking the cores, but blind to idle cores.
    """

    seconds: list[float]
    cpu_seconds: list[float]
    limits: list[float]
    cpu_limits: list[float]
    macs: float

    @property
    def median_s(self) -> float:
        return float(np.median(self.seconds))

    @property
    def efficiency(self) -> float:
        return float(np.median([self.macs / (s * lim) for s, lim in zip(self.seconds, self.limits)]))

    @property
    def cpu_efficiency(self) -> float:
        return float(np.median([self.macs / (s * lim) for s, lim in zip(self.cpu_seconds, self.cpu_limits)]))

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "cpu_seconds": self.cpu_seconds, "limit_mac_s": self.limits,
                "limit_mac_per_cpu_s": self.cpu_limits, "macs": self.macs, "median_s": self.median_s,
                "efficiency": self.efficiency, "cpu_efficiency": self.cpu_efficiency}


def measure(run: Callable[[], Any], macs: float, limit: ConvLimit, repeats: int,
            warmup: int = 1) -> Measured:
    """Time ``run`` ``repeats`` times after ``warmup`` untimed calls, pairing each with the limit."""
    for _ in range(warmup):
        run()
    m = Measured([], [], [], [], macs)
    for _ in range(repeats):
        before = limit.rates()
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        m.seconds.append(time.perf_counter() - t0)
        m.cpu_seconds.append(time.process_time() - c0)
        after = limit.rates()
        m.limits.append(0.5 * (before[0] + after[0]))
        m.cpu_limits.append(0.5 * (before[1] + after[1]))
    return m


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process, MB: VmHWM (this process image) and ru_maxrss.

    On Linux ru_maxrss survives exec, so a child started by a big parent reports at
    least the parent's size; VmHWM belongs to the new image only and is used for checks.
    """
    hwm = float("nan")
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                hwm = float(line.split()[1]) / 1024
    return {"vm_hwm_mb": hwm, "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Plain-text table (also valid Markdown)."""
    cells = [[h for h in headers]] + [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-2):
            return f"{v:.3g}"
        return f"{v:.2f}"
    return str(v)


def section(title: str) -> None:
    print(f"\n## {title}\n", flush=True)


# ------------------------------------------------------------------ the machine

def machine_info() -> dict[str, Any]:
    import onnxruntime as ort
    import tensorflow as tf

    flags: set[str] = set()
    model = ""
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
    wanted = ["avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "avx_vnni",
              "amx_bf16", "amx_tile", "amx_int8"]
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    return {
        "cpu": model or platform.processor(),
        "cpu_flags": {f: f in flags for f in wanted},
        "cores_os": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)),
        "load_average_1_5_15": list(os.getloadavg()),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "tf_intra_op_threads": intra or f"default (0 = cores available: {len(os.sched_getaffinity(0))})",
        "tf_inter_op_threads": inter or "default (0)",
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (oneDNN on by default)"),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
    }


# ------------------------------------------------------------------ network work

def macs_rows(slices: int) -> list[list[Any]]:
    rows = []
    for crop in (96, 128):
        for v in VARIANTS:
            per_cycle = multiply_accumulates(v, FRAMES, crop, crop)
            rows.append([v, crop, per_cycle / FRAMES / 1e9, per_cycle * slices / 1e9,
                         5 * per_cycle * slices / 1e12])
    return rows


# ------------------------------------------------------------------ inference and training

def untrained_model(variant: str, seed: int = 0) -> keras.Model:
    """A product-size model (width 16, ResNet-56) with free H, W, as the trainer makes them.

    Weights do not change the speed, so untrained models time the same as trained ones.
    """
    cnn = networks.build_cnn(width=16, seed=seed)
    return networks.build_model(variant, cnn, seed=seed)


def inference_rows(limit: ConvLimit, slices: int, repeats: int) -> tuple[list[list[Any]], dict]:
    from LVMyoSegLib.model import ensemble as inference

    crop = PRODUCT_PREPROCESSING["crop_size"]
    x = np.random.default_rng(1).standard_normal((slices, FRAMES, crop, crop, 1), dtype=np.float32)
    rows, raw = [], {}
    for v in VARIANTS:
        model = untrained_model(v)
        macs = multiply_accumulates(v, FRAMES, crop, crop) * slices
        frames = slices * FRAMES
        paths: dict[str, Callable[[], Any]] = {
            "before: keras call (eager), 4 slices/call": lambda: [
                np.asarray(model(x[s:s + 4], training=False)) for s in range(0, slices, 4)],
        }
        if hasattr(inference, "EnsemblePredictor"):
            predictor = inference.EnsemblePredictor([model])
            paths["product: EnsemblePredictor, warm"] = lambda: predictor.predict(x)
        else:
            paths["product: predict_ensemble"] = lambda: inference.predict_ensemble([model], x)
        for name, run in paths.items():
            t0 = time.perf_counter()
            run()
            first = time.perf_counter() - t0
            m = measure(run, macs, limit, repeats, warmup=0)
            rows.append([v, name, frames / m.median_s, m.efficiency, m.cpu_efficiency, first])
            raw[f"{v}/{name}"] = {**m.to_dict(), "frames": frames, "first_call_s": first}
            print(table(INF_HEAD, [rows[-1]]).split("\n")[-1], flush=True)
        keras.backend.clear_session()
    return rows, raw


def _compile_for_training(model: keras.Model) -> None:
    from LVMyoSegLib.model.losses import MaskedSegmentationLoss
    from LVMyoSegLib.training.loop import TrainConfig

    optimizer = keras.optimizers.Adam(learning_rate=1e-3)
    model.compile(optimizer=optimizer, loss=MaskedSegmentationLoss(TrainConfig().dice_weight))
    optimizer.build(model.trainable_variables)


def training_rows(limit: ConvLimit, repeats: int, epoch_items: dict[str, float]
                  ) -> tuple[list[list[Any]], dict]:
    """Stage 1 (CNN on labelled frames) and stage 2 (head on cached features) train steps."""
    from LVMyoSegLib.model.losses import pack_targets
    from LVMyoSegLib.training.experiments import ExperimentConfig

    cfg = ExperimentConfig()
    crop = PRODUCT_PREPROCESSING["crop_size"]
    rng = np.random.default_rng(2)
    rows, raw = [], {}

    # stage 1: frames_per_batch single frames, every frame labelled
    b1 = cfg.cnn.frames_per_batch
    cnn = networks.build_cnn(width=cfg.cnn.width, seed=0)
    _compile_for_training(cnn)
    x1 = rng.standard_normal((b1, 1, crop, crop, 1), dtype=np.float32)
    y1 = pack_targets((rng.random((b1, 1, crop, crop, 2)) > 0.8).astype(np.float32),
                      np.ones((b1, 1, 2), bool))
    macs1 = TRAINING_MAC_FACTOR * multiply_accumulates("cnn", 1, crop, crop) * b1
    m = measure(lambda: cnn.train_on_batch(x1, y1), macs1, limit, repeats, warmup=2)
    n_items = epoch_items["frames"]
    epoch_s = math.ceil(n_items / b1) * m.median_s
    rows.append(["stage 1 (cnn)", f"{b1} frames", b1 / m.median_s, m.efficiency, m.cpu_efficiency,
                 epoch_s, epoch_s * cfg.cnn.epochs / 60])
    print(table(TRAIN_HEAD, [rows[-1]]).split("\n")[-1], flush=True)
    raw["stage1"] = {**m.to_dict(), "batch_frames": b1, "epoch_items": n_items, "epoch_s": epoch_s}

    # stage 2: sequences_per_batch whole cycles of cached CNN features, ED+ES labelled
    b2 = cfg.rnn.sequences_per_batch
    for v in ("one_level", "multi_level"):
        model = networks.build_model(v, networks.build_cnn(width=cfg.rnn.width, seed=0), seed=0)
        head = networks.model_parts(model)[1]
        _compile_for_training(head)
        w = cfg.rnn.width
        fh = rng.standard_normal((b2, FRAMES, crop // 2, crop // 2, 2 * w), dtype=np.float32)
        fq = rng.standard_normal((b2, FRAMES, crop // 4, crop // 4, 4 * w), dtype=np.float32)
        known = np.zeros((b2, FRAMES, 2), bool)
        known[:, 0, :] = True
        known[:, FRAMES // 2, 1] = True
        y2 = pack_targets((rng.random((b2, FRAMES, crop, crop, 2)) > 0.8).astype(np.float32), known)
        macs2 = TRAINING_MAC_FACTOR * head_macs(v, FRAMES, crop, crop) * b2
        m = measure(lambda: head.train_on_batch([fh, fq], y2), macs2, limit, repeats, warmup=2)
        n_items = epoch_items["cycles"]
        epoch_s = math.ceil(n_items / b2) * m.median_s
        rows.append([f"stage 2 ({v}, cached features)", f"{b2} cycles x {FRAMES}",
                     b2 * FRAMES / m.median_s, m.efficiency, m.cpu_efficiency, epoch_s,
                     epoch_s * cfg.rnn.epochs / 60])
        print(table(TRAIN_HEAD, [rows[-1]]).split("\n")[-1], flush=True)
        raw[f"stage2/{v}"] = {**m.to_dict(), "batch_cycles": b2, "epoch_items": n_items, "epoch_s": epoch_s}
        keras.backend.clear_session()
    return rows, raw


def labelled_items(root: Path) -> dict[str, float]:
    """Training items per leave-one-out fold: labelled frames (stage 1) and cycles (stage 2).

    Averaged over the 5 folds (4 training studies), minus the validation fraction.
    """
    from LVMyoSegLib.io.sunnybrook import list_studies, study_contours
    from LVMyoSegLib.training.experiments import ExperimentConfig

    frames = cycles = 0
    studies = list_studies(root)
    for study in studies:
        keys = study_contours(study).keys()          # {(t, z)} with any contour
        frames += len(keys)
        cycles += len({z for _, z in keys})
    keep = (len(studies) - 1) / len(studies) * (1 - ExperimentConfig().cnn.validation_fraction)
    return {"frames": frames * keep, "cycles": cycles * keep,
            "all_frames": frames, "all_cycles": cycles, "studies": len(studies)}


# ------------------------------------------------------------------ end-to-end segment

def subset_slices(cine, n: int | None):
    """The ``n`` middle slices of ``cine`` (geometry shifted so the slices keep their place)."""
    from LVMyoSegLib.cine import Cine, Geometry

    if n is None or n >= cine.n_slices:
        return cine
    z0 = (cine.n_slices - n) // 2
    g = cine.geometry
    origin = np.asarray(g.origin) + g.direction[:, 2] * g.spacing[2] * z0
    return Cine(cine.frames[:, z0:z0 + n], Geometry(g.spacing, tuple(origin), g.direction),
                cine.trigger_times_ms, cine.source + f" (slices {z0}..{z0 + n - 1})")


def scaled_cine(cine, scale: int):
    """A study with ``scale`` x the frames x slices: frames and slices repeated (2x2 for 4)."""
    from LVMyoSegLib.cine import Cine

    if scale == 1:
        return cine
    ft = 2 if scale >= 2 else 1
    fz = scale // ft
    frames = np.tile(cine.frames, (ft, fz, 1, 1))
    tt = np.asarray(cine.trigger_times_ms)
    step = float(np.median(np.diff(tt))) if len(tt) > 1 else 1.0
    times = np.concatenate([tt + k * (tt[-1] - tt[0] + step) for k in range(ft)])
    return Cine(frames, cine.geometry, times, cine.source + f" (x{scale} frames x slices)")


@dataclass(frozen=True)
class BenchBundle:
    """A bundle to time and what its weights are."""

    path: Path
    weights: str


def build_bundles(folder: Path, members: int, given: Path | None,
                  variants: tuple[str, ...] = VARIANTS) -> dict[str, BenchBundle]:
    """One bundle of ``members`` members per variant.

    ``given`` (a trained bundle) serves its own variant; with fewer members than
    ``members`` its members are repeated (same compute, realistic masks). The other
    variants get untrained members of the product architecture built here.
    """
    from LVMyoSegLib.model.bundle import load_members, write_bundle

    out: dict[str, BenchBundle] = {}
    if given is not None:
        manifest, models = load_members(given)
        v = manifest.variant
        if len(models) >= members:
            out[v] = BenchBundle(given, f"trained ({manifest.model_id})")
        else:
            path = folder / f"trained_{v}"
            write_bundle(path, [models[i % len(models)] for i in range(members)],
                         model_id=f"{manifest.model_id}-repeated", variant=v, channels=manifest.channels,
                         preprocessing=manifest.preprocessing, training={"note": "timing copy"})
            out[v] = BenchBundle(path, f"trained ({manifest.model_id}), {len(models)} member(s) repeated")
        keras.backend.clear_session()
    for v in variants:
        if v in out:
            continue
        models = [untrained_model(v, seed=i) for i in range(members)]
        path = folder / f"untrained_{v}"
        write_bundle(path, models, model_id=f"benchmark-untrained-{v}", variant=v,
                     channels=CHANNELS, preprocessing=PRODUCT_PREPROCESSING,
                     training={"note": "untrained: for timing only"})
        out[v] = BenchBundle(path, "untrained")
        keras.backend.clear_session()
    return out


class KerasRuntime:
    """The Keras path (``inference.EnsemblePredictor``: one compiled, BatchNorm-folded graph, Keras
    predict), behind the interface ``segment_cine`` uses for its ONNX ensemble, so both runtimes
    are timed through the same pipeline."""

    provider = "Keras (TensorFlow)"

    def __init__(self, ensemble) -> None:
        import tensorflow as tf

        from LVMyoSegLib.model.ensemble import EnsemblePredictor

        self._predictor = EnsemblePredictor(ensemble)
        self._members = len(ensemble)
        self.device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"

    def predict(self, x, **kwargs):
        return self._predictor.predict(x, **kwargs)

    def __len__(self) -> int:
        return self._members


class CpuTimed:
    """An ensemble whose ``predict`` also records this process's CPU seconds (``cpu_s``)."""

    def __init__(self, ensemble) -> None:
        self._ensemble = ensemble
        self.device, self.provider = ensemble.device, ensemble.provider
        self.cpu_s = 0.0

    def predict(self, x, **kwargs):
        c0 = time.process_time()
        try:
            return self._ensemble.predict(x, **kwargs)
        finally:
            self.cpu_s += time.process_time() - c0

    def __len__(self) -> int:
        return len(self._ensemble)


def load_runtime(bundle: Path, members: int, runtime: str):
    """``(manifest, ensemble)`` for ``segment_cine(loaded=...)``: ONNX Runtime (the product) or Keras."""
    from LVMyoSegLib.model.bundle import load_ensemble
    from LVMyoSegLib.model.onnx_runtime import load_onnx_ensemble

    if runtime == "onnx":
        manifest, ensemble = load_onnx_ensemble(bundle, members)
    else:
        manifest, keras_ensemble = load_ensemble(bundle, members)
        ensemble = KerasRuntime(keras_ensemble)
    return manifest, CpuTimed(ensemble)


def segment_once(cine, read_s: float, bundle: Path, members: int, out: Path,
                 runtime: str = "onnx", rotations: int | None = 1) -> tuple[dict, Any]:
    """The ``lvmyoseg segment`` path, timed by stage (the CLI's steps, in process), with ``rotations``
    test-time views (1 unless given; None: the bundle's own, as ``segment`` without ``--rotations``)."""
    from LVMyoSegLib.files import output_folder
    from LVMyoSegLib.segmentation.outputs import write_segmentation_outputs
    from LVMyoSegLib.segmentation.pipeline import segment_cine

    t0 = time.perf_counter()
    loaded = load_runtime(bundle, members, runtime)
    load_s = time.perf_counter() - t0
    result = segment_cine(cine, bundle, loaded=loaded, rotations=rotations)  # loaded: the first `members`
    t0 = time.perf_counter()
    with output_folder(out, overwrite=True) as staging:
        write_segmentation_outputs(staging, cine, result, model_dir=bundle, file_format="nifti",
                                   read_seconds=read_s)
    write_all = time.perf_counter() - t0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    files_s = float(report["timing_s"]["write"])
    shutil.rmtree(out, ignore_errors=True)
    t = {"read": read_s, "load_model": load_s, "preprocess": result.timings_s["preprocess"],
         "network": result.timings_s["network"], "inverse_mapping": result.timings_s["inverse_mapping"],
         "write_files": files_s, "write_report_figures": write_all - files_s}
    t["total"] = sum(t.values())
    t["network_fraction"] = t["network"] / t["total"]
    t["network_cpu_s"] = loaded[1].cpu_s
    return t, result


def naive_network(models: list, x: np.ndarray, variant: str) -> float:
    """The naive path: ``model.predict`` per frame (cnn) or per slice (RNN variants), per member."""
    t0 = time.perf_counter()
    acc = np.zeros(x.shape[:4] + (2,), np.float32)
    for model in models:
        for z in range(x.shape[0]):
            if variant == "cnn":
                for t in range(x.shape[1]):
                    acc[z, t] += model.predict(x[z:z + 1, t:t + 1], verbose=0)[0, 0]
            else:
                acc[z] += model.predict(x[z:z + 1], verbose=0)[0]
    return time.perf_counter() - t0


def segment_rows(limit: ConvLimit, study: Path, slices: int | None, members_list: list[int],
                 naive_members: list[int], bundles: dict[str, BenchBundle]) -> tuple[list, list, dict]:
    from LVMyoSegLib.io.readers import read_cine
    from LVMyoSegLib.model.bundle import load_members, read_manifest
    from LVMyoSegLib.preprocessing import preprocess

    t0 = time.perf_counter()
    cine = read_cine(study)
    read_s = time.perf_counter() - t0
    cine = subset_slices(cine, slices)   # read time stays that of the whole study
    print(f"Study {study.name}: T={cine.n_phases}, Z={cine.n_slices}, "
          f"{cine.frames.shape[2]}x{cine.frames.shape[3]} pixels.\n", flush=True)
    rows, naive_rows, raw = [], [], {}
    tmp = Path(tempfile.mkdtemp(prefix="lvmyoseg-bench-out-"))
    try:
        for v, bb in bundles.items():
            bundle = bb.path
            views = read_manifest(bundle).rotations  # a trained bundle's own views: one more row with them
            runs = [(n, 1) for n in members_list] + ([(max(members_list), views)] if views > 1 else [])
            for n, r in runs:
                lim_before = limit.rate()
                t, result = segment_once(cine, read_s, bundle, n, tmp / "out", rotations=r)
                lim = 0.5 * (lim_before + limit.rate())
                crop = result.transform.crop_size
                macs = n * r * cine.n_slices * multiply_accumulates(v, cine.n_phases, crop, crop)
                t["efficiency_network"] = macs / (t["network"] * lim)
                rows.append([v, n, r, t["read"], t["load_model"], t["preprocess"], t["network"],
                             t["inverse_mapping"], t["write_files"], t["write_report_figures"],
                             t["total"], t["network_fraction"], t["efficiency_network"]])
                print("progress: " + table(_SEG_HEAD, [rows[-1]]).split("\n")[-1], file=sys.stderr, flush=True)
                raw[f"{v}/{n}" + (f"/{r}_views" if r > 1 else "")] = {**t, "macs": macs, "limit_mac_s": lim}
                if n in naive_members and r == 1:
                    x = preprocess.to_network(cine, result.transform)
                    naive_s = naive_network(load_members(bundle, n)[1], x, v)  # plain Keras models
                    total_naive = t["total"] - t["network"] + naive_s
                    naive_rows.append([v, n, "per frame" if v == "cnn" else "per slice", naive_s,
                                       t["network"], naive_s / t["network"], total_naive / t["total"]])
                    print("progress: " + table(_NAIVE_HEAD, [naive_rows[-1]]).split("\n")[-1], file=sys.stderr,
                          flush=True)
                    raw[f"{v}/{n}"]["naive_network_s"] = naive_s
                del result
                keras.backend.clear_session()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows, naive_rows, raw


_SEG_HEAD = ["variant", "members", "views", "read s", "load s", "preprocess s", "network s", "inverse s",
             "write files s", "report+figures s", "total s", "network fraction", "network efficiency"]
_NAIVE_HEAD = ["variant", "members", "naive = model.predict", "naive network s", "product network s",
               "speed-up (network)", "speed-up (end to end)"]


# ------------------------------------------------------------------ runtimes: Keras vs ONNX Runtime

_COLD = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
runtime, bundle, x_path, members = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
x = np.load(x_path)
if runtime == "onnx":
    from LVMyoSegLib.model.onnx_runtime import load_onnx_ensemble
    t1 = time.perf_counter()
    ensemble = load_onnx_ensemble(bundle, members)[1]
    predict = ensemble.predict
else:
    from LVMyoSegLib.model.bundle import load_ensemble
    from LVMyoSegLib.model.ensemble import EnsemblePredictor
    t1 = time.perf_counter()
    predict = EnsemblePredictor(load_ensemble(bundle, members)[1]).predict
t2 = time.perf_counter()
predict(x)
t3 = time.perf_counter()
predict(x)
t4 = time.perf_counter()
print("COLD " + json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_predict_s": t3 - t2,
                            "warm_predict_s": t4 - t3, "cold_total_s": t3 - t0}))
"""


def cold_start(runtime: str, bundle: Path, x: np.ndarray, members: int) -> dict:
    """A fresh process: imports, bundle load, first and second prediction of ``x`` (one slice)."""
    with tempfile.TemporaryDirectory(prefix="lvmyoseg-bench-cold-") as tmp:
        x_path = Path(tmp) / "x.npy"
        np.save(x_path, x)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(Path(networks.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run([sys.executable, "-c", _COLD, runtime, str(bundle), str(x_path), str(members)],
                              capture_output=True, text=True, env=env)
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("COLD ")]
    if done.returncode or not line:
        raise RuntimeError(f"cold-start child ({runtime}) failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(line[0][5:])


def runtime_rows(study: Path, bundle: Path, members: int, repeats: int) -> tuple[list, list, dict]:
    """End-to-end ``segment`` through Keras and through ONNX Runtime, alternating; cold starts."""
    from LVMyoSegLib.io.readers import read_cine
    from LVMyoSegLib.model.bundle import read_manifest
    from LVMyoSegLib.preprocessing import preprocess

    t0 = time.perf_counter()
    cine = read_cine(study)
    read_s = time.perf_counter() - t0
    print(f"Study {study.name}: T={cine.n_phases}, Z={cine.n_slices}; bundle {bundle} "
          f"({read_manifest(bundle).model_id}), {members} member(s).\n", flush=True)
    raw: dict[str, Any] = {"keras": [], "onnx": []}
    tmp = Path(tempfile.mkdtemp(prefix="lvmyoseg-bench-rt-"))
    try:
        for r in range(repeats):
            for runtime in (("keras", "onnx") if r % 2 == 0 else ("onnx", "keras")):
                t, result = segment_once(cine, read_s, bundle, members, tmp / "out", runtime)
                raw[runtime].append(t)
                print(f"progress: {runtime} total {t['total']:.2f} s, network {t['network']:.2f} s",
                      file=sys.stderr, flush=True)
                if runtime == "onnx":
                    raw["onnx_provider"] = result.execution_provider
                    x_one = preprocess.to_network(cine, result.transform)[:1]
                del result
                keras.backend.clear_session()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for runtime in ("keras", "onnx"):
        med = {k: float(np.median([t[k] for t in raw[runtime]]))
               for k in ("load_model", "network", "network_cpu_s", "total")}
        raw[f"{runtime}_median"] = med
        rows.append([runtime, len(raw[runtime]), med["load_model"], med["network"], med["network_cpu_s"],
                     med["total"]])
    raw["speedup_network"] = raw["keras_median"]["network"] / raw["onnx_median"]["network"]
    raw["speedup_total"] = raw["keras_median"]["total"] / raw["onnx_median"]["total"]
    raw["speedup_network_cpu"] = raw["keras_median"]["network_cpu_s"] / raw["onnx_median"]["network_cpu_s"]
    cold_rows = []
    for runtime in ("keras", "onnx"):
        c = cold_start(runtime, bundle, x_one, members)
        raw[f"{runtime}_cold"] = c
        cold_rows.append([runtime, c["import_s"], c["load_s"], c["first_predict_s"], c["warm_predict_s"],
                          c["cold_total_s"]])
    return rows, cold_rows, raw


_RT_HEAD = ["runtime", "runs", "load s (median)", "network s (median)", "network CPU s (median)",
            "total s (median)"]
_COLD_HEAD = ["runtime", "import s", "load s", "first predict s (1 slice)", "second predict s",
              "cold total s (start to first result)"]


# ------------------------------------------------------------------ memory (child processes)

def child_memory(args: argparse.Namespace) -> None:
    """In a fresh process: read, segment and write one (scaled) study; print peak RSS as JSON."""
    from LVMyoSegLib.io.readers import read_cine

    t0 = time.perf_counter()
    cine = scaled_cine(subset_slices(read_cine(Path(args.study)), args.slices), args.scale)
    read_s = time.perf_counter() - t0
    tmp = Path(tempfile.mkdtemp(prefix="lvmyoseg-bench-mem-"))
    try:
        t, _ = segment_once(cine, read_s, Path(args.bundle), args.members, tmp / "out")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("CHILD " + json.dumps({**peak_rss_mb(), "T": cine.n_phases, "Z": cine.n_slices,
                                 "timings": t}))


def memory_rows(study: Path, bundle: Path, members: int, slices: int | None) -> tuple[list, dict]:
    rows, raw = [], {}
    for scale in (1, 4):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child-memory", "--study", str(study),
               "--bundle", str(bundle), "--members", str(members), "--scale", str(scale)]
        if slices is not None:
            cmd += ["--slices", str(slices)]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
        line = [ln for ln in done.stdout.splitlines() if ln.startswith("CHILD ")]
        if done.returncode or not line:
            raise RuntimeError(f"memory child failed ({done.returncode}):\n{done.stderr[-3000:]}")
        info = json.loads(line[0][6:])
        raw[f"x{scale}"] = info
        rows.append([f"x{scale}", info["T"], info["Z"], info["timings"]["network"],
                     info["timings"]["total"], info["vm_hwm_mb"], info["ru_maxrss_mb"]])
        print(table(_MEM_HEAD, [rows[-1]]).split("\n")[-1], flush=True)
    raw["ratio_x4_over_x1"] = raw["x4"]["vm_hwm_mb"] / raw["x1"]["vm_hwm_mb"]
    return rows, raw


_MEM_HEAD = ["study", "T", "Z", "network s", "total s", "peak RSS MB (VmHWM)", "ru_maxrss MB"]
INF_HEAD = ["variant", "path", "frames/s", "efficiency", "CPU-time efficiency", "first call s"]
TRAIN_HEAD = ["stage", "batch", "frames/s", "efficiency", "CPU-time efficiency", "s / epoch",
              "min / stage"]


# ------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="short run: 1 timed repeat, 3 middle slices of the study, naive path and "
                        "memory check with 1 member")
    p.add_argument("--json", type=Path, help="also write every number to this JSON file")
    p.add_argument("--study", type=Path, default=default_root() / "dicom" / DEFAULT_STUDY,
                   help="DICOM folder of the study for the end-to-end part")
    p.add_argument("--model", type=Path, help="a trained bundle (else untrained bundles are built)")
    p.add_argument("--only", default="machine,macs,inference,training,segment,memory,runtimes",
                   help="comma-separated parts to run")
    p.add_argument("--repeats", type=int, help="timed repeats per measurement")
    p.add_argument("--slices", type=int, help="use only this many middle slices of the study")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="comma-separated variants for the end-to-end and memory parts")
    p.add_argument("--skip-naive", action="store_true", help="do not time the naive path")
    # child mode (memory check), internal
    p.add_argument("--child-memory", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--bundle", help=argparse.SUPPRESS)
    p.add_argument("--members", type=int, default=5, help=argparse.SUPPRESS)
    p.add_argument("--scale", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_memory:
        child_memory(args)
        return 0

    parts = set(args.only.split(","))
    repeats = args.repeats or (1 if args.quick else 3)
    slices = args.slices if args.slices is not None else (3 if args.quick else None)
    report: dict[str, Any] = {"command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])),
                              "quick": args.quick, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    t_start = time.perf_counter()
    print(f"# LVMyoSeg benchmark{' (quick)' if args.quick else ''}")

    info = machine_info()
    report["machine"] = info
    if "machine" in parts:
        section("Machine")
        for k, v in info.items():
            print(f"- {k}: {v}")

    section("Limit: plain 3x3 convolution (keras.ops.conv, 32->32 channels, 8 x 96x96 maps, warm)")
    limit = ConvLimit()
    rates = [limit.rates() for _ in range(5)]
    wall = [r[0] for r in rates]
    report["limit"] = {"mac_s": wall, "mac_per_cpu_s": [r[1] for r in rates], "device": limit.device}
    print(f"- ran on: {limit.device}")
    print(f"- limit: {np.median(wall) / 1e9:.1f} G MAC/s (median of 5; min {min(wall) / 1e9:.1f}, "
          f"max {max(wall) / 1e9:.1f}); {np.median([r[1] for r in rates]) / 1e9:.1f} G MAC per CPU "
          "second of this process. Every efficiency below pairs its timing with the limit "
          "measured right before and after it.")
    profile = []
    for ch, size in ((16, 96), (32, 48), (64, 24)):
        lim = ConvLimit(channels=ch, size=size, batch=8 * (96 // size) ** 2)
        m = measure(lim._once, lim.macs, limit, 3, warmup=0)
        profile.append([f"{ch}->{ch} @ {size}x{size}", lim.macs / m.median_s / 1e9, m.efficiency])
    print("\nThe network's own 3x3 conv shapes (ResNet-56 stages 1-3, batch 8 x 96x96 pixels):\n")
    print(table(["conv", "G MAC/s", "relative to the limit"], profile))
    report["limit"]["network_shapes"] = profile
    if "macs" in parts:
        section(f"Work: multiply-accumulates (convolutions), T = {FRAMES} frames")
        z = 12
        rows = macs_rows(z)
        print(table(["variant", "crop", "G MAC / frame", f"G MAC / study ({z} slices, {DEFAULT_STUDY})",
                     "T MAC / study, 5 members"], rows))
        print(f"\nProduct preprocessing: pixel {PRODUCT_PREPROCESSING['pixel_mm']:.3f} mm, crop "
              f"{PRODUCT_PREPROCESSING['crop_size']}; crop 128 for reference.")
        report["macs"] = rows

    if "inference" in parts:
        section(f"Inference, one member, {4} slices x {FRAMES} frames at crop 96 (untrained weights)")
        print(table(INF_HEAD, []))
        rows, raw = inference_rows(limit, 4, repeats)
        report["inference"] = raw

    if "training" in parts:
        section("Training steps (train_on_batch, masked loss + Adam, crop 96)")
        items = labelled_items(default_root())
        print(f"Per leave-one-out fold ({items['studies']} studies): {items['frames']:.0f} labelled "
              f"frames, {items['cycles']:.0f} labelled cycles after the validation split.")
        print(f"Training MACs = {TRAINING_MAC_FACTOR} x forward MACs.\n")
        print(table(TRAIN_HEAD, []))
        rows, raw = training_rows(limit, repeats, items)
        report["training"] = {"items": items, **raw}

    if "runtimes" in parts:
        from LVMyoSegLib.resources import bundled_model_dir

        bundle = args.model or bundled_model_dir()
        section("Runtimes: end-to-end `segment` through Keras predict vs ONNX Runtime (same run)")
        rows, cold_rows, raw = runtime_rows(args.study, bundle, 1, repeats)
        print(table(_RT_HEAD, rows))
        print(f"\nONNX Runtime provider: {raw['onnx_provider']}. ONNX / Keras speed-up: network "
              f"{raw['speedup_network']:.2f}x (CPU seconds {raw['speedup_network_cpu']:.2f}x), end to end "
              f"{raw['speedup_total']:.2f}x.")
        print("\nCold start (a fresh process: imports, bundle load, first prediction of one slice):\n")
        print(table(_COLD_HEAD, cold_rows))
        report["runtimes"] = raw

    bundles: dict[str, BenchBundle] = {}
    tmp = Path(tempfile.mkdtemp(prefix="lvmyoseg-bench-"))
    try:
        if parts & {"segment", "memory"}:
            bundles = build_bundles(tmp, 5, args.model, tuple(args.variants.split(",")))
        if "segment" in parts:
            section("End-to-end `segment` (DICOM in, NIfTI + report + figures out), seconds")
            for v, bb in bundles.items():
                print(f"- {v}: {bb.weights} weights")
            print("Weights do not change the network's speed; the report+figures step depends on the "
                  "masks (untrained members give unrealistic ones).\n")
            naive_members = [] if args.skip_naive else [1] if args.quick else [1, 5]
            rows, naive_rows, raw = segment_rows(limit, args.study, slices, [1, 5], naive_members, bundles)
            print(table(_SEG_HEAD, rows))
            print("\nNaive path (network only; cnn: one model.predict per frame; RNN variants: one "
                  "per slice, since their frames are not independent; one member after another):\n")
            print(table(_NAIVE_HEAD, naive_rows))
            report["segment"] = raw
        if "memory" in parts:
            section("Peak resident memory of a whole `segment` run (fresh process each)")
            mem_members = 1 if args.quick else 5
            v = "multi_level" if "multi_level" in bundles else next(iter(bundles))
            print(f"{v} ({bundles[v].weights} weights), {mem_members} member(s); x4 = 2x frames and "
                  "2x slices (the study repeated).\n")
            print(table(_MEM_HEAD, []))
            rows, raw = memory_rows(args.study, bundles[v].path, mem_members, slices)
            raw["weights"] = bundles[v].weights
            print(f"\nx4 / x1 peak memory: {raw['ratio_x4_over_x1']:.2f}")
            report["memory"] = raw
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    report["benchmark_process_peak"] = peak_rss_mb()
    report["wall_s"] = time.perf_counter() - t_start
    report["load_average_end"] = list(os.getloadavg())
    print(f"\nBenchmark process peak RSS {report['benchmark_process_peak']['vm_hwm_mb']:.0f} MB; wall "
          f"{report['wall_s']:.0f} s; load average at start {info['load_average_1_5_15']}, at end "
          f"{report['load_average_end']}.")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=float), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
