"""How well the LV sections tell base from apex (:mod:`LVMyoSegLib.analysis.slice_selection`), on
expert-contoured ED stacks: per patient, the LV section (myocardium + blood pool) of each
contoured slice, and the answers of the end-section rule and of the halves rule.

Usage: python tools/slice_order_study.py ../shared/data/sunnybrook-edes
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from LVMyoSegLib.analysis.slice_selection import apex_by_end_sections, apex_by_halves, half_section_ratio
from LVMyoSegLib.training import edes


def main(root: Path) -> None:
    both = agree = ends_decided = halves_decided = 0
    patients = edes.read_edes(root)
    for patient in patients:
        ed = {f.slice: int((f.label_map > 0).sum()) for f in patient.frames if f.kind == "ED"}
        section = np.zeros(max(ed) + 1)
        for z, area in ed.items():
            section[z] = area
        lo, hi = section[min(ed)], section[max(ed)]
        ends, halves = apex_by_end_sections(section), apex_by_halves(section)
        ratio = half_section_ratio(section)
        ends_decided += ends is not None
        halves_decided += halves is not None
        if ends is not None and halves is not None:
            both += 1
            agree += ends == halves
        say = {None: "?", True: "low", False: "high"}
        print(f"{patient.patient_id} slices {min(ed)}-{max(ed)}: end sections {lo:.0f} / {hi:.0f} px, apex at "
              f"{say[ends]} k; halves' sections low / high k {ratio:.2f}, apex at {say[halves]} k")
    print(f"{len(patients)} patients: the end rule decides {ends_decided}, the halves rule {halves_decided}; "
          f"both decide {both} and agree on {agree}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
