"""Retraining jobs of the LV Myocardium Trainer, without Qt: what to run and how to read it back.

- :class:`RetrainSettings` -> the ``lvmyoseg loo`` / ``lvmyoseg train`` argument lists
  (:func:`loo_args`, :func:`train_args`); run folders named by a hash of the settings and
  the dataset manifest (:func:`job_dir`), so running the same job again resumes it.
- The ETA as the Trainer shows it (:func:`format_eta`); the training commands report each
  finished epoch as a progress event (:mod:`LVMyoSegLib.progress`) with the fraction of the
  whole job (epochs over all folds, members and stages) and its measured time left.
- ``loo_results.json`` -> per-case DSC / HD / APD columns, before vs after
  (:func:`loo_table_columns`), which :func:`LVMyoSegLib.mrml.table_from_columns` puts in a
  table node.
- Cases for a dataset: :func:`import_cases` (from another dataset folder, never
  overwriting), :func:`scene_labels` (a cine and a user segmentation in the scene).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, LVMyoSegError
from ..files import read_json
from ..model.variants import VARIANTS

INIT_SCRATCH = "scratch"


@dataclass(frozen=True)
class RetrainSettings:
    """What to retrain on and how.

    ``init``: ``"bundled"``, ``"scratch"``, a registered model id or a bundle folder.
    ``variant``: network trained from scratch (fine-tuning keeps the start model's).
    ``cases``: the case ids to use (empty: every case of the dataset).
    ``extra_args``: further command-line options (e.g. ``("--width", "8")``).
    """

    dataset_dir: Path
    init: str = "bundled"
    variant: str = "multi_level"
    members: int = 1
    cnn_epochs: int = 60
    rnn_epochs: int = 20
    cases: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise InputError(f"Unknown network variant {self.variant!r}; choose one of {', '.join(VARIANTS)}.")
        if self.members < 1 or self.cnn_epochs < 1 or self.rnn_epochs < 1:
            raise InputError("Members and epochs must be at least 1.")
        if not str(self.init).strip():
            raise InputError("Say where training starts: 'bundled', 'scratch', a model id or a bundle folder.")
        object.__setattr__(self, "dataset_dir", Path(self.dataset_dir))
        object.__setattr__(self, "cases", tuple(self.cases))
        object.__setattr__(self, "extra_args", tuple(str(a) for a in self.extra_args))

    @property
    def fine_tuning(self) -> bool:
        return self.init != INIT_SCRATCH

    def key(self) -> str:
        """Short hash of the settings and the dataset manifest (names run folders)."""
        from ..io.dataset import dataset_hash

        data = {"dataset": str(self.dataset_dir.resolve()), "dataset_sha256": dataset_hash(self.dataset_dir),
                "init": self.init, "variant": "" if self.fine_tuning else self.variant,
                "members": self.members, "cnn_epochs": self.cnn_epochs, "rnn_epochs": self.rnn_epochs,
                "cases": sorted(self.cases), "extra": list(self.extra_args)}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


def job_dir(runs_root: Path, kind: str, settings: RetrainSettings) -> Path:
    """``runs_root/<kind>-<dataset name>-<settings key>``: the same job gets the same folder (resume)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", settings.dataset_dir.resolve().name)[:40] or "dataset"
    return Path(runs_root) / f"{kind}-{name}-{settings.key()}"


def _id_from(text: str, limit: int, fallback: str) -> str:
    """``text`` as an id: runs of other characters than letters, digits, ``._-`` become ``_``;
    no leading/trailing ``._-``; at most ``limit`` characters; ``fallback`` when nothing is left."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[:limit] or fallback


def default_model_id(dataset_dir: Path, stamp: str) -> str:
    """``<dataset folder name>-<stamp>`` made into a valid model id."""
    name = _id_from(Path(dataset_dir).resolve().name, 60, "model")
    return f"{name}-{re.sub(r'[^A-Za-z0-9._-]+', '_', stamp)}"


def _common_args(settings: RetrainSettings, registry_dir: Path) -> list[str]:
    args = ["--init", settings.init, "--registry", str(registry_dir), "--members", str(settings.members),
            "--cnn-epochs", str(settings.cnn_epochs), "--rnn-epochs", str(settings.rnn_epochs)]
    if settings.cases:
        args += ["--cases", ",".join(settings.cases)]
    return args + list(settings.extra_args) + ["--progress-lines"]


def loo_args(settings: RetrainSettings, out_dir: Path, registry_dir: Path) -> list[str]:
    """Arguments of ``lvmyoseg loo`` (fine-tuning: before vs after; scratch: the variant)."""
    args = ["loo", str(settings.dataset_dir), "-o", str(out_dir)]
    if not settings.fine_tuning:
        args += ["--variants", settings.variant]
    return args + _common_args(settings, registry_dir)


def train_args(settings: RetrainSettings, checkpoint_dir: Path, registry_dir: Path, model_id: str,
               loo_results: Path | None = None) -> list[str]:
    """Arguments of ``lvmyoseg train --register`` (the new version goes into the registry)."""
    args = ["train", str(settings.dataset_dir), "--register", "--model-id", model_id,
            "--run-dir", str(checkpoint_dir), "--variant", settings.variant]
    if loo_results is not None:
        args += ["--loo-results", str(loo_results)]
    return args + _common_args(settings, registry_dir)


# ------------------------------------------------------------------ progress


def format_eta(seconds: float | None) -> str:
    """``"ETA 1 h 05 min"`` / ``"ETA 4 min"`` / ``"ETA < 1 min"`` / ``""``."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    minutes = int(round(seconds / 60))
    if minutes < 1:
        return "ETA < 1 min"
    return f"ETA {minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"ETA {minutes} min"


# ------------------------------------------------------------------ results


def read_loo_results(path: Path) -> dict[str, Any]:
    """``loo_results.json`` of a leave-one-out run, checked for the entries the table needs."""
    results = read_json(path, "Run the leave-one-out again.")
    if not isinstance(results, dict) or not isinstance(results.get("folds"), list) or \
            not isinstance(results.get("overall"), dict):
        raise InputError(f"{path} lacks 'folds'/'overall'; it is not an lvmyoseg loo results file.")
    return results


def result_names(results: dict[str, Any]) -> list[str]:
    """Scored models of a LOO run: ``["before", "after"]`` when fine-tuning, else the variants."""
    names: list[str] = []
    for fold in results["folds"]:
        names += [n for n in fold.get("summary", {}) if n not in names]
    order = {"before": 0, "after": 1}
    return sorted(names, key=lambda n: order.get(n, 2))


def _table_metrics() -> list[tuple[str, str, str]]:
    """``(key, title, unit)`` of the per-case table's metrics: those of the leave-one-out table by
    slice position, their labels split ("HD (mm)" -> "HD", "mm")."""
    from ..analysis.evaluation import POSITION_METRICS

    metrics = []
    for key, label in POSITION_METRICS:
        title, _, unit = label.removesuffix(")").partition(" (")
        metrics.append((key, title, unit))
    return metrics


def loo_table_columns(results: dict[str, Any]) -> tuple[dict[str, list], dict[str, str]]:
    """Columns (name -> values) and units of the per-case table; the last row is the mean over folds.

    Each held-out case has one row: its slice-wise mean DSC, HD and APD of the myocardium
    for every scored model (``"DSC before"``, ``"DSC after"``, ...) and the number of slices.
    """
    names = result_names(results)
    metrics = _table_metrics()
    columns: dict[str, list] = {"case": [], "slices": []}
    units: dict[str, str] = {"case": "", "slices": ""}
    for key, title, unit in metrics:
        for name in names:
            columns[f"{title} {name}"] = []
            units[f"{title} {name}"] = unit

    def value(stat: Any) -> float:
        mean = stat.get("mean") if isinstance(stat, dict) else None
        return float(mean) if isinstance(mean, (int, float)) else float("nan")

    for fold in results["folds"]:
        summary = fold.get("summary", {})
        columns["case"].append(str(fold.get("case", "?")))
        first = summary.get(names[0], {}) if names else {}
        columns["slices"].append(float(first.get("dsc", {}).get("n", float("nan"))))
        for key, title, _ in metrics:
            for name in names:
                columns[f"{title} {name}"].append(value(summary.get(name, {}).get(key)))
    overall = results.get("overall", {})
    columns["case"].append(f"mean of {len(results['folds'])} folds")
    columns["slices"].append(float(np.nansum(columns["slices"])) if results["folds"] else float("nan"))
    for key, title, _ in metrics:
        for name in names:
            columns[f"{title} {name}"].append(value(overall.get(name, {}).get(key)))
    return columns, units


def loo_summary(results: dict[str, Any]) -> str:
    """One line: ``"Held-out DSC 0.620 before -> 0.810 after (3/3 folds)"``."""
    names = result_names(results)
    overall = results.get("overall", {})
    dsc = {n: overall.get(n, {}).get("dsc", {}).get("mean") for n in names}
    done = f"({results.get('folds_done', len(results['folds']))}/{results.get('folds_total', '?')} folds)"
    if "before" in dsc and "after" in dsc and dsc["before"] is not None and dsc["after"] is not None:
        return f"Held-out DSC {dsc['before']:.3f} before -> {dsc['after']:.3f} after {done}"
    parts = [f"{n} {v:.3f}" for n, v in dsc.items() if isinstance(v, (int, float))]
    return f"Held-out DSC: {', '.join(parts) or 'n/a'} {done}"


# ------------------------------------------------------------------ cases


@dataclass(frozen=True)
class ImportReport:
    """Outcome of :func:`import_cases`: ids added, and (id, reason) of the cases left out."""

    added: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]


