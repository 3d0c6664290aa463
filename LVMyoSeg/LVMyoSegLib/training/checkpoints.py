"""Checkpoints of a training stage: written every epoch, read back to resume.

A stage's run folder holds ``checkpoint/`` with the weights (``model.weights.h5``), the
optimizer state (``optimizer.npz``), the best epoch's weights (``best.weights.h5``) and
``state.json`` (epoch, history, config, what the stage is). The four files change together:
they are written into ``checkpoint.tmp/``, which then takes the place of ``checkpoint/``
(the previous one is ``checkpoint.old/`` for that moment, and is read if a run was killed
then). The finished stage's model is ``model.keras``, written atomically.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np

from ..errors import InputError
from ..files import atomic_path

CHECKPOINT_FORMAT = 1
WEIGHTS, OPTIMIZER, BEST, STATE = "model.weights.h5", "optimizer.npz", "best.weights.h5", "state.json"
MODEL = "model.keras"  # a finished stage's model, beside its checkpoint folder


def checkpoint_dir(run_dir: Path) -> Path | None:
    """The folder of the last checkpoint in ``run_dir``; None when there is none."""
    for name in ("checkpoint", "checkpoint.old"):
        if (run_dir / name / STATE).is_file():
            return run_dir / name
    return None


def write_checkpoint(run_dir: Path, model: keras.Model, optimizer: keras.optimizers.Optimizer, state: dict,
                     new_best: bool) -> None:
    """Replace the checkpoint of ``run_dir`` with this epoch's (``new_best``: its weights are the best so far)."""
    tmp, final, old = run_dir / "checkpoint.tmp", run_dir / "checkpoint", run_dir / "checkpoint.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_weights(tmp / WEIGHTS)
    np.savez(tmp / OPTIMIZER, *[np.asarray(v) for v in optimizer.variables])
    previous = checkpoint_dir(run_dir)
    if new_best:
        shutil.copyfile(tmp / WEIGHTS, tmp / BEST)
    elif previous is not None and (previous / BEST).is_file():
        shutil.copyfile(previous / BEST, tmp / BEST)
    (tmp / STATE).write_text(json.dumps(state, indent=1), encoding="utf-8")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _damaged(path: Path, exc: BaseException) -> InputError:
    return InputError(f"The training checkpoint file {path} is damaged ({type(exc).__name__}: {exc}); the "
                      "run was probably killed while writing it, or the disk was full. To restart this "
                      f"training stage from its first epoch, delete the folder {path.parent} and run the same "
                      "command again (finished stages and folds in the run folder are kept).")


def _read_state(ckpt: Path) -> dict:
    path = ckpt / STATE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        int(state["epoch"]), list(state["history"]), dict(state["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _damaged(path, exc) from None
    return state


def _check_same_training(state: dict, expect: dict, ckpt: Path) -> None:
    diff = sorted(k for k in set(state["config"]) | set(expect["config"])
                  if k != "epochs" and state["config"].get(k) != expect["config"].get(k))
    for key in ("stage", "variant", "learning_rate", "n_items", "fine_tune"):
        if state.get(key) != expect.get(key):
            diff.append(key)
    if diff:
        raise InputError(f"The run folder {ckpt.parent} holds a checkpoint of a different training "
                         f"(differs in: {', '.join(diff)}). Use a new run folder, or delete this one "
                         "to start over.")


def _restore(ckpt: Path, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
    path = ckpt / WEIGHTS
    try:
        model.load_weights(path)
        path = ckpt / OPTIMIZER
        with np.load(path) as saved:
            values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    except Exception as exc:  # h5py, zipfile and numpy each raise their own kinds for a truncated file
        raise _damaged(path, exc) from None
    if len(values) != len(optimizer.variables) or any(
            tuple(v.shape) != tuple(a.shape) for v, a in zip(optimizer.variables, values)):
        raise InputError(f"Optimizer state in {ckpt} does not fit this model; the run folder belongs "
                         "to another network. Choose a new run folder.")
    for var, value in zip(optimizer.variables, values):
        var.assign(value)


def resume(run_dir: Path, expect: dict, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> dict | None:
    """The state of ``run_dir``'s checkpoint with its weights and optimizer state restored into
    ``model`` and ``optimizer``; None when there is no checkpoint. Raises :class:`InputError` for a
    checkpoint of another training (``expect``: this one's state without the epoch's entries), a
    damaged one (named, with how to restart the stage), or a finished model without its checkpoint
    (it would be trained again and replaced, without its settings ever being checked)."""
    ckpt = checkpoint_dir(run_dir)
    if ckpt is None and (run_dir / MODEL).is_file():
        raise InputError(f"{run_dir / MODEL} is a finished model whose checkpoint folder ({run_dir / 'checkpoint'}) "
                         "is missing, so its training settings cannot be checked. Restore that folder to keep "
                         f"the model, or move {MODEL} away to train this stage again.")
    if ckpt is None:
        return None
    state = _read_state(ckpt)
    _check_same_training(state, expect, ckpt)
    _restore(ckpt, model, optimizer)
    return state


def load_best(run_dir: Path, model: keras.Model) -> None:
    """Put the best epoch's weights of ``run_dir``'s checkpoint into ``model`` (when it has them)."""
    ckpt = checkpoint_dir(run_dir)
    if ckpt is not None and (ckpt / BEST).is_file():
        model.load_weights(ckpt / BEST)


def save_model(model: keras.Model, path: Path) -> None:
    """Save ``model`` to ``path`` (``.keras``) so the file appears whole or not at all."""
    with atomic_path(path, suffix=".keras") as tmp:  # Keras goes by the extension
        model.save(tmp)
