"""Held-out accuracy with 1, 2 or 4 rotation views (:mod:`LVMyoSegLib.model.rotations`), re-scoring
the models of finished runs: a cross-validation run's fold CNNs on their held-out ED/ES
frames, and a leave-one-out run's fold models on their held-out cines.

Usage: python tools/rotation_study.py --cv docs/results/cv36_v1 --edes ../shared/data/sunnybrook-edes \\
           [--members 1,5] [--each-member 5] [--by-fold]
           [--loo runs/loo36 --dataset runs/sunnybrook_dataset --cv-run runs/cv36]

The leave-one-out models are not committed (their fold folders are ~70 MB each); ``--cv-run``
is the cross-validation run that gave the leave-one-out run its stage 1 (``loo --stage-one``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from LVMyoSegLib.analysis.evaluation import case_summary, evaluate_case
from LVMyoSegLib.files import read_json
from LVMyoSegLib.io.dataset import read_case
from LVMyoSegLib.model.bundle import load_keras_file
from LVMyoSegLib.training import edes
from LVMyoSegLib.training.cross_validation import score_frames
from LVMyoSegLib.training.experiments import predict_case, prepare_case
from LVMyoSegLib.training.stage_one_frames import fold_cnn_paths

KEYS = ("dsc", "hd_mm", "apd_mm", "pool_dsc_ed", "pool_dsc_es")


def cross_validation(cv: Path, root: Path, views: int, members: int = 1,
                     alone: int | None = None) -> dict[str, dict[str, float]]:
    """Slice-wise means per finished fold ("fold k") and over all of them ("all") of the held-out
    patients, predicted by the mean of the fold's first ``members`` CNNs, or by its CNN number
    ``alone`` only."""
    settings = read_json(cv / "settings.json", "Give a folder `lvmyoseg cv` wrote.")
    patients, excluded = edes.usable_patients(edes.read_edes(root))
    pre = settings["preprocessing"]
    by_fold: dict[str, list] = {}
    for k, fold in enumerate(settings["folds"]):
        if not (cv / f"fold_{k}.json").is_file():
            continue
        test = edes.concat_frames([edes.patient_frames(patients[p], pre["pixel_mm"], pre["crop_size"])
                                   for p in fold if p not in excluded])
        paths = fold_cnn_paths(cv, fold[0], members if alone is None else alone + 1)
        models = [load_keras_file(p) for p in (paths if alone is None else [paths[alone]])]
        by_fold[f"fold {k}"] = score_frames(models, test, settings["threshold"], settings["groups"], views)
    by_fold["all"] = [r for records in by_fold.values() for r in records]
    summaries = {name: case_summary(records) for name, records in by_fold.items()}
    return {name: {k: summary[k]["mean"] for k in KEYS} for name, summary in summaries.items()}


def leave_one_out(loo: Path, dataset: Path, cv_run: Path, variant: str, views: int,
                  member: int = 0) -> dict[str, float]:
    """Means over finished folds of the held-out cine's slice-wise means (as `lvmyoseg loo`
    averages), predicted by the fold's member ``member`` alone."""
    settings = read_json(loo / "settings.json", "Give a folder `lvmyoseg loo` wrote.")
    per_fold = []
    for case_id in settings["cases"]:
        fold = loo / f"fold_{case_id}"
        if not (loo / f"fold_{case_id}.json").is_file():
            continue
        path = (fold_cnn_paths(cv_run, case_id, member + 1)[member] if variant == "cnn"
                else fold / f"member_{member}" / f"rnn_{variant}" / "model.keras")
        prepared = prepare_case(read_case(dataset, case_id), settings["preprocessing"])
        _, label_map = predict_case([load_keras_file(path)], prepared, settings["threshold"], views)
        summary = case_summary(evaluate_case(label_map, prepared.case.labels, prepared.case.cine.geometry, case_id))
        per_fold.append([summary[k]["mean"] for k in KEYS[:3]])
    return dict(zip(KEYS[:3], np.mean(per_fold, axis=0).tolist()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cv", type=Path, help="an `lvmyoseg cv` run folder")
    ap.add_argument("--edes", type=Path, help="the ED/ES frames it used")
    ap.add_argument("--loo", type=Path, help="an `lvmyoseg loo --stage-one` run folder")
    ap.add_argument("--dataset", type=Path, help="the cine dataset it used")
    ap.add_argument("--cv-run", type=Path, help="its --stage-one cross-validation run")
    ap.add_argument("--variants", default="cnn,multi_level")
    ap.add_argument("--views", default="1,4", help="comma-separated view counts to score (1, 2, 4)")
    ap.add_argument("--members", default="1",
                    help="comma-separated CV ensemble sizes to score (the fold's first N CNNs)")
    ap.add_argument("--each-member", type=int, default=0, metavar="N",
                    help="also score each of the fold's first N members alone (CV: its CNNs; LOO: its models)")
    ap.add_argument("--by-fold", action="store_true", help="a row per CV fold besides the mean over all")
    args = ap.parse_args()
    print("| run | views | " + " | ".join(KEYS) + " |\n|---|---|" + "---|" * len(KEYS))
    rows, views = [], [int(v) for v in args.views.split(",")]
    if args.cv:
        scored = [(f"{n} member(s)", v, cross_validation(args.cv, args.edes, v, n))
                  for n in (int(m) for m in args.members.split(",")) for v in views]
        scored += [(f"member {i} alone", v, cross_validation(args.cv, args.edes, v, alone=i))
                   for i in range(args.each_member) for v in views]
        rows += [(f"CV {args.cv.name}, {who}" + ("" if part == "all" else f", {part}"), v, means)
                 for who, v, parts in scored for part, means in parts.items() if args.by_fold or part == "all"]
    if args.loo:
        rows += [(f"LOO {args.loo.name} {variant}" + (f", member {i} alone" if i else ""), v,
                  leave_one_out(args.loo, args.dataset, args.cv_run, variant, v, i))
                 for variant in args.variants.split(",") for i in range(max(1, args.each_member)) for v in views]
    for name, views, means in rows:
        print(f"| {name} | {views} | " + " | ".join(f"{means[k]:.4f}" if k in means else "–" for k in KEYS) + " |")


if __name__ == "__main__":
    main()
