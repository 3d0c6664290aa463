"""The background jobs of LV Myocardium Trainer: leave-one-out (``lvmyoseg loo``) and training
into a new registered model version (``lvmyoseg train --register``).

What to run is in :mod:`LVMyoSegLib.app.retraining`; this module turns it into
:class:`~LVMyoSegLib.app.jobs.Job` objects, whose progress events go to ``on_progress`` as the command
reports them. No Qt and no MRML: showing the leave-one-out table is a callback. A cancelled job
keeps its finished epochs in its run folder; the same job started again resumes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ..errors import InputError, LVMyoSegError, ModelError
from ..io.dataset import DATASET_MANIFEST, list_cases
from ..model import registry
from ..model.bundle import read_manifest
from . import retraining
from .jobs import Job


def trained_variant(settings: retraining.RetrainSettings, registry_dir: Path) -> str:
    """The network a job trains: the start model's variant when fine-tuning."""
    if not settings.fine_tuning:
        return settings.variant
    manifest = read_manifest(registry.resolve(settings.init, registry_dir))
    if settings.members > len(manifest.members):
        raise InputError(f"The start model '{settings.init}' has {len(manifest.members)} member(s); "
                         f"fine-tuning cannot make {settings.members}. Lower the ensemble members.")
    return manifest.variant


def _cases(settings: retraining.RetrainSettings, minimum: int) -> list[str]:
    cases = list(settings.cases) or list_cases(Path(settings.dataset_dir))
    if len(cases) < minimum:
        raise InputError(f"This needs at least {minimum} selected case(s); {len(cases)} selected in "
                         f"{settings.dataset_dir}.")
    return cases


def _job(kind: str, settings, out_dir: Path, args: list[str], **callbacks) -> Job:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Job(kind, args, out_dir.parent, what="training", inputs={"settings": settings, "out_dir": out_dir},
               **callbacks)


def leave_one_out_job(settings: retraining.RetrainSettings, runs_dir: Path, registry_dir: Path, *,
                      show: Callable[[dict, str], object] | None = None, on_progress=None, on_log=None,
                      on_finished=None) -> Job:
    """``lvmyoseg loo`` over the selected cases (two or more). On success ``job.result`` is
    ``{"results": <loo_results.json>, "summary": str, "shown": show(results, name)}``."""
    _cases(settings, 2)
    trained_variant(settings, registry_dir)  # a start model with too few members is refused now
    out_dir = retraining.job_dir(runs_dir, "loo", settings)

    def collect(job: Job) -> None:
        results = retraining.read_loo_results(out_dir / "loo_results.json")
        name = f"LOO {Path(settings.dataset_dir).name} from {settings.init}"
        job.result = {"results": results, "summary": retraining.loo_summary(results),
                      "shown": show(results, name) if show else None}

    return _job("loo", settings, out_dir, retraining.loo_args(settings, out_dir, registry_dir),
                collect=collect, on_progress=on_progress, on_log=on_log, on_finished=on_finished)


def training_job(settings: retraining.RetrainSettings, runs_dir: Path, registry_dir: Path,
                 model_id: str | None = None, *, on_progress=None, on_log=None, on_finished=None) -> Job:
    """``lvmyoseg train --register`` on the selected cases; on success ``job.result`` is the new
    registry entry. The metrics of a finished leave-one-out run with the same settings go into the
    manifest. A bad or existing ``model_id`` is refused now, not after hours of training."""
    _cases(settings, 1)
    trained_variant(settings, registry_dir)  # a start model with too few members is refused now
    model_id = model_id or retraining.default_model_id(settings.dataset_dir, time.strftime("%Y%m%d-%H%M%S"))
    registry.new_model_dir(registry_dir, model_id)
    loo_file = retraining.job_dir(runs_dir, "loo", settings) / "loo_results.json"
    use_loo = None
    if loo_file.is_file():
        loo = retraining.read_loo_results(loo_file)
        if loo.get("folds_done") == loo.get("folds_total"):
            use_loo = loo_file
    out_dir = retraining.job_dir(runs_dir, "train", settings)

    def collect(job: Job) -> None:
        entry = next((e for e in registry.list_models(registry_dir, include_bundled=False)
                      if e.model_id == model_id and not e.problem), None)
        if entry is None:
            raise ModelError(f"Training finished but model version '{model_id}' is not in the registry "
                             f"{registry_dir}; see the log.")
        job.result = entry

    args = retraining.train_args(settings, out_dir, registry_dir, model_id, loo_results=use_loo)
    return _job("train", settings, out_dir, args, collect=collect, on_progress=on_progress, on_log=on_log,
                on_finished=on_finished)


def dataset_cases(folder: Path | None) -> tuple[list[str], str]:
    """The case ids of a dataset folder, and what to tell the user when there are none to list."""
    if folder is None:
        return [], "Pick a dataset folder (a new, empty folder starts a dataset)."
    if not (Path(folder) / DATASET_MANIFEST).is_file():
        return [], f"{folder} holds no dataset yet; add cases to start one."
    try:
        return list_cases(Path(folder)), ""
    except LVMyoSegError as exc:
        return [], str(exc)
