"""Two-stage training of the paper's networks, with checkpoints, resume, progress and cancel.

Inputs are network-space arrays (made by preprocessing): ``images [N, T, H, W, 1]``
float32 (per-slice standardised), ``targets [N, T, H, W, 2]`` in {0, 1} and
``known [N, T, 2]`` bool, channel order :data:`LVMyoSegLib.labels.CHANNELS`.

- Stage 1, :func:`fit_cnn`: the ResNet-56 CNN alone on the labelled frames
  (frames where either channel is known), each frame its own sample.
- Stage 2, :func:`fit_rnn`: the CNN frozen, the ConvLSTM head trained on whole
  cycles; the loss only counts labelled frames/channels. With augmentation the
  frozen CNN runs in the same graph on the augmented cycles (forward only, no
  gradient is computed for it); without augmentation its features are computed
  once and the head trains on them (skips the CNN's forward pass every epoch).
- Loss: masked per-pixel binary cross-entropy plus (``dice_weight`` > 0) a
  masked soft Dice term per labelled frame and channel. The Dice term is added
  because the myocardium covers a few percent of a crop, so cross-entropy alone
  is dominated by background; the Dice term optimises the reported overlap.
  ``dice_weight=0`` gives the paper's plain cross-entropy. ``boundary_weight`` > 0
  weighs the cross-entropy of pixels next to a contour more (opt-in; see
  :func:`LVMyoSegLib.model.losses.masked_loss`).
- Train/validation split by sequence (slice), ``validation_fraction`` of them,
  by the seed (or by ``groups``, e.g. study ids, so no study is on both sides).
  Validation DSC = mean 2D DSC of the myocardium over labelled validation frames.
- Every epoch a checkpoint is written to ``run_dir``
  (:mod:`LVMyoSegLib.training.checkpoints`); calling the same fit again with the same
  ``run_dir`` resumes after the last finished epoch. Randomness is a pure function of
  (seed, stage, epoch, batch): a resumed run draws the same batches and augmentations
  as an uninterrupted one.
- Progress: a :class:`~LVMyoSegLib.progress.ProgressEvent` after every batch
  (``kind="batch"``) and every checkpointed epoch (``kind="epoch"``); ``fraction`` is the
  stage's, ``eta_s`` the stage's time left, measured over the batches run so far.
- Fine-tuning: pass ``initial`` (an existing model); the default learning rate
  is then :data:`FINE_TUNE_LEARNING_RATE` instead of :data:`LEARNING_RATE`.
- Ensembles: :func:`LVMyoSegLib.training.experiments.train_variants`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ..errors import CancelledError, InputError
from ..model import networks
from ..model.losses import MaskedSegmentationLoss, pack_targets
from ..progress import CancelFn, ProgressEvent, ProgressFn
from . import checkpoints
from .augment import AugmentConfig, augment_batch

LEARNING_RATE = 1e-3
FINE_TUNE_LEARNING_RATE = 1e-4


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training stage.

    ``width`` and ``units`` define a new CNN (ignored when fine-tuning: the
    initial model's are used). ``learning_rate=None`` means
    :data:`LEARNING_RATE`, or :data:`FINE_TUNE_LEARNING_RATE` when fine-tuning.
    ``frames_per_batch`` is stage 1's batch, ``sequences_per_batch`` stage 2's.
    ``jit_compile`` (XLA) applies to stage 1 only: XLA cannot compile the gradient
    of the ConvLSTM's variable-length time loop. Off by default: on a 2-core CPU
    it doubled the first-step compile time and did not speed up the steps.
    ``feature_cache_mb`` caps the memory of stage 2's precomputed CNN features
    (used only without augmentation). ``augment_blur_px``: the resolution augmentation's
    largest blur (:mod:`LVMyoSegLib.training.augment`); 0 (the default) leaves it out.
    ``boundary_weight``: the loss's extra weight next to contours; 0 (the default) leaves it out.
    """

    epochs: int = 50
    frames_per_batch: int = 16
    sequences_per_batch: int = 2
    learning_rate: float | None = None
    seed: int = 0
    augment: bool = True
    augment_strength: float = 1.0
    validation_fraction: float = 0.2
    dice_weight: float = 0.5
    restore_best: bool = True
    width: int = 16
    units: int = networks.UNITS_PER_STAGE
    circular_passes: int = 1
    jit_compile: bool = False
    feature_cache_mb: float = 2048.0
    augment_blur_px: float = 0.0
    boundary_weight: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for opt_in in ("augment_blur_px", "boundary_weight"):
            if not d[opt_in]:  # without it, a run's settings (and checkpoints) read as before
                del d[opt_in]
        return d


