"""Table 1 scoring: slice-wise records on real expert labels, fold averaging, slice positions."""

from __future__ import annotations

import numpy as np
import pytest

from LVMyoSegLib.analysis.evaluation import (average_over_folds, case_summary, evaluate_case, position_summary,
                                             position_table)
from LVMyoSegLib.labels import MYOCARDIUM


def test_expert_against_itself_is_perfect_and_every_labelled_slice_is_scored(study):
    dicom, labels = study
    records = evaluate_case(labels.label_map, labels, dicom.cine.geometry, "p")
    myo = [r for r in records if r["channel"] == "myocardium"]
    assert len(myo) == int(labels.known[:, :, 0].sum())
    assert {r["phase"] for r in records if r["channel"] == "blood_pool"} == {"ED", "ES"}
    summary = case_summary(records)
    assert summary["dsc"]["mean"] == 1.0 and summary["hd_mm"]["mean"] == 0.0
    assert summary["pool_dsc_ed"]["mean"] == summary["pool_dsc_es"]["mean"] == 1.0


def test_a_one_pixel_shift_scores_below_one_and_at_the_pixel_size(study):
    dicom, labels = study
    shifted = np.roll(labels.label_map, 1, axis=-1)  # one column = spacing[0] mm
    summary = case_summary(evaluate_case(shifted, labels, dicom.cine.geometry, "p"))
    assert 0.6 < summary["dsc"]["mean"] < 0.95
    assert summary["hd_mm"]["mean"] == pytest.approx(dicom.cine.geometry.spacing[0], rel=1e-6)


def test_fold_average_is_the_mean_of_fold_means_and_of_fold_sds():
    folds = [{k: {"mean": m, "sd": s} for k in ("dsc", "hd_mm")} for m, s in ((0.8, 0.1), (0.6, 0.3))]
    avg = average_over_folds(folds)
    assert avg["dsc"] == pytest.approx({"mean": 0.7, "sd": 0.2, "folds": 2})
    assert np.isnan(avg["apd_mm"]["mean"]) and avg["apd_mm"]["folds"] == 0


def test_slice_positions_are_the_ends_of_each_cases_own_stack():
    def rec(case, z, dsc):
        return {"case": case, "z": z, "channel": "myocardium", "dsc": dsc, "hd_mm": 10 * (1 - dsc),
                "apd_mm": 1.0}

    records = [rec("a", z, d) for z, d in ((2, 0.5), (3, 0.9), (4, 0.9), (5, 0.7))]
    records += [rec("b", z, d) for z, d in ((0, 0.6), (1, 0.8))]  # two slices: both are ends
    records.append({"case": "a", "z": 9, "channel": "blood_pool", "dsc": 0.0})  # not myocardium: ignored
    by = position_summary(records)
    assert by["end"]["dsc"]["n"] == 4 and by["end"]["dsc"]["mean"] == pytest.approx(0.65)
    assert by["inner"]["dsc"]["n"] == 2 and by["inner"]["dsc"]["mean"] == pytest.approx(0.9)
    table = position_table({"CNN": by})
    assert "| CNN | end | 4 | 0.650 (0.129) | 3.500 (1.291) |" in table


def test_myocardium_label_value_is_what_is_scored(study):
    dicom, labels = study
    only_pool = np.where(labels.label_map == MYOCARDIUM, 0, labels.label_map)
    summary = case_summary(evaluate_case(only_pool, labels, dicom.cine.geometry, "p"))
    assert summary["dsc"]["mean"] == 0.0 and summary["pool_dsc_ed"]["mean"] == 1.0
