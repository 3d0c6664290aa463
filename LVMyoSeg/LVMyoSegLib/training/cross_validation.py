"""Patient-level k-fold cross-validation of the CNN (stage 1) over many hearts.

Data: the labelled ED/ES frames of many patients (:mod:`LVMyoSegLib.training.edes`) and,
optionally, an LVMyoSeg dataset of whole cines whose case ids are patient ids of
the same patients. Folds are made on patient ids, stratified by pathology group,
with the cine patients spread one per fold (:func:`LVMyoSegLib.training.patient_split.stratified_folds`),
so fold ``k``'s CNN can serve as the stage-1 CNN of the leave-one-cine-out run for
its cine patient (:func:`LVMyoSegLib.training.experiments.run_loo` with ``stage_one``).

Stage 1 of fold ``k`` trains on every frame of the other folds' patients: a patient
with a whole cine contributes its cine's labelled frames (with the known-empty
slices above the base, :mod:`LVMyoSegLib.training.outside_lv`) instead of its ED/ES frames,
which are the same expert frames: no frame counts twice. The held-out patients'
ED/ES frames are scored on their own 256x256 grids at the nominal spacing:
myocardium at ED, blood pool at ED and ES (:func:`LVMyoSegLib.analysis.metrics.slice_metrics`).

With ``members`` > 1 each fold trains an ensemble (member ``i`` with seed ``seed + i``) and
scores it as the product predicts (mean probabilities, :func:`~LVMyoSegLib.model.ensemble.predict_ensemble`),
and member 0 alone beside it: the ensemble's gain on held-out patients (issue 14, item 4).
Member 0 is the CNN a 1-member run of the same settings trains, so a 1-member fold's
``cnn`` folder, with its ``checkpoint`` folder (which holds the settings checked on resume), may
be copied in to save its training.

Resumable as :func:`~LVMyoSegLib.training.experiments.run_loo`: stage 1 checkpoints every
epoch, and a fold whose ``fold_<k>.json`` exists is not run again. Outputs in
``out_dir``: ``settings.json``, ``fold_<k>/cnn/model.keras`` (member 0; member ``i`` in
``fold_<k>/cnn_<i>``), ``fold_<k>.json`` (every per-slice record; with members, member 0's
under ``records_member_0``), ``cv_results.json`` and ``cv_table.md``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..analysis.evaluation import POSITION_METRICS, case_summary, format_cell
from ..analysis.metrics import slice_metrics
from ..errors import InputError
from ..files import read_json, write_json_atomic, write_text_atomic
from ..io.dataset import dataset_hash, list_cases, read_case
from ..labels import BLOOD_POOL, MYOCARDIUM, labels_from_probabilities
from ..model.ensemble import predict_ensemble
from ..progress import ProgressFn, part
from . import edes
from .experiments import WALL_TIME_FILE, ExperimentConfig, RunClock, check_settings, prepare_case
from .loop import fit_cnn
from .patient_split import stratified_folds
from .stage_one_frames import stage_one_arrays

CV_COLUMNS = (*((key, f"Myo {label}") for key, label in POSITION_METRICS),
              ("pool_dsc_ed", "Pool DSC ED"), ("pool_dsc_es", "Pool DSC ES"))


def score_frames(models: Sequence, frames: edes.NetworkFrames, threshold: float,
                 groups: dict[str, str], rotations: int = 1) -> list[dict]:
    """Per-frame records (myocardium where known, blood pool) of ``models`` on ED/ES ``frames``."""
    probs = edes.to_frame_grid(predict_ensemble(models, frames.x, rotations=rotations), frames)
    spacing = (edes.NOMINAL_SPACING_MM,) * 2
    records = []
    for k, f in enumerate(frames.frames):
        auto = labels_from_probabilities(probs[k], threshold)
        base = {"case": f.patient, "group": groups[f.patient], "slice": f.slice, "frame": f.kind}
        if f.known[0]:
            records.append({**base, "channel": "myocardium",
                            **slice_metrics(auto == MYOCARDIUM, f.label_map == MYOCARDIUM, spacing, ring=True)})
        records.append({**base, "channel": "blood_pool", "phase": f.kind,
                        **slice_metrics(auto == BLOOD_POOL, f.label_map == BLOOD_POOL, spacing)})
    return records


def run_cv(edes_root: Path, out_dir: Path, config: ExperimentConfig, *, cine_dataset: Path | None = None,
           n_folds: int = 6, fold_seed: int = 0, folds_to_run: Sequence[int] | None = None,
           progress: ProgressFn | None = None, cancel: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Run (or resume) the cross-validation; returns the summary written to ``cv_results.json``."""
    out_dir = Path(out_dir)
    everyone = edes.read_edes(edes_root)
    groups = {p.patient_id: p.group for p in everyone}  # folds are made over every patient ...
    patients, excluded = edes.usable_patients(everyone)  # ... but misregistered ones neither train nor score
    cine_ids = list_cases(cine_dataset) if cine_dataset is not None else []
    strangers = sorted(set(cine_ids) - set(patients))
    if strangers:
        raise InputError(f"Cine cases {', '.join(strangers)} have no ED/ES frames in {edes_root}; the "
                         "cross-validation folds are made over the ED/ES patients.")
    folds = stratified_folds(groups, n_folds, fold_seed, spread=cine_ids)
    settings = {"edes": Path(edes_root).name, "cine_dataset": None if cine_dataset is None else Path(cine_dataset).name,
                "cine_dataset_sha256": None if cine_dataset is None else dataset_hash(cine_dataset),
                "folds": folds, "groups": groups, "excluded": excluded, "cnn": config.cnn.to_dict(),
                "preprocessing": config.preprocessing, "threshold": config.threshold,
                **({"rotations": config.rotations} if config.rotations != 1 else {}),
                **({"members": config.members} if config.members > 1 else {})}  # 1 view, 1 member: as before
    out_dir.mkdir(parents=True, exist_ok=True)  # only once the inputs are read and checked
    check_settings(out_dir / "settings.json", settings)
    cines = {cid: prepare_case(read_case(cine_dataset, cid), config.preprocessing) for cid in cine_ids}
    todo = [k for k in range(len(folds)) if (folds_to_run is None or k in folds_to_run)
            and not (out_dir / f"fold_{k}.json").is_file()]
    for i, k in enumerate(todo):  # progress and its ETA: this command's folds, not all of them
        fold = folds[k]
        train_ids = [p for j, f in enumerate(folds) if j != k for p in f if p not in excluded]
        test_ids = [p for p in fold if p not in excluded]
        x, y, known, ids = stage_one_arrays(train_ids, patients, cines, config.preprocessing, test_ids=fold)
        clock = RunClock(out_dir / f"fold_{k}" / WALL_TIME_FILE)
        tagged = part(progress, i / len(todo), 1 / len(todo), f"fold {k + 1}/{n_folds} ({len(fold)} patients)",
                      fold=k, folds=n_folds, case=f"{len(fold)} patients")
        fits = [fit_cnn(x, y, known, out_dir / f"fold_{k}" / ("cnn" if m == 0 else f"cnn_{m}"),
                        dataclasses.replace(config.cnn, seed=config.cnn.seed + m), groups=ids,
                        progress=part(clock.tracking(tagged), m / config.members, 1 / config.members,
                                      f"member {m + 1}/{config.members}", member=m, members=config.members),
                        cancel=cancel) for m in range(config.members)]
        test = edes.concat_frames([edes.patient_frames(patients[p], config.preprocessing["pixel_mm"],
                                                       config.preprocessing["crop_size"]) for p in test_ids])
        records = score_frames([f.model for f in fits], test, config.threshold, groups, config.rotations)
        alone = {}
        if config.members > 1:
            single = score_frames([fits[0].model], test, config.threshold, groups, config.rotations)
            alone = {"records_member_0": single, "summary_member_0": case_summary(single)}
        write_json_atomic(out_dir / f"fold_{k}.json", {
            "fold": k, "patients": test_ids, "train_frames": len(x), "best_epoch": fits[0].best_epoch,
            "records": records, "summary": case_summary(records), **alone, "wall_time_s": round(clock.save(), 1)})
    return summarise_cv(out_dir)