@dataclass
class FitResult:
    """Outcome of one stage: the trained model and what happened."""

    model: keras.Model
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_val_dsc: float | None = None
    resumed_from_epoch: int = 0
    run_dir: Path | None = None
    train_indices: np.ndarray | None = None
    val_indices: np.ndarray | None = None


# ---------------------------------------------------------------- validation metric

def dice_scores(probs: np.ndarray, targets: np.ndarray, known: np.ndarray,
                threshold: float = 0.5) -> np.ndarray:
    """2D DSC ``2|A∩B| / (|A|+|B|)`` per (sequence, frame, channel); NaN where unknown, 1 where both empty."""
    pred = probs >= threshold
    ref = targets >= 0.5
    inter = np.sum(pred & ref, axis=(2, 3), dtype=np.float64)
    total = np.sum(pred, axis=(2, 3), dtype=np.float64) + np.sum(ref, axis=(2, 3), dtype=np.float64)
    dsc = np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)
    return np.where(np.asarray(known, bool), dsc, np.nan)


# ---------------------------------------------------------------- data checks and split

def check_training_arrays(images: np.ndarray, targets: np.ndarray, known: np.ndarray) -> None:
    """Raise :class:`InputError` unless the three arrays fit the network-space contract."""
    if images.ndim != 5 or images.shape[-1] != 1:
        raise InputError(f"Training images must be [N, T, H, W, 1], got {images.shape}; "
                         "run preprocessing to make network-space arrays.")
    n, t, h, w, _ = images.shape
    if h % 4 or w % 4:
        raise InputError(f"Training crops of {h}x{w} pixels: H and W must be multiples of 4.")
    if targets.shape != (n, t, h, w, 2):
        raise InputError(f"Targets have shape {targets.shape}; expected {(n, t, h, w, 2)} "
                         "(channels myocardium, blood_pool) to match the images.")
    if known.shape != (n, t, 2):
        raise InputError(f"known has shape {known.shape}; expected {(n, t, 2)}.")
    if not np.asarray(known, bool).any():
        raise InputError("No frame is labelled (known is all False); nothing to train on.")
    if not np.all(np.isfinite(images)):
        raise InputError("Training images hold NaN/Inf values; fix the preprocessing input.")


