"""Expert-vs-automatic cardiac function comparison on a real case."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from LVMyoSegLib.dataset import read_case
from LVMyoSegLib.function_validation import bland_altman, compare_case
from LVMyoSegLib.sunnybrook import cardiac_phases
from LVMyoSegLib.labels import BLOOD_POOL
from LVMyoSegLib.resources import SAMPLE_DIR


def test_identical_segmentation_agrees_and_dilation_is_seen() -> None:
    case = read_case(SAMPLE_DIR, "SCD0000101")
    ed, es = cardiac_phases(case.labels)
    assert (ed, es) == (18, 7)  # the data README's phases 19 and 8, 1-based
    same = compare_case(case.labels, case.labels.label_map.copy(), case.cine.geometry, "same")
    for key in ("edv_ml", "esv_ml", "ef_percent"):
        assert same["auto"][key] == same["expert"][key]
    # An automatic cavity one pixel larger all round has a larger EDV and ESV.
    grown = case.labels.label_map.copy()
    for t in (ed, es):
        for z in range(grown.shape[1]):
            grown[t, z][ndimage.binary_dilation(grown[t, z] == BLOOD_POOL)] = BLOOD_POOL
    big = compare_case(case.labels, grown, case.cine.geometry, "grown")
    assert big["auto"]["edv_ml"] > 1.03 * big["expert"]["edv_ml"]
    assert big["auto"]["esv_ml"] > 1.03 * big["expert"]["esv_ml"]
    # Frames other than ED/ES and slices the expert did not contour are not counted.
    extra = case.labels.label_map.copy()
    extra[3] = BLOOD_POOL
    extra[ed, 0] = BLOOD_POOL if not case.labels.known[ed, 0, 1] else extra[ed, 0]
    assert compare_case(case.labels, extra, case.cine.geometry, "x")["auto"]["edv_ml"] == same["auto"]["edv_ml"]


def test_bland_altman_limits() -> None:
    s = bland_altman([10.0, 20.0, 30.0], [11.0, 21.0, 33.0])
    assert s["mean_diff"] == pytest.approx(np.mean([1, 1, 3]))
    assert s["loa_high"] - s["loa_low"] == pytest.approx(2 * 1.96 * np.std([1, 1, 3], ddof=1))
