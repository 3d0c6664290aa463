"""Make the bundled sample study: Sunnybrook SCD0000101 (CC0), cropped in-plane, with its
expert labels, as a one-case LVMyoSeg training dataset in LVMyoSeg/Resources/Sample/.

Usage: python tools/make_sample.py [SUNNYBROOK_ROOT]
"""

from __future__ import annotations

import sys

import numpy as np

from LVMyoSegLib.cine import Cine, Geometry
from LVMyoSegLib.io.dataset import add_case
from LVMyoSegLib.io.sunnybrook import list_studies, load_study
from LVMyoSegLib.labels import Labels
from LVMyoSegLib.resources import SAMPLE_DIR

PATIENT = "SCD0000101"
CROP = 160  # pixels (219 mm at 1.37 mm): the whole heart with a wide margin


def main(root: str | None = None) -> None:
    study = next(s for s in list_studies(root) if s.patient_id == PATIENT)
    dicom, labels = load_study(study)
    cine = dicom.cine
    y, x = cine.frames.shape[2:]
    j0, i0 = (y - CROP) // 2, (x - CROP) // 2
    rows, cols = np.nonzero(labels.label_map.any(axis=(0, 1)))
    assert rows.min() > j0 and rows.max() < j0 + CROP and cols.min() > i0 and cols.max() < i0 + CROP
    origin = cine.geometry.index_to_lps() @ np.array([i0, j0, 0, 1.0])
    geometry = Geometry(cine.geometry.spacing, tuple(origin[:3]), cine.geometry.direction)
    sl = (slice(None), slice(None), slice(j0, j0 + CROP), slice(i0, i0 + CROP))
    cropped = Cine(cine.frames[sl], geometry, cine.trigger_times_ms, source=f"Sunnybrook {PATIENT}")
    cropped_labels = Labels(labels.label_map[sl], labels.known, source=f"Sunnybrook {study.contour_id}")
    add_case(SAMPLE_DIR, PATIENT, cropped, cropped_labels,
             source=f"Sunnybrook Cardiac Data {PATIENT} ({study.contour_id}), CC0; cropped to "
                    f"{CROP}x{CROP} pixels from column {i0}, row {j0}",
             notes="Expert contours: myocardium at ED, cavity at ED and ES (Radau et al. 2009).")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