def split_sequences(n: int, validation_fraction: float, seed: int,
                    groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) sequence indices; by whole groups when ``groups`` is given."""
    rng = np.random.default_rng([int(seed), 7])
    if validation_fraction <= 0:
        return np.arange(n), np.arange(0)
    keys = np.arange(n) if groups is None else np.asarray(groups)
    uniq = np.unique(keys)
    if len(uniq) < 2:
        return np.arange(n), np.arange(0)
    n_val = min(max(1, int(round(validation_fraction * len(uniq)))), len(uniq) - 1)
    val_keys = rng.permutation(uniq)[:n_val]
    is_val = np.isin(keys, val_keys)
    return np.nonzero(~is_val)[0], np.nonzero(is_val)[0]


# ---------------------------------------------------------------- compiling

def _compile(model: keras.Model, lr: float, config: TrainConfig, jit: bool = False
             ) -> keras.optimizers.Optimizer:
    optimizer = keras.optimizers.Adam(learning_rate=lr)
    model.compile(optimizer=optimizer, loss=MaskedSegmentationLoss(config.dice_weight, config.boundary_weight),
                  jit_compile=jit)
    optimizer.build(model.trainable_variables)  # before the first step: avoids a second trace
    return optimizer


# ---------------------------------------------------------------- the epoch loop

@dataclass
class _Stage:
    """What the generic loop needs to know about one stage."""

    name: str
    model: keras.Model           # saved / checkpointed / returned
    trainee: keras.Model         # the model train_on_batch runs on (model or its head)
    n_items: int
    batch_size: int
    make_batch: Callable[[np.ndarray, np.random.Generator], tuple[Any, np.ndarray]]
    validate: Callable[[], float | None]
    extra_state: dict


def _train_loop(stage: _Stage, config: TrainConfig, lr: float, run_dir: Path, fine_tune: bool,
                progress: ProgressFn | None, cancel: CancelFn | None) -> FitResult:
    run_dir.mkdir(parents=True, exist_ok=True)
    optimizer = _compile(stage.trainee, lr, config, jit=config.jit_compile and stage.name == "cnn")
    expect = {"format": checkpoints.CHECKPOINT_FORMAT, "stage": stage.name, "config": config.to_dict(),
              "learning_rate": lr, "n_items": stage.n_items, "fine_tune": fine_tune,
              "rng": "numpy default_rng([seed, stage, epoch(, batch)])", **stage.extra_state}
    state = checkpoints.resume(run_dir, expect, stage.model, optimizer) or {"epoch": 0, "history": []}
    start_epoch, history = int(state["epoch"]), list(state["history"])
    best_val, best_epoch = state.get("best_val_dsc"), state.get("best_epoch")
    stage_id = {"cnn": 1, "rnn": 2}[stage.name]
    batch = min(stage.batch_size, stage.n_items)
    n_batches = -(-stage.n_items // batch)
    timing = {"t0": time.perf_counter(), "done": 0, "steady": 0.0, "steady_n": 0}
    total_batches = (config.epochs - start_epoch) * n_batches

    def report(kind: str, epoch: int, b: int, loss: float, val: float | None) -> None:
        if progress is None:
            return
        per = timing["steady"] / timing["steady_n"] if timing["steady_n"] else \
            (time.perf_counter() - timing["t0"]) / max(timing["done"], 1)
        variant = stage.extra_state["variant"]
        progress(ProgressEvent((epoch - 1 + b / n_batches) / config.epochs,
                               f"{variant} epoch {epoch}/{config.epochs}", kind=kind,
                               eta_s=per * (total_batches - timing["done"]), stage=stage.name, variant=variant,
                               epoch=epoch, epochs=config.epochs, loss=loss, val_dsc=val))

    def check_cancel(epoch: int) -> None:
        if cancel is not None and cancel():
            raise CancelledError(f"Training ({stage.name} stage) cancelled during epoch {epoch}; epochs "
                                 f"1-{epoch - 1} are saved in {run_dir}. Run the same training with "
                                 "this run folder to resume.")

    with ThreadPoolExecutor(max_workers=1) as pool:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            order = np.random.default_rng([config.seed, stage_id, epoch]).permutation(stage.n_items)
            order = np.concatenate([order, order[: n_batches * batch - stage.n_items]])

            def fetch(b: int):
                rng = np.random.default_rng([config.seed, stage_id, epoch, b])
                return stage.make_batch(order[b * batch:(b + 1) * batch], rng)

            pending = pool.submit(fetch, 0)
            losses = []
            for b in range(n_batches):
                check_cancel(epoch)
                x, y = pending.result()
                if b + 1 < n_batches:
                    pending = pool.submit(fetch, b + 1)
                t_step = time.perf_counter()
                loss = stage.trainee.train_on_batch(x, y)
                losses.append(float(np.asarray(loss).reshape(-1)[0]))
                timing["done"] += 1
                if timing["done"] > 1:
                    timing["steady"] += time.perf_counter() - t_step
                    timing["steady_n"] += 1
                report("batch", epoch, b + 1, float(np.mean(losses)), None)
            check_cancel(epoch)
            val = stage.validate()
            record = {"epoch": epoch, "loss": float(np.mean(losses)), "val_dsc": val}
            history.append(record)
            new_best = val is not None and (best_val is None or val > best_val)
            if new_best or (val is None):
                best_val, best_epoch = val, epoch
            checkpoints.write_checkpoint(run_dir, stage.model, optimizer,
                                         {**expect, "epoch": epoch, "history": history,
                                          "best_val_dsc": best_val, "best_epoch": best_epoch},
                                         new_best=new_best)
            report("epoch", epoch, n_batches, record["loss"], val)
    if config.restore_best:
        checkpoints.load_best(run_dir, stage.model)
    checkpoints.save_model(stage.model, run_dir / checkpoints.MODEL)
    return FitResult(model=stage.model, history=history, best_epoch=best_epoch, best_val_dsc=best_val,
                     resumed_from_epoch=start_epoch, run_dir=run_dir)


def _predict(model: keras.Model, x: np.ndarray, batch: int) -> list[np.ndarray]:
    """Each output of ``model`` for ``x``, predicted in fixed-size batches (the last one padded) so
    the graph is traced once."""
    n, parts = x.shape[0], []
    for s in range(0, n, batch):
        idx = np.arange(s, s + batch) % n if n >= batch else np.arange(n)
        pred = model.predict_on_batch(x[idx])
        outputs = pred if isinstance(pred, (list, tuple)) else [pred]
        parts.append([np.asarray(out)[: min(batch, n - s)] for out in outputs])
    return [np.concatenate(out) for out in zip(*parts)]


def _validation_dsc(probs: np.ndarray, targets: np.ndarray, known: np.ndarray) -> float | None:
    scores = dice_scores(probs, targets, known)[..., 0]
    return float(np.nanmean(scores)) if np.isfinite(scores).any() else None


# ---------------------------------------------------------------- stage 1

def fit_cnn(images: np.ndarray, targets: np.ndarray, known: np.ndarray, run_dir: Path,
            config: TrainConfig = TrainConfig(), *, initial: keras.Model | None = None,
            groups: np.ndarray | None = None, progress: ProgressFn | None = None,
            cancel: CancelFn | None = None) -> FitResult:
    """Stage 1: train the CNN on labelled frames (either channel known), one frame per sample.

    ``initial`` (a CNN or an RNN-variant model) makes this fine-tuning: the new CNN
    starts from its weights (the model passed in is not modified).
    """
    check_training_arrays(images, targets, known)
    keras.utils.set_random_seed(config.seed)
    known = np.asarray(known, bool)
    train_idx, val_idx = split_sequences(images.shape[0], config.validation_fraction, config.seed, groups)
    cnn = (networks.cnn_from_model(initial, seed=config.seed) if initial is not None else
           networks.build_cnn(width=config.width, seed=config.seed, units=config.units))
    lr = config.learning_rate or (FINE_TUNE_LEARNING_RATE if initial is not None else LEARNING_RATE)

    def frames(seq_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sub = known[seq_idx].any(axis=-1)
        n, t = np.nonzero(sub)
        return seq_idx[n], t

    tn, tt = frames(train_idx)
    if len(tn) == 0:
        raise InputError("No labelled frame is left for training after the validation split; "
                         "lower validation_fraction or add labelled cases.")
    vn, vt = frames(val_idx)
    aug = AugmentConfig(strength=config.augment_strength, blur_sigma_px=config.augment_blur_px)

    def make_batch(items: np.ndarray, rng: np.random.Generator):
        n, t = tn[items], tt[items]
        x = images[n, t][:, None]
        y = targets[n, t][:, None].astype(np.float32)
        if config.augment:
            x, y = augment_batch(x, y, rng, aug)
        return x, pack_targets(y, known[n, t][:, None])

    val_x = images[vn, vt][:, None] if len(vn) else None

    def validate() -> float | None:
        if val_x is None:
            return None
        probs = _predict(cnn, val_x, config.frames_per_batch)[0]
        return _validation_dsc(probs, targets[vn, vt][:, None], known[vn, vt][:, None])

    stage = _Stage("cnn", cnn, cnn, len(tn), config.frames_per_batch, make_batch, validate,
                   {"variant": "cnn"})
    result = _train_loop(stage, config, lr, Path(run_dir), initial is not None, progress, cancel)
    result.train_indices, result.val_indices = train_idx, val_idx
    return result


# ---------------------------------------------------------------- stage 2

def fit_rnn(images: np.ndarray, targets: np.ndarray, known: np.ndarray, cnn: keras.Model,
            run_dir: Path, config: TrainConfig = TrainConfig(), *, variant: str = "multi_level",
            initial: keras.Model | None = None, groups: np.ndarray | None = None,
            progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> FitResult:
    """Stage 2: freeze ``cnn`` and train the ConvLSTM head of ``variant`` on whole cycles.

    ``initial`` (an RNN-variant model of the same variant) makes this fine-tuning:
    its head weights are the starting point. ``cnn`` itself is never modified.
    """
    check_training_arrays(images, targets, known)
    if variant not in ("one_level", "multi_level"):
        raise InputError(f"fit_rnn trains 'one_level' or 'multi_level', not {variant!r}.")
    keras.utils.set_random_seed(config.seed)
    known = np.asarray(known, bool)
    train_idx, val_idx = split_sequences(images.shape[0], config.validation_fraction, config.seed, groups)
    train_idx = train_idx[known[train_idx].any(axis=(1, 2))]
    val_idx = val_idx[known[val_idx].any(axis=(1, 2))]
    if len(train_idx) == 0:
        raise InputError("No labelled cycle is left for training after the validation split; "
                         "lower validation_fraction or add labelled cases.")
    frozen = networks.cnn_from_model(cnn, seed=config.seed)
    model = networks.build_model(variant, frozen, seed=config.seed,
                                 circular_passes=config.circular_passes)
    features, head = networks.model_parts(model)
    if initial is not None:
        if initial.name != variant:
            raise InputError(f"Cannot fine-tune a {variant} model from a {initial.name} model.")
        head.set_weights(networks.model_parts(initial)[1].get_weights())
    lr = config.learning_rate or (FINE_TUNE_LEARNING_RATE if initial is not None else LEARNING_RATE)
    n, t, h, w, _ = images.shape
    width = networks.cnn_width(frozen)
    cache_mb = len(train_idx) * t * h * w * width * (2 / 4 + 4 / 16) * 4 / 2**20
    use_cache = not config.augment and cache_mb <= config.feature_cache_mb
    bsz = config.sequences_per_batch
    aug = AugmentConfig(strength=config.augment_strength, blur_sigma_px=config.augment_blur_px)
    if use_cache:
        f_half, f_quarter = _predict(features, images[train_idx], bsz)

    def make_batch(items: np.ndarray, rng: np.random.Generator):
        seq = train_idx[items]
        y = targets[seq].astype(np.float32)
        if use_cache:
            return [f_half[items], f_quarter[items]], pack_targets(y, known[seq])
        x = images[seq]
        if config.augment:
            x, y = augment_batch(x, y, rng, aug)
        return x, pack_targets(y, known[seq])

    def validate() -> float | None:
        if len(val_idx) == 0:
            return None
        probs = _predict(model, images[val_idx], bsz)[0]
        return _validation_dsc(probs, targets[val_idx], known[val_idx])

    stage = _Stage("rnn", model, head if use_cache else model, len(train_idx), bsz, make_batch,
                   validate, {"variant": variant, "feature_cache": bool(use_cache)})
    result = _train_loop(stage, config, lr, Path(run_dir), initial is not None, progress, cancel)
    result.train_indices, result.val_indices = train_idx, val_idx
    return result
