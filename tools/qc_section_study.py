"""Where the worst myocardium slices lie, on a cross-validation run: the study behind the QC
signal ``small_section`` (:mod:`LVMyoSegLib.analysis.qc`).

For every held-out ED slice with expert myocardium, the CNN's DSC (from the run's per-slice
records) and the expert's LV section (myocardium + blood pool area) as a share of the
patient's largest ED section. Patients with a whole cine (``--cines``: the patients the
leave-one-out and function checks score) are left out, so the thresholds are set on other
hearts. Prints, for shares below 0.2 .. 0.5, the share of all slices and of the worst 10%.

Usage: python tools/qc_section_study.py docs/results/cv36_v1 ../shared/data/sunnybrook-edes \\
           --cines SCD0000101,SCD0000201,SCD0000301,SCD0000401,SCD0000501
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from LVMyoSegLib.files import read_json
from LVMyoSegLib.training.edes import read_edes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cv_run", type=Path, help="folder of an `lvmyoseg cv` run (fold_<k>.json files)")
    ap.add_argument("edes", type=Path, help="the ED/ES frames the run used")
    ap.add_argument("--cines", default="", help="comma-separated patients to leave out")
    args = ap.parse_args()
    left_out = set(filter(None, args.cines.split(",")))
    dsc = {(r["case"], r["slice"]): r["dsc"] for f in sorted(args.cv_run.glob("fold_*.json"))
           for r in read_json(f, "Give a folder `lvmyoseg cv` wrote.")["records"] if r["channel"] == "myocardium"}
    rows = []  # (dsc, share of the largest section)
    for patient in read_edes(args.edes):
        if patient.patient_id in left_out:
            continue
        area = {f.slice: float((f.label_map > 0).sum()) for f in patient.frames if f.kind == "ED" and f.known[0]}
        largest = max(area.values(), default=0.0)
        rows += [(dsc[(patient.patient_id, z)], a / largest) for z, a in area.items()
                 if (patient.patient_id, z) in dsc and largest > 0]
    data = np.array(rows)
    worst = np.argsort(data[:, 0], kind="stable")[:max(1, math.ceil(0.1 * len(data)))]
    print(f"{len({p for p, _ in dsc} - left_out)} patients, {len(data)} ED slices; worst 10%: {len(worst)} "
          f"slices, DSC <= {data[worst, 0].max():.3f}")
    print("| section share below | share of all slices | share of the worst 10% |\n|---|---|---|")
    for t in (0.2, 0.3, 0.4, 0.5):
        print(f"| {t} | {np.mean(data[:, 1] < t):.0%} | {np.mean(data[worst, 1] < t):.0%} |")


if __name__ == "__main__":
    main()
