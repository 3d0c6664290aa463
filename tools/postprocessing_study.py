"""Held-out accuracy of the label rule's alternatives, re-scoring a cross-validation run's fold
CNNs on their held-out ED/ES frames: other thresholds than the paper's 0.5, and keeping only the
largest 8-connected LV object (myocardium and blood pool together) of each slice.

Usage: python tools/postprocessing_study.py --cv docs/results/cv36_v1 --edes ../shared/data/sunnybrook-edes \\
           [--thresholds 0.3,0.4,0.5,0.6] [--views 1]

Prints a Markdown table of slice-wise means over every finished fold (the metrics of `lvmyoseg cv`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from LVMyoSegLib.analysis.evaluation import case_summary
from LVMyoSegLib.analysis.metrics import largest_component, slice_metrics
from LVMyoSegLib.files import read_json
from LVMyoSegLib.labels import BLOOD_POOL, MYOCARDIUM, labels_from_probabilities
from LVMyoSegLib.model.bundle import load_keras_file
from LVMyoSegLib.model.ensemble import predict_ensemble
from LVMyoSegLib.training import edes
from LVMyoSegLib.training.stage_one_frames import fold_cnn_paths

KEYS = ("dsc", "hd_mm", "apd_mm", "pool_dsc_ed", "pool_dsc_es")


def largest_object(label_map: np.ndarray) -> np.ndarray:
    """``label_map`` with everything outside the largest connected labelled object set to background."""
    return np.where(largest_component(label_map > 0), label_map, 0).astype(label_map.dtype)


def rules(thresholds: list[float]) -> dict[str, tuple[float, bool]]:
    """Rule name -> (threshold, keep the largest object only)."""
    out = {f"threshold {t}": (t, False) for t in thresholds}
    out.update({f"threshold {t}, largest object": (t, True) for t in thresholds})
    return out


def study(cv: Path, root: Path, thresholds: list[float], views: int) -> dict[str, dict[str, float]]:
    settings = read_json(cv / "settings.json", "Give a folder `lvmyoseg cv` wrote.")
    patients, excluded = edes.usable_patients(edes.read_edes(root))
    pre, spacing = settings["preprocessing"], (edes.NOMINAL_SPACING_MM,) * 2
    records: dict[str, list] = {name: [] for name in rules(thresholds)}
    for k, fold in enumerate(settings["folds"]):
        if not (cv / f"fold_{k}.json").is_file():
            continue
        test = edes.concat_frames([edes.patient_frames(patients[p], pre["pixel_mm"], pre["crop_size"])
                                   for p in fold if p not in excluded])
        model = load_keras_file(fold_cnn_paths(cv, fold[0], 1)[0])
        probs = edes.to_frame_grid(predict_ensemble([model], test.x, rotations=views), test)
        for i, f in enumerate(test.frames):
            base = {"case": f.patient, "group": settings["groups"][f.patient], "slice": f.slice, "frame": f.kind}
            for name, (threshold, largest) in rules(thresholds).items():
                auto = labels_from_probabilities(probs[i], threshold)
                auto = largest_object(auto) if largest else auto
                if f.known[0]:
                    records[name].append({**base, "channel": "myocardium", **slice_metrics(
                        auto == MYOCARDIUM, f.label_map == MYOCARDIUM, spacing, ring=True)})
                records[name].append({**base, "channel": "blood_pool", "phase": f.kind, **slice_metrics(
                    auto == BLOOD_POOL, f.label_map == BLOOD_POOL, spacing)})
    return {name: {k: case_summary(r)[k]["mean"] for k in KEYS} for name, r in records.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cv", type=Path, required=True, help="an `lvmyoseg cv` run folder")
    ap.add_argument("--edes", type=Path, required=True, help="the ED/ES frames it used")
    ap.add_argument("--thresholds", default="0.3,0.4,0.5,0.6")
    ap.add_argument("--views", type=int, default=1, help="test-time rotation views (1, 2 or 4)")
    args = ap.parse_args()
    table = study(args.cv, args.edes, [float(t) for t in args.thresholds.split(",")], args.views)
    print("| rule | " + " | ".join(KEYS) + " |\n|---|" + "---|" * len(KEYS))
    for name, means in table.items():
        print(f"| {name} | " + " | ".join(f"{means[k]:.4f}" for k in KEYS) + " |")


if __name__ == "__main__":
    main()
