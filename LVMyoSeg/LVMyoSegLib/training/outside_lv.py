"""Known-empty labels above the base: slices of a cine that lie outside the LV.

Whole cines hold slices the experts did not contour. Looking at the five
Sunnybrook cines (``docs/RESULTS.md``, "Slices outside the LV"):

- above the base (beyond the most basal contoured slice) they cut the left
  atrium and the outflow tract: no LV by the SCMR basal rule, and the experts
  drew nothing there. These slices are labelled *known empty* (label 0, channel
  known), so the network learns to output nothing outside the LV;
- below the apex, one uncontoured slice (SCD0000401, slice 0) still shows a small
  ring of apical myocardium: there the expert's silence does not mean "no LV", so
  apical uncontoured slices stay unknown.

Which end of the stack is the base is found from the labels: the end whose
outermost contoured slice has the larger end-diastolic cavity (the LV narrows
towards the apex). Only frames the expert labelled somewhere in the stack (ED and
ES) get known-empty labels; at each such frame the base is the most basal slice
labelled in that frame, so the base's descent in systole is respected.
"""

from __future__ import annotations

import numpy as np

from ..errors import LabelError
from ..labels import BLOOD_POOL, CHANNELS, MYOCARDIUM, Labels

_MYO, _POOL = CHANNELS.index("myocardium"), CHANNELS.index("blood_pool")


def basal_end(labels: Labels) -> int:
    """+1 when the base is at the high slice indices, -1 when at slice 0."""
    pool = labels.known[:, :, _POOL]
    zs = np.flatnonzero(pool.any(axis=0))
    if len(zs) < 2:
        raise LabelError(f"Labels ({labels.source}) label the cavity on fewer than two slices; the "
                         "base cannot be told from the apex.")
    area = (labels.label_map == BLOOD_POOL).sum(axis=(2, 3)) * pool  # [T, Z], labelled frames only
    ed = int(np.argmax(labels.known[:, :, _MYO].sum(axis=1))) if labels.known[:, :, _MYO].any() \
        else int(np.argmax(area.sum(axis=1)))
    low, high = area[ed, zs[0]], area[ed, zs[-1]]
    return 1 if high >= low else -1


def with_known_empty_above_base(labels: Labels) -> Labels:
    """``labels`` plus known-empty channels on the slices above the base (module doc).

    At a labelled frame, the blood pool is known empty above the most basal slice labelled in
    that frame; the myocardium also above the most basal slice labelled at end-diastole (the
    frames with myocardium labels), since at end-systole only the cavity is drawn.
    """
    known = labels.known.copy()
    label_map = labels.label_map.copy()
    direction = basal_end(labels)
    n_z = labels.known.shape[1]

    def above(zs: np.ndarray) -> np.ndarray:
        return np.arange(zs.max() + 1, n_z) if direction > 0 else np.arange(0, zs.min())

    ed = labels.known[:, :, _MYO].any(axis=1)
    ed_slices = np.flatnonzero(labels.known[ed].any(axis=(0, 2))) if ed.any() else None
    for t in np.flatnonzero(labels.known.any(axis=(1, 2))):
        frame_slices = np.flatnonzero(labels.known[t].any(axis=1))
        myo_from = frame_slices if ed_slices is None else np.union1d(ed_slices, frame_slices)
        for c, value, zs in ((_POOL, BLOOD_POOL, frame_slices), (_MYO, MYOCARDIUM, myo_from)):
            for z in above(zs):
                if not known[t, z, c]:
                    label_map[t, z][label_map[t, z] == value] = 0
                    known[t, z, c] = True
    return Labels(label_map, known, labels.source)