def summarise_cv(out_dir: Path) -> dict[str, Any]:
    """Collect the finished folds into ``cv_results.json`` and ``cv_table.md``."""
    out_dir = Path(out_dir)
    settings = read_json(out_dir / "settings.json", "Give the folder `lvmyoseg cv -o` wrote.")
    folds = [read_json(out_dir / f"fold_{k}.json", "Delete it to run that fold again.")
             for k in range(len(settings["folds"])) if (out_dir / f"fold_{k}.json").is_file()]
    records = [r for f in folds for r in f["records"]]
    by_group = {g: case_summary([r for r in records if r["group"] == g])
                for g in sorted({r["group"] for r in records})}
    results = {"settings": settings, "folds_done": len(folds), "folds_total": len(settings["folds"]),
               "overall": case_summary(records), "by_group": by_group,
               "by_fold": {f["fold"]: f["summary"] for f in folds},
               "fold_wall_time_s": {f["fold"]: f["wall_time_s"] for f in folds}}
    members = int(settings.get("members", 1))
    if members > 1:  # the same folds' patients, member 0 alone and the ensemble
        single = [r for f in folds for r in f["records_member_0"]]
        results["ensemble_gain"] = {"members": members, "member_0": case_summary(single),
                                    "ensemble": results["overall"]}
    write_json_atomic(out_dir / "cv_results.json", results)
    header = "| | patients | " + " | ".join(label for _, label in CV_COLUMNS) + " |"
    lines = [f"Patient-level cross-validation of the CNN: {len(folds)} of {len(settings['folds'])} folds, "
             "slice-wise mean (sd), nominal spacing "
             f"{edes.NOMINAL_SPACING_MM} mm.", "", header, "|---|---|" + "---|" * len(CV_COLUMNS)]

    def row(name: str, n: int, summary: dict) -> str:
        return f"| {name} | {n} | " + " | ".join(format_cell(summary[key]) for key, _ in CV_COLUMNS) + " |"

    lines[1:1] = [f"Excluded (neither trained on nor scored): {pid}, {why}"
                  for pid, why in settings.get("excluded", {}).items()]
    for f in folds:
        lines.append(row(f"fold {f['fold']}", len(f["patients"]), f["summary"]))
    for g, summary in by_group.items():
        lines.append(row(f"group {g}", len({r['case'] for r in records if r['group'] == g}), summary))
    lines.append(row("all", len({r["case"] for r in records}), results["overall"]))
    if members > 1:
        lines[0] += f" Every fold: an ensemble of {members} CNNs; member 0 alone in the last row."
        lines.append(row("all, member 0 alone", len({r["case"] for r in records}),
                         results["ensemble_gain"]["member_0"]))
    write_text_atomic(out_dir / "cv_table.md", "\n".join(lines) + "\n")
    return results