def import_cases(source_dir: Path, dataset_dir: Path, case_ids: Sequence[str] | None = None) -> ImportReport:
    """Add the cases of dataset ``source_dir`` to ``dataset_dir`` (verified, never overwriting).

    A case whose id exists already, or which fails verification, is left out with the reason.
    """
    from ..io.dataset import DATASET_MANIFEST, add_case, list_cases, read_case

    source_dir, dataset_dir = Path(source_dir), Path(dataset_dir)
    if source_dir.resolve() == dataset_dir.resolve():
        raise InputError(f"{source_dir} is the dataset itself; choose another folder to add cases from.")
    wanted = list(case_ids) if case_ids else list_cases(source_dir)
    present = set(list_cases(dataset_dir)) if (dataset_dir / DATASET_MANIFEST).is_file() else set()
    added, skipped = [], []
    for case_id in wanted:
        if case_id in present:
            skipped.append((case_id, f"a case {case_id} exists already in {dataset_dir}"))
            continue
        try:
            case = read_case(source_dir, case_id)
            add_case(dataset_dir, case_id, case.cine, case.labels, source=case.info.get("source", ""),
                     edited_frames=case.info.get("edited_frames") or None,
                     notes=f"copied from {source_dir}. {case.info.get('notes', '')}".strip(),
                     complete_stacks=bool(case.info.get("complete_stacks")))
        except LVMyoSegError as exc:
            skipped.append((case_id, str(exc)))
            continue
        added.append(case_id)
    return ImportReport(tuple(added), tuple(skipped))


def unique_case_id(dataset_dir: Path, name: str) -> str:
    """A valid case id made from ``name`` that is not used in ``dataset_dir`` yet."""
    from ..io.dataset import DATASET_MANIFEST, list_cases

    base = _id_from(name, 80, "case")
    dataset_dir = Path(dataset_dir)
    existing = set(list_cases(dataset_dir)) if (dataset_dir / DATASET_MANIFEST).is_file() else set()
    case_id, n = base, 2
    while case_id in existing or (dataset_dir / "cases" / case_id).exists():
        case_id, n = f"{base}_{n}", n + 1
    return case_id


def known_from_label_map(label_map: np.ndarray) -> np.ndarray:
    """``known [T, Z, 2]``: both channels labelled on every slice holding any LV label."""
    drawn = np.asarray(label_map).any(axis=(2, 3))
    return np.repeat(drawn[:, :, None], 2, axis=2)
